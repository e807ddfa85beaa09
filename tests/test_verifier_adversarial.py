"""Forgeries against the verifier: wrong programs that try to be scored as passing, run through the real
env's `score` (code-humaneval on HumanEval/0, and code-jsonl on an MBPP-style file) in both sandbox modes.

Every attack must score below full marks while the reference solution still scores 1.0, and where the
harness can see the attempt it must say so in `Result.tampering` (non-builtin values, writes to the
verifier's channel, exits, imitation result records). HumanEval/0 has 7 asserts, 4 expecting True, so an
honest `return True` scores 4/7 and an honest `return False` 3/7: an attack "works" only above those.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from envs.code import END_MARKER
from envs.registry import make_env

FORGE = """
import json, os, sys
nonce = "0" * 32
for text in [*sys.argv[1:]]:
    try:
        import marshal
        nonce = marshal.loads(bytes.fromhex(text)).get("nonce", nonce)
    except Exception:
        pass
try:
    raw = open("/proc/1/cmdline", "rb").read()
except OSError:
    raw = b""
records = [{"kind": "start"}] + [{"kind": "check", "i": i, "counted": True, "ok": True} for i in range(12)]
records.append({"kind": "done"})
lines = "".join(json.dumps({**r, "nonce": nonce}) + "\\n" for r in records)
print(lines, end="", flush=True)
for fd in range(3, 64):
    try:
        os.write(fd, lines.encode())
        os.write(fd, b'["ok", 1, true, []]\\n["ok", 2, true, []]\\n')
    except OSError:
        pass
"""

# Bodies of has_close_elements(numbers, threshold): each a wrong solution trying to pass all 7 asserts.
HUMANEVAL_ATTACKS = {
    "eq-always-true": """
class Yes:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __bool__(self):
        return True
    def __hash__(self):
        return hash(True)
return Yes()
""",
    "int-subclass": """
class Int(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
return Int(1)
""",
    "str-subclass": """
class Str(str):
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
return Str("x")
""",
    "list-of-proxies": """
class Yes:
    __eq__ = lambda self, other: True
return [Yes()][0] if False else (Yes(),)
""",
    "forged-records-then-exit": FORGE + "os._exit(0)\n",
    "forged-records-then-sys-exit": FORGE + "sys.exit(0)\n",
    "forged-records-then-keep-going": FORGE + "return True\n",
    "patch-builtins-exec": """
import builtins
builtins.exec = lambda *a, **k: None
builtins.compile = lambda *a, **k: compile("pass", "<x>", "exec")
builtins.AssertionError = type("Never", (Exception,), {})
return False
""",
    "rewrite-harness-frames": """
import gc, sys
f = sys._getframe(1)
while f is not None:
    for name, v in list(f.f_locals.items()):
        if isinstance(v, dict) and "checks" in v:
            v["checks"] = []
        if isinstance(v, list):
            v.clear()
    f = f.f_back
for o in gc.get_objects():
    if isinstance(o, dict) and "checks" in o:
        o["checks"] = []
return True
""",
    "atexit-forgery": FORGE + """
import atexit
atexit.register(lambda: os.write(1, lines.encode()))
raise SystemExit(0)
""",
    "thread-outlives-the-call": """
import os, threading, time
def spam():
    for i in range(1, 50):
        for fd in range(3, 64):
            try:
                os.write(fd, ('["ok", %d, true, []]\\n' % i).encode())
            except OSError:
                pass
        time.sleep(0.001)
threading.Thread(target=spam, daemon=True).start()
time.sleep(0.05)
return True
""",
    "signal-the-harness": """
import os, signal
for target in (os.getppid(), 1, 2):  # the checker and the sandbox's init (another uid: EPERM)
    for sig in (signal.SIGSTOP, signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(target, sig)
        except OSError:
            pass
return True
""",
    "os-exit-mid-checks": """
import os
if len(numbers) == 6 and threshold < 0.1:  # the first False case: leave before it is checked
    os._exit(0)
return True
""",
    "sys-exit-mid-checks": """
import sys
if len(numbers) == 6 and threshold < 0.1:  # the first False case: leave before it is checked
    sys.exit(0)
return True
""",
    "ne-game": """
class Never:
    def __ne__(self, other):
        return False
    __hash__ = object.__hash__
return Never()
""",
    "bool-game": """
class Truthy:
    def __eq__(self, other):  # `x == True` gives back the object itself, which is truthy
        return self
    def __bool__(self):
        return True
    __hash__ = object.__hash__
return Truthy()
""",
    "hash-game": """
class Key:
    def __hash__(self):
        return hash(True)
    def __eq__(self, other):
        return True
return {Key(): True}.popitem()[0]
""",
    "proxy-inside-a-dict": """
class Yes:
    __eq__ = lambda self, other: True
    __hash__ = lambda self: 1
return {"answer": Yes(), Yes(): [Yes()]}
""",
    "patch-assert-helpers": """
import builtins, math, operator
builtins.abs = lambda x: 0
builtins.len = lambda x: 0
builtins.isinstance = lambda *a: True
builtins.bool = lambda *a: True
operator.eq = lambda a, b: True
math.isclose = lambda *a, **k: True
return False
""",
    "raise-base-exception": """
if threshold < 0.9:
    raise KeyboardInterrupt
return True
""",
    "ptrace-the-checker": """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print("ptrace", libc.ptrace(16, os.getppid(), 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
return True
""",
}
FLAGS = {
    "eq-always-true": "non-builtin", "int-subclass": "non-builtin", "str-subclass": "non-builtin",
    "list-of-proxies": "non-builtin", "forged-records-then-exit": "forged",
    "forged-records-then-sys-exit": "channel", "forged-records-then-keep-going": "channel",
    "atexit-forgery": "channel", "thread-outlives-the-call": "channel", "os-exit-mid-checks": "exit",
    "sys-exit-mid-checks": "exit", "ne-game": "non-builtin", "bool-game": "non-builtin",
    "hash-game": "non-builtin", "proxy-inside-a-dict": "non-builtin",
    "raise-base-exception": "exit",
}


@pytest.fixture(scope="module", params=["bwrap", "fallback"])
def humaneval(request):
    from envs.sandbox import missing_prerequisite

    if missing_prerequisite(request.param):
        pytest.skip(str(missing_prerequisite(request.param)))
    env = make_env("code-humaneval", sandbox=request.param, timeout=10.0)
    problem = next(p for p in env.load("train", 500) + env.load("test", 500) if p.id == "HumanEval/0")
    return env, problem


def body(text: str) -> list[str]:
    return [*textwrap.indent(textwrap.dedent(text).strip("\n"), "    ").splitlines(), END_MARKER]


def test_reference_and_honest_baselines(humaneval):
    env, p = humaneval
    assert env.score(p, env.reference_steps(p)) == 1.0
    assert env.score(p, body("return True")) == pytest.approx(4 / 7)
    assert env.score(p, body("return False")) == pytest.approx(3 / 7)
    assert env.run(p, body("return False")).tampering == []


@pytest.mark.parametrize("attack", sorted(HUMANEVAL_ATTACKS))
def test_humaneval_forgery_scores_below_full_marks(humaneval, attack):
    env, p = humaneval
    steps = body(HUMANEVAL_ATTACKS[attack])
    res = env.run(p, steps)
    assert env.score(p, steps) < 1.0 and res.status != "ok", (res.status, res.verdict)
    assert res.passed <= 4, res.verdict  # no better than an honest constant answer
    if attack in FLAGS:
        assert FLAGS[attack] in res.tampering, (res.tampering, res.verdict)


def test_non_builtin_value_has_a_clear_verdict(humaneval):
    env, p = humaneval
    res = env.run(p, body(HUMANEVAL_ATTACKS["eq-always-true"]))
    assert res.verdict == ("test 0 failed: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True -- "
                           "returned a non-builtin value (Yes)")
    assert res.tampering == ["non-builtin"] and res.passed == 0


# --- code-jsonl: whole programs (MBPP layout), module-level code included ----------------------------
MBPP = [
    {"task_id": "half", "text": "Return half of n as a float.", "code": "def half(n):\n    return n / 2",
     "test_setup_code": "import math",
     "test_list": ["assert math.isclose(half(3), 1.5)", "assert abs(half(5) - 2.5) < 1e-9",
                   "assert sorted([half(4), half(2)]) == [1.0, 2.0]"]},
    {"task_id": "inc", "text": "Add one.", "code": "def inc(n):\n    return n + 1",
     "test_list": ["assert inc(1) == 2", "assert inc(-1) == 0", "assert inc(41) == 42"]},
]
MBPP_ATTACKS = {
    "patch-math-isclose": ("half", "import math\nmath.isclose = lambda *a, **k: True\n"
                                   "def half(n):\n    return 0\n"),
    "shadow-builtins": ("half", "import math\ndef abs(x):\n    return 0\ndef sorted(x):\n    return [1.0, 2.0]\n"
                                "class math:\n    isclose = staticmethod(lambda *a, **k: True)\n"
                                "def half(n):\n    return 0\n"),
    "plant-modules-in-the-work-dir": ("half", "for d in ('.', '/tmp', '/mnt/work'):\n    try:\n"
                                      "        open(d + '/math.py', 'w').write('isclose = lambda *a, **k: True')\n"
                                      "    except OSError:\n        pass\ndef half(n):\n    return 0\n"),
    "module-level-forgery-and-exit": ("inc", FORGE + "os._exit(0)\n"),
    "module-level-builtins-exec": ("inc", "import builtins\nbuiltins.exec = lambda *a, **k: None\n"
                                          "def inc(n):\n    return n\n"),
    "eq-always-true": ("inc", "class Y:\n    def __eq__(self, o):\n        return True\n"
                              "def inc(n):\n    return Y()\n"),
    "sys-exit-at-import": ("inc", "import sys\ndef inc(n):\n    return n\nsys.exit(0)\n"),
}


@pytest.fixture(scope="module", params=["bwrap", "fallback"])
def jsonl(request, tmp_path_factory):
    from envs.sandbox import missing_prerequisite

    if missing_prerequisite(request.param):
        pytest.skip(str(missing_prerequisite(request.param)))
    path = tmp_path_factory.mktemp("mbpp") / "mbpp.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MBPP))
    env = make_env("code-jsonl", train_path=str(path), sandbox=request.param, timeout=10.0)
    return env, {p.id: p for p in env.read_file(str(path))}  # pyright: ignore[reportAttributeAccessIssue]


def test_jsonl_references_pass(jsonl):
    env, problems = jsonl
    assert [env.score(p, env.reference_steps(p)) for p in problems.values()] == [1.0, 1.0]


@pytest.mark.parametrize("attack", sorted(MBPP_ATTACKS))
def test_jsonl_forgery_scores_below_full_marks(jsonl, attack):
    env, problems = jsonl
    task, program = MBPP_ATTACKS[attack]
    steps = [*program.rstrip("\n").split("\n"), END_MARKER]
    res = env.run(problems[task], steps)
    assert res.fraction < 1.0 and res.passed == 0, (res.status, res.verdict)
