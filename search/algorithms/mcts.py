"""Monte Carlo tree search over steps (PUCT / AlphaZero-PUCT / UCT), batched through the scheduler.

One simulation: select a leaf from the search root (virtual loss lets `parallel_leaves` selections share a
round), expand it (`expand_n` proposed steps, identical ones merged), value it (value model, rollout, or
the verifier for a terminal), back the value up (running mean, or the MCTS-DPO edge-reward form).
Unvisited children are scored by their value-model estimate (`unvisited="value"`) or by the prior alone.
With `step_check`, a step the env's process verifier rejects is a dead end: valued wrong_value, never
expanded, and a rollout that reaches one stops there; a node whose children are all dead ends is expanded
again.

Modes: `full` runs `simulations` simulations from the root; `commit` (MCTS-DPO) runs `simulations` per
root (`first_root_factor` × at the first), commits a child (by visits, or sampled from Q with a
temperature decaying with depth) and continues from it until a terminal node.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from envs.errors import UserError
from search.algorithms.common import (
    ProcessCheckConfig,
    alphazero_w,
    backup_mcts_dpo,
    backup_mean,
    best_node,
    need_value,
    prior_estimate,
    set_answer,
    terminals_below,
    verdict_value,
)
from search.scheduler import Evaluate, Extend, Propose, RolloutStep, Search, SearchContext
from search.tree import Node

_BIG = 1e9


class MCTSConfig(ProcessCheckConfig):
    simulations: int = Field(32, ge=1, description="Simulations (full mode), or per root (commit mode).")
    mode: Literal["full", "commit"] = "full"
    first_root_factor: float = Field(4.0, ge=1, description="Commit mode: more simulations at the first root.")
    commit_by: Literal["visits", "q_sample"] = "visits"
    commit_temperature: float = Field(1.0, ge=0, description="q_sample: softmax temperature at depth 0.")
    commit_temperature_decay: float = Field(0.5, ge=0, le=1, description="q_sample: temperature × this per depth.")
    expand_n: int = Field(4, ge=1, description="Steps proposed per expansion.")
    parallel_leaves: int = Field(4, ge=1, description="Leaves selected per problem per round (virtual loss).")
    selection: Literal["puct", "alphazero", "uct"] = "puct"
    c_puct: float = Field(1.0, ge=0, description="PUCT exploration weight w.")
    c_init: float = Field(1.25, ge=0)
    c_base: float = Field(19652.0, gt=0)
    c_uct: float = Field(1.414, ge=0)
    unvisited: Literal["auto", "value", "prior"] = Field(
        "auto", description="Q of an unvisited child: its value estimate, or `fpu` (prior decides); "
                            "auto = value when a value model is given.")
    fpu: float = Field(0.0, description="Q of an unvisited child when scored by the prior.")
    rollout_weight: float | None = Field(
        None, ge=0, le=1, description="Leaf value = (1-λ)·value + λ·rollout verdict; auto = 0 with a value "
                                      "model, else 1 (verifier on) or 0.")
    rollout_temperature: float = Field(0.0, ge=0, description="0 = greedy rollouts (cached per node).")
    keep_rollouts: bool = Field(True, description="Rollout steps become unvisited tree nodes (their endings "
                                                  "are answers the search can return); else off-tree.")
    backup: Literal["mean", "mcts_dpo"] = "mean"
    gamma: float = Field(1.0, ge=0, description="mcts_dpo: Q = r + gamma · V(child).")
    virtual_loss_value: float = Field(-1.0, description="Value each pending (virtual) visit counts as.")
    root_noise_eps: float = Field(0.0, ge=0, le=1, description="Dirichlet noise weight on root priors (0 = off).")
    root_noise_alpha: float = Field(0.3, gt=0)
    answer_rule: Literal["path", "visits", "q"] = Field(
        "path", description="path: best terminal below the deepest node of the most-visited (committed) "
                            "path that has one (verified-correct first when the verifier may be used); "
                            "visits: most visited terminal; q: highest-Q terminal.")


class _MCTS:
    """Selection and backup state of one problem's search."""

    def __init__(self, ctx: SearchContext, cfg: MCTSConfig):
        self.ctx, self.cfg, self.tree = ctx, cfg, ctx.tree
        self.use_value = ctx.has_value
        if cfg.unvisited == "value":
            need_value(ctx.has_value, "mcts unvisited='value'")
        self.unvisited_value = cfg.unvisited == "value" or (cfg.unvisited == "auto" and ctx.has_value)
        lam = cfg.rollout_weight
        if lam is None:
            lam = 0.0 if ctx.has_value else (1.0 if cfg.verifier else 0.0)
        if lam > 0 and not cfg.verifier:
            raise UserError("mcts rollout_weight > 0 needs verifier=true (a rollout is scored by the verifier)")
        self.lam = lam
        self.v0: dict[int, float] = {}     # each node's own value (its leaf value at first visit)
        self.noise: dict[int, float] = {}  # noisy priors of the current root's children
        self.noised_root: int | None = None
        self.expanded: set[int] = set()          # nodes MCTS expanded (rollout steps do not count)
        self.greedy_next: dict[int, int] = {}     # greedy rollouts: a node's temperature-0 next step
        self.rollout_verdict: dict[int, float] = {}  # greedy rollouts: verdict reached from a node

    # --- selection ------------------------------------------------------------------------------
    def unvisited_q(self, c: Node) -> float:
        if c.terminal and self.cfg.verifier and c.score is not None:
            return verdict_value(c, self.cfg)
        if c.check is False:
            return self.cfg.wrong_value
        if self.unvisited_value and c.value is not None:
            return c.value
        return self.cfg.fpu

    def score(self, parent: Node, c: Node) -> float:
        """Selection score of child `c` (virtual visits count as visits worth virtual_loss_value)."""
        cfg = self.cfg
        n_parent = max(1, parent.visits + parent.virtual_loss)
        n = c.visits + c.virtual_loss
        q = (c.value_sum + cfg.virtual_loss_value * c.virtual_loss) / n if n else self.unvisited_q(c)
        prior = self.noise.get(c.id, c.prior) if self.noise else c.prior
        if cfg.selection == "uct":
            if n == 0:
                return _BIG + (q if self.unvisited_value else prior)
            return q + cfg.c_uct * math.sqrt(math.log(n_parent) / n)
        w = cfg.c_puct if cfg.selection == "puct" else alphazero_w(n_parent, cfg.c_init, cfg.c_base)
        return q + w * prior * math.sqrt(n_parent) / (1 + n)

    def select(self, root: Node) -> list[Node]:
        """Descend from `root` by the selection score to a leaf: unexpanded, terminal, or expanded with
        every child rejected by the env's step check (it is expanded again: fresh samples may hold a
        right step)."""
        kids_of = self.tree._kids
        path = [root]
        node = root
        expanded = self.expanded
        step_check = self.cfg.step_check
        while not node.terminal and node.id in expanded:
            kids = kids_of[node.id]
            if not kids or (step_check and all(c.check is False for c in kids)):
                break
            best, best_s = kids[0], -math.inf
            for c in kids:
                s = self.score(node, c)
                if s > best_s:
                    best, best_s = c, s
            node = best
            path.append(node)
        return path

    # --- values and backup ----------------------------------------------------------------------
    def leaf_value(self, leaf: Node, rollout: float | None) -> float:
        if leaf.terminal:
            if self.cfg.verifier and leaf.score is not None:
                return verdict_value(leaf, self.cfg)
            return leaf.value if leaf.value is not None else 0.0
        if leaf.check is False:
            return self.cfg.wrong_value
        est = leaf.value if leaf.value is not None else prior_estimate(leaf)
        if rollout is None or self.lam == 0:
            return est
        return (1 - self.lam) * est + self.lam * rollout

    def backup(self, path: list[Node], v: float) -> None:
        if self.cfg.backup == "mean":
            backup_mean(path, v)
        else:
            backup_mcts_dpo(self.tree, path, v, self.v0, self.cfg.gamma)
        self.ctx.simulations += 1

    def add_root_noise(self, root: Node) -> None:
        kids = self.tree._kids[root.id]
        if self.cfg.root_noise_eps <= 0 or not kids or self.noised_root == root.id:
            return
        eta = self.ctx.rng.dirichlet([self.cfg.root_noise_alpha] * len(kids))
        e = self.cfg.root_noise_eps
        self.noise = {c.id: (1 - e) * c.prior + e * float(x) for c, x in zip(kids, eta, strict=True)}
        self.noised_root = root.id

    # --- simulations ----------------------------------------------------------------------------
    def simulate(self, root: Node, budget: int) -> Search:
        """Run up to `budget` simulations from `root`, `parallel_leaves` per round."""
        cfg, tree = self.cfg, self.tree
        done = 0
        self.add_root_noise(root)
        while done < budget and not self.ctx.out_of_budget():
            batch: list[list[Node]] = []
            pending: set[int] = set()
            while len(batch) < cfg.parallel_leaves and done + len(batch) < budget:
                path = self.select(root)
                leaf = path[-1]
                if leaf.check is False or (
                        leaf.terminal and (cfg.verifier or leaf.value is not None or not self.use_value)):
                    self.backup(path, self.leaf_value(leaf, None))  # known value: no model needed
                    done += 1
                    continue
                if leaf.id in pending:
                    break  # every path leads to a leaf already being expanded this round
                for node in path:
                    node.virtual_loss += 1
                batch.append(path)
                pending.add(leaf.id)
            if not batch:
                continue
            leaves = [p[-1] for p in batch]
            expand = [leaf for leaf in leaves if not leaf.terminal]
            need_v = [leaf.id for leaf in leaves if self.use_value and leaf.value is None]
            verdicts: dict[int, float] = {}
            ro = _Rollouts(self, expand) if self.lam > 0 else None
            reqs: list = []
            if expand:
                reqs.append(Propose([leaf.id for leaf in expand], cfg.expand_n, cfg.temperature))
                self.expanded.update(leaf.id for leaf in expand)
            if need_v:
                reqs.append(Evaluate(need_v))
            first = True
            while True:
                roll_req = ro.request() if ro is not None else None
                if roll_req is not None:
                    reqs.append(roll_req)
                if not reqs:
                    break
                results = yield reqs
                if roll_req is not None:
                    ro.receive(results[-1])  # the rollout request is always last
                reqs = []
                if first and self.unvisited_value and expand:
                    # Children of the expanded leaves (rollout first steps included) get value estimates.
                    todo = [c.id for leaf in expand for c in tree._kids[leaf.id]
                            if c.value is None and not (c.terminal and cfg.verifier)]
                    if todo:
                        reqs.append(Evaluate(todo))
                first = False
            if ro is not None:
                verdicts = ro.verdicts
            if root.id in pending:
                self.add_root_noise(root)
            for path in batch:
                for node in path:
                    node.virtual_loss -= 1
                leaf = path[-1]
                self.backup(path, self.leaf_value(leaf, verdicts.get(leaf.id)))
                done += 1

    def commit_child(self, root: Node) -> Node | None:
        """The child commit mode continues from (never a step the env's check rejected, while any other)."""
        kids = [c for c in self.tree._kids[root.id] if c.check is not False] or self.tree._kids[root.id]
        kids = [c for c in kids if c.visits] or kids
        if not kids:
            return None
        if self.cfg.commit_by == "visits":
            return max(kids, key=lambda c: (c.visits, c.q))
        t = self.cfg.commit_temperature * self.cfg.commit_temperature_decay ** root.depth
        q = np.array([c.q for c in kids])
        if t <= 1e-6:
            return kids[int(np.argmax(q))]
        p = np.exp((q - q.max()) / t)
        return kids[int(self.ctx.rng.choice(len(kids), p=p / p.sum()))]

    def choose_answer(self, committed: list[Node]) -> Node | None:
        tree, cfg = self.tree, self.cfg
        if cfg.answer_rule != "path":
            key = (lambda n: (n.visits, n.q)) if cfg.answer_rule == "visits" else (lambda n: (n.q, n.visits))
            terms = tree.terminals() if cfg.verifier else ([n for n in tree.terminals() if n.visits]
                                                           or tree.terminals())
            return best_node(terms, key, cfg)
        path = list(committed)
        while not path[-1].terminal and tree._kids[path[-1].id]:
            path.append(max(tree._kids[path[-1].id], key=lambda c: (c.visits, c.q)))
        # The deepest node on that path with a terminal below it (a verified-correct one when the
        # verifier may be used); its best terminal is the answer.
        for node in reversed(path):
            terms = terminals_below(tree, node.id)
            if cfg.verifier and any(t.correct for t in terms):
                terms = [t for t in terms if t.correct]
            elif cfg.verifier and node is not path[0]:
                continue
            if terms:
                return best_node(terms, lambda n: (n.visits, n.q), cfg)
        return None


class _Rollouts:
    """The rollouts of one round, advanced one step per round for all leaves together.

    keep_rollouts: each step is a `Propose(n=1)` on the tree, so rollout steps become (unvisited) nodes and
    a correct ending a rollout finds is an answer the search can return; a node counts as expanded only
    once MCTS expanded it. Greedy rollouts (temperature 0) are deterministic, so each node's greedy next
    step and rollout verdict are cached and never generated twice. Otherwise rollouts are off-tree
    (`Extend`).
    """

    def __init__(self, st: _MCTS, leaves: list[Node]):
        self.st = st
        self.keep = st.cfg.keep_rollouts
        self.greedy = st.cfg.rollout_temperature == 0
        self.verdicts: dict[int, float] = {}
        self.cur: dict[int, int] = {leaf.id: leaf.id for leaf in leaves}         # keep: leaf -> node
        self.chain: dict[int, list[int]] = {leaf.id: [leaf.id] for leaf in leaves}
        self.off: dict[int, list[str]] = {} if self.keep else {
            leaf.id: st.tree.steps(leaf.id) for leaf in leaves}
        self.asked: list[int] = []

    def _ending(self, x: Node | RolloutStep) -> float | None:
        """The rollout's verdict if it ends at `x` (a tree node or an off-tree step): a terminal's verdict,
        wrong_value at a step the env's check rejected; None while it goes on."""
        if x.terminal:
            return verdict_value(x, self.st.cfg)
        return self.st.cfg.wrong_value if x.check is False else None

    def _done(self, lid: int, v: float) -> None:
        self.verdicts[lid] = v
        if self.keep and self.greedy:
            for i in self.chain[lid]:
                self.st.rollout_verdict[i] = v
        self.cur.pop(lid, None)
        self.off.pop(lid, None)

    def request(self):
        st, tree = self.st, self.st.tree
        if not self.keep:
            self.asked = list(self.off)
            return Extend(list(self.off.values()), st.cfg.rollout_temperature) if self.off else None
        for lid in list(self.cur):  # walk what is already known without asking the model
            i = self.cur[lid]
            while True:
                v = self._ending(tree._nodes[i])
                if v is not None:
                    self._done(lid, v)
                    break
                if self.greedy and i in st.rollout_verdict:
                    self._done(lid, st.rollout_verdict[i])
                    break
                nxt = st.greedy_next.get(i) if self.greedy else None
                if nxt is None:
                    self.cur[lid] = i
                    break
                i = nxt
                self.chain[lid].append(i)
        self.asked = list(self.cur)
        if not self.asked:
            return None
        return Propose([self.cur[lid] for lid in self.asked], 1, st.cfg.rollout_temperature)

    def receive(self, res) -> None:
        st, tree = self.st, self.st.tree
        if not self.keep:
            for lid, step in zip(self.asked, res, strict=True):
                v = self._ending(step)
                if v is not None:
                    self._done(lid, v)
                else:
                    self.off[lid].append(step.text)
            return
        for lid, ids in zip(self.asked, res, strict=True):
            if self.greedy:
                st.greedy_next[self.cur[lid]] = ids[0]
            self.cur[lid] = ids[0]
            self.chain[lid].append(ids[0])
            v = self._ending(tree._nodes[ids[0]])
            if v is not None:
                self._done(lid, v)


def mcts(ctx: SearchContext) -> Search:
    """MCTS over one problem; sets tree.answer / tree.answer_node."""
    cfg: MCTSConfig = ctx.config
    st = _MCTS(ctx, cfg)
    tree = ctx.tree
    root = tree.root
    committed = [root]
    if cfg.mode == "full":
        yield from st.simulate(root, cfg.simulations)
    else:
        first = True
        while not root.terminal and not ctx.out_of_budget():
            budget = round(cfg.simulations * (cfg.first_root_factor if first else 1))
            yield from st.simulate(root, budget)
            first = False
            child = st.commit_child(root)
            if child is None:
                break
            root = child
            committed.append(root)
        tree.stats["committed"] = [n.id for n in committed]
    set_answer(tree, st.choose_answer(committed))
