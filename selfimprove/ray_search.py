"""Search fanned out over Ray actors: each worker holds its own backend (HF, or a vLLM engine on its GPU)
and searches its share of the problems; the driver merges the trees once every share is done.

Nothing here schedules or talks RPC by itself: the workers are Ray actors, the driver waits with
`ray.wait` / `ray.get`. The problems are cut into one contiguous share per worker; each problem keeps
its index in the whole list, and sampling seeds depend only on (seed, problem index, prefix), so the
trees are the ones a one-worker run builds. A worker that dies has its share retried on a live one (or
a fresh actor when none is left). Progress is the sum of what the workers report. A local Ray runtime
starts by itself when no address is given and shuts down at the end; an existing `ray.init` is reused
and left running. `searcher` is what commands and the loop call: with one worker it searches in this
process and Ray is never imported (this module imports it only inside the functions that need it).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel

from envs.base import Environment
from envs.errors import UserError
from envs.progress import SILENT, Progress
from envs.types import Problem
from search.api import SearchResult
from search.tree import Tree

POLL_S = 0.5      # how often the driver asks the workers how far they got
MAX_TRIES = 3     # a share is tried on this many workers before the run fails
SUMMED = ("problems", "answered", "nodes", "simulations", "expansions", "backend_calls", "policy_calls",
          "value_calls", "tokens", "model_s", "score_s", "tampering")


@contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[bool]:
    """Ray, connected: to `address` (a cluster's `host:port`, `ray://host:port` or "auto"), to the runtime
    this process already started, or to a local runtime started here and shut down on exit. Yields
    whether this call started it. An unreachable address is a UserError."""
    import ray

    if ray.is_initialized():
        yield False
        return
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
        except Exception as e:  # ConnectionError, or Ray's own on a refused handshake
            raise UserError(f"--ray-address {address}: could not connect to a Ray cluster there "
                            f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield True
    finally:
        ray.shutdown()


def _check_reachable(address: str) -> None:
    """A host:port address must accept a TCP connection (Ray itself retries for a long time first)."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address}: expected host:port, ray://host:port or 'auto'")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise UserError(f"--ray-address {address}: no Ray cluster reachable there ({e.strerror or e})") from None


def shares(n: int, workers: int) -> list[range]:
    """Problem indices cut into `workers` contiguous shares, sizes differing by at most one (none empty)."""
    k = max(1, min(workers, n))
    return [range(i * n // k, (i + 1) * n // k) for i in range(k)]


class _Worker:
    """A Ray actor: an environment, a policy and an optional value model of its own, searching shares."""

    def __init__(self, make_env: Callable[[], Environment], make_policy: Callable[[], Any],
                 make_value: Callable[[], Any] | None):
        try:
            from selfimprove.cli.app import quiet_transformers

            quiet_transformers()
        except ImportError:
            pass
        self.env = make_env()
        self.policy = make_policy()
        self.value = make_value() if make_value is not None else None
        self.done: dict[int, int] = {}

    def ready(self) -> bool:
        return True

    def search(self, share: int, indices: Sequence[int], problems: Sequence[Problem], algo: str,
               config: Mapping[str, Any], seed: int, max_batch: int, use_value: bool
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from search.api import run_search

        done = self.done

        class _Count(Progress):
            def update(self, n: int, total: int | None = None, **info: Any) -> None:
                done[share] = n

        result = run_search(self.env, problems, self.policy, self.value if use_value else None, algo=algo,
                            config=config, seed=seed, max_batch=max_batch, progress=_Count(), indices=indices)
        return [t.to_json() for t in result.trees], result.stats

    def progress(self) -> dict[int, int]:
        return dict(self.done)


class SearchPool:
    """`workers` Ray actors, each with its own backend, that search problems together (`run_search`).

    make_env / make_policy / make_value build the worker's models (picklable: functools.partial of
    `envs.registry.make_env`, `agents.load_policy`, ...). Each actor asks Ray for `cpus` CPUs and `gpus`
    GPUs; more workers than the cluster holds is a UserError before any actor starts.
    """

    def __init__(self, workers: int, make_env: Callable[[], Environment], make_policy: Callable[[], Any],
                 make_value: Callable[[], Any] | None = None, *, cpus: float = 1.0, gpus: float = 0.0):
        import ray

        need = {"CPU": workers * cpus, "GPU": workers * gpus}
        have = ray.cluster_resources()
        for kind, n in need.items():
            if n > have.get(kind, 0.0):
                raise UserError(f"--workers {workers} needs {n:g} {kind}s for its actors ({cpus:g} CPU"
                                f"{f', {gpus:g} GPU' if gpus else ''} each) but the Ray cluster has "
                                f"{have.get(kind, 0.0):g}")
        # max_concurrency 2: `progress` answers while `search` runs.
        self._actor_cls: Any = ray.remote(_Worker).options(num_cpus=cpus, num_gpus=gpus, max_concurrency=2)
        self._args = (make_env, make_policy, make_value)
        self.actors: list[Any] = [self._start() for _ in range(workers)]
        self.retries = 0
        try:
            ray.get([a.ready.remote() for a in self.actors])
        except Exception as e:
            self.close()
            raise _cause(e) from None

    def _start(self):
        return self._actor_cls.remote(*self._args)

    def close(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []

    def __enter__(self) -> SearchPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run_search(self, env: Environment, problems: Sequence[Problem], policy: Any = None, value_model: Any = None,
                   *, algo: str = "mcts", config: Mapping[str, Any] | BaseModel | None = None, seed: int = 0,
                   max_batch: int = 256, progress: Progress | None = None) -> SearchResult:
        """`search.api.run_search`, over the workers (same arguments; `env`, `policy` are the workers' own;
        a `value_model` other than None means "use the workers' value model"). Same trees as one worker."""
        import ray
        from ray.exceptions import RayActorError

        progress = progress or SILENT
        cfg = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config or {})
        parts = shares(len(problems), len(self.actors))
        t0 = time.perf_counter()

        def submit(s: int, actor) -> Any:
            idx = list(parts[s])
            return actor.search.remote(s, idx, [problems[i] for i in idx], algo, cfg, seed, max_batch,
                                       value_model is not None)

        pending = {submit(s, self.actors[s]): (s, self.actors[s]) for s in range(len(parts))}
        tries = dict.fromkeys(range(len(parts)), 1)
        seen = dict.fromkeys(range(len(parts)), 0)
        results: dict[int, tuple[list[dict[str, Any]], dict[str, Any]]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in ready:
                s, actor = pending.pop(ref)
                try:
                    results[s] = ray.get(ref)
                    seen[s] = len(parts[s])
                except RayActorError:  # the worker died: its share goes to a live one
                    self._drop(actor)
                    if tries[s] >= MAX_TRIES:
                        raise UserError(f"search share {s} (problems {parts[s].start}–{parts[s].stop - 1}) failed "
                                        f"on {MAX_TRIES} workers; see the Ray logs") from None
                    tries[s] += 1
                    self.retries += 1
                    seen[s] = 0
                    other = self._live_or_new(pending)
                    pending[submit(s, other)] = (s, other)
                except Exception as e:
                    raise _cause(e) from None
            self._poll(pending, seen)
            progress.update(sum(seen.values()), len(problems))
        trees = [Tree.from_json(d) for s in range(len(parts)) for d in results[s][0]]
        return SearchResult(trees, self._merge([results[s][1] for s in range(len(parts))], trees,
                                               time.perf_counter() - t0))

    def _drop(self, actor) -> None:
        self.actors = [a for a in self.actors if a is not actor]

    def _live_or_new(self, pending: Mapping[Any, tuple[int, Any]]):
        """The live worker with the least queued work, or a fresh actor when none is left."""
        if not self.actors:
            self.actors.append(self._start())
        load = {id(a): 0 for a in self.actors}
        for _, a in pending.values():
            if id(a) in load:
                load[id(a)] += 1
        return min(self.actors, key=lambda a: load[id(a)])

    def _poll(self, pending: Mapping[Any, tuple[int, Any]], seen: dict[int, int]) -> None:
        """How far each running share got (a worker that does not answer in time is asked again later)."""
        import ray

        busy = {id(a): a for _, a in pending.values()}
        refs = [a.progress.remote() for a in busy.values()]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
        for ref in done:
            try:
                report = ray.get(ref)
            except Exception:  # a dying worker: the search future says so
                continue
            running = {share for share, _ in pending.values()}
            for s, n in report.items():
                if s in running:
                    seen[s] = max(seen[s], n)

    def _merge(self, stats: Sequence[Mapping[str, Any]], trees: Sequence[Tree], wall: float) -> dict[str, Any]:
        from search.api import tree_score

        out: dict[str, Any] = {"algo": stats[0].get("algo") if stats else None}
        for k in SUMMED:
            out[k] = sum(s.get(k, 0) for s in stats)
        seqs = sum(s.get("mean_batch", 0.0) * s.get("backend_calls", 0) for s in stats)
        out["mean_batch"] = seqs / out["backend_calls"] if out["backend_calls"] else 0.0
        out["accuracy"] = sum(tree_score(t) >= 1.0 for t in trees) / len(trees) if trees else 0.0
        out["wall_s"] = wall
        out["workers"] = len(stats)
        out["retries"] = self.retries
        # Model time summed over workers, against the wall time all of them had.
        out["model_share"] = out["model_s"] / (wall * len(stats)) if wall > 0 and stats else 0.0
        return out


def _cause(e: Exception) -> Exception:
    """The worker's own exception out of Ray's wrapper (a UserError stays one sentence)."""
    from ray.exceptions import RayTaskError

    if isinstance(e, RayTaskError):
        cause = e.cause if getattr(e, "cause", None) is not None else e
        if isinstance(cause, UserError):
            return UserError(str(cause))
        return cause
    return e


@contextmanager
def searcher(workers: int, address: str | None, make_env: Callable[[], Any], make_policy: Callable[[], Any],
             make_value: Callable[[], Any] | None = None, *, backend: str = "hf", device: str = "cpu"
             ) -> Iterator[tuple[Callable[..., Any], Any, Any]]:
    """(run_search, policy, value model) for a command: in this process with --workers 1 (Ray is not
    imported), else a `selfimprove.ray_search.SearchPool` whose workers build their own models (each
    asking Ray for a GPU when the backend is vLLM or the device CUDA, else a CPU)."""
    if workers == 1:
        from search.api import run_search

        policy = make_policy()
        try:
            yield run_search, policy, make_value() if make_value is not None else None
        finally:
            getattr(policy, "close", lambda: None)()
        return
    cpus, gpus = worker_resources(backend, device)
    with ray_session(address), SearchPool(workers, make_env, make_policy, make_value, cpus=cpus, gpus=gpus) as pool:
        yield pool.run_search, None, True if make_value is not None else None


def worker_resources(backend: str, device: str) -> tuple[float, float]:
    """(CPUs, GPUs) one worker asks Ray for: a GPU for a vLLM engine or a CUDA device, else one CPU."""
    gpu = backend == "vllm" or device.startswith("cuda")
    return 1.0, 1.0 if gpu else 0.0
