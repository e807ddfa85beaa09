"""Build the embedded tiny policy: a byte-level BPE tokenizer and a small Llama trained from scratch by SFT
on an environment's reference solutions, deliberately under-trained so it still makes genuine step errors.

Errors by design: training is short (counted in optimizer steps, not seconds, so a busy machine gives the
same model), and for `arithmetic` the demonstrations are noisy the way human ones are: 25% carry one
plausible wrong result (off by ±1, ±2 or ±10), and 65% carry the smaller-from-larger bug, a classic from
the study of children's arithmetic errors (`7-11=4`: a subtraction that should go negative is written as
the positive difference). Every mistake is carried forward. The bug matters on the problems with such a
subtraction (about a third), where it becomes the policy's most likely step, so its greedy answer is wrong
there while its samples often hold the right one: a systematic error that search with the verifier finds
and preference training removes, next to random arithmetic errors that only far more data fixes.

The output is a standard HF directory (config.json, model.safetensors, tokenizer files,
generation_config.json) plus `policy_build.json`, the manifest that makes a rebuild with the same
settings a no-op. The tokenizer and the model are built by `agents.tiny`; the SFT steps run through the
shared training loop (`selfimprove.train.fit`), which is why the builder lives here, above `agents`.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from envs.errors import UserError
from envs.io import atomic_dir
from envs.progress import SILENT, Progress, Staged
from selfimprove.train.fit import fit
from selfimprove.train.runtime import Runtime

MANIFEST = "policy_build.json"
FORMAT = "selfimprove-tiny-policy/1"
EVAL_PROBLEMS = 200
BEST_OF = 16
ARCH = {"hidden": 128, "layers": 2, "heads": 4, "intermediate": 512}
OPTIM = {"lr": 3e-3, "betas": (0.9, 0.98), "weight_decay": 0.01, "clip": 1.0, "batch": 64, "warmup": 30}
ERROR_SHARE = 0.25
ERROR_OFFSETS = (-10, -2, -1, 1, 2, 10)
BUG_SHARE = 0.65  # arithmetic demonstrations with the smaller-from-larger subtraction bug
POOL_MAX = 16000  # distinct training problems drawn (batches sample from this pool)
# Measured at 1200 steps, seed 0, default knobs, before the subtraction bug (greedy / best-of-16 on 200
# test problems): fp32, random batches 31.0% / 57.5%; bf16 autocast 32.5% / 53.5% (≈ 25% faster); batches
# grouped by length (8 × 64 sorted) 3% / 18.5% (final loss 0.41 vs 0.16: homogeneous batches train far
# worse here). Hence fp32 and random batches.
AUTOCAST_BF16 = False
LENGTH_GROUP = 1  # >1: batches from LENGTH_GROUP × batch samples sorted by length (less padding, worse model)


def work_arithmetic(expr: str, *, smaller_from_larger: bool = False, wrong_at: int | None = None,
                    rng: random.Random | None = None) -> list[str]:
    """A worked arithmetic solution (steps plus `A: n`), optionally with a demonstrator's mistakes.

    smaller_from_larger: the subtraction bug (`a-b` with 0 <= a < b is written as b − a, positive).
    wrong_at: operation index whose result is off by one of ERROR_OFFSETS (drawn from `rng`).
    Every mistake is carried forward: later steps use the wrong value.
    """
    from envs.arithmetic import next_operation, operation, reduce_once, tokenize

    tokens, steps = tokenize(expr), []
    while (k := next_operation(tokens)) is not None:
        a, op, b = operation(tokens, k)
        c = a + b if op == "+" else a - b if op == "-" else a * b
        if smaller_from_larger and op == "-" and 0 <= a < b:
            c = -c
        if len(steps) == wrong_at:
            if rng is None:
                raise ValueError("work_arithmetic: wrong_at needs an rng to draw the offset from")
            c += rng.choice([d for d in ERROR_OFFSETS if c + d >= 0 or c < 0])
        steps.append(f"{a}{op}{b}={c}")
        tokens = reduce_once(tokens, k, c)
    return [*steps, f"A: {tokens[0]}"]


def _solution_text(env, problem, rng: random.Random) -> str:
    """The text after the prompt: the reference steps, or for `arithmetic` a demonstration that may carry
    the subtraction bug (BUG_SHARE) and, independently, one random wrong result (ERROR_SHARE)."""
    if env.name == "arithmetic":
        bug, wrong = rng.random() < BUG_SHARE, rng.random() < ERROR_SHARE
        n_ops = len(env.reference_steps(problem)) - 1
        steps = work_arithmetic(env.expression(problem), smaller_from_larger=bug,
                                wrong_at=rng.randrange(n_ops) if wrong and n_ops else None, rng=rng)
    else:
        steps = env.reference_steps(problem)
        if steps is None:
            raise UserError(f"environment '{env.name}' has no reference solutions to build a policy from")
    return env.render(problem, steps)[len(env.prompt(problem)):]


def _settings(env_name: str, knobs: dict, steps: int, seed: int, eval_problems: int) -> dict:
    return {"format": FORMAT, "env": env_name, "knobs": knobs, "steps": steps, "seed": seed,
            "eval_problems": eval_problems,
            "arch": ARCH,
            "optim": {**OPTIM, "betas": list(OPTIM["betas"])}, "error_share": ERROR_SHARE,
            "bug_share": BUG_SHARE,
            "bf16_autocast": AUTOCAST_BF16, "length_group": LENGTH_GROUP,
            "tokenizer": "byte-level BPE, individual digits"}


def cached_dir(cache_dir: str | Path, env_name: str, *, seed: int = 0, steps: int | None = None,
               knobs: dict | None = None) -> Path:
    """Where `policy.path: tiny` keeps the policy built with these settings: one directory per setting."""
    name = f"{env_name}-seed{seed}-steps{steps or 'default'}"
    if knobs:
        name += "-" + hashlib.sha256(json.dumps(knobs, sort_keys=True).encode()).hexdigest()[:8]
    return Path(cache_dir) / name.replace(":", "_")


def read_manifest(out_dir: str | Path) -> dict | None:
    """The build manifest of a complete policy directory, or None."""
    p = Path(out_dir)
    try:
        man = json.loads((p / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    complete = all((p / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json"))
    return man if complete and man.get("settings", {}).get("format") == FORMAT else None


def build_tiny_policy(env_name: str = "arithmetic", out_dir: str | Path = "tiny-policy", *, steps: int = 1200,
                      seed: int = 0, progress: Progress = SILENT, eval_problems: int = EVAL_PROBLEMS,
                      knobs: dict | None = None, overwrite: bool = False) -> dict:
    """Train the tiny policy for `env_name` (with the environment's `knobs`) into `out_dir` and evaluate it
    on the same environment; returns the summary.

    A complete `out_dir` built with the same settings is reused (summary["cached"] is True). The summary
    holds greedy_accuracy and best_of_16_accuracy (temperature-1 samples, the verifier picks: pass@16) on
    200 held-out test problems, build_seconds, params and vocab_size. Progress reports carry stage
    "train" (optimizer steps), then "eval". A tiny policy built with other settings is replaced only
    with `overwrite`; a directory that is not a tiny policy, never.
    """
    from envs.registry import make_env

    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    out = Path(out_dir)
    knobs = dict(knobs or {})
    env = make_env(env_name, knobs)  # bad knobs fail before anything is written
    settings = _settings(env_name, knobs, steps, seed, eval_problems)
    man = read_manifest(out)
    if man is not None and man["settings"] == settings:
        return {**man["summary"], "cached": True}
    if out.exists() and (not out.is_dir() or (man is None and any(out.iterdir()))):
        raise UserError(f"--out '{out}' exists and is not a tiny-policy directory; choose another path "
                        f"(nothing was changed)")
    if man is not None and not overwrite:
        raise UserError(f"--out '{out}' holds a tiny policy built with other settings; pass --overwrite to "
                        f"rebuild it there, or choose another path")
    t0 = time.perf_counter()
    # a tiny policy (its manifest proves it) may go; with overwrite also one another build finished meanwhile
    replace = "any" if man is not None else "ours" if overwrite else "never"
    with atomic_dir(out, kind="tiny-policy", replace=replace) as tmp:
        train = _train(env, tmp, steps=steps, seed=seed, progress=Staged(progress, "train"))
        train_s = time.perf_counter() - t0
        acc = evaluate_policy(env, str(tmp), seed=seed, count=eval_problems, progress=Staged(progress, "eval"))
        summary = {"env": env_name, "knobs": knobs, "out": str(out), "steps": steps, "seed": seed, **acc,
                   "gap_points": round(100 * (acc["best_of_16_accuracy"] - acc["greedy_accuracy"]), 1),
                   "params": train["params"], "vocab_size": train["vocab_size"], "final_loss": train["final_loss"],
                   "train_seconds": round(train_s, 1), "build_seconds": round(time.perf_counter() - t0, 1),
                   "cached": False}
        (tmp / MANIFEST).write_text(json.dumps({"settings": settings, "summary": summary}, indent=2) + "\n")
    return summary


def _train(env, out: Path, *, steps: int, seed: int, progress: Progress) -> dict:
    """Tokenizer + model + SFT (loss on solution tokens only, right padding, no attention mask)."""
    import torch
    from transformers import GenerationConfig, get_cosine_schedule_with_warmup

    from agents.tiny import build_llama, train_tokenizer

    rng = random.Random(seed)
    batch = OPTIM["batch"]
    problems = env.load("train", min(steps * batch, POOL_MAX), seed)
    prompts = [env.prompt(p) for p in problems]
    tok: Any = train_tokenizer((q + _solution_text(env, p, rng) for p, q in zip(problems[:4000], prompts, strict=False)),
                          vocab_size=1000, individual_digits=True)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    prompt_len = [len(ids) for ids in tok(prompts)["input_ids"]]

    model = build_llama(tok, seed=seed, max_positions=512, **ARCH)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=pad)
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": OPTIM["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=OPTIM["lr"], betas=OPTIM["betas"])
    sched = get_cosine_schedule_with_warmup(opt, OPTIM["warmup"], steps)
    model.train()
    rt = Runtime()  # one fp32 process unless launched under accelerate (then each step is split)
    lm, opt = rt.prepare(model, opt)

    def batches() -> Iterator[list[tuple[list[int], int]]]:
        """`steps` batches of (token ids, prompt length), drawn LENGTH_GROUP batches at a time."""
        queue: list[list[tuple[list[int], int]]] = []
        for _ in range(steps):
            if not queue:
                queue = _length_grouped_batches(env, problems, prompts, prompt_len, tok, rng, batch, eos, LENGTH_GROUP)
            yield queue.pop()

    def loss_fn(rows: list[tuple[list[int], int]], norm: dict[str, float] | None = None):
        L = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), L), pad, dtype=torch.long)
        labels = torch.full((len(rows), L), -100, dtype=torch.long)
        for b, (ids, n_prompt) in enumerate(rows):
            input_ids[b, :len(ids)] = torch.tensor(ids)
            labels[b, n_prompt:len(ids)] = input_ids[b, n_prompt:len(ids)]
        # Right padding: pads come after every real token, so the causal model needs no mask.
        # A split step divides by the step's label count (transformers' num_items_in_batch), not this part's.
        kw = {} if norm is None else {"num_items_in_batch": torch.tensor(norm["tokens"])}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=AUTOCAST_BF16):
            return lm(input_ids=input_ids, labels=labels, **kw).loss, {}

    def label_tokens(rows: list[tuple[list[int], int]]) -> dict[str, float]:
        return {"tokens": float(sum(len(ids) - n_prompt for ids, n_prompt in rows))}

    history = fit(params, opt, batches(), loss_fn, total=steps, grad_clip=OPTIM["clip"], scheduler=sched,
                  progress=progress, runtime=rt, count_fn=label_tokens, model=lm)
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    tail = [row["loss"] for row in history[-50:]]
    return {"params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok),
            "final_loss": round(sum(tail) / len(tail), 4)}


def _length_grouped_batches(env, problems, prompts, prompt_len, tok, rng: random.Random, batch: int, eos: int,
                            group: int = 8) -> list[list[tuple[list[int], int]]]:
    """`group` batches from group × batch random problems sorted by length (less padding), in random order.

    Solutions are drawn afresh each time, so which solutions carry a wrong step changes between epochs.
    """
    idx = [rng.randrange(len(problems)) for _ in range(group * batch)]
    texts = [prompts[i] + _solution_text(env, problems[i], rng) for i in idx]
    rows = [([*ids, eos], prompt_len[i]) for ids, i in zip(tok(texts)["input_ids"], idx, strict=True)]
    rows.sort(key=lambda r: len(r[0]))
    batches = [rows[k:k + batch] for k in range(0, len(rows), batch)]
    rng.shuffle(batches)
    return batches


def solution_steps(env, text: str) -> list[str]:
    """Split a whole generated solution into steps (the delimiter separates them)."""
    steps = text.split(env.step_delimiter)
    while steps and not steps[-1].strip():
        steps.pop()
    return steps


def evaluate_policy(env, policy_dir: str, *, seed: int = 0, count: int = EVAL_PROBLEMS, best_of: int = BEST_OF,
                    progress: Progress = SILENT, max_tokens: int | None = None) -> dict:
    """Greedy and best-of-N (pass@N, temperature 1) accuracy on `count` held-out test problems.

    Whole solutions are generated in one call each (no step stop; EOS or a token cap), in big batches.
    """
    from agents import load_policy
    from agents.loading import load_tokenizer, resolve_model_path

    policy = load_policy(policy_dir, seed=seed)
    problems = env.load("test", count, 0)
    prompts = [env.prompt(p) for p in problems]
    if max_tokens is None:
        tok = load_tokenizer(resolve_model_path(policy_dir, what="policy"))
        ref = [env.render(p, env.reference_steps(p) or [])[len(q):] for p, q in zip(problems, prompts, strict=True)]
        max_tokens = 2 * max(len(ids) for ids in tok(ref)["input_ids"]) + 8
    t0 = time.perf_counter()
    greedy = policy.propose(prompts, 1, stop=(), temperature=0.0, max_step_tokens=max_tokens)
    progress.update(1, 1 + best_of)
    g_scores = env.score_many([(p, solution_steps(env, row[0].text)) for p, row in zip(problems, greedy, strict=True)])
    best = [0.0] * len(problems)
    chunk = max(1, 128 // best_of)
    for i in range(0, len(problems), chunk):
        rows = policy.propose(prompts[i:i + chunk], best_of, stop=(), temperature=1.0, top_p=1.0,
                              max_step_tokens=max_tokens, seed=seed * 1000003 + i)
        for k, row in enumerate(rows):
            scores = env.score_many([(problems[i + k], solution_steps(env, s.text)) for s in row])
            best[i + k] = max(scores)
        progress.update(1 + math.ceil(best_of * min(len(problems), i + chunk) / len(problems)), 1 + best_of)
    n = len(problems)
    return {"greedy_accuracy": round(sum(s >= 1.0 for s in g_scores) / n, 4),
            f"best_of_{best_of}_accuracy": round(sum(s >= 1.0 for s in best) / n, 4),
            "eval_problems": n, "eval_seconds": round(time.perf_counter() - t0, 1)}
