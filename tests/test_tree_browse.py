"""`tree browse`: the textual app driven by textual's Pilot at 80×24 (navigate, expand / collapse with
keys and the mouse, find by id / verdict / inverted pairs, side by side, q quits) on a hand-built run
directory, and the real console script in a real terminal (tmux; skipped when tmux is absent).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_tree_view import hand_tree
from textual.widgets import OptionList

from envs.registry import make_env
from envs.types import Problem
from search.tree import Tree, write_trees
from selfimprove.pairs import PreferencePair, write_records
from selfimprove.tree_browse import SearchTree, TreeBrowser, matches
from selfimprove.tree_sources import load_sources

CLI = str(Path(sys.executable).parent / "selfimprove")


def wrong_tree() -> Tree:
    """A second problem whose search returned a wrong answer (no pairs)."""
    t = Tree(Problem(id="arith-8", prompt="9-4+1", answer="6"), tree_id="t8", prompt="Q: 9-4+1\n")
    t.root.visits, t.root.value_sum = 2, -2.0
    a = t.add_child(0, "9-4=5", visits=2, value_sum=-2.0)
    b = t.add_child(a.id, "5+1=7", visits=2, value_sum=-2.0)
    c = t.add_child(b.id, "A: 7", visits=2, value_sum=-2.0, terminal=True, score=0.0, answer="7")
    t.answer, t.answer_node = "7", c.id
    return t


def grown_tree() -> Tree:
    """arith-7 searched again in the next iteration: more nodes, and this time a wrong answer."""
    t = hand_tree()
    t.id = "t7-next"
    extra = t.add_child(3, "3+4=7", visits=3, value_sum=-3.0)
    end = t.add_child(extra.id, "A: 7", visits=3, value_sum=-3.0, terminal=True, score=0.0, answer="7")
    t.answer, t.answer_node = "7", end.id
    return t


def make_run(root: Path) -> Path:
    """A run directory: config.yaml (arithmetic), iter-000 with trees and pairs (one inverted), iter-001."""
    (root / "iter-000").mkdir(parents=True)
    (root / "iter-001").mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"name": "r", "env": {"name": "arithmetic"}}))
    write_trees(root / "iter-000" / "trees.jsonl", [wrong_tree(), hand_tree()])
    write_trees(root / "iter-001" / "trees.jsonl", [grown_tree()])
    prompt = "Q: 3+4*2-5\n"
    write_records(root / "iter-000" / "pairs.jsonl", [
        PreferencePair(strategy="q-gap", prompt=prompt, chosen="4*2=8\n", rejected="4*2=9\n", tree_id="t7",
                       problem_id="arith-7", chosen_node=1, rejected_node=2, margin=1.3, depth=1),
        PreferencePair(strategy="q-gap", prompt=prompt + "4*2=8\n", chosen="3+8=12\n", rejected="3+8=11\n",
                       tree_id="t7", problem_id="arith-7", chosen_node=5, rejected_node=4, margin=0.4, depth=2),
    ])
    return root


def sources(tmp_path: Path):
    return load_sources([make_run(tmp_path / "run")], env=make_env("arithmetic"))


def detail(app: TreeBrowser) -> str:
    return str(app.query_one("#detail-text").render())


def title(app: TreeBrowser) -> str:
    return str(app.query_one("#title").render())


def drive(app: TreeBrowser, steps) -> None:
    """Run `steps(pilot)` against `app` in an 80×24 terminal."""
    async def go() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            await steps(pilot)

    asyncio.run(go())


def test_sources_and_audit_labels(tmp_path):
    src = sources(tmp_path)
    it0, it1 = src.iterations
    assert (it0.name, it1.name) == ("iter-000", "iter-001")
    t7 = it0.trees[1]
    assert it0.labels == ["right-vs-wrong", "inverted"] and it0.inverted(t7) == 1 and it0.inverted(it0.trees[0]) == 0
    assert it1.find(t7) is it1.trees[0] and it1.find(it0.trees[0]) is None
    assert matches("is:inverted", it0, t7) and not matches("is:inverted", it0, it0.trees[0])
    assert matches("is:wrong 9-4", it0, it0.trees[0]) and not matches("is:correct", it0, it0.trees[0])


def test_sft_run_and_plain_files(tmp_path):
    """An SFT run's pairs.jsonl holds verified solutions, not pairs: nothing to overlay, no error. A plain
    trees file with --pairs but no environment overlays the pairs without audit labels."""
    run = make_run(tmp_path / "run")
    (run / "iter-001" / "pairs.jsonl").write_text(json.dumps(
        {"kind": "sft", "prompt": "Q: 3+4*2-5\n", "completion": "4*2=8\n", "tree_id": "t7-next"}) + "\n")
    src = load_sources([run])
    assert src.iterations[1].records == [] and len(src.iterations[0].records) == 2
    plain = load_sources([run / "iter-000" / "trees.jsonl", run / "iter-001" / "trees.jsonl"],
                         pairs=[run / "iter-000" / "pairs.jsonl"])
    assert [it.name for it in plain.iterations] == ["iter-000", "iter-001"]
    assert plain.iterations[0].labels is None and plain.iterations[0].overlay(plain.iterations[0].trees[1])


def test_navigate_expand_collapse(tmp_path):
    app = TreeBrowser(sources(tmp_path), problem="arith-7")

    async def steps(pilot) -> None:
        tree = app.query_one("#tree", SearchTree)
        assert "iter-000 · 2/2 · arith-7 · answer 6 ✓" in title(app) and "1 inverted" in title(app)
        assert "problem arith-7" in detail(app) and "root entropy" in detail(app)
        await pilot.press("down")  # the most visited child, 4*2=8: chosen in a pair
        assert tree.cursor_node is not None and tree.cursor_node.data == 1
        text = detail(app)
        assert "4*2=8" in text and "N visits   7" in text and "prior      0.600" in text
        assert "chosen over #2 '4*2=9'" in text and "margin 1.30" in text and "[right-vs-wrong]" in text
        assert "step check right (arithmetic)" in text and "checkpoint base" in text
        await pilot.press("down", "down")  # 3+8=11, then 11-5=6 on the answer path (expanded)
        assert tree.cursor_node.data == 6
        await pilot.press("down", "down", "down", "down")  # A: 6, 11-5=7…, 3+8=12 (a leaf), then 4*2=9
        node = tree.cursor_node
        assert node.data == 2 and not node.is_expanded and node.allow_expand
        assert "[inverted]" not in detail(app) and "rejected under #1" in detail(app)
        await pilot.press("right")
        assert node.is_expanded
        await pilot.press("left")
        assert not node.is_expanded
        await pilot.press("left")  # collapsed already: to the parent
        assert tree.cursor_node is tree.root
        await pilot.press("space")  # toggles the root
        assert not tree.root.is_expanded
        await pilot.press("space", "a")  # the answer path: cursor on the returned answer
        assert tree.cursor_node.data == 8 and tree.by_id[2].is_expanded is False
        await pilot.press("e")
        assert all(n.is_expanded for n in tree.by_id.values() if n.allow_expand)
        await pilot.press("c")
        assert not tree.by_id[1].is_expanded and tree.root.is_expanded
        # the mouse: a click on the second line puts the cursor there and toggles it
        await pilot.click("#tree", offset=(8, 1))
        await pilot.pause()
        assert tree.cursor_node.data == 1 and tree.by_id[1].is_expanded

    drive(app, steps)


def test_find_by_id_verdict_and_inverted(tmp_path):
    app = TreeBrowser(sources(tmp_path))

    async def steps(pilot) -> None:
        assert "arith-8" in title(app)
        await pilot.press("slash")
        await pilot.press(*"is:inverted")
        await pilot.pause()
        found = app.screen.query_one("#find-list", OptionList)
        assert found.option_count == 1 and "1 of 2 problems" in str(app.screen.query_one("#find-help").render())
        await pilot.press("enter")
        await pilot.pause()
        assert "arith-7" in title(app)
        await pilot.press("slash")
        await pilot.pause()  # the last query is selected: typing replaces it
        await pilot.press(*"is:wrong")
        await pilot.press("enter")
        await pilot.pause()
        assert "arith-8" in title(app) and "answer 7 ✗" in title(app)
        await pilot.press("n")  # n walks the problems the last query matched: only arith-8
        assert "arith-8" in title(app)
        await pilot.press("slash")
        await pilot.pause()
        await pilot.press(*"arith-7", "enter")
        await pilot.pause()
        assert "arith-7" in title(app)
        await pilot.press("slash", "x", "escape")  # escape cancels
        await pilot.pause()
        assert "arith-7" in title(app) and isinstance(app.focused, SearchTree)
        await pilot.press("p")  # the query "arith-7" matches one problem: p stays
        assert "arith-7" in title(app)

    drive(app, steps)


def test_side_by_side_and_iterations(tmp_path):
    app = TreeBrowser(sources(tmp_path), problem="arith-7")

    async def steps(pilot) -> None:
        await pilot.press("s")
        assert app.has_class("compare") and app.query_one("#other").display
        text = str(app.query_one("#compare").render())
        assert "iter-000 → iter-001" in text and "nodes 12→14 (+2)" in text
        assert "answer 6 correct → 7 wrong (answer changed)" in text and "root entropy 1.16→1.16 bits" in text
        other = app.query_one("#other", SearchTree)
        assert other.search_tree is not None and other.search_tree.id == "t7-next"
        await pilot.press("s")
        assert not app.has_class("compare")
        await pilot.press("i")  # the next iteration, same problem
        assert "iter-001 · 1/1 · arith-7 · answer 7 ✗" in title(app)
        await pilot.press("i", "n")  # back to iter-000, then arith-8, which no other iteration holds
        await pilot.press("s")
        assert not app.has_class("compare")

    drive(app, steps)


def test_q_quits(tmp_path):
    app = TreeBrowser(sources(tmp_path))

    async def steps(pilot) -> None:
        await pilot.press("question_mark")  # every key, in a notification
        assert any("side by side" in str(n.message) for n in app._notifications)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running

    drive(app, steps)


def test_unknown_problem_is_a_user_error(tmp_path):
    from envs.errors import UserError

    with pytest.raises(UserError, match="no tree for problem 'nope'"):
        TreeBrowser(sources(tmp_path), problem="nope")
    res = subprocess.run([CLI, "tree", "browse", str(tmp_path / "missing")], capture_output=True, text=True)
    assert res.returncode == 1 and "no such file or directory" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")
def test_console_script_in_tmux(tmp_path):
    """The real `selfimprove tree browse` in an 80×24 tmux pane: it draws, moves, finds, and q quits."""
    run = make_run(tmp_path / "run")
    session = f"browse-test-{time.monotonic_ns()}"
    done = tmp_path / "exit-status"
    cmd = f"{CLI} tree browse {run}; echo $? > {done}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "80", "-y", "24", cmd], check=True)

    def pane() -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True).stdout

    def wait_for(text: str, timeout: float = 60.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = pane()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; the pane shows:\n{pane()}")

    try:
        wait_for("iter-000 · 1/2 · arith-8")
        screen = wait_for("q quit")  # the footer: drawn last
        lines = screen.splitlines()
        assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
        assert "9-4=5" in screen and "q quit" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "n"], check=True)
        screen = wait_for("arith-7 · answer 6 ✓")
        assert "4*2=8" in screen and "1 inverted" in screen
        subprocess.run(["tmux", "send-keys", "-t", session, "s"], check=True)
        wait_for("iter-000 → iter-001")
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        end = time.monotonic() + 30
        while not done.exists() and time.monotonic() < end:
            time.sleep(0.2)
        assert done.exists() and done.read_text().strip() == "0"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
