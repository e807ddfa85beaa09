"""Math answers graded the way math benchmarks grade them: find the final answer, then check it with
HF's `math-verify` (sympy through `latex2sympy2-extended`), after an exact numeric fast path.

Finding the answer (`find_answer`): the last of ``\\boxed{…}`` (or ``\\fbox{…}``), ``#### …``, "the
(final) answer is …" and a line ``A: …`` / ``Answer: …`` / ``Final answer: …`` in the text, by position.
This part is ours rather than math-verify's own extraction because math-verify reads ``\\boxed{9} …
\\boxed{10}`` as the set {9, 10} and "28 or 29" as 29 (hedges would count as right answers).

Checking it (`grade`): when gold and answer are both one plain number (``1,234``, ``$18.00``, ``−6``,
``3/4``, ``\\frac{3}{4}``, ``50%``, ``12 apples``: trailing unit words and a ``\\text{…}`` unit are
dropped) they are compared exactly as fractions, so ``0.333`` is not ``1/3``; anything else goes to
math-verify (``\\frac12`` = ``0.5``, ``\\sqrt8`` = ``2\\sqrt2``, ``(1, 2)`` = ``(1,2)``, ``1+x^2`` =
``x^2+1``; ``28 or 29`` is a set, never a number). An answer that cannot be parsed is wrong, never an
error; a gold answer that cannot be parsed is the dataset's fault (`parse_gold` raises UserError).

Cost: parses and verdicts are cached per text (gold answers are parsed once); math-verify runs under a
time limit (`time_limit`, default 2 s, a SIGALRM timer that keeps any outer timer, e.g. pytest-timeout's),
and an answer longer than `MAX_ANSWER_CHARS` is wrong without parsing. Off the main thread no signal
can interrupt sympy, so there the limit is only the length cap. `bench/grading.py` measures the cost.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

from envs.answers import format_number, normalize_minus, parse_number
from envs.errors import UserError

MAX_ANSWER_CHARS = 300  # longer "answers" are wrong without parsing (they are not a final answer)
TIME_LIMIT_S = 2.0  # per math-verify parse or comparison (main thread only)

# math-verify logs a warning when its own signal timeout is off (ours replaces it) and on each timeout.
logging.getLogger("math_verify").setLevel(logging.ERROR)


class GradingTimeout(BaseException):
    """Raised by `time_limit`; a BaseException so that sympy's broad `except Exception` cannot swallow it."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise GradingTimeout in the block after `seconds` (main thread only; elsewhere no limit).

    An outer ITIMER_REAL timer (pytest-timeout, a caller's alarm) is kept: it is re-armed afterwards with
    what is left of it, and fires right away when it fell due during the block.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise GradingTimeout

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    if old_delay and old_delay < seconds:
        signal.setitimer(signal.ITIMER_REAL, old_delay)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            left = old_delay - (time.monotonic() - start)
            signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6), old_interval)


# --- finding the final answer in a solution ------------------------------------------------------
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####[ \t]*(?P<span>[^\n]*)")
# "the answer is" counts only before something that looks like an answer (not "the answer is unclear").
_ANSWER_IS = re.compile(r"\banswer\s+is\s*:?[ \t]*(?=[-+−$\\(\[{.*\d]|[A-Za-z]\s*=)", re.I)
_ANSWER_LINE = re.compile(r"^[ \t]*(?:\*\*)?(?:A|Answer|Final answer)(?:\*\*)?\s*:(?:\*\*)?[ \t]*(?P<span>[^\n]*)",
                          re.I | re.M)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")


def _boxed_contents(text: str) -> Iterator[tuple[int, str]]:
    """(position, contents) of each ``\\boxed{…}`` with balanced braces (an unclosed one is skipped)."""
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            yield m.start(), text[m.end(): i - 1]


def last_boxed(text: str) -> str | None:
    """The contents of the last ``\\boxed{…}`` in `text` (how MATH solutions state their answer), or None."""
    boxes = list(_boxed_contents(text))
    return boxes[-1][1].strip() if boxes else None


def find_answer(text: str) -> str | None:
    """The final answer `text` states (see the module docstring), cleaned; None when it states none.

    An empty string means an answer marker with nothing after it (a stated, wrong answer).
    """
    found: list[tuple[int, str]] = list(_boxed_contents(text))
    found += [(m.start(), m["span"]) for m in _HASHES.finditer(text)]
    for m in _ANSWER_IS.finditer(text):
        span = text[m.end():].split("\n", 1)[0]
        end = _SENTENCE_END.search(span)
        found.append((m.start(), span[: end.start()] if end else span))
    found += [(m.start(), m["span"]) for m in _ANSWER_LINE.finditer(text)]
    if not found:
        return None
    _, span = max(found, key=lambda f: f[0])
    inner = last_boxed(span)  # "A: $\boxed{5}$" states 5
    return clean_answer(inner if inner is not None else span)


_NUMBER = re.compile(r"[-+−]?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?")


def find_result(text: str) -> str | None:
    """The one number a step ends on when it states no answer: the one after its last ``=``, or the only
    number in it (``24 / 2 = 12 boys`` → 12, ``So there are 12 boys.`` → 12); None when there are two
    (``28 or 29``) or none. A fallback like lm-eval's GSM8K "flexible extract", stricter against hedges."""
    tail = text.rsplit("=", 1)[-1]
    numbers = _NUMBER.findall(tail)
    return numbers[0].rstrip(",") if len(numbers) == 1 else None


def clean_answer(span: str) -> str:
    """`span` without surrounding space, markdown bold, a sentence-ending period or a ``$…$`` wrapper."""
    s = span.strip().strip("*").strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right) \
                and left not in s[len(left): -len(right)]:
            s = s[len(left): -len(right)].strip()
            break
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    return s


# --- the exact numeric fast path -----------------------------------------------------------------
_LATEX_FRAC = re.compile(r"^(?P<sign>[+-]?)\s*\\[dt]?frac\s*\{\s*(?P<num>\d+)\s*\}\s*\{\s*(?P<den>\d+)\s*\}$")
_UNIT_TEXT = re.compile(r"\s*\\(?:text|mbox|mathrm)\s*\{[^{}\d]*\}\s*$")  # 5\text{ cm}
_UNIT_WORDS = re.compile(r"\s+[A-Za-z][A-Za-z'’/.\- ]*$")  # 12 apples, 5 m/s, 3 dollars each
_VARIABLE = re.compile(r"^[A-Za-z]\s*=\s*")  # x = 5
# words after a number that change its value: never dropped as a unit (2 pi is not 2)
_NOT_UNITS = frozenset(["pi", "i", "e", "sqrt", "squared", "cubed", "times", "over", "plus", "minus", "and", "or", "to", "divided", "hundred", "thousand", "million", "billion", "trillion"])


def numeric_value(span: str | None) -> Fraction | None:
    """The exact value of `span` when it is one plain number (see the module docstring), else None."""
    if span is None:
        return None
    s = normalize_minus(span).strip()
    s = s.replace("\\!", "").replace("{,}", ",").replace("\\%", "%").replace("\\$", "$").replace("\\,", "")
    s = _VARIABLE.sub("", s)
    s = _UNIT_TEXT.sub("", s)
    unit = _UNIT_WORDS.search(s)
    if unit:
        if unit.group().split()[0].lower().strip(".") in _NOT_UNITS:
            return None
        s = s[: unit.start()]
    m = _LATEX_FRAC.match(s.strip())
    if m:
        den = int(m["den"])
        return None if den == 0 else (-1 if m["sign"] == "-" else 1) * Fraction(int(m["num"]), den)
    return parse_number(s)


# --- math-verify -------------------------------------------------------------------------------
def _latex_input(span: str) -> str:
    """The text math-verify's LaTeX extraction reads: `span` in ``$…$`` unless it has its own delimiters."""
    return span if ("$" in span or "\\(" in span or "\\[" in span) else f"${span}$"


@lru_cache(maxsize=1 << 16)
def parse_math(span: str) -> tuple[Any, ...]:
    """math-verify's parse of `span` (sympy expression first, then its text); () when it has none."""
    if not span.strip() or len(span) > MAX_ANSWER_CHARS:
        return ()
    from math_verify import LatexExtractionConfig, parse

    try:
        with time_limit(TIME_LIMIT_S):
            parsed = parse(_latex_input(span), [LatexExtractionConfig(boxed_match_priority=0)],
                           parsing_timeout=None)  # type: ignore[arg-type]  # None disables its own signal timer
    except GradingTimeout:
        return ()
    return tuple(parsed) if parsed and not isinstance(parsed[0], str) else ()


@lru_cache(maxsize=1 << 16)
def _verify(gold: str, answer: str) -> bool:
    from math_verify import verify

    g, a = parse_math(gold), parse_math(answer)
    if not g or not a:
        return False
    try:
        with time_limit(TIME_LIMIT_S):
            return bool(verify(list(g), list(a), timeout_seconds=None))
    except GradingTimeout:
        return False


# Plain words parse as products of symbols ("four" = f*o*u*r): as a gold answer that is a data error
# (text answers are written \text{Sunday}); a model's words still go to math-verify (Sunday = \text{Sunday}).
_BARE_WORDS = re.compile(r"^[A-Za-z]{2,}(?:\s+[A-Za-z]+)*$")

def is_math(span: str) -> bool:
    """Whether `span` reads as an answer: one plain number, words, or something math-verify parses."""
    return numeric_value(span) is not None or bool(_BARE_WORDS.match(span)) or bool(parse_math(span))


# --- gold answers and grading --------------------------------------------------------------------

@dataclass(frozen=True)
class Gold:
    """A reference answer, parsed once: its text, and its exact value when it is one plain number."""

    text: str
    number: Fraction | None


@lru_cache(maxsize=1 << 16)
def _gold(text: str) -> Gold | None:
    number = numeric_value(text)
    if number is None and (_BARE_WORDS.match(text) or not parse_math(text)):
        return None
    return Gold(text=text, number=number)


def parse_gold(text: str, where: str = "gold answer") -> Gold:
    """`text` parsed as a reference answer (cached); UserError naming `where` when math-verify cannot read it."""
    gold = _gold(clean_answer(text))
    if gold is None:
        raise UserError(f"{where}: gold answer '{text.strip()}' cannot be parsed by math-verify "
                        "(write a number or a LaTeX expression, \\text{...} for words)")
    return gold


def precheck_gold(text: str, where: str = "gold answer") -> Fraction | None:
    """The cheap part of `parse_gold`: the value of a plain-number gold answer, None for one that needs
    math-verify (LaTeX, checked later by `parse_gold`); UserError for an empty or bare-words one."""
    clean = clean_answer(text)
    number = numeric_value(clean)
    if number is None and (not clean or _BARE_WORDS.match(clean)):
        parse_gold(clean, where)  # raises the one error message
    return number


def grade(gold: Gold | str, answer: str | None) -> bool:
    """Whether `answer` (a cleaned answer text, e.g. from `find_answer`) equals `gold`; never raises.

    Exact when both are plain numbers; otherwise math-verify decides (sympy equivalence).
    """
    if answer is None or not answer.strip() or len(answer) > MAX_ANSWER_CHARS:
        return False
    if isinstance(gold, str):
        parsed = _gold(clean_answer(gold))
        if parsed is None:
            return False
        gold = parsed
    if gold.number is not None:
        value = numeric_value(answer)
        if value is not None:
            return value == gold.number
    if "".join(answer.split()) == "".join(gold.text.split()):  # written as the gold is: no parsing needed
        return True
    return _verify(gold.text, answer)


def canonical_answer(answer: str | None) -> str | None:
    """A normal form of an answer text so that equal answers compare equal as strings (majority votes):
    a plain number in canonical form (``1,234.0`` → ``1234``), else sympy's text of it when math-verify
    parses it, else the text itself."""
    if answer is None:
        return None
    value = numeric_value(answer)
    if value is not None:
        return format_number(value)
    if _BARE_WORDS.match(answer):  # words stay words ("f*o*u*r" helps no one)
        return answer
    parsed = parse_math(answer)
    if parsed:
        try:
            with time_limit(TIME_LIMIT_S):
                return str(parsed[0])
        except GradingTimeout:
            pass
    return answer
