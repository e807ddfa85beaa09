"""The bottom of `search`: the configs every algorithm shares, the requests an algorithm yields, and the
model interfaces search calls (typed protocols matching `agents.base`), so the scheduler and the algorithms
import one module and nothing above it.

Each knob has one default, here: `max_step_tokens` is the backends' own default (`agents.base`), and
`prior_alpha` is read from the config by whatever runs a search.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agents.base import MAX_STEP_TOKENS, Sample, Stop

# --- configs ----------------------------------------------------------------------------------------


class SearchConfig(BaseModel):
    """Knobs every algorithm has. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature of proposed steps (0 = greedy).")
    max_step_tokens: int = Field(default=MAX_STEP_TOKENS, ge=1, description="Longest step the policy may generate, "
                                                                     "in tokens.")
    max_depth: int = Field(default=16, ge=1, description="A node at this depth is terminal.")
    prior_alpha: float = Field(default=1.25, ge=0, description="Prior = exp(sum logprob / len^alpha), normalised.")
    verifier: bool = Field(default=True, description="The search may use the verifier's verdict on terminal nodes "
                                             "(training-time search with references); False at test time.")
    correct_value: float = Field(default=1.0, description="Value of a verified-correct terminal.")
    wrong_value: float = Field(default=-1.0, description="Value of a wrong terminal (MCTS-DPO: -1 or -0.5).")
    token_budget: int | None = Field(default=None, ge=1, description="Generated-token budget per problem.")
    wall_budget_s: float | None = Field(default=None, gt=0, description="Wall-time budget per problem, seconds.")


class ProcessCheckConfig(SearchConfig):
    """SearchConfig plus the env's process verifier, for the algorithms that act on a wrong step."""

    step_check: bool = Field(default=False, description="Check every new step with the env's process verifier "
                                                "(`check_step`, e.g. arithmetic's calculator check): a step "
                                                "it marks wrong is a dead end valued wrong_value, never "
                                                "expanded, and a rollout stops there. No effect on envs "
                                                "without a checker.")


# --- requests ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Propose:
    """Sample `n` next steps for each node and add them to the tree as children (identical siblings merge).

    Result: for each node, the child id each of the `n` samples landed on (ids repeat when samples merged).
    """

    node_ids: list[int]
    n: int = 1
    temperature: float = 1.0


@dataclass(slots=True)
class Extend:
    """Sample one next step after each off-tree path of steps (rollouts); the tree is not touched.

    Result: one `RolloutStep` per path.
    """

    paths: list[list[str]]
    temperature: float = 0.0


@dataclass(slots=True)
class Evaluate:
    """Value-model estimates of the prefixes ending at these nodes; also stored as `node.value`.

    Result: one float per node.
    """

    node_ids: list[int]


@dataclass(slots=True)
class RolloutStep:
    """One off-tree rollout step (the result of `Extend`): its text, size, and verdicts when it ends."""

    text: str
    num_tokens: int
    terminal: bool
    score: float | None = None
    answer: str | None = None
    check: bool | None = None


Request = Propose | Extend | Evaluate
# An algorithm: yields a list of requests, receives their results in order (per request: a list of child-id
# lists for Propose, of RolloutSteps for Extend, of floats for Evaluate), returns when its tree is done.
Search = Generator[list[Request], list[Any], None]


# --- the models search calls --------------------------------------------------------------------------


class Policy(Protocol):
    """What search needs of a policy backend (`agents.base.Policy` and its implementations fit)."""

    def propose(self, prefixes: Sequence[str], n: int = 1, *, stop: Sequence[Stop] = ("\n",),
                temperature: float = 1.0, top_p: float = 1.0, max_step_tokens: int = MAX_STEP_TOKENS,
                seed: int | Sequence[int] | None = None) -> list[list[Sample]]:
        """`n` samples per prefix: result[i][j] is sample j of prefixes[i]; per-prefix seeds."""
        ...


class ValueModel(Protocol):
    """What search needs of a value model (`agents.base.ValueModel` fits)."""

    def value(self, prefixes: Sequence[str]) -> list[float]:
        """One value in [-1, 1] per prefix."""
        ...
