"""Pair strategies on hand-built golden trees (tests/fixtures/pairs_trees.jsonl), records and their IO.

Tree A ("Q: 2+3*4", answer node 5):            Tree B ("Q: 1+1", no answer node):
  0 ─ 1 "3*4=12" N6 Q.5 ─ 3 "2+12=14" N4 Q.8 ─ 5 "A: 14" ✓      0 ─ 1 "1+1=2"  N3 Q1  ─ 4 "A: 2" ✓
    │                   └ 4 "2+12=15" N2 Q-.5 ─ 6 "A: 15" ✗       ├ 2 "1+1=2." N2 Q.5 ─ 5 "A: 2" ✓
    ├ 2 "2+3=5" N3 Q-.5 ─ 7 "5*4=20" N2 Q-1 ─ 8 "A: 20" ✗         ├ 3 "1+1=3"  N3 Q-1 ─ 6 "A: 3" ✗
    └ 9 "3*4=13" N1 Q.2 (nothing below)                            └ 7 "1+1=11" N1 Q-1 ─ 8 "A: 11" ✗
The expected pairs below were worked out by hand from these pictures and the strategy definitions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envs.errors import UserError
from search.tree import read_trees
from selfimprove.pairs import PreferenceList, PreferencePair, extract, read_records, write_records

FIX = Path(__file__).parent / "fixtures" / "pairs_trees.jsonl"


@pytest.fixture(scope="module")
def trees():
    a, b = read_trees(FIX)
    return a, b


def as_pairs(records) -> list[PreferencePair]:
    """`records` typed as pairs (the strategy makes pairs; a list record fails here)."""
    assert all(isinstance(r, PreferencePair) for r in records), records
    return list(records)


def as_lists(records) -> list[PreferenceList]:
    assert all(isinstance(r, PreferenceList) for r in records), records
    return list(records)


def triples(records):
    return [(r.tree_id, r.prefix_node, r.chosen_node, r.rejected_node) for r in records]


def test_q_gap_second_best_with_visit_smoothing(trees):
    recs, stats = extract(trees, "q-gap", iteration=3)
    recs = as_pairs(recs)
    assert triples(recs) == [("tree-a", 0, 1, 9), ("tree-a", 1, 3, 4), ("tree-b", 0, 1, 2)]
    r0, r1, _ = recs
    assert (r0.prompt, r0.chosen, r0.rejected) == ("Q: 2+3*4\n", "3*4=12\n", "3*4=13\n")
    assert (r1.prompt, r1.chosen, r1.rejected) == ("Q: 2+3*4\n3*4=12\n", "2+12=14\n", "2+12=15\n")
    assert [r.margin for r in recs] == pytest.approx([0.3, 1.3, 0.5])
    # eps = min(1 − 1/(1 + N_rej / max(1, N_ch)), 0.5): 1−1/(1+1/6) = 1/7, 1−1/(1+2/4) = 1/3, 1−1/(1+2/3) = 0.4
    assert [r.eps for r in recs] == pytest.approx([1 / 7, 1 / 3, 0.4])
    assert all(r.iteration == 3 and r.checkpoint == "ckpt-0" and r.strategy == "q-gap" for r in recs)
    assert [r.depth for r in recs] == [1, 2, 1]
    assert stats["count"] == 3 and stats["mean_margin"] == pytest.approx(0.7)
    assert stats["depth_histogram"] == {"1": 2, "2": 1}


def test_q_gap_variants(trees):
    a, _ = trees
    worst = as_pairs(extract([a], "q-gap", {"rejected": "worst"})[0])
    assert triples(worst) == [("tree-a", 0, 1, 2), ("tree-a", 1, 3, 4)]
    assert [r.eps for r in worst] == pytest.approx([1 / 3, 1 / 3])
    gap, _ = extract([a], "q-gap", {"min_gap": 0.5})
    assert triples(gap) == [("tree-a", 1, 3, 4)]
    visits, _ = extract([a], "q-gap", {"min_visits": 2, "nodes": "all"})  # node 9 (N=1) drops out
    assert triples(visits) == [("tree-a", 0, 1, 2), ("tree-a", 1, 3, 4)]
    off = as_pairs(extract([a], "q-gap", {"smoothing": False})[0])
    assert [r.eps for r in off] == [0.0, 0.0]
    cont = as_pairs(extract([a], "q-gap", {"continuation": True, "rejected": "worst"})[0])
    assert cont[0].chosen == "3*4=12\n2+12=14\nA: 14\n" and cont[0].rejected == "2+3=5\n5*4=20\nA: 20\n"
    r1, _ = extract(trees, "q-gap", {"rejected": "random"}, seed=7)
    r2, _ = extract(trees, "q-gap", {"rejected": "random"}, seed=7)
    assert triples(r1) == triples(r2)
    assert {t[3] for t in triples(r1) if t[0] == "tree-b"} <= {2, 3, 7}


def test_first_error(trees):
    recs = as_pairs(extract(trees, "first-error")[0])
    # A: wrong leaf 6 → first dead step 4 (sibling 3 reaches ✓); wrong leaf 8 → dead step 2 (sibling 1 ✓).
    # B: wrong leaves 6 and 8 → dead steps 3 and 7, best right sibling 1.
    assert triples(recs) == [("tree-a", 1, 3, 4), ("tree-a", 0, 1, 2), ("tree-b", 0, 1, 3), ("tree-b", 0, 1, 7)]
    assert [r.margin for r in recs] == pytest.approx([1.3, 1.0, 2.0, 2.0])
    by_q, _ = extract(trees[:1], "first-error", {"judge": "q"})
    assert triples(by_q) == [("tree-a", 1, 3, 4), ("tree-a", 0, 1, 2)]


def test_selected_vs_pruned(trees):
    a, b = trees
    recs, _ = extract([a], "selected-vs-pruned")
    assert triples(recs) == [("tree-a", 0, 1, 2), ("tree-a", 0, 1, 9), ("tree-a", 1, 3, 4)]
    # B has no answer node: the best path by visits is 0-1-4 (✓), so its pruned siblings 2, 3, 7 lose.
    recs_b, _ = extract([b], "selected-vs-pruned")
    assert triples(recs_b) == [("tree-b", 0, 1, 2), ("tree-b", 0, 1, 3), ("tree-b", 0, 1, 7)]
    a2 = read_trees(FIX)[0]
    a2.answer_node = 6  # a wrong selected answer yields nothing when require_correct
    assert extract([a2], "selected-vs-pruned")[0] == []
    assert len(extract([a2], "selected-vs-pruned", {"require_correct": False})[0]) == 3


def test_subtree_outcome_weights(trees):
    recs = as_pairs(extract(trees, "subtree-outcome")[0])
    # A: at 0, pos {1} × neg {2} (9 has no terminal); at 1, {3} × {4}: weight 1 each.
    # B: at 0, pos {1, 2} (by Q) × neg {7, 3} (lowest Q first; tie → fewer visits): weight 1/(2·2).
    assert triples(recs) == [("tree-a", 0, 1, 2), ("tree-a", 1, 3, 4), ("tree-b", 0, 1, 7),
                             ("tree-b", 0, 1, 3), ("tree-b", 0, 2, 7), ("tree-b", 0, 2, 3)]
    assert [r.weight for r in recs] == pytest.approx([1, 1, 0.25, 0.25, 0.25, 0.25])
    assert [r.margin for r in recs] == pytest.approx([1.0, 1.3, 2.0, 2.0, 1.5, 1.5])
    top1 = as_pairs(extract([trees[1]], "subtree-outcome", {"top_k": 1})[0])
    assert triples(top1) == [("tree-b", 0, 1, 7)] and top1[0].weight == 1.0


def test_ranked_list(trees):
    recs, stats = extract([trees[0]], "ranked-list")
    assert all(isinstance(r, PreferenceList) for r in recs) and len(recs) == 2
    l0, l1 = as_lists(recs)
    assert l0.prompt == "Q: 2+3*4\n" and l0.node_ids == [1, 9, 2]
    assert l0.steps == [["3*4=12", "2+12=14", "A: 14"], ["3*4=13"], ["2+3=5", "5*4=20", "A: 20"]]
    assert l0.completions[1] == "3*4=13\n"
    assert l0.scores == pytest.approx([0.5, 0.2, -0.5])
    assert l0.step_rewards == [pytest.approx([0.5, 0.8, 1.0]), pytest.approx([0.2]), pytest.approx([-0.5, -1, -1])]
    assert l1.prompt == "Q: 2+3*4\n3*4=12\n" and l1.node_ids == [3, 4] and l1.depth == 2
    assert l1.steps == [["2+12=14", "A: 14"], ["2+12=15", "A: 15"]]
    assert stats["mean_margin"] == pytest.approx((1.0 + 1.3) / 2)


def test_outcome(trees):
    recs = as_pairs(extract(trees, "outcome")[0])
    assert triples(recs) == [("tree-a", 0, 5, 6), ("tree-a", 0, 5, 8), ("tree-b", 0, 4, 6), ("tree-b", 0, 4, 8),
                             ("tree-b", 0, 5, 6), ("tree-b", 0, 5, 8)]
    assert recs[1].chosen == "3*4=12\n2+12=14\nA: 14\n" and recs[1].rejected == "2+3=5\n5*4=20\nA: 20\n"
    assert all(r.prompt == r.prompt.split("\n")[0] + "\n" for r in recs)
    capped, _ = extract(trees, "outcome", {"max_pairs_per_tree": 1}, seed=1)
    assert len(capped) == 2


def test_sampled_pairs_do_not_depend_on_tree_ids(trees):
    # Tree ids hash the policy checkpoint path (which holds the run's name); the same trees under other
    # ids must give the same sampled pairs.
    import copy

    renamed = [copy.deepcopy(t) for t in trees]
    for t in renamed:
        t.id = "renamed-" + t.id
    cfg = {"max_pairs_per_tree": 2}
    pick = lambda recs: [(r.prefix_node, r.chosen_node, r.rejected_node) for r in recs]  # noqa: E731
    for seed in range(4):
        assert pick(extract(trees, "outcome", cfg, seed=seed)[0]) == pick(extract(renamed, "outcome", cfg, seed=seed)[0])


def test_dedup_across_trees_and_delimiter(trees):
    a, _ = trees
    copy = read_trees(FIX)[0]
    copy.id = "tree-a-copy"
    recs, stats = extract([a, copy], "q-gap")
    assert len(recs) == 2 and stats["duplicates"] == 2
    semi_tree = read_trees(FIX)[0]
    semi_tree.delimiter = " ; "  # the tree's own delimiter joins its steps
    semi = as_pairs(extract([semi_tree], "q-gap")[0])
    assert semi[1].prompt == "Q: 2+3*4\n3*4=12 ; " and semi[1].chosen == "2+12=14 ; " and semi[1].delimiter == " ; "


def test_unknown_strategy_or_knob_is_one_sentence(trees):
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        extract(trees, "nope")
    with pytest.raises(UserError, match="strategy 'q-gap': field 'min_gapp': unknown key"):
        extract(trees, "q-gap", {"min_gapp": 1})


def test_records_roundtrip_and_datasets(tmp_path, trees):
    from datasets import load_dataset

    pairs, _ = extract(trees, "q-gap")
    lists, _ = extract(trees, "ranked-list")
    pp, lp = tmp_path / "pairs.jsonl", tmp_path / "lists.jsonl"
    assert write_records(pp, pairs) == 3 and write_records(lp, lists) == len(lists)
    back = read_records(pp)
    assert [r.model_dump() for r in back] == [r.model_dump() for r in pairs]
    assert back[1].source == f"{pp}:2"
    assert json.loads(pp.read_text().splitlines()[0])["schema"] == "selfimprove/1"
    ds = load_dataset("json", data_files=str(pp), split="train")
    assert ds.num_rows == 3 and ds[1]["chosen"] == "2+12=14\n" and ds[0]["eps"] == pytest.approx(1 / 7)
    dl = load_dataset("json", data_files=str(lp), split="train")
    assert dl[0]["completions"][1] == "3*4=13\n" and dl[0]["steps"][0] == ["3*4=12", "2+12=14", "A: 14"]
    assert isinstance(read_records(lp)[0], PreferenceList)


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("rejected"), r"pairs.jsonl:2: field 'rejected' is missing"),
    (lambda d: d.update(chosen=""), r"pairs.jsonl:2: field 'chosen' is empty"),
    (lambda d: d.update(eps=0.9), r"pairs.jsonl:2: field 'eps': Input should be less than or equal to 0.5"),
    (lambda d: d.update(kind="triple"), r"pairs.jsonl:2: field 'kind': 'triple' is not 'pair' or 'list'"),
    (lambda d: d.update(schema="old/0"), r"pairs.jsonl:2: schema 'old/0' is not 'selfimprove/1'"),
])
def test_bad_records_name_file_line_field(tmp_path, mutate, message):
    good = PreferencePair(strategy="x", prompt="Q: 1\n", chosen="a\n", rejected="b\n").model_dump(by_alias=True)
    bad = dict(good)
    mutate(bad)
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(UserError, match=message):
        read_records(p)


def test_prompt_over_max_chars(tmp_path):
    p = tmp_path / "pairs.jsonl"
    write_records(p, [PreferencePair(strategy="x", prompt="Q" * 50, chosen="a", rejected="b")])
    with pytest.raises(UserError, match=r"pairs.jsonl:1: prompt is 50 characters, over the maximum 10"):
        read_records(p, max_prompt_chars=10)


def test_cli_pairs(tmp_path):
    from selfimprove.cli import main

    out = tmp_path / "p.jsonl"
    assert main(["pairs", "--trees", str(FIX), "--strategy", "q-gap", "--out", str(out), "--set", "min_gap=0.5",
                 "--json"]) == 0
    assert [r.chosen_node for r in as_pairs(read_records(out))] == [3, 1]
    assert main(["pairs", "--trees", str(FIX), "--strategy", "q-gap", "--out", str(out), "--set", "bogus=1"]) == 1


def test_bad_list_record(tmp_path):
    rec = PreferenceList(strategy="x", prompt="Q\n", completions=["a\nb\n", "c\n"], steps=[["a", "b"], ["c"]],
                         scores=[1.0, 0.0], step_rewards=[[1, 1], [0]], node_ids=[1, 2]).model_dump(by_alias=True)
    p = tmp_path / "lists.jsonl"
    p.write_text(json.dumps({**rec, "scores": [0.0, 1.0]}) + "\n")
    with pytest.raises(UserError, match=r"lists.jsonl:1: .*scores must be sorted best first"):
        read_records(p)
    p.write_text(json.dumps({**rec, "completions": ["a\n", "c\n"]}) + "\n")
    with pytest.raises(UserError, match=r"lists.jsonl:1: .*completion 0 is not its steps joined with the delimiter"):
        read_records(p)
