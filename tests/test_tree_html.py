"""`tree export --format html`: one self-contained page (nothing external), model text escaped (a step
holding `<script>`), every node's details and the pair marks; rendered by headless Chromium in a slow
test (Debian's `chromium` package, installed by .ci/run; skipped when absent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from test_tree_view import PAIRS, hand_tree

from envs.registry import make_env
from search.tree import Tree, write_trees
from selfimprove.tree_html import to_html
from selfimprove.tree_info import pair_overlay

CLI = str(Path(sys.executable).parent / "selfimprove")
EVIL = '<script>alert("pwned")</script> & </details><b>'


def evil_tree() -> Tree:
    """The hand tree with model output that is also HTML: a rejected sibling of 3+8=11."""
    t = hand_tree()
    t.add_child(4, EVIL, visits=1, value_sum=-1.0, prior=0.1)
    return t


class Structure(HTMLParser):
    """Counts tags and checks that every element closes in order (void elements aside)."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.tags: dict[str, int] = {}
        self.classes: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.classes.append(dict(attrs).get("class") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def test_page_is_self_contained_escaped_and_complete():
    t = evil_tree()
    page = to_html(t, pair_overlay(PAIRS, t.id), make_env("arithmetic"))
    p = Structure()
    p.feed(page)
    assert not p.errors and not p.stack, p.errors
    # nothing fetched from anywhere: no links, sources, imports or URLs; one inline script (ours)
    for banned in ("http://", "https://", "<link", " src=", "@import", "url(", "@font-face"):
        assert banned not in page, banned
    assert p.tags["script"] == 1 and p.tags["style"] == 1
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &lt;/details&gt;&lt;b&gt;" in page
    assert "<b>" not in page
    # one collapsible per node, the answer path marked, the pair marks and their details
    assert p.classes.count("t") + p.classes.count("t best") == len(t)
    assert p.classes.count("t best") == len(t.answer_path())
    assert p.classes.count("mark chosen") == 2 and p.classes.count("mark rejected") == 2
    assert p.classes.count("info") == len(t)
    assert "chosen over #2 &#x27;4*2=9&#x27;" in page and "step check</td><td>wrong (arithmetic)" in page
    assert "root entropy</td><td>1.16 bits" in page and "6 <span class=\"ok\">correct</span>" in page


def test_large_trees_start_with_only_the_answer_path_open():
    t = hand_tree()
    assert to_html(t).count("<details id=") == to_html(t).count(" open>") and len(t) <= 60
    page = to_html(t, open_all=False)
    assert page.count('class="t best" open>') == len(t.answer_path()) and page.count('class="t" open>') == 0


def test_cli_export_html(tmp_path):
    trees = tmp_path / "trees.jsonl"
    write_trees(trees, [hand_tree(), evil_tree()])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({**p, "strategy": "q-gap"}) + "\n" for p in PAIRS))
    out = tmp_path / "tree.html"
    res = subprocess.run([CLI, "tree", "export", str(trees), "--format", "html", "--index", "1", "--pairs",
                          str(pairs), "--env", "arithmetic", "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["format"] == "html"
    page = out.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert" in page and 'class="mark chosen"' in page
    res = subprocess.run([CLI, "tree", "export", str(trees), "--format", "dot", "--pairs", str(pairs)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "apply to --format html only" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
def test_chromium_renders_the_page(tmp_path):
    """Headless Chromium, offline, opens the file: the DOM holds every step as text (the `<script>` step
    as text, not as an element) and the screenshot is a drawn page, not a blank one."""
    from PIL import Image

    t = evil_tree()
    page = tmp_path / "tree.html"
    page.write_text(to_html(t, pair_overlay(PAIRS, t.id), make_env("arithmetic")), encoding="utf-8")
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9", "--window-size=900,1000"]
    env = {**os.environ, "HOME": str(tmp_path)}
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120,
                         env=env).stdout
    for node in t:
        if node.parent is not None and node.step != EVIL:
            assert f"{node.step} <span" in dom, node.step
    assert "&lt;script&gt;alert" in dom and "<script>alert" not in dom
    assert dom.count("<details id=") == len(t)
    png = tmp_path / "shot.png"
    subprocess.run([*base, f"--screenshot={png}", page.as_uri()], capture_output=True, timeout=120, env=env)
    img = Image.open(png).convert("RGB")
    assert img.size == (900, 1000)
    small = img.resize((90, 100))
    pixels = [small.getpixel((x, y)) for x in range(90) for y in range(100)]
    colours = set(pixels)
    background = max(colours, key=pixels.count)
    drawn = sum(px != background for px in pixels)
    assert len(colours) > 10 and drawn > 300, (len(colours), drawn)  # text, marks and lines were drawn
