"""Cost of grading one answer, side by side in one run: the exact path of `arithmetic`, `jsonl-math`'s
numeric fast path, and its math-verify path cold (each answer text new: parse + sympy comparison) and
warm (the same texts again: cached, as answers repeat in a search tree), plus math-verify's one-time
import and warm-up. Every answer is graded through `env.score` on a one-step solution.

    OMP_NUM_THREADS=1 .venv/bin/python bench/grading.py [--n 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from envs import grading
from envs.registry import make_env
from envs.types import Problem


def clear_caches() -> None:
    for f in (grading.parse_math, grading._verify, grading._gold):
        f.cache_clear()


def per_answer_us(items: list[tuple[Problem, list[str]]], score: Callable) -> tuple[float, float]:
    """(µs per answer, share scored 1.0)."""
    t0 = time.perf_counter()
    right = sum(score(p, s) for p, s in items)
    return (time.perf_counter() - t0) / len(items) * 1e6, right / len(items)


def latex_items(n: int, rng: random.Random) -> list[tuple[Problem, list[str]]]:
    """MATH-style gold answers with right and wrong answers in other LaTeX spellings (all distinct)."""
    items = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        kind = i % 4
        if kind == 0:
            gold, right, wrong = rf"\frac{{{a}}}{{{b}}}\sqrt{{2}}", rf"\frac{{{a}\sqrt2}}{{{b}}}", rf"\frac{{{a}}}{{{b}}}\sqrt{{3}}"
        elif kind == 1:
            gold, right, wrong = f"({a}, {b})", f"({a},{b})", f"({b + 100},{a})"
        elif kind == 2:
            gold, right, wrong = f"{a}+x^{{{b}}}", f"x^{{{b}}}+{a}", f"x^{{{b}}}-{a}"
        else:
            gold, right, wrong = rf"\sqrt{{{a * a * b}}}", rf"{a}\sqrt{{{b}}}", rf"{a + 1}\sqrt{{{b}}}"
        p = Problem(id=f"latex-{i}", prompt="?", answer=gold)
        items.append((p, [rf"So the answer is $\boxed{{{right if i % 2 == 0 else wrong}}}$."]))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="answers per kind")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(0)

    arith = make_env("arithmetic")
    arith_items = [(p, [f"A: {p.answer if i % 2 == 0 else int(p.answer or 0) + 1}"])
                   for i, p in enumerate(arith.load("test", args.n, seed=0))]
    math_env = make_env("jsonl-math", layout="math")
    numeric_items = []
    for i in range(args.n):
        value = rng.randint(1, 100_000)
        stated = f"{value:,} apples" if i % 2 == 0 else f"{value + 1}"
        numeric_items.append((Problem(id=f"num-{i}", prompt="?", answer=str(value)), [f"A: {stated}"]))
    latex = latex_items(args.n, rng)

    t0 = time.perf_counter()
    math_env.score(*latex_items(8, random.Random(1))[0])  # import math-verify, sympy and antlr; warm up
    math_env.score(*latex_items(8, random.Random(1))[1])
    import_s = time.perf_counter() - t0

    rows = {}
    rows["arithmetic (exact, unchanged)"] = per_answer_us(arith_items, arith.score)
    clear_caches()
    rows["jsonl-math numbers (fast path)"] = per_answer_us(numeric_items, math_env.score)
    clear_caches()
    rows["jsonl-math LaTeX, cold (math-verify)"] = per_answer_us(latex, math_env.score)
    rows["jsonl-math LaTeX, warm (cached)"] = per_answer_us(latex, math_env.score)
    base = rows["arithmetic (exact, unchanged)"][0]
    if args.json:
        print(json.dumps({"import_and_warmup_s": import_s, "n": args.n,
                          "rows": {k: {"us_per_answer": us, "right": r, "ratio_to_arithmetic": us / base}
                                   for k, (us, r) in rows.items()}}, indent=2))
        return
    print(f"math-verify import + first answers: {import_s:.2f} s (once per process)")
    print(f"{'answers (' + str(args.n) + ' each, half right)':42} {'µs/answer':>12} {'× arithmetic':>13} {'right':>6}")
    for name, (us, right) in rows.items():
        print(f"{name:42} {us:12.1f} {us / base:13.1f} {right:6.2f}")


if __name__ == "__main__":
    main()
