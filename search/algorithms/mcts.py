"""Monte Carlo tree search over steps (PUCT / AlphaZero-PUCT / UCT), batched through the scheduler.

One simulation: select a leaf from the search root (virtual loss lets `parallel_leaves` selections share a
round), expand it (`expand_n` proposed steps, identical ones merged), value it (value model, rollout, or
the verifier for a terminal), back the value up (running mean, or the MCTS-DPO edge-reward form).
Unvisited children are scored by their value-model estimate (`unvisited="value"`) or by the prior alone.
With `step_check`, a step the env's process verifier rejects is a dead end: valued wrong_value, never
expanded, and a rollout that reaches one stops there; a node whose children are all dead ends is expanded
again.

Turning budget into coverage (off by default): a simulation that ends on a terminal whose verdict is known
buys nothing but a repeated number. `widen="reexpand"` never selects a known child (a scored terminal, a
rejected step, a step the value model prunes) while a sibling is open, and expands a node whose children
are all known again (fresh samples); `widen="progressive"` (progressive widening) lets a node hold
`ceil(pw_k · N^pw_alpha)` sampled steps and samples more as its visit count N grows, plus the re-expansion
rule. `prune_below` makes a child the value model rates below it a dead end (a learned step check);
`stop_when_found` ends the search once the verifier confirms an answer (coverage at the fewest tokens).

The parts, each small: the selection rule (`selection.py`: PUCT, AlphaZero-PUCT or UCT) and the node
values (`values.node_value`: unvisited children, leaves) are bound once per search; a round selects a
batch of leaves (`select_batch`), asks for their expansions, values and rollouts (`evaluate_batch`;
rollouts in `rollouts.py`) and backs the batch up (`backup_batch`).

Modes: `full` runs `simulations` simulations from the root; `commit` (MCTS-DPO) runs `simulations` per
root (`first_root_factor` × at the first), commits a child (by visits, or sampled from Q with a
temperature decaying with depth) and continues from it until a terminal node.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Literal

import numpy as np
from pydantic import Field

from envs.errors import UserError
from search.algorithms.common import best_node, need_value, set_answer, vote
from search.algorithms.rollouts import GreedyCache, Rollouts
from search.algorithms.selection import selection_rule
from search.algorithms.values import backup_mcts_dpo, backup_mean, node_estimator
from search.context import SearchContext
from search.tree import Node, Tree
from search.types import Evaluate, ProcessCheckConfig, Propose, Request, Search

_NEG_INF = float("-inf")


class MCTSConfig(ProcessCheckConfig):
    simulations: int = Field(default=32, ge=1, description="Simulations (full mode), or per root (commit mode).")
    mode: Literal["full", "commit"] = "full"
    first_root_factor: float = Field(default=4.0, ge=1, description="Commit mode: more simulations at the first root.")
    commit_by: Literal["visits", "q_sample"] = "visits"
    commit_temperature: float = Field(default=1.0, ge=0, description="q_sample: softmax temperature at depth 0.")
    commit_temperature_decay: float = Field(default=0.5, ge=0, le=1, description="q_sample: temperature × this per depth.")
    expand_n: int = Field(default=4, ge=1, description="Steps proposed per expansion.")
    parallel_leaves: int = Field(default=4, ge=1, description="Leaves selected per problem per round (virtual loss).")
    selection: Literal["puct", "alphazero", "uct"] = "puct"
    c_puct: float = Field(default=1.0, ge=0, description="PUCT exploration weight w.")
    c_init: float = Field(default=1.25, ge=0)
    c_base: float = Field(default=19652.0, gt=0)
    c_uct: float = Field(default=1.414, ge=0)
    unvisited: Literal["auto", "value", "prior"] = Field(
        default="auto", description="Q of an unvisited child: its value estimate, or `fpu` (prior decides); "
                            "auto = value when a value model is given.")
    fpu: float = Field(default=0.0, description="Q of an unvisited child when scored by the prior.")
    rollout_weight: float | None = Field(
        default=None, ge=0, le=1, description="Leaf value = (1-λ)·value + λ·rollout verdict; auto = 0 with a value "
                                      "model, else 1 (verifier on) or 0.")
    rollout_temperature: float = Field(default=0.0, ge=0, description="0 = greedy rollouts (cached per node).")
    keep_rollouts: bool = Field(default=True, description="Rollout steps become unvisited tree nodes (their endings "
                                                  "are answers the search can return); else off-tree.")
    backup: Literal["mean", "mcts_dpo"] = "mean"
    gamma: float = Field(default=1.0, ge=0, description="mcts_dpo: Q = r + gamma · V(child).")
    virtual_loss_value: float = Field(default=-1.0, description="Value each pending (virtual) visit counts as.")
    root_noise_eps: float = Field(default=0.0, ge=0, le=1, description="Dirichlet noise weight on root priors (0 = off).")
    root_noise_alpha: float = Field(default=0.3, gt=0)
    widen: Literal["off", "reexpand", "progressive"] = Field(
        default="off", description="reexpand: a node whose children are all known (scored terminals, rejected or "
                           "pruned steps) is expanded again instead of a known terminal being re-scored; "
                           "progressive: also widen a node to ceil(pw_k·N^pw_alpha) sampled steps as its visits N grow.")
    pw_k: float = Field(default=2.0, gt=0, description="progressive: sampled steps allowed = ceil(pw_k · N^pw_alpha).")
    pw_alpha: float = Field(default=0.5, ge=0, le=1, description="progressive: growth exponent of the widening.")
    prune_below: float | None = Field(
        default=None, description="A child whose value estimate is below this is a dead end (needs a value model); "
                          "a node whose children are all dead ends is expanded again.")
    stop_when_found: bool = Field(default=False, description="Stop once the verifier confirms a correct answer "
                                                     "(needs verifier=true).")
    answer_rule: Literal["path", "visits", "q", "value"] = Field(
        default="path", description="path: best terminal below the deepest node of the most-visited (committed) "
                            "path that has one (verified-correct first when the verifier may be used); "
                            "visits: most visited terminal; q: highest-Q terminal; value: a vote over the terminals' "
                            "answers, each weighted by its path prior × (1 + V)/2 from the value model (a "
                            "test-time verifier).")


class _MCTS:
    """Selection and backup state of one problem's search, with its rule and node values bound once."""

    def __init__(self, ctx: SearchContext[MCTSConfig], cfg: MCTSConfig):
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
        if cfg.prune_below is not None:
            need_value(ctx.has_value, "mcts prune_below")
        if cfg.answer_rule == "value":
            need_value(ctx.has_value, "mcts answer_rule='value'")
        if cfg.stop_when_found and not cfg.verifier:
            raise UserError("mcts stop_when_found needs verifier=true (only the verifier can confirm an answer)")
        # Known-children rules (widening, pruning): a known child is never selected while a sibling is open.
        self.skip_known = cfg.widen != "off"
        self.known_rules = self.skip_known or cfg.prune_below is not None
        self.progressive = cfg.widen == "progressive"
        self.exhausted: set[int] = set()  # re-expanded without a new child: known, like a terminal
        self.drawn: dict[int, int] = {}    # steps sampled under each node by MCTS expansions (progressive)
        self.scanned = 0                   # stop_when_found: nodes already looked at for a correct terminal
        self.rule = selection_rule(cfg.selection, c_puct=cfg.c_puct, c_init=cfg.c_init, c_base=cfg.c_base,
                                   c_uct=cfg.c_uct, unvisited_by_prior=not self.unvisited_value)
        # Q of an unvisited child: its verdict or check, its value estimate (when `unvisited` says so), else fpu.
        self.unvisited_q = node_estimator(cfg, use_value=self.unvisited_value, default=cfg.fpu)
        # Value of a leaf: its verdict, a terminal's value estimate (else 0), its check, its value estimate,
        # else its prior estimate; mixed with its rollout's verdict by `leaf_value`.
        self.leaf_estimate = node_estimator(cfg, open_terminal=0.0)
        self.v0: dict[int, float] = {}     # each node's own value (its leaf value at first visit)
        self.noise: dict[int, float] = {}  # noisy priors of the current root's children
        self.noised_root: int | None = None
        self.expanded: set[int] = set()    # nodes MCTS expanded (rollout steps do not count)
        self.greedy = GreedyCache()        # greedy rollouts: next steps and verdicts, never generated twice

    # --- selection ------------------------------------------------------------------------------
    def select(self, root: Node) -> list[Node]:
        """Descend from `root` by the selection rule to a leaf: unexpanded, terminal, or expanded with
        every child rejected by the env's step check (it is expanded again: fresh samples may hold a
        right step). A child's Q counts its pending (virtual) visits as worth virtual_loss_value."""
        children, expanded, step_check = self.tree.children, self.expanded, self.cfg.step_check
        rule, unvisited_q, vl_value, noise = self.rule, self.unvisited_q, self.cfg.virtual_loss_value, self.noise
        known_rules, dead = self.known_rules, self.dead
        path = [root]
        node = root
        while not node.terminal and node.id in expanded:
            kids = children(node.id)
            if not kids:
                break
            if known_rules:
                kids = [c for c in kids if not dead(c)]
                if not kids or (self.progressive and self.drawn.get(node.id, 0) < self.allowed(node)):
                    break  # every child is known, or the node may hold more: it is expanded (again)
            elif step_check and all(c.check is False for c in kids):
                break
            n_parent = max(1, node.visits + node.virtual_loss)
            best, best_s = kids[0], _NEG_INF
            for c in kids:
                n = c.visits + c.virtual_loss
                q = (c.value_sum + vl_value * c.virtual_loss) / n if n else unvisited_q(c)
                s = rule(q, noise.get(c.id, c.prior) if noise else c.prior, n_parent, n)
                if s > best_s:
                    best, best_s = c, s
            node = best
            path.append(node)
        return path

    def dead(self, c: Node) -> bool:
        """A child selection skips (known-children rules): a rejected step, a terminal whose known value
        was backed up once (when widening), a node exhausted by re-expansion (its fresh samples all merged into known
        children, so widening moves up to its parent), or a step valued below prune_below (a verifier's
        verdict overrides the value)."""
        if c.check is False or c.id in self.exhausted:
            return True
        if c.terminal and (self.cfg.verifier and c.score is not None):
            return self.skip_known and c.visits > 0  # backed up once, then known
        if self.skip_known and c.terminal and c.visits > 0 and self.value_known(c):
            return True
        pb = self.cfg.prune_below
        return pb is not None and c.value is not None and c.value < pb

    def allowed(self, node: Node) -> float:
        """Progressive widening: how many sampled steps `node` may hold at its visit count."""
        return self.cfg.pw_k * max(1, node.visits + node.virtual_loss) ** self.cfg.pw_alpha

    def found(self) -> bool:
        """Whether the tree holds a verified-correct terminal (scans only the nodes added since last time)."""
        tree = self.tree
        n = len(tree)
        for i in range(self.scanned, n):
            if tree.node(i).correct:
                self.scanned = i  # stay on it: found stays true
                return True
        self.scanned = n
        return False

    def add_root_noise(self, root: Node) -> None:
        kids = self.tree.children(root.id)
        if self.cfg.root_noise_eps <= 0 or not kids or self.noised_root == root.id:
            return
        eta = self.ctx.rng.dirichlet([self.cfg.root_noise_alpha] * len(kids))
        e = self.cfg.root_noise_eps
        self.noise = {c.id: (1 - e) * c.prior + e * float(x) for c, x in zip(kids, eta, strict=True)}
        self.noised_root = root.id

    # --- values and backup ----------------------------------------------------------------------
    def value_known(self, leaf: Node) -> bool:
        """Whether a leaf's value needs no model: a rejected step, or a terminal with its verdict (or
        with nothing better to ask for)."""
        return leaf.check is False or (leaf.terminal and (self.cfg.verifier or leaf.value is not None
                                                          or not self.use_value))

    def leaf_value(self, leaf: Node, rollout: float | None) -> float:
        """The leaf's estimate, mixed with its rollout's verdict: (1-λ)·estimate + λ·rollout."""
        est = self.leaf_estimate(leaf)
        if rollout is None or self.lam == 0:
            return est
        return (1 - self.lam) * est + self.lam * rollout

    def backup(self, path: list[Node], v: float) -> None:
        if self.cfg.backup == "mean":
            backup_mean(path, v)
        else:
            backup_mcts_dpo(self.tree, path, v, self.v0, self.cfg.gamma)
        self.ctx.simulations += 1

    # --- one round: select a batch, evaluate it, back it up -------------------------------------
    def select_batch(self, root: Node, room: int) -> tuple[list[list[Node]], int]:
        """Paths to up to `parallel_leaves` distinct leaves that need the models (virtual loss added along
        each), within `room` simulations; a leaf whose value is known is backed up at once. Returns the
        paths and how many simulations were backed up."""
        batch: list[list[Node]] = []
        pending: set[int] = set()
        known = 0
        while len(batch) < self.cfg.parallel_leaves and known + len(batch) < room:
            path = self.select(root)
            leaf = path[-1]
            if self.value_known(leaf):
                self.backup(path, self.leaf_value(leaf, None))
                known += 1
                continue
            if leaf.id in pending:
                break  # every path leads to a leaf already being expanded this round
            for node in path:
                node.virtual_loss += 1
            batch.append(path)
            pending.add(leaf.id)
        return batch, known

    def evaluate_batch(self, leaves: list[Node]) -> Generator[list[Request], list[Any], dict[int, float]]:
        """Ask for the leaves' expansions and values, their new children's values (when unvisited children
        are scored by value) and their rollouts, step by step; returns the rollout verdicts by leaf id."""
        cfg, tree = self.cfg, self.tree
        expand = [leaf for leaf in leaves if not leaf.terminal]
        need_v = [leaf.id for leaf in leaves if self.use_value and leaf.value is None]
        ro = Rollouts(tree, expand, cfg, keep=cfg.keep_rollouts, temperature=cfg.rollout_temperature,
                      cache=self.greedy) if self.lam > 0 else None
        reqs: list[Request] = []
        # Re-expansions (reexpand): a node whose fresh samples all merge into known children is exhausted.
        again = {leaf.id: len(tree.children(leaf.id)) for leaf in expand if leaf.id in self.expanded} \
            if self.skip_known else {}
        if expand:
            reqs.append(Propose([leaf.id for leaf in expand], cfg.expand_n, cfg.temperature))
            self.expanded.update(leaf.id for leaf in expand)
            for leaf in expand:
                self.drawn[leaf.id] = self.drawn.get(leaf.id, 0) + cfg.expand_n
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
            if ro is not None and roll_req is not None:
                ro.receive(results[-1])  # the rollout request is always last
            reqs = []
            if first:
                self.exhausted.update(i for i, n in again.items() if len(tree.children(i)) == n)
            if first and self.unvisited_value and expand:
                # Children of the expanded leaves (rollout first steps included) get value estimates.
                todo = [c.id for leaf in expand for c in tree.children(leaf.id)
                        if c.value is None and not (c.terminal and cfg.verifier)]
                if todo:
                    reqs.append(Evaluate(todo))
            first = False
        return ro.verdicts if ro is not None else {}

    def backup_batch(self, batch: list[list[Node]], verdicts: dict[int, float]) -> None:
        """Take back each path's virtual loss and back up its leaf's value."""
        for path in batch:
            for node in path:
                node.virtual_loss -= 1
            leaf = path[-1]
            self.backup(path, self.leaf_value(leaf, verdicts.get(leaf.id)))

    def simulate(self, root: Node, budget: int) -> Search:
        """Run up to `budget` simulations from `root`, `parallel_leaves` per round."""
        done = 0
        self.add_root_noise(root)
        stop = self.cfg.stop_when_found
        while done < budget and not self.ctx.out_of_budget() and not (stop and self.found()):
            batch, known = self.select_batch(root, budget - done)
            done += known
            if not batch:
                continue
            verdicts = yield from self.evaluate_batch([path[-1] for path in batch])
            if any(path[-1] is root for path in batch):
                self.add_root_noise(root)  # the root was just expanded: its children get their noise
            self.backup_batch(batch, verdicts)
            done += len(batch)

    # --- commit and answer ----------------------------------------------------------------------
    def commit_child(self, root: Node) -> Node | None:
        """The child commit mode continues from (never a step the env's check rejected, while any other)."""
        all_kids = self.tree.children(root.id)
        kids = [c for c in all_kids if c.check is not False] or all_kids
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
        if cfg.answer_rule == "value":  # a test-time verifier: every terminal has its value by now
            terms = tree.terminals()
            return vote(terms, [path_prior(tree, n) * (1.0 + (n.value if n.value is not None else -1.0)) / 2.0
                                for n in terms])
        if cfg.answer_rule != "path":
            key = (lambda n: (n.visits, n.q)) if cfg.answer_rule == "visits" else (lambda n: (n.q, n.visits))
            terms = tree.terminals() if cfg.verifier else ([n for n in tree.terminals() if n.visits]
                                                           or tree.terminals())
            return best_node(terms, key, cfg)
        path = list(committed)
        while not path[-1].terminal and tree.children(path[-1].id):
            path.append(max(tree.children(path[-1].id), key=lambda c: (c.visits, c.q)))
        # The deepest node on that path with a terminal below it (a verified-correct one when the
        # verifier may be used); its best terminal is the answer.
        for node in reversed(path):
            terms = tree.terminals_below(node.id)
            if cfg.verifier and any(t.correct for t in terms):
                terms = [t for t in terms if t.correct]
            elif cfg.verifier and node is not path[0]:
                continue
            if terms:
                return best_node(terms, lambda n: (n.visits, n.q), cfg)
        return None


def path_prior(tree: Tree, node: Node) -> float:
    """The product of the priors on the path to `node`: the policy's share of its samples that would take
    this path. A vote over distinct terminals must weigh them by it: right solutions tend to share one path
    (merged samples), wrong ones to scatter over many."""
    p = 1.0
    for n in tree.path(node.id)[1:]:
        p *= n.prior
    return p


def mcts(ctx: SearchContext[MCTSConfig]) -> Search:
    """MCTS over one problem; sets tree.answer / tree.answer_node."""
    cfg = ctx.config
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
    if cfg.answer_rule == "value":
        todo = [n.id for n in tree.terminals() if n.value is None]
        if todo:
            yield [Evaluate(todo)]
    set_answer(tree, st.choose_answer(committed))
