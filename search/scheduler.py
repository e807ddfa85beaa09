"""The batching scheduler: runs many problems' searches at once and turns their requests into few model calls.

An algorithm is a generator per problem. It yields a list of requests (`Propose`, `Extend`, `Evaluate`) and
receives the list of their results, in order. The scheduler alternates a *policy phase* (every pending
`Propose`/`Extend` of every active problem, merged into one `policy.propose` call per (n, temperature),
chunked by `max_batch` sequences) and a *value phase* (every pending `Evaluate`, one `value.value` call per
chunk). After each phase every problem whose requests are all answered continues at once, so its next
request joins the very next phase; nobody waits for the slowest tree. New terminal nodes (and rollout
ends) are scored with one `env.score_many` call per phase.

Steps: a sample cut at `max_step_tokens` (finish "length") or blank ends its solution *unfinished*: a
terminal node scored 0 without asking the env, with nothing appended (it is never continued, so no
delimiter is faked onto it). EOS ends a solution: a step that ends with EOS is terminal and scored as
usual (its answer extracted); EOS right after a step (a blank sample) makes *that* node terminal and scored,
so no empty step is ever added and none counts toward depth (at the root, where there is no step yet, an
empty terminal child records that the model answered nothing).

Sampling seeds are derived per prefix from (search seed, problem index, the problem's request count, item),
so a problem's tree does not depend on which other problems shared its batches, and a prefix sampled again
later (a re-expansion, a sampled rollout) gets fresh samples.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from agents.base import MAX_STEP_TOKENS, Sample
from envs.base import Environment
from envs.progress import Progress
from search.context import SearchContext
from search.tree import ROOT, Node
from search.types import Evaluate, Extend, Policy, Propose, Request, RolloutStep, Search, ValueModel

# --- seeds --------------------------------------------------------------------------------------------


def mix_seed(*parts: int) -> int:
    """A 31-bit seed from integers (splitmix64 rounds): deterministic across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    mask = (1 << 64) - 1
    for p in parts:
        x = (x ^ (p & mask)) & mask
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        x ^= x >> 31
    return x & 0x7FFFFFFF


def _unfinished(sample: Sample) -> bool:
    """A step the model did not finish: cut at max_step_tokens, or blank. It ends the solution, scored 0
    (nothing is appended to it: no delimiter is faked onto a step the model did not end)."""
    return sample.finish_reason == "length" or (sample.finish_reason == "stop" and not sample.text.strip())


_PENDING = object()
# Something to score once the phase's samples are in: ((its search, the new terminal node or rollout step), steps).
_Scored = tuple[tuple[SearchContext, Node | RolloutStep], list[str]]


class _Job:
    __slots__ = ("ctx", "done", "gen", "reqs", "results", "todo")

    def __init__(self, ctx: SearchContext, gen: Search):
        self.ctx = ctx
        self.gen = gen
        self.reqs: list[Request] = []
        self.results: list[Any] = []
        self.todo = 0
        self.done = False


# --- the scheduler ----------------------------------------------------------------------------------


class Scheduler:
    """Drives searches (`(SearchContext, generator)` pairs) to completion with merged, chunked model calls."""

    def __init__(self, env: Environment, policy: Policy, value_model: ValueModel | None = None, *,
                 max_batch: int = 256, max_active: int | None = None, max_step_tokens: int = MAX_STEP_TOKENS,
                 top_p: float = 1.0, progress: Progress | None = None):
        self.env = env
        self.policy = policy
        self.value_model = value_model
        self.max_batch = max(1, int(max_batch))
        self.max_active = max_active
        self.max_step_tokens = max_step_tokens
        self.top_p = top_p
        self.progress = progress
        self.stop = list(env.stop)
        self.stats: dict[str, Any] = {
            "policy_calls": 0, "value_calls": 0, "policy_sequences": 0, "value_sequences": 0,
            "model_s": 0.0, "score_s": 0.0, "tokens": 0, "phases": 0, "expansions": 0,
        }

    # --- main loop ------------------------------------------------------------------------------
    def run(self, searches: Sequence[tuple[SearchContext, Search]]) -> None:
        total = len(searches)
        waiting = deque(_Job(c, g) for c, g in searches)
        max_active = self.max_active or total or 1
        active: list[_Job] = []
        finished = 0

        def start_more() -> None:
            nonlocal finished
            while waiting and len(active) < max_active:
                job = waiting.popleft()
                job.ctx.start = time.perf_counter()
                self._advance(job, None)
                if job.done:
                    finished += 1
                    self._finish(job, finished, total)
                else:
                    active.append(job)

        start_more()
        phase = 0
        while active:
            served = self._policy_phase(active) if phase == 0 else self._value_phase(active)
            phase ^= 1
            self.stats["phases"] += served
            still = []
            for job in active:
                if job.todo == 0:
                    self._advance(job, job.results)
                    if job.done:
                        finished += 1
                        self._finish(job, finished, total)
                        continue
                still.append(job)
            active = still
            start_more()

    def _advance(self, job: _Job, send: list[Any] | None) -> None:
        try:
            while True:
                reqs = next(job.gen) if send is None else job.gen.send(send)
                job.ctx.round += 1
                if reqs:
                    break
                send = []
        except StopIteration:
            job.done = True
            return
        for r in reqs:
            if not isinstance(r, (Propose, Extend, Evaluate)):
                raise TypeError(f"search yielded {type(r).__name__}, not a Propose/Extend/Evaluate request")
            if isinstance(r, Evaluate) and self.value_model is None:
                raise ValueError("search asked for values but no value model was given")
        job.reqs = reqs
        job.results = [_PENDING] * len(reqs)
        job.todo = len(reqs)

    def _finish(self, job: _Job, done: int, total: int) -> None:
        ctx = job.ctx
        ctx.tree.stats.update(tokens=ctx.tokens, simulations=ctx.simulations, rounds=ctx.round,
                              wall_s=round(time.perf_counter() - ctx.start, 6), nodes=len(ctx.tree))
        self.stats["tokens"] += ctx.tokens
        if self.progress is not None:
            self.progress.update(done, total)

    # --- policy phase ---------------------------------------------------------------------------
    def _policy_phase(self, active: list[_Job]) -> bool:
        env = self.env
        groups: dict[tuple[int, float], list[tuple[str, int, _Job, int, int]]] = {}
        served: list[tuple[_Job, int]] = []
        for job in active:
            ctx = job.ctx
            for ri, req in enumerate(job.reqs):
                if job.results[ri] is not _PENDING:
                    continue
                if isinstance(req, Propose):
                    tree = ctx.tree
                    items = [env.render(ctx.problem, tree.steps(i)) for i in req.node_ids]
                    key = (req.n, float(req.temperature))
                    self.stats["expansions"] += len(items)
                elif isinstance(req, Extend):
                    items = [env.render(ctx.problem, p) for p in req.paths]
                    key = (1, float(req.temperature))
                else:
                    continue
                job.results[ri] = [None] * len(items)
                served.append((job, ri))
                bucket = groups.setdefault(key, [])
                for k, prefix in enumerate(items):
                    bucket.append((prefix, mix_seed(ctx.seed, ctx.index, ctx.round, ri, k), job, ri, k))
        if not served:
            return False
        # Sample: one call per (n, temperature) group and chunk of at most max_batch sequences.
        for (n, temperature), bucket in groups.items():
            per_call = max(1, self.max_batch // max(1, n))
            for lo in range(0, len(bucket), per_call):
                chunk = bucket[lo:lo + per_call]
                outs = self._propose([c[0] for c in chunk], n, temperature, [c[1] for c in chunk])
                for (_, _, job, ri, k), samples in zip(chunk, outs, strict=True):
                    job.results[ri][k] = samples
        # Turn samples into tree nodes / rollout steps; collect everything to score in one call.
        to_score: list[_Scored] = []
        for job, ri in served:
            req, res = job.reqs[ri], job.results[ri]
            if isinstance(req, Propose):
                job.results[ri] = [self._expand(job.ctx, nid, samples, to_score)
                                   for nid, samples in zip(req.node_ids, res, strict=True)]
            elif isinstance(req, Extend):
                job.results[ri] = [self._rollout_step(job.ctx, path, samples[0], to_score)
                                   for path, samples in zip(req.paths, res, strict=True)]
            job.todo -= 1
        if to_score:
            t0 = time.perf_counter()
            items = [(target[0].problem, steps) for target, steps in to_score]
            scores = env.score_many(items)
            for (target, steps), s in zip(to_score, scores, strict=True):
                obj = target[1]
                obj.score = float(s)
                obj.answer = env.extract_answer(target[0].problem, steps)
            self.stats["score_s"] += time.perf_counter() - t0
        return True

    def _propose(self, prefixes: list[str], n: int, temperature: float, seeds: list[int]) -> list[list[Sample]]:
        # One seed per prefix, derived from (search seed, problem, the problem's request count, item): the
        # tree does not depend on batch-mates, and a prefix sampled again later gets fresh samples.
        t0 = time.perf_counter()
        out = self.policy.propose(prefixes, n, stop=self.stop, temperature=temperature, top_p=self.top_p,
                                  max_step_tokens=self.max_step_tokens, seed=seeds)
        self.stats["model_s"] += time.perf_counter() - t0
        self.stats["policy_calls"] += 1
        self.stats["policy_sequences"] += len(prefixes) * n
        return out

    def _expand(self, ctx: SearchContext, node_id: int, samples: list[Sample], to_score: list[_Scored]
                ) -> list[int]:
        """Add the samples under `node_id` (merging identical steps), renormalise priors; child id per sample."""
        tree = ctx.tree
        parent = tree.node(node_id)
        kids = tree.children(node_id)
        by_text = {c.step: c for c in kids}
        log_mass = ctx.log_mass
        alpha = ctx.prior_alpha
        env = self.env
        steps: list[str] | None = None
        out = []
        for s in samples:
            ntok = len(s.token_ids)
            ctx.tokens += ntok
            if s.finish_reason == "eos" and node_id != ROOT and not s.text.strip():
                # EOS right after the parent's step: the solution ended there (no empty step is made)
                if not parent.terminal:
                    parent.terminal, parent.finish_reason = True, "eos"
                    to_score.append(((ctx, parent), tree.steps(node_id)))
                out.append(node_id)
                continue
            lp = float(sum(s.token_logprobs))
            lm = lp / (max(1, len(s.token_logprobs)) ** alpha)
            child = by_text.get(s.text)
            if child is None:
                if steps is None:
                    steps = tree.steps(node_id)
                child_steps = [*steps, s.text]
                unfinished = _unfinished(s)
                terminal = (unfinished or s.finish_reason == "eos" or parent.depth + 1 >= ctx.max_depth
                            or env.is_terminal(ctx.problem, child_steps))
                child = tree.add_child(node_id, s.text, num_tokens=ntok, logprob=lp, terminal=terminal,
                                       finish_reason=s.finish_reason, checkpoint=ctx.checkpoint)
                if ctx.step_check:
                    child.check = env.check_step(ctx.problem, steps, s.text)
                by_text[s.text] = child
                log_mass[child.id] = lm
                if unfinished:
                    child.score = 0.0
                elif terminal:
                    to_score.append(((ctx, child), child_steps))
            else:
                a = log_mass[child.id]
                log_mass[child.id] = max(a, lm) + math.log1p(math.exp(-abs(a - lm)))
            out.append(child.id)
        if not kids:
            pass
        elif len(kids) == 1:
            kids[0].prior = 1.0
        else:
            top = max(log_mass[c.id] for c in kids)
            w = [math.exp(log_mass[c.id] - top) for c in kids]
            z = sum(w)
            for c, wi in zip(kids, w, strict=True):
                c.prior = wi / z
        return out

    def _rollout_step(self, ctx: SearchContext, path: list[str], sample: Sample, to_score: list[_Scored]
                      ) -> RolloutStep:
        ntok = len(sample.token_ids)
        ctx.tokens += ntok
        if sample.finish_reason == "eos" and path and not sample.text.strip():
            step = RolloutStep("", ntok, True)  # EOS after the last step: the solution is `path`
            to_score.append(((ctx, step), list(path)))
            return step
        steps = [*path, sample.text]
        unfinished = _unfinished(sample)
        terminal = (unfinished or sample.finish_reason == "eos" or len(steps) >= ctx.max_depth
                    or self.env.is_terminal(ctx.problem, steps))
        step = RolloutStep(sample.text, ntok, terminal)
        if ctx.step_check:
            step.check = self.env.check_step(ctx.problem, path, sample.text)
        if unfinished:
            step.score = 0.0
        elif terminal:
            to_score.append(((ctx, step), steps))
        return step

    # --- value phase ----------------------------------------------------------------------------
    def _value_phase(self, active: list[_Job]) -> bool:
        env = self.env
        served = False
        bucket: list[tuple[str, Node, _Job, int, int]] = []
        for job in active:
            ctx = job.ctx
            for ri, req in enumerate(job.reqs):
                if isinstance(req, Evaluate) and job.results[ri] is _PENDING:
                    job.results[ri] = [0.0] * len(req.node_ids)
                    for k, i in enumerate(req.node_ids):
                        node = ctx.tree.node(i)
                        bucket.append((env.render(ctx.problem, ctx.tree.steps(i)), node, job, ri, k))
                    job.todo -= 1
                    served = True
        vm = self.value_model
        for lo in range(0, len(bucket), self.max_batch):
            if vm is None:  # _advance turned such searches away already
                raise ValueError("search asked for values but no value model was given")
            chunk = bucket[lo:lo + self.max_batch]
            t0 = time.perf_counter()
            values = vm.value([c[0] for c in chunk])
            self.stats["model_s"] += time.perf_counter() - t0
            self.stats["value_calls"] += 1
            self.stats["value_sequences"] += len(chunk)
            for (_, node, job, ri, k), v in zip(chunk, values, strict=True):
                node.value = float(v)
                job.results[ri][k] = float(v)
        return served
