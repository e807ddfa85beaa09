"""Answer extraction and numeric equivalence shared by the math environments.

Strict on purpose: an answer is accepted only when it is exactly one number, so hedges such as
``28 or 29``, two answers, or trailing words are never counted as correct.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

# Minus-like characters a model or a dataset may write instead of ASCII '-'.
_MINUS = str.maketrans({"−": "-", "–": "-", "‒": "-", "﹣": "-", "－": "-"})

_INT = r"\d+"
_GROUPED = r"\d{1,3}(?:,\d{3})+"
_NUMBER_RE = re.compile(
    rf"^(?P<sign>[+-]?)\s*\$?\s*"
    rf"(?:(?P<num>{_INT})\s*/\s*(?P<den>{_INT})"  # fraction 3/4
    rf"|(?P<whole>{_GROUPED}|{_INT})?(?:\.(?P<frac>\d+))?)"  # 1,234 or 12.5 or .5
    rf"\s*(?P<pct>%)?$"
)

ANSWER_PREFIX = "A:"


def normalize_minus(text: str) -> str:
    """Replace unicode minus signs and dashes with ASCII '-'."""
    return text.translate(_MINUS)


def parse_number(text: str | None) -> Fraction | None:
    """The exact value of `text` if it is one number, else None.

    Accepts integers, decimals (``0.75``, ``.5``), fractions (``3/4``), a sign (ASCII or unicode
    minus), thousands separators (``1,234``), a leading ``$``, a trailing ``%`` (kept as written:
    ``50%`` is 50) and one sentence-ending period. Anything else (two numbers, words) is None.
    """
    if text is None:
        return None
    s = normalize_minus(text).strip()
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1].rstrip()
    m = _NUMBER_RE.match(s)
    if not m:
        return None
    sign = -1 if m["sign"] == "-" else 1
    if m["num"] is not None:
        den = int(m["den"])
        if den == 0:
            return None
        return sign * Fraction(int(m["num"]), den)
    whole, frac = m["whole"], m["frac"]
    if whole is None and frac is None:
        return None
    value = Fraction(int(whole.replace(",", "")) if whole else 0)
    if frac:
        value += Fraction(int(frac), 10 ** len(frac))
    return sign * value


def parse_int(text: str | None) -> int | None:
    """The integer `text` spells (optional sign, unicode minus allowed, surrounding space), else None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([+-]?)\s*(\d+)\s*", normalize_minus(text))
    if not m:
        return None
    return -int(m[2]) if m[1] == "-" else int(m[2])


def format_number(value: Fraction) -> str:
    """Canonical text of a number: ``6``, ``-3``, ``0.75``, or ``1/3`` when it has no finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    while den % 2 == 0:
        den //= 2
    while den % 5 == 0:
        den //= 5
    if den == 1:  # finite decimal
        digits = 0
        scaled = value
        while scaled.denominator != 1:
            scaled *= 10
            digits += 1
        sign = "-" if scaled < 0 else ""
        n = abs(scaled.numerator)
        text = str(n).rjust(digits + 1, "0")
        return f"{sign}{text[:-digits]}.{text[-digits:]}"
    return f"{value.numerator}/{value.denominator}"


def numbers_equal(a: str | None, b: str | None) -> bool:
    """True when both texts are single numbers with the same exact value (``3/4`` == ``0.75``)."""
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


def answer_text(steps: Sequence[str], prefix: str = ANSWER_PREFIX) -> str | None:
    """The text after `prefix` in the final step, when exactly one step (the last) states an answer.

    None when no step answers, when an answer step is not the last, or when several steps answer.
    """
    answer_steps = [i for i, s in enumerate(steps) if s.lstrip().startswith(prefix)]
    if len(answer_steps) != 1 or answer_steps[0] != len(steps) - 1:
        return None
    return steps[-1].lstrip()[len(prefix):].strip()


def is_answer_step(step: str, prefix: str = ANSWER_PREFIX) -> bool:
    return step.lstrip().startswith(prefix)
