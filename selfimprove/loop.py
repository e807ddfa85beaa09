"""The self-improvement loop: search → pairs → value model → policy → evaluation, iteration after iteration.

Each stage of each iteration writes its artifact atomically, then a completion marker (see rundir.py), so
`resume=True` skips finished stages and redoes the one a kill interrupted. Every stage is seeded from
(run seed, iteration, stage) and reads its inputs from disk, so a resumed run produces the same counts
as an uninterrupted one with the same seed.

Iteration i: training problems are drawn fresh (seeded by i); the policy is iter-(i-1)/policy (the base
policy for i = 0) and, when enabled, the value model iter-(i-1)/value; the DPO reference is the policy
at the start of the iteration. The held-out split is drawn once; the base policy is evaluated once
before iteration 0 (row -1 of the summary).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from envs.errors import UserError
from envs.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from envs.progress import SILENT, Progress
from envs.registry import make_env
from selfimprove.config import TINY, RunConfig, config_diff, parse_config
from selfimprove.report import build_summary, row_from_metrics, write_plot, write_summary
from selfimprove.rundir import RunDir
from selfimprove.train.config import SFT


def stage_seed(seed: int, iteration: int, stage: str) -> int:
    """A stable per-stage seed: the same run seed gives the same seeds on resume."""
    offsets = {"problems": 1, "search": 2, "pairs": 3, "value": 4, "train": 5, "eval": 6}
    return seed * 1_000_003 + (iteration + 1) * 101 + offsets[stage]


def build_tiny_base(cfg: RunConfig, progress: Progress = SILENT) -> tuple[Path, dict[str, Any]]:
    """The embedded tiny policy for `cfg` (`policy.path: tiny`): its cache directory and build summary.

    Built once per (environment, knobs, seed, steps) under `policy.tiny.cache_dir`; later calls reuse it.
    """
    from selfimprove.train.tiny_policy import build_tiny_policy, cached_dir

    tiny, knobs = cfg.policy.tiny, dict(cfg.env.knobs)
    out = cached_dir(tiny.cache_dir, cfg.env.name, seed=tiny.seed, steps=tiny.steps, knobs=knobs)
    kw: dict[str, Any] = {"seed": tiny.seed, "knobs": knobs, "progress": progress}
    if tiny.steps is not None:
        kw["steps"] = tiny.steps
    return out, dict(build_tiny_policy(cfg.env.name, str(out), **kw))


class Loop:
    """Runs (or resumes) one configured run in one run directory."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
                 progress: Progress | None = None):
        self.cfg = cfg
        self.run = RunDir(run_dir)
        self.resume = resume
        self.progress = progress or SILENT
        self.env = make_env(cfg.env.name, cfg.env.knobs)

    # --- models ---------------------------------------------------------------------------------
    def _policy(self, path: str | Path, seed: int):
        """A fresh backend on `path` (HF: cheap to load, and fresh RNG state keeps stages reproducible)."""
        from agents import load_policy

        pol = self.cfg.policy
        return load_policy(str(path), backend=pol.backend, device=pol.device, seed=seed)

    def _value_model(self, path: Path | None):
        if path is None:
            return None
        from agents.value import HFValueModel

        return HFValueModel(str(path), device=self.cfg.policy.device)

    # --- setup ----------------------------------------------------------------------------------
    def _write_config(self) -> None:
        run = self.run
        run.check_new_or_resume(self.resume)
        if run.config.is_file():
            stored = parse_config(yaml.safe_load(run.config.read_text(encoding="utf-8")), str(run.config))
            diff = config_diff(stored, self.cfg)
            if diff:
                raise UserError(f"{run.config}: field '{diff}' differs from the config given; a resumed run "
                                f"keeps its config (start a new run to change it)")
        else:
            atomic_write_text(run.config, self.cfg.to_yaml())

    def base_policy(self) -> Path:
        """The starting checkpoint: the configured path, or the embedded tiny policy (built once, cached)."""
        from agents.embedded import embedded_dir, is_embedded

        pol = self.cfg.policy
        if is_embedded(pol.path):
            self.progress.phase(f"prepare {pol.path}")
            return embedded_dir(pol.path)  # converted once into an HF directory, cached
        if pol.path != TINY:
            return Path(pol.path).expanduser()
        self.progress.phase("build tiny policy")
        t0 = time.perf_counter()
        out, summary = build_tiny_base(self.cfg, progress=self.progress)
        if self.run.done("base-policy") is None:
            summary["wall_s"] = time.perf_counter() - t0
            self.run.mark("base-policy", None, _jsonable(summary))
        self.progress.log(f"base policy {out}: greedy {summary.get('greedy_accuracy')}, "
                          f"best-of-16 {summary.get('best_of_16_accuracy')}"
                          + (" (cached)" if summary.get("cached") else ""))
        return out

    # --- stages ---------------------------------------------------------------------------------
    def _stage(self, name: str, i: int | None, fn) -> dict[str, Any]:
        """Run `fn()` unless its marker exists; time it and write the marker with what it returned."""
        label = name if i is None else f"iter {i} {name}"
        info = self.run.done(name, i)
        if info is not None:
            self.progress.log(f"{label}: done earlier, skipped")
            return info
        self.progress.phase(label)
        t0 = time.perf_counter()
        info = fn()
        info["wall_s"] = time.perf_counter() - t0
        self.run.mark(name, i, info)
        self.progress.log(f"{label}: {_brief(info)}")
        return info

    def _evaluate(self, policy_dir: Path, value_dir: Path | None, seed: int) -> dict[str, Any]:
        from selfimprove.evaluate import evaluate

        ev = self.cfg.eval
        problems = self.env.load("test", ev.problems, seed=self.cfg.seed)
        policy = self._policy(policy_dir, seed)
        try:
            return evaluate(self.env, problems, policy, k=ev.k, temperature=ev.temperature, seed=seed,
                            max_batch=ev.max_batch, value_model=self._value_model(value_dir),
                            search_algo=self.cfg.search.algo if ev.search else None,
                            search_config=self.cfg.search.config, progress=self.progress)
        finally:
            policy.close()

    def _search(self, i: int, policy_dir: Path, value_dir: Path | None) -> dict[str, Any]:
        from search.api import run_search
        from search.tree import write_trees
        from selfimprove.evaluate import answer_correct, tree_tokens

        cfg = self.cfg
        problems = self.env.load("train", cfg.search.problems, seed=stage_seed(cfg.seed, i, "problems"))
        policy = self._policy(policy_dir, stage_seed(cfg.seed, i, "search"))
        try:
            result = run_search(self.env, problems, policy, self._value_model(value_dir), algo=cfg.search.algo,
                                config=cfg.search.config, seed=stage_seed(cfg.seed, i, "search"),
                                max_batch=cfg.search.max_batch, progress=self.progress)
        finally:
            policy.close()
        n = write_trees(self.run.trees(i), result.trees)
        stats = {k: v for k, v in dict(result.stats or {}).items() if isinstance(v, (int, float, str, bool))}
        return {"trees": n, "nodes": sum(len(t) for t in result.trees),
                "accuracy": sum(answer_correct(t) for t in result.trees) / max(1, n),
                "solved": sum(any(x.correct for x in t.terminals()) for t in result.trees) / max(1, n),
                "tokens": tree_tokens(result.trees), "stats": stats}

    def _pairs(self, i: int) -> dict[str, Any]:
        from search.tree import read_trees

        trees = read_trees(self.run.trees(i))
        if self.cfg.train.loss == SFT:
            from selfimprove.train.sft import verified_solutions

            records = verified_solutions(trees, iteration=i)
            atomic_write_jsonl(self.run.pairs(i), records)
            return {"strategy": "verified-solutions", "count": len(records)}
        from selfimprove.pairs import extract, write_records

        pairs = self.cfg.pairs
        records, stats = extract(trees, pairs.strategy, pairs.config, iteration=i,
                                 seed=stage_seed(self.cfg.seed, i, "pairs"), env=self.env)
        write_records(self.run.pairs(i), records)
        return dict(stats)

    def _value(self, i: int, policy_dir: Path) -> dict[str, Any]:
        from search.tree import read_trees
        from selfimprove.train import fit_value

        v = self.cfg.value
        prev = self._latest_value(i)
        init = prev if prev is not None else policy_dir if v.init == "policy" else Path(v.init)
        trees = read_trees(self.run.trees(i))
        try:
            with self.run.atomic_dir(self.run.value(i)) as tmp:
                metrics = fit_value(trees, tmp, v.training, init_from=str(init),
                                    seed=stage_seed(self.cfg.seed, i, "value"), progress=self.progress)
        except UserError as e:  # e.g. no terminal nodes to learn from: keep the previous value model
            return {"skipped": str(e), "auroc": None}
        metrics = _jsonable(metrics)
        metrics.pop("history", None)
        metrics["auroc"] = metrics.get("heldout_auroc")
        return metrics

    def _latest_value(self, i: int) -> Path | None:
        """The newest value model trained before iteration `i`, or None."""
        for j in range(i - 1, -1, -1):
            if (self.run.value(j)).is_dir():
                return self.run.value(j)
        return None

    def _train(self, i: int, policy_dir: Path, n_records: int) -> dict[str, Any]:
        from selfimprove.train import fit_policy

        with self.run.atomic_dir(self.run.policy(i)) as tmp:
            if n_records == 0:  # nothing to learn from: the policy carries over unchanged
                shutil.copytree(policy_dir, tmp, dirs_exist_ok=True)
                return {"skipped": "no training records", "loss": None}
            metrics = fit_policy(str(policy_dir), str(self.run.pairs(i)), str(tmp), self.cfg.train,
                                 ref_dir=str(policy_dir), seed=stage_seed(self.cfg.seed, i, "train"),
                                 progress=self.progress)
        metrics = _jsonable(metrics)
        metrics.pop("history", None)
        return metrics

    # --- the loop -------------------------------------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        """Run every iteration not yet finished; returns the summary (also written to summary.json)."""
        cfg, run = self.cfg, self.run
        self._write_config()
        base = self.base_policy()
        from selfimprove.prompting import apply_prompting

        apply_prompting(self.env, cfg.prompt, str(base))  # the same prompt text for every stage and iteration
        self._stage("baseline", None, lambda: {"eval": self._evaluate(base, None, stage_seed(cfg.seed, -1, "eval"))})
        policy_dir = base
        for i in range(cfg.iterations):
            value_in = self._latest_value(i) if cfg.value.enabled else None
            if run.metrics(i).is_file():
                self.progress.log(f"iter {i}: done earlier, skipped")
            else:
                self._iteration(i, policy_dir, value_in)
            policy_dir = run.policy(i)
        summary = self.summary()
        write_plot(run.summary_png, summary)
        return summary

    def summary(self) -> dict[str, Any]:
        """summary.json from what is on disk: the baseline row, then every finished iteration."""
        run = self.run
        base = run.done("baseline") or {}
        rows = [row_from_metrics({"iteration": -1, "eval": base.get("eval", {}),
                                  "wall_s": {"eval": base.get("wall_s", 0.0)}})] if base else []
        rows += [row_from_metrics(_read_json(run.metrics(j))) for j in run.finished_iterations()]
        summary = build_summary(self.cfg.name or run.root.name, self.cfg.eval.k, rows)
        write_summary(run.summary_json, summary)
        return summary

    def _iteration(self, i: int, policy_dir: Path, value_in: Path | None) -> dict[str, Any]:
        cfg, run = self.cfg, self.run
        search = self._stage("search", i, lambda: self._search(i, policy_dir, value_in))
        pairs = self._stage("pairs", i, lambda: self._pairs(i))
        value = (self._stage("value", i, lambda: self._value(i, policy_dir)) if cfg.value.enabled else {})
        train = self._stage("train", i, lambda: self._train(i, policy_dir, int(pairs.get("count", 0))))
        value_out = self._latest_value(i + 1) if cfg.value.enabled else None
        ev = self._stage("eval", i, lambda: {"eval": self._evaluate(run.policy(i), value_out,
                                                                   stage_seed(cfg.seed, i, "eval"))})
        metrics = {
            "iteration": i,
            "policy_in": str(policy_dir),
            "search": search,
            "pairs": pairs,
            "value": value,
            "train": train,
            "eval": ev["eval"],
            "wall_s": {name: info.get("wall_s", 0.0) for name, info in
                       (("search", search), ("pairs", pairs), ("value", value), ("train", train), ("eval", ev))
                       if info},
        }
        atomic_write_json(run.metrics(i), metrics)
        self.summary()
        return metrics


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _jsonable(d: Any) -> dict[str, Any]:
    """A trainer's metrics as plain JSON values (floats, ints, strings, lists, dicts)."""
    return json.loads(json.dumps(dict(d or {}), default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _brief(info: dict[str, Any]) -> str:
    keys = ("trees", "nodes", "accuracy", "count", "auroc", "loss", "skipped")
    parts = [f"{k} {info[k]:.3g}" if isinstance(info.get(k), float) else f"{k} {info[k]}"
             for k in keys if info.get(k) is not None]
    if "eval" in info:
        e = info["eval"]
        parts.append(f"greedy {e['greedy_acc']:.3f} maj@{e['k']} {e['maj_acc']:.3f} pass@{e['k']} {e['pass_acc']:.3f}")
    parts.append(f"{info.get('wall_s', 0):.1f}s")
    return ", ".join(parts)


def run_loop(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run or resume `cfg` in `run_dir`; returns the summary."""
    return Loop(cfg, run_dir, resume=resume, progress=progress).run_all()
