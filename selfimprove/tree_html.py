"""`tree export --format html`: one search tree as a single self-contained HTML page.

No network and nothing external: inline CSS, nested `<details>` elements for collapsing (they work
without scripts) and a few lines of inline script for the expand / collapse / answer-path buttons.
Every text that came from a model or a data file (steps, prompt, answers, ids) is HTML-escaped; the
script holds no data. Each node shows its full step text, every number (`tree_info.node_fields`) and the
preference records comparing it (chosen +, rejected −, margin, weight, audit label).
"""

from __future__ import annotations

from html import escape

from envs.base import Environment
from envs.types import SCHEMA_VERSION
from search.tree import Node, Tree
from selfimprove.tree_info import (
    PairRef,
    answer_ids,
    answer_summary,
    describe_pair,
    marks_of,
    node_fields,
    step_check,
)

CSS = """
:root { color-scheme: light dark; --dim: #777; --best: #1a7f37; --bad: #cf222e; --line: #8884; }
body { font: 14px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace;
       margin: 1.2em; max-width: 110ch; }
h1 { font-size: 1.15em; margin: 0 0 .4em; }
pre { white-space: pre-wrap; word-break: break-word; margin: .2em 0; }
.meta td { padding: 0 1em 0 0; vertical-align: top; } .meta td:first-child { white-space: nowrap; }
.buttons button { font: inherit; margin: .6em .4em .6em 0; }
ul.tree, ul.tree ul { list-style: none; margin: 0; padding-left: 1.3em; border-left: 1px solid var(--line); }
ul.tree { border-left: none; padding-left: 0; }
summary { cursor: pointer; white-space: pre-wrap; word-break: break-word; }
summary.leaf { list-style: none; } summary.leaf::-webkit-details-marker { display: none; }
summary.leaf::before { content: "• "; color: var(--dim); }
.best > summary { font-weight: bold; color: var(--best); }
.stats { color: var(--dim); font-weight: normal; }
.ok { color: var(--best); } .bad { color: var(--bad); }
.mark { display: inline-block; min-width: 1.2em; text-align: center; border-radius: 3px; font-weight: bold; }
.mark.chosen { background: #2da44e33; } .mark.rejected { background: #cf222e33; } .mark.both { background: #bf870033; }
details.info { margin-left: 1.4em; color: var(--dim); font-size: .9em; }
details.info[open] { color: inherit; }
.node { margin: .2em 0 .5em 0; padding: .3em .6em; border-left: 3px solid var(--line); }
.node table td { padding: 0 1em 0 0; } .node td:first-child { color: var(--dim); }
.pairs { margin: .3em 0 0; padding-left: 1.2em; }
.inverted { color: var(--bad); font-weight: bold; }
"""

SCRIPT = """
function setAll(sel, open) { document.querySelectorAll(sel).forEach(d => d.open = open); }
function answerPath() {
  document.querySelectorAll('details.t').forEach(d => d.open = d.classList.contains('best'));
}
"""


def _mark(node: Node, marks: dict[int, str]) -> str:
    m = marks.get(node.id)
    if not m:
        return ""
    cls = {"+": "chosen", "-": "rejected"}.get(m, "both")
    return f'<span class="mark {cls}" title="{cls} in a preference pair">{escape(m)}</span> '


def _stats(tree: Tree, node: Node, env: Environment | None) -> str:
    q = f"{node.q:+.2f}" if node.visits else "-"
    v = "-" if node.value is None else f"{node.value:+.2f}"
    verdict = ""
    if node.terminal:
        verdict = ' <span class="ok">✓</span>' if node.correct else ' <span class="bad">✗</span>'
    elif step_check(tree, node, env)[0] is False:
        verdict = ' <span class="bad" title="the step check rejects this step">✗</span>'
    return f'<span class="stats">N={node.visits} Q={q} V={v} P={node.prior:.2f}</span>{verdict}'


def _pairs_html(tree: Tree, refs: list[PairRef]) -> str:
    items = []
    for ref in refs:
        cls = ' class="inverted"' if ref.label == "inverted" else ""
        items.append(f"<li{cls}>{escape(describe_pair(tree, ref, width=60))}</li>")
    return f'<ul class="pairs">{"".join(items)}</ul>'


def to_html(tree: Tree, overlay: dict[int, list[PairRef]] | None = None, env: Environment | None = None,
            *, open_all: bool | None = None) -> str:
    """The page for `tree`; `overlay` None = no pairs were given. Nodes on the answer path start open
    (every node when the tree has at most 60 nodes, unless `open_all` says otherwise)."""
    given, overlay = overlay, overlay or {}
    n_records = sum(r.role == "chosen" for refs in overlay.values() for r in refs)
    marks = marks_of(overlay)
    best = answer_ids(tree)
    summary = answer_summary(tree)
    if open_all is None:
        open_all = len(tree) <= 60
    out: list[str] = []

    def node_html(node: Node) -> None:
        kids = sorted(tree.children(node.id), key=lambda c: (-c.visits, -c.q, c.id))
        step = "(root)" if node.parent is None else node.step
        classes = ["best"] if node.id in best else []
        is_open = " open" if open_all or node.id in best else ""
        leaf = "" if kids else ' class="leaf"'
        out.append(f'<li><details id="n{node.id}" class="{" ".join(["t", *classes])}"{is_open}>'
                   f"<summary{leaf}>{_mark(node, marks)}{escape(step)} {_stats(tree, node, env)}</summary>")
        rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in node_fields(tree, node, env))
        refs = overlay.get(node.id, [])
        what = f"#{node.id} details" + (f" · {len(refs)} pair{'s' if len(refs) > 1 else ''}" if refs else "")
        out.append(f'<details class="info"><summary>{what}</summary><div class="node">'
                   f"<pre>{escape(step)}</pre><table>{rows}</table>")
        if refs:
            out.append(_pairs_html(tree, refs))
        out.append("</div></details>")
        if kids:
            out.append("<ul>")
            for k in kids:
                node_html(k)
            out.append("</ul>")
        out.append("</details></li>")

    node_html(tree.root)
    ent = summary["root_entropy"]
    verdict_cls = "ok" if summary["verdict"] == "correct" else "bad"
    meta = [
        ("problem", escape(str(tree.problem.id))),
        ("answer", f'{escape(str(summary["answer"]))} <span class="{verdict_cls}">{escape(summary["verdict"])}'
                   f'</span> (reference {escape(str(summary["reference"]))})'),
        ("nodes", f'{summary["nodes"]}, terminals {summary["terminals"]}, correct {summary["correct"]}, '
                  f'depth {summary["max_depth"]}, tokens {summary["tokens"]}'),
        ("root entropy", "-" if ent is None else f"{ent:.2f} bits"),
        ("search", "-" if not tree.config else f"<details><summary>{escape(str(tree.config.get('algo', '?')))}"
                   f"</summary>{escape(', '.join(f'{k}={v}' for k, v in tree.config.items()))}</details>"),
        ("checkpoint", escape(str(tree.checkpoint))),
        ("pairs", f"{n_records} records overlaid (+ chosen, - rejected, ± both)" if n_records
         else "none given" if given is None else "no record compares this tree's nodes"),
    ]
    meta_rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in meta)
    title = escape(f"tree {tree.id} · {tree.problem.id}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f'<meta name="generator" content="{SCHEMA_VERSION}">'  # marks the file as ours (envs.io.written_by_us)
        f"<title>{title}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{title}</h1><pre class=\"prompt\">{escape(tree.prompt)}</pre>"
        f'<table class="meta">{meta_rows}</table>'
        '<div class="buttons"><button onclick="setAll(\'details.t\', true)">expand all</button>'
        '<button onclick="setAll(\'details.t\', false)">collapse all</button>'
        '<button onclick="answerPath()">answer path</button>'
        '<button onclick="setAll(\'details.info\', true)">every number</button>'
        '<button onclick="setAll(\'details.info\', false)">hide numbers</button></div>\n'
        f'<ul class="tree">{"".join(out)}</ul>\n'
        f"<script>{SCRIPT}</script></body></html>\n"
    )
