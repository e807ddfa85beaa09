"""The sandbox: results, verdicts, limits, the pool, and the refusal to run unsandboxed.

Every behaviour is checked in both modes: bubblewrap (skipped only when bwrap is absent) and the
unshare+chroot fallback (forced with mode="fallback"; it needs root).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, cast

import pytest

from envs.errors import UserError
from envs.sandbox import UNSAFE_ENV, Check, Limits, Sandbox, available


@pytest.fixture
def box(sandbox_mode):
    return Sandbox(sandbox_mode, Limits(timeout=10.0), workers=4)


def test_scores_fraction_and_keeps_first_failure(box):
    prog = "def add(a, b):\n    return a + b if a < 5 else a - b\n"
    res = box.run(prog, ["assert add(1, 2) == 3", "assert add(7, 1) == 8", "assert add(2, 2) == 4",
                         "assert add(9, 9) == 18"])
    assert res.status == "failed" and res.mode == box.mode
    assert (res.passed, res.total) == (2, 4) and res.fraction == 0.5
    assert res.checks == [True, False, True, False]
    assert res.verdict == "test 1 failed: assert add(7, 1) == 8 (got 6)"


def test_all_pass_is_ok_and_uncounted_setup_does_not_count(box):
    res = box.run("def sq(x):\n    return x * x\n",
                  [Check("import math", counted=False), "assert sq(3) == 9", "assert sq(math.isqrt(16)) == 16"])
    assert res.status == "ok" and (res.passed, res.total) == (2, 2) and res.fraction == 1.0
    assert res.verdict == "all checks passed" and res.exit_code == 0 and res.signal is None


def test_program_errors_fail_every_check(box):
    res = box.run("def f(x):\n    return 10 // x\ny = f(0)\n", ["assert f(1) == 10"])
    assert res.status == "failed" and res.passed == 0 and res.total == 1
    assert res.verdict.startswith("program raised ZeroDivisionError: integer division or modulo by zero")
    assert "line 2" in res.verdict
    res = box.run("def f(x)\n    return x\n", ["assert f(1) == 1"])
    assert res.status == "failed" and "SyntaxError" in res.verdict and res.fraction == 0.0
    res = box.run("def f(x):\n    return x\n", ["assert f(1) == 1", "assert f(undefined) == 1"])
    assert res.status == "failed" and res.verdict.startswith("test 1 raised NameError")


def test_stdout_is_captured_and_capped(box):
    res = box.run("print('hello'); import sys; print('oops', file=sys.stderr)")
    assert res.status == "ok" and res.stdout == "hello\n" and res.stderr == "oops\n"
    small = Sandbox(box.mode, Limits(timeout=10.0, output_bytes=1000))
    res = small.run("print('x' * 5000)")
    assert res.status == "ok" and res.stdout_truncated and res.stdout == "x" * 1000


def test_partial_credit_survives_a_timeout(box):
    res = box.run("def f(x):\n    while x > 5:\n        pass\n    return x\n",
                  ["assert f(1) == 1", "assert f(2) == 2", "assert f(9) == 9"], timeout=1.0)
    assert res.status == "timeout" and (res.passed, res.total) == (2, 3)
    assert res.verdict == "timed out after 1 s"
    assert res.duration < 4.0


def test_pool_runs_concurrently_and_keeps_order(box):
    jobs = [(f"import time\ntime.sleep(0.6)\nv = {i}", [f"assert v == {i}", "assert v != 2"]) for i in range(4)]
    t0 = time.monotonic()
    results = box.run_many(jobs)
    wall = time.monotonic() - t0
    assert [r.status for r in results] == ["ok", "ok", "failed", "ok"]
    assert results[2].verdict == "test 1 failed: assert v != 2"
    assert wall < 4 * 0.6, f"4 sleeping runs on 4 workers took {wall:.2f} s: not concurrent"


def test_refuses_to_run_unsandboxed_without_opt_in(monkeypatch):
    monkeypatch.delenv(UNSAFE_ENV, raising=False)
    with pytest.raises(UserError, match="without isolation"):
        Sandbox("none")
    with pytest.raises(UserError, match="unknown sandbox mode"):
        Sandbox(cast(Any, "docker"))  # a mode the type does not admit, as a config file could give
    res = Sandbox("none", Limits(timeout=10.0), i_understand_this_is_unsafe=True).run("x = 1", ["assert x == 1"])
    assert res.status == "ok" and res.mode == "none"
    monkeypatch.setenv(UNSAFE_ENV, "1")
    assert Sandbox("none").mode == "none"


def test_auto_picks_a_real_sandbox():
    if available("bwrap") is None:
        assert Sandbox().mode == "bwrap"
    elif available("fallback") is None:
        assert Sandbox().mode == "fallback"
    else:
        with pytest.raises(UserError, match="no sandbox works"):
            Sandbox()


def test_auto_falls_back_when_bwrap_is_absent(tmp_path):
    """With no bwrap on PATH, auto mode picks the fallback (root) or refuses (not root); never 'none'."""
    import os
    import shutil
    import subprocess
    import sys

    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("util-linux 'unshare' not found")
    (tmp_path / "unshare").symlink_to(unshare)
    code = ("from envs.errors import UserError\nfrom envs.sandbox import Sandbox\ntry:\n    b = Sandbox()\n"
            "    print(b.mode, b.run('x = 2', ['assert x == 2']).status)\nexcept UserError as e:\n"
            "    print('refused', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PATH": str(tmp_path), "PYTHONPATH": str(Path(__file__).parent.parent)}).stdout
    if os.geteuid() == 0:
        assert out.strip() == "fallback ok"
    else:
        assert out.startswith("refused no sandbox works on this machine")


# --- values as data: what crosses from the program to the checks -------------------------------------
def test_return_values_cross_as_plain_builtin_values(box):
    prog = ("import math\ndef f(kind):\n    return {'set': {1, 2}, 'fs': frozenset('ab'), 'tuple': (1, [2.5, None]),"
            " 'bytes': b'\\x00\\xff', 'ba': bytearray(b'x'), 'c': 1 + 2j, 'inf': math.inf, 'nan': math.nan,"
            " 'neg0': -0.0, 'big': 3 ** 5000, 'dict': {(1, 2): 'a', 3: {'x': True}}, 'ustr': 'é\\u2603\\n'}[kind]\n"
            "PI = 3.14\nNAMES = ['a', 'b']\n")
    checks = ["assert f('set') == {1, 2} and type(f('set')) is set", "assert f('fs') == frozenset('ab')",
              "assert f('tuple') == (1, [2.5, None]) and type(f('tuple')) is tuple",
              "assert f('bytes') == b'\\x00\\xff' and f('ba') == bytearray(b'x')", "assert f('c') == 1 + 2j",
              "assert f('inf') == float('inf') and f('nan') != f('nan')", "assert str(f('neg0')) == '-0.0'",
              "assert f('big') == 3 ** 5000", "assert f('dict') == {(1, 2): 'a', 3: {'x': True}}",
              "assert f('ustr') == 'é\\u2603\\n'", "assert PI == 3.14 and NAMES == ['a', 'b']",
              "assert math.isqrt(16) == 4"]  # the program's stdlib module, imported again by the checker
    res = box.run(prog, checks)
    assert res.status == "ok", res.verdict


def test_exceptions_mutations_and_keywords_keep_their_meaning(box):
    prog = ("def parse(s):\n    return int(s)\ndef sort_in_place(xs, *, reverse=False):\n    xs.sort(reverse=reverse)\n"
            "def fill(d):\n    d['k'] = 1\nclass Oops(Exception):\n    pass\ndef boom():\n    raise Oops('custom')\n")
    checks = ["try:\n    parse('x')\n    raise AssertionError('no error')\nexcept ValueError as e:\n"
              "    assert 'invalid literal' in str(e)",
              "xs = [3, 1, 2]\nsort_in_place(xs, reverse=True)\nassert xs == [3, 2, 1]",
              "d = {}\nfill(d)\nassert d == {'k': 1}", "boom()"]
    res = box.run(prog, checks)
    assert res.checks == [True, True, True, False]
    assert res.verdict.startswith("test 3 raised ProgramError: Oops: custom")


def test_non_builtin_values_fail_unless_the_task_allows_objects(box):
    prog = ("class Pair:\n    def __init__(self, a, b):\n        self.a, self.b = a, b\n    def total(self):\n"
            "        return self.a + self.b\ndef longest(pairs):\n    return max(p.b - p.a for p in pairs)\n"
            "def first(pairs):\n    return pairs[0]\n")
    checks = ["assert longest([Pair(1, 5), Pair(2, 3)]) == 4", "p = Pair(2, 9)\nassert p.total() == 11 and p.a == 2",
              "p = Pair(1, 1)\nassert first([p]) is p", "assert Pair(1, 2)"]
    res = box.run(prog, checks)
    assert res.checks == [False] * 4 and res.tampering == ["non-builtin"]
    assert res.verdict == "test 0 failed: assert longest([Pair(1, 5), Pair(2, 3)]) == 4 -- returned a non-builtin value (Pair)"
    res = box.run(prog, checks, objects=True)  # opaque references: passed back, called, read; no truth value
    assert res.checks == [True, True, True, False] and res.tampering == []
    assert "has no truth value" in res.verdict


def test_the_program_cannot_shadow_builtins_the_checks_use(box):
    prog = "def abs(x):\n    return 0\ndef sorted(x):\n    return [1, 2]\ndef half(n):\n    return n // 2\n"
    res = box.run(prog, ["assert abs(half(5) - 2.5) < 1e-9", "assert sorted([half(4), half(2)]) == [1, 2]"])
    assert res.checks == [False, True]


def test_the_wire_decoder_takes_only_its_own_encodings():
    from envs.sandbox.wire import BadData, encode, parse, value

    samples = [None, True, 0, -7, 2.5, float("inf"), "x\n\"", [1, (2, {3})], {1: frozenset({b"a"})}, bytearray(b"z"),
               3 - 4j, 10 ** 400]
    for v in samples:
        back = value(parse(encode([v])))[0]
        assert back == v and type(back) is type(v)
    for text in ['{"a": 1}', '["l", {"x": 1}]', '["zz", 1]', '["s", ["l"]]', '["d", 1]', '["b", "zz"]',
                 '["h", 1]', "[" * 100_000 + "]" * 100_000, '["l"] trailing', "", "\x00", '["c", "1", 2]']:
        with pytest.raises(BadData):
            value(parse(text))
    class Int(int):
        pass
    from envs.sandbox.wire import NotData
    for v in (Int(1), object(), [Int(2)], {"k": object()}, print, range(3), {}.keys()):
        with pytest.raises(NotData):
            encode(v)
