"""MCTS selection rules: how much a child's score says "visit me next", as pure functions.

Every rule is `rule(<constants>, q, prior, n_parent, n) -> float`, where `q` is the child's value (its
mean backed-up value, or the estimate of an unvisited child), `prior` its normalised prior, `n_parent`
and `n` the visit counts (pending virtual visits included). `selection_rule` binds the constants once per
search with `functools.partial`, so the selection loop calls one `rule(q, prior, n_parent, n)` per child.
The constants come first so that partial binds them positionally: a partial with bound keywords copies
them on every call, which made the selection loop (the bookkeeping hot path) ~10% slower.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Literal

Rule = Callable[[float, float, float, float], float]

UNVISITED = 1e9  # UCT: an unvisited child scores this much plus a tie-break, above every visited child


def puct(c: float, q: float, prior: float, n_parent: float, n: float) -> float:
    """PUCT with a constant: Q + c · P · sqrt(N(parent)) / (1 + N)."""
    return q + c * prior * math.sqrt(n_parent) / (1 + n)


def alphazero_w(n_parent: float, c_init: float = 1.25, c_base: float = 19652.0) -> float:
    """AlphaZero's exploration weight: c_init + log((N(parent) + c_base + 1) / c_base)."""
    return c_init + math.log((n_parent + c_base + 1.0) / c_base)


def alphazero_puct(c_init: float, c_base: float, q: float, prior: float, n_parent: float, n: float) -> float:
    """AlphaZero PUCT: PUCT whose weight grows slowly with the parent's visits (`alphazero_w`)."""
    return puct(alphazero_w(n_parent, c_init, c_base), q, prior, n_parent, n)


def uct(c: float, unvisited_by_prior: bool, q: float, prior: float, n_parent: float, n: float) -> float:
    """UCT: Q + c · sqrt(ln N(parent) / N). An unvisited child scores UNVISITED + its Q (or + its prior
    when `unvisited_by_prior`), so unvisited children are tried first, the most promising first."""
    if n <= 0:
        return UNVISITED + (prior if unvisited_by_prior else q)
    return q + c * math.sqrt(math.log(max(n_parent, 1.0)) / n)


def selection_rule(name: Literal["puct", "alphazero", "uct"], *, c_puct: float = 1.0, c_init: float = 1.25,
                   c_base: float = 19652.0, c_uct: float = 1.414, unvisited_by_prior: bool = False) -> Rule:
    """The rule `name` with its constants bound: a `Rule(q, prior, n_parent, n)`."""
    if name == "puct":
        return partial(puct, c_puct)
    if name == "alphazero":
        return partial(alphazero_puct, c_init, c_base)
    if name == "uct":
        return partial(uct, c_uct, unvisited_by_prior)
    raise ValueError(f"unknown selection rule '{name}'")
