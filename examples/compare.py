"""Step pairs vs outcome pairs vs SFT on verified solutions, at equal search budget.

Runs examples/compare-pairs.yaml three times (runs/compare/<variant>), changing only what is trained on,
then prints held-out accuracy of the base policy and after each iteration. Resumable: rerun to continue.

    python examples/compare.py [--out runs/compare] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from selfimprove.config import load_config
from selfimprove.loop import run_loop

CONFIG = Path(__file__).with_name("compare-pairs.yaml")
VARIANTS = {
    "step-pairs": ["pairs.strategy=q-gap", "train.loss=step-dpo"],
    "outcome": ["pairs.strategy=outcome", "pairs.config={}", "train.loss=dpo"],
    "sft": ["train.loss=sft", "train.lr=1e-4"],  # SFT at the DPO lr barely moves; 1e-4 is its usual scale
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    console = Console()
    results = {}
    for name, sets in VARIANTS.items():
        cfg = load_config(CONFIG, [*args.overrides, *sets, f"name=compare-{name}"])
        run_dir = Path(args.out) / name
        console.log(f"{name}: {' '.join(sets)} → {run_dir}")
        results[name] = run_loop(cfg, run_dir, resume=run_dir.joinpath("config.yaml").is_file())
    k = next(iter(results.values()))["k"]
    table = Table(title="held-out accuracy (%) at equal search budget", title_justify="left")
    for col in ("variant", "iter", "greedy", f"maj@{k}", f"pass@{k}", "train records"):
        table.add_column(col, justify="right")
    for name, summary in results.items():
        for r in summary["rows"]:
            table.add_row(name, "base" if r["iteration"] < 0 else str(r["iteration"]),
                          *(f"{100 * r[key]:.1f}" for key in ("greedy_acc", "maj_acc", "pass_acc")),
                          "-" if r["pairs"] is None else str(r["pairs"]))
    console.print(table)
    print(json.dumps({n: s["rows"] for n, s in results.items()}, default=str))


if __name__ == "__main__":
    main()
