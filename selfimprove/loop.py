"""The self-improvement loop: search → pairs → value model → policy → evaluation, iteration after iteration.

Each stage of each iteration writes its artifact atomically, then a completion marker (see rundir.py), so
`resume=True` skips finished stages and redoes the one a kill interrupted. Every stage is seeded from
(run seed, iteration, stage) and reads its inputs from disk, so a resumed run produces the same counts
as an uninterrupted one with the same seed.

Iteration i: training problems are drawn fresh (seeded by i); the policy is iter-(i-1)/policy (the base
policy for i = 0) and, when enabled, the value model iter-(i-1)/value; the DPO reference is the policy
at the start of the iteration. The held-out split is drawn once; the base policy is evaluated once
before iteration 0 (row -1 of the summary).

A little over 400 lines: the stages and the models they share (placement, the run's one vLLM engine, Ray
searchers) are one `Loop`; splitting the model handling into its own module is the next step if it grows.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from envs.errors import UserError
from envs.io import atomic_write_json, atomic_write_jsonl, atomic_write_text
from envs.progress import SILENT, Progress
from envs.registry import make_env
from selfimprove.config import TINY, RunConfig, config_diff, parse_config
from selfimprove.launch import launch_stage
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
    kw: dict[str, Any] = {"seed": tiny.seed, "knobs": knobs, "progress": progress, "overwrite": True}
    if tiny.steps is not None:
        kw["steps"] = tiny.steps
    return out, dict(build_tiny_policy(cfg.env.name, str(out), **kw))


class Loop:
    """Runs (or resumes) one configured run in one run directory."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
                 progress: Progress | None = None):
        self.cfg = cfg
        self.run = RunDir(run_dir)
        self.resume = resume
        self.overwrite = overwrite
        self.progress = progress or SILENT
        self.env = make_env(cfg.env.name, cfg.env.knobs)
        self.engine: Any = None  # the run's one vLLM engine (backend vllm), kept across stages
        self.prompt_policy = ""  # set once the base policy is known (`_run_all`)

    # --- models ---------------------------------------------------------------------------------
    def _placement(self, training: bool = False) -> dict[str, Any]:
        """policy.device / dtype / attn_implementation, resolved (checked already when the config loaded)."""
        from agents.devices import placement

        pol = self.cfg.policy
        attn = pol.attn_implementation
        if training and attn == "flash_attention_2" and pol.dtype in ("auto", "float32"):
            attn = "sdpa"  # fp32 master weights: flash-attn takes 16-bit tensors only
        where = placement(pol.device, pol.dtype, attn, training=training, prefix="policy.")
        return {"device": where.device, "dtype": where.dtype, "attn_implementation": where.attn_implementation}

    def _policy_recipe(self, path: str | Path, seed: int):
        """How to build a fresh HF backend on `path` (here, or in each Ray worker)."""
        from agents import load_policy

        return partial(load_policy, str(path), backend=self.cfg.policy.backend, seed=seed, **self._placement())

    def _policy(self, path: str | Path, seed: int):
        """A backend on `path`. HF: a fresh one per stage (cheap to load). vLLM: the run's one engine,
        started once and pointed at `path` (woken, reloaded in place or restarted as needed); search
        passes per-prefix seeds, so a kept engine samples what a fresh one would."""
        from agents import load_policy
        from agents.loading import resolve_model_path

        pol = self.cfg.policy
        if pol.backend != "vllm":
            return self._policy_recipe(path, seed)()
        if self.engine is None:
            self.engine = load_policy(str(path), backend="vllm", **pol.vllm.engine_kwargs(self.cfg.seed))
        elif self.engine.llm is None or getattr(self.engine, "asleep", False) or \
                resolve_model_path(path).checkpoint != self.engine.checkpoint:
            self.engine.reload(str(path))
        return self.engine

    def _done_with(self, policy) -> None:
        """Release a stage's backend: the kept vLLM engine stays up for the next stage."""
        if policy is not None and policy is not self.engine:
            policy.close()

    def _make_room(self) -> None:
        """Before training: the kept engine sleeps (vLLM sleep mode) or shuts down, freeing the GPU."""
        if self.engine is not None:
            self.engine.sleep()

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _value_recipe(self, path: Path | None):
        if path is None:
            return None
        from agents.value import HFValueModel

        return partial(HFValueModel, str(path), **self._placement())

    def _value_model(self, path: Path | None):
        recipe = self._value_recipe(path)
        return recipe() if recipe is not None else None

    @contextmanager
    def _searcher(self, policy_dir: Path, value_dir: Path | None, seed: int) -> Iterator[tuple[Any, Any, Any]]:
        """(run_search, policy, value model) for a search or eval stage: in this process (the run's kept
        vLLM engine, or a fresh HF backend), or over `search.workers` Ray actors that load the stage's
        models themselves."""
        s, pol = self.cfg.search, self.cfg.policy
        if s.workers == 1:
            from search.api import run_search

            policy = self._policy(policy_dir, seed)
            try:
                yield run_search, policy, self._value_model(value_dir)
            finally:
                self._done_with(policy)
            return
        from selfimprove.prompting import prompted_env
        from selfimprove.ray_search import searcher

        with searcher(s.workers, s.ray_address, partial(prompted_env, self.cfg.env.name, self.cfg.env.knobs,
                                                        self.cfg.prompt, self.prompt_policy),
                      self._policy_recipe(policy_dir, seed), self._value_recipe(value_dir),
                      backend=pol.backend, device=self._placement()["device"]) as found:
            yield found

    # --- setup ----------------------------------------------------------------------------------
    def _write_config(self) -> None:
        run = self.run
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
        with self._searcher(policy_dir, value_dir, seed) as (search_fn, policy, value_model):
            return evaluate(self.env, problems, policy, k=ev.k, temperature=ev.temperature, seed=seed,
                            max_batch=ev.max_batch, value_model=value_model,
                            search_algo=self.cfg.search.algo if ev.search else None,
                            search_config=self.cfg.search.config, progress=self.progress, runner=search_fn)

    def _search(self, i: int, policy_dir: Path, value_dir: Path | None) -> dict[str, Any]:
        from search.tree import write_trees
        from selfimprove.evaluate import answer_correct, tree_tokens

        cfg = self.cfg
        problems = self.env.load("train", cfg.search.problems, seed=stage_seed(cfg.seed, i, "problems"))
        seed = stage_seed(cfg.seed, i, "search")
        with self._searcher(policy_dir, value_dir, seed) as (search_fn, policy, value_model):
            result = search_fn(self.env, problems, policy, value_model, algo=cfg.search.algo,
                               config=cfg.search.config, seed=seed, max_batch=cfg.search.max_batch,
                               progress=self.progress)
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
        stats = dict(stats)
        from selfimprove.pairs.audit import audit_summary, has_step_check

        if has_step_check(self.env):  # label precision against the env's own step check (`pairs audit`)
            stats["audit"] = audit_summary(records, trees, self.env)
        return stats

    def _value(self, i: int, policy_dir: Path) -> dict[str, Any]:
        from search.tree import read_trees
        from selfimprove.train import fit_value

        v = self.cfg.value
        prev = self._latest_value(i)
        init = prev if prev is not None else policy_dir if v.init == "policy" else Path(v.init)
        trees = read_trees(self.run.trees(i))
        seed = stage_seed(self.cfg.seed, i, "value")
        launch = v.training.launch
        where = self._placement(training=True)
        self._make_room()
        try:
            with self.run.atomic_dir(self.run.value(i)) as tmp:
                if launch.launcher == "accelerate":
                    metrics = launch_stage(f"iter {i} value", ["train-value", "--trees", str(self.run.trees(i)),
                                                               "--init", str(init), "--out", str(tmp), "--seed",
                                                               str(seed), "--device", where["device"],
                                                               "--dtype", where["dtype"]],
                                           v.training.model_dump(mode="json", exclude={"launch"}),
                                           num_processes=launch.num_processes, config_file=launch.config_file)
                else:
                    metrics = fit_value(trees, tmp, v.training, init_from=str(init), seed=seed,
                                        progress=self.progress, **where)
        except UserError as e:  # e.g. no terminal nodes to learn from: keep the previous value model
            return {"skipped": str(e), "auroc": None}
        metrics = _jsonable(metrics)
        metrics.pop("history", None)
        metrics["auroc"] = metrics.get("heldout_auroc")
        metrics["ece"] = metrics.get("heldout_ece")  # the calibration report: also heldout_by_depth
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
            seed, launch = stage_seed(self.cfg.seed, i, "train"), self.cfg.train.launch
            where = self._placement(training=True)
            self._make_room()
            if launch.launcher == "accelerate":  # its own multi-process job (DDP / FSDP / DeepSpeed)
                metrics = launch_stage(f"iter {i} train", ["train", "--policy", str(policy_dir), "--data",
                                                           str(self.run.pairs(i)), "--out", str(tmp), "--ref",
                                                           str(policy_dir), "--seed", str(seed),
                                                           "--device", where["device"], "--dtype", where["dtype"],
                                                           "--attn", where["attn_implementation"]],
                                       self.cfg.train.model_dump(mode="json", exclude={"launch"}),
                                       num_processes=launch.num_processes, config_file=launch.config_file)
            else:
                metrics = fit_policy(str(policy_dir), str(self.run.pairs(i)), str(tmp), self.cfg.train,
                                     ref_dir=str(policy_dir), seed=seed, progress=self.progress, **where)
        metrics = _jsonable(metrics)
        metrics.pop("history", None)
        return metrics

    # --- the loop -------------------------------------------------------------------------------
    def run_all(self) -> dict[str, Any]:
        """Run every iteration not yet finished; returns the summary (also written to summary.json).

        The run directory is held (`RunDir.claim`: ours or free, locked against a second process) for
        the whole run; with `search.workers` > 1 one Ray runtime serves every stage."""
        cfg = self.cfg
        with self.run.claim(resume=self.resume, overwrite=self.overwrite):
            self._write_config()
            if cfg.search.workers > 1:  # each stage starts its own actors in this runtime
                from selfimprove.ray_search import ray_session

                with ray_session(cfg.search.ray_address):
                    return self._run_all()
            return self._run_all()

    def _run_all(self) -> dict[str, Any]:
        cfg, run = self.cfg, self.run
        base = self.base_policy()
        from selfimprove.prompting import apply_prompting

        self.prompt_policy = str(base)  # the tokenizer whose chat template renders every stage's prompts
        apply_prompting(self.env, cfg.prompt, self.prompt_policy)  # the same prompt text for every stage and iteration
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


def run_loop(cfg: RunConfig, run_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run, resume (`resume`) or start over (`overwrite`) `cfg` in `run_dir`; returns the summary."""
    loop = Loop(cfg, run_dir, resume=resume, overwrite=overwrite, progress=progress)
    try:
        return loop.run_all()
    finally:
        loop.close()
