"""Sandbox throughput: trivial programs (with one test) per second through the worker pool, per mode, and
the overhead against a bare subprocess running the same interpreter, measured side by side in one run.

    .venv/bin/python bench/sandbox.py [--n 120] [--workers 4] [--rounds 3]

Modes are interleaved round by round (the machine may be shared); each figure is the best round.
Target: >= 20 executions/s through the pool on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.sandbox import Limits, Sandbox, available
from envs.sandbox.core import _python

PROGRAM = "def f(x):\n    return x + 1\n"
CHECKS = ["assert f(1) == 2"]


def bare_once(python: str) -> None:
    subprocess.run([python, "-S", "-s", "-B", "-c", PROGRAM + CHECKS[0]], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def timed(fn, n: int, workers: int) -> tuple[float, float]:
    """(executions/s through `workers` threads, seconds per execution run one at a time)."""
    t0 = time.perf_counter()
    for _ in range(max(4, n // 10)):
        fn()
    serial = (time.perf_counter() - t0) / max(4, n // 10)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda _: fn(), range(n)))
    return n / (time.perf_counter() - t0), serial


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--n", type=int, default=120, help="executions per mode per round")
    ap.add_argument("--workers", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    args = ap.parse_args()

    python = _python()[0]
    runners: dict[str, Callable[[], object]] = {"bare subprocess": lambda: bare_once(python)}
    for mode in ("bwrap", "fallback"):
        why = available(mode)
        if why is not None:
            print(f"{mode}: skipped ({why})")
            continue
        box = Sandbox(mode, Limits(timeout=10.0), workers=args.workers)

        def run(box=box):
            res = box.run(PROGRAM, CHECKS)
            if res.status != "ok":
                raise SystemExit(f"{box.mode}: trivial program did not pass: {res.verdict}")
        runners[mode] = run
    box = Sandbox("none", Limits(timeout=10.0), i_understand_this_is_unsafe=True)
    runners["harness only (no isolation)"] = lambda: box.run(PROGRAM, CHECKS)

    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds):
        for name, fn in runners.items():
            rate, serial = timed(fn, args.n, args.workers)
            old = best.get(name)
            best[name] = (max(rate, old[0]) if old else rate, min(serial, old[1]) if old else serial)

    bare_rate, bare_serial = best["bare subprocess"]
    print(f"cores={os.cpu_count()} workers={args.workers} n={args.n} rounds={args.rounds} (best round each)")
    print(f"{'mode':30s} {'exec/s (pool)':>14s} {'ms/exec (serial)':>17s} {'serial overhead x bare':>23s}"
          f" {'pool throughput / bare':>23s}")
    summary = {}
    for name, (rate, serial) in best.items():
        print(f"{name:30s} {rate:14.1f} {serial * 1000:17.1f} {serial / bare_serial:23.2f} {rate / bare_rate:23.2f}")
        summary[name] = {"exec_per_s": round(rate, 1), "ms_per_exec": round(serial * 1000, 1),
                         "overhead_x_bare": round(serial / bare_serial, 2),
                         "throughput_vs_bare": round(rate / bare_rate, 2)}
    for mode in ("bwrap", "fallback"):
        if mode in best:
            ok = best[mode][0] >= 20
            print(f"target >= 20 exec/s on the pool, {mode}: {'met' if ok else 'NOT met'} ({best[mode][0]:.1f})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
