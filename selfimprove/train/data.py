"""Preference records → tokenized examples → packed batches (groups merged by identical prompt)."""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from selfimprove.pairs.records import PreferenceList, PreferencePair, Record
from selfimprove.train.logps import Group, Packed, pack


@dataclass
class Example:
    """One record, tokenized. Items are [chosen, rejected] for a pair, the ranked list for a list."""

    kind: str                       # "pair" | "list"
    prompt: list[int]
    items: list[list[int]]
    item_steps: list[list[int]]     # token count of each step of each item
    weight: float = 1.0
    eps: float = 0.0
    scores: list[float] = field(default_factory=list)
    similarity: torch.Tensor | None = None  # [n, n, K] step similarity (lists only)
    ref_items: torch.Tensor | None = None   # [n] reference logps
    ref_steps: list[torch.Tensor] = field(default_factory=list)  # per item, [k] reference step logps

    @property
    def num_tokens(self) -> int:
        """Tokens a one-sequence-per-completion trainer processes (prompt repeated per item)."""
        return sum(len(self.prompt) + len(c) for c in self.items)


def step_similarity(steps: Sequence[Sequence[str]]) -> torch.Tensor:
    """sim[i, j, k] in [0, 1]: lexical similarity (difflib ratio) of step k of items i and j; 0 if missing."""
    n, K = len(steps), max(len(s) for s in steps)
    sim = torch.zeros(n, n, K)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(min(len(steps[i]), len(steps[j]))):
                a, b = steps[i][k], steps[j][k]
                sim[i, j, k] = sim[j, i, k] = 1.0 if a == b else difflib.SequenceMatcher(None, a, b).ratio()
    return sim


def list_to_pairs(rec: PreferenceList) -> list[PreferencePair]:
    """Every ordered pair (i, j) with score_i > score_j of a list, sharing the list's weight."""
    idx = [(i, j) for i in range(len(rec.scores)) for j in range(i + 1, len(rec.scores))
           if rec.scores[i] > rec.scores[j]]
    return [PreferencePair(strategy=rec.strategy, prompt=rec.prompt, delimiter=rec.delimiter,
                           chosen=rec.completions[i], rejected=rec.completions[j],
                           margin=rec.scores[i] - rec.scores[j], weight=rec.weight / len(idx),
                           tree_id=rec.tree_id, problem_id=rec.problem_id, prefix_node=rec.prefix_node,
                           chosen_node=rec.node_ids[i], rejected_node=rec.node_ids[j], iteration=rec.iteration,
                           checkpoint=rec.checkpoint, depth=rec.depth) for i, j in idx]


def fit_length(prompt: list[int], items: list[list[int]], max_length: int, *, keep_first: bool = False
               ) -> tuple[list[int], list[list[int]]] | None:
    """Prompt and completions cut so that prompt + the longest completion fit `max_length`, or None when
    they already fit. Completions keep their start (at most max_length − 1 tokens: one token of prompt
    stays as context); the prompt loses tokens from the left (after its first when `keep_first`: BOS)."""
    longest = max((len(c) for c in items), default=0)
    if len(prompt) + longest <= max_length:
        return None
    items = [c[: max_length - 1] for c in items]
    room = max_length - max((len(c) for c in items), default=0)
    head = prompt[:1] if keep_first and room > 1 else []
    return head + prompt[len(prompt) - (room - len(head)):], items


def tokenize(records: Sequence[Record], tokenizer, *, max_length: int, as_lists: bool,
             overlong: str = "truncate", counts: dict[str, int] | None = None) -> list[Example]:
    """Tokenize records for training. Pair losses see lists as their ordered pairs; TPO sees pairs as
    2-item lists. A record longer than max_length (prompt + its longest completion) is cut by
    `fit_length` (overlong "truncate") or dropped ("skip"); `counts` gets "truncated" / "skipped" added."""
    enc = lambda s, special=False: tokenizer(s, add_special_tokens=special).input_ids  # noqa: E731
    if not as_lists:
        flat: list[PreferencePair] = []
        for r in records:
            flat.extend(list_to_pairs(r) if isinstance(r, PreferenceList) else [r])
        records = flat
    counts = counts if counts is not None else {}
    counts.setdefault("truncated", 0)
    counts.setdefault("skipped", 0)
    bos = tokenizer.bos_token_id
    out = []
    for r in records:
        prompt = enc(r.prompt, True)
        if isinstance(r, PreferencePair):
            steps_text = [[r.chosen], [r.rejected]]
            scores, weight, eps = [1.0, 0.0], r.weight, r.eps
        else:
            steps_text = [[s + r.delimiter for s in st] for st in r.steps]
            scores, weight, eps = list(r.scores), r.weight, 0.0
        steps_tok = [[enc(s) for s in st] for st in steps_text]
        cut = fit_length(prompt, [[t for s in st for t in s] for st in steps_tok], max_length,
                         keep_first=bos is not None and bool(prompt) and prompt[0] == bos)
        if cut is not None:
            if overlong == "skip":
                counts["skipped"] += 1
                continue
            counts["truncated"] += 1
            prompt = cut[0]
        room = max_length - len(prompt)
        items, item_steps = [], []
        for st in steps_tok:
            toks, step_counts = [], []
            for s in st:
                t = s[: room - len(toks)]
                if t:
                    toks.extend(t)
                    step_counts.append(len(t))
            items.append(toks)
            item_steps.append(step_counts)
        sim = step_similarity([st[: len(c)] for st, c in zip(steps_text, item_steps, strict=True)]) \
            if as_lists else None
        out.append(Example("list" if as_lists else "pair", prompt, items, item_steps, weight, eps, scores, sim))
    return out


@dataclass
class Batch:
    packed: Packed
    examples: list[Example]
    item_index: list[list[int]]          # per example, global completion index of each item
    step_index: list[list[list[int]]]    # per example, per item, global step indices


def collate(examples: Sequence[Example], pad_id: int, *, share_prefix: bool = True) -> Batch:
    """Merge examples with the same prompt into one group (identical completions scored once).

    With share_prefix=False every completion gets its own row (the prompt is recomputed each time).
    """
    groups: list[Group] = []
    by_prompt: dict[tuple[int, ...] | int, tuple[int, dict]] = {}
    where: list[list[tuple[int, int]]] = []
    for ex in examples:
        locs = []
        for toks, steps in zip(ex.items, ex.item_steps, strict=True):
            key = tuple(ex.prompt) if share_prefix else len(groups)
            if key not in by_prompt:
                by_prompt[key] = (len(groups), {})
                groups.append(Group(ex.prompt, [], []))
            g, seen = by_prompt[key]
            ckey = (tuple(toks), tuple(steps))
            if ckey not in seen:
                seen[ckey] = len(groups[g].completions)
                groups[g].completions.append(toks)
                groups[g].steps.append(steps)
            locs.append((g, seen[ckey]))
        where.append(locs)
    comp_off, step_off, c, s = [], [], 0, 0
    for g in groups:
        comp_off.append(c)
        offs = []
        for st in g.steps:
            offs.append(s)
            s += len(st)
        step_off.append(offs)
        c += len(g.completions)
    item_index = [[comp_off[g] + i for g, i in locs] for locs in where]
    step_index = [[list(range(step_off[g][i], step_off[g][i] + len(groups[g].steps[i]))) for g, i in locs]
                  for locs in where]
    return Batch(pack(groups, pad_id), list(examples), item_index, step_index)


def batches(examples: Sequence[Example], batch_size: int, rng: random.Random) -> list[list[Example]]:
    """Shuffle prompt buckets (so examples sharing a prompt land in one batch), then cut into batches."""
    buckets: dict[tuple, list[Example]] = {}
    for ex in examples:
        buckets.setdefault(tuple(ex.prompt), []).append(ex)
    order = list(buckets.values())
    rng.shuffle(order)
    flat = [ex for b in order for ex in b]
    return [flat[i : i + batch_size] for i in range(0, len(flat), batch_size)]
