"""What a run reports: summary.json (one row per iteration), a PNG of accuracy per iteration, a rich table.

Row -1 is the base policy, evaluated once before the first iteration; the improvement figures compare
the last iteration with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from envs.io import atomic_write_json, write_failure

ACCURACY_KEYS = (("greedy_acc", "greedy"), ("maj_acc", "maj@k"), ("pass_acc", "pass@k"), ("search_acc", "search"))


def row_from_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """The flat summary row of one iteration's metrics.json (or the baseline's)."""
    ev = m.get("eval", {})
    pairs = m.get("pairs", {})
    value = m.get("value", {})
    train = m.get("train", {})
    tokens = sum(int(s.get("tokens", 0) or 0) for s in (m.get("search", {}), ev))
    return {
        "iteration": m["iteration"],
        "greedy_acc": ev.get("greedy_acc"),
        "maj_acc": ev.get("maj_acc"),
        "pass_acc": ev.get("pass_acc"),
        "search_acc": ev.get("search_acc"),
        "train_search_acc": m.get("search", {}).get("accuracy"),
        "pairs": pairs.get("count"),
        # shares of the pairs the env's step check judged right-vs-wrong / inverted (envs with one)
        "pairs_right": ((pairs.get("audit") or {}).get("shares") or {}).get("right-vs-wrong"),
        "pairs_inverted": ((pairs.get("audit") or {}).get("shares") or {}).get("inverted"),
        "mean_margin": pairs.get("mean_margin"),
        "value_auroc": value.get("auroc"),
        "train_loss": train.get("final_loss", train.get("loss") if isinstance(train.get("loss"), float) else None),
        "distinct_first_steps": ev.get("distinct_first_steps"),
        "distinct_answers": ev.get("distinct_answers"),
        "tokens": tokens,
        "tampering": (m.get("search", {}).get("stats") or {}).get("tampering"),
        "wall_s": m.get("wall_s", {}),
    }


def build_summary(name: str, k: int, rows: list[dict[str, Any]]) -> dict[str, Any]:
    base = next((r for r in rows if r["iteration"] == -1), None)
    last = rows[-1] if rows and rows[-1]["iteration"] >= 0 else None
    improvement = None
    if base and last:
        improvement = {key: (None if last[key] is None or base[key] is None else last[key] - base[key])
                       for key, _ in ACCURACY_KEYS}
    return {"run": name, "k": k, "rows": rows, "improvement": improvement}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    atomic_write_json(path, summary)


def write_plot(path: Path, summary: dict[str, Any]) -> None:
    """Accuracy per iteration (base = -1) for greedy, maj@k, pass@k and search, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [r["iteration"] for r in rows]
    k = summary.get("k")
    for key, label in ACCURACY_KEYS:
        pts = [(x, r[key]) for x, r in zip(xs, rows, strict=True) if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o",
                    label=label.replace("k", str(k)) if "@" in label else label)
    ax.set_xticks(xs)
    ax.set_xticklabels(["base" if x == -1 else str(x) for x in xs])
    ax.set_xlabel("iteration")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(f"{summary['run']}: accuracy per iteration")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp)
        tmp.replace(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failure(path, e) from None
        raise
    finally:
        plt.close(fig)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run table: accuracies (%), pairs and their label precision, solutions flagged as tampering with the verifier,
    value AUROC, diversity, tokens and wall time.

    Columns with no value in any row (search accuracy when not evaluated, AUROC without a value model,
    tampering when none was flagged, pair labels when the env has no step check) are left out so the
    table fits 80 columns; a flagged count is explained in the caption, since it means the policy drifts
    toward the verifier instead of the task.
    """
    k = summary.get("k")
    rows = summary["rows"]
    cols: list[tuple[str, Any]] = [
        ("iter", lambda r: "base" if r["iteration"] == -1 else str(r["iteration"])),
        ("greedy", lambda r: _pct(r["greedy_acc"])),
        (f"maj@{k}", lambda r: _pct(r["maj_acc"])),
        (f"pass@{k}", lambda r: _pct(r["pass_acc"])),
        ("search", lambda r: _pct(r["search_acc"])),
        ("pairs", lambda r: "-" if r.get("pairs") is None else str(r["pairs"])),
        ("labels", lambda r: "-" if r.get("pairs_right") is None
         else f"{100 * r['pairs_right']:.0f}/{100 * (r.get('pairs_inverted') or 0):.1f}"),
        ("hack", lambda r: "-" if r.get("tampering") is None else str(r["tampering"])),
        ("AUROC", lambda r: "-" if r.get("value_auroc") is None else f"{r['value_auroc']:.2f}"),
        ("1st", lambda r: "-" if r.get("distinct_first_steps") is None else f"{r['distinct_first_steps']:.1f}"),
        ("ans", lambda r: "-" if r.get("distinct_answers") is None else f"{r['distinct_answers']:.1f}"),
        ("tokens", lambda r: _tokens(r.get("tokens"))),
        ("time", lambda r: f"{sum((r.get('wall_s') or {}).values()):.0f}s"),
    ]
    cols = [(name, fn) for name, fn in cols
            if name not in ("search", "AUROC", "hack", "labels") or any(fn(r) not in ("-", "0") for r in rows)]
    table = Table(title=f"{summary['run']}: held-out accuracy (%) per iteration", title_justify="left")
    for name, _ in cols:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(*(fn(r) for _, fn in cols))
    imp = summary.get("improvement")
    if imp and imp.get("greedy_acc") is not None:
        table.caption = (f"greedy {100 * imp['greedy_acc']:+.1f} points over the base policy; "
                         "1st = distinct first steps, ans = distinct answers (per problem, of k samples)")
    if any(name == "labels" for name, _ in cols):
        table.caption = ((table.caption + "; ") if table.caption else "") + (
            "labels = % of pairs right-vs-wrong / inverted by the env's step check (`pairs audit`)")
    if any(name == "hack" for name, _ in cols):
        table.caption = ((table.caption + "; ") if table.caption else "") + (
            "hack = searched solutions the verifier flagged as tampering with it (non-builtin return values, "
            "writes to its channel, early exits): the policy is learning the verifier, not the task")
    return table


def _tokens(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)
