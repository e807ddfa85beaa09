"""Answer parsing shared by the math environments: exact numbers only, never a hedge."""

from fractions import Fraction

import pytest

from envs.answers import answer_text, format_number, numbers_equal, parse_int, parse_number


@pytest.mark.parametrize("text, value", [
    ("6", 6), ("  6 ", 6), ("-6", -6), ("−6", -6), ("+3", 3), ("1,234", 1234), ("1,234,567", 1234567),
    ("3/4", Fraction(3, 4)), ("-3/4", Fraction(-3, 4)), ("0.75", Fraction(3, 4)), (".5", Fraction(1, 2)),
    ("1,234.5", Fraction(2469, 2)), ("$18", 18), ("18.", 18), ("50%", 50), ("007", 7),
])
def test_parse_number_accepts_one_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", [
    "", "   ", "28 or 29", "12 13", "6 apples", "six", "1,23", "12,34,567", "1/0", "3/4/5", "--6",
    "6..", "1.2.3", "A: 6", "6\n7", None,
])
def test_parse_number_rejects_everything_else(text):
    assert parse_number(text) is None


def test_parse_int_is_strict():
    assert parse_int(" −17 ") == -17
    assert parse_int("17") == 17
    for bad in ["17.0", "1,700", "17 18", "17!", "", None]:
        assert parse_int(bad) is None


def test_numeric_equivalence():
    assert numbers_equal("3/4", "0.75")
    assert numbers_equal("1,234", "1234")
    assert numbers_equal("−6", "-6.0")
    assert not numbers_equal("0.333", "1/3")
    assert not numbers_equal("28 or 29", "28")
    assert not numbers_equal(None, "1")


@pytest.mark.parametrize("value, text", [
    (Fraction(6), "6"), (Fraction(-3), "-3"), (Fraction(3, 4), "0.75"), (Fraction(-1, 8), "-0.125"),
    (Fraction(1, 3), "1/3"), (Fraction(1, 100), "0.01"), (Fraction(-5, 2), "-2.5"),
])
def test_format_number_round_trips(value, text):
    assert format_number(value) == text
    assert parse_number(text) == value


def test_answer_text_needs_exactly_one_final_answer_step():
    assert answer_text(["4*2=8", "A: 8"]) == "8"
    assert answer_text(["A:8"]) == "8"
    assert answer_text(["4*2=8"]) is None
    assert answer_text([]) is None
    assert answer_text(["A: 8", "A: 9"]) is None  # two answers
    assert answer_text(["A: 8", "4*2=8"]) is None  # the answer is not last
    assert answer_text(["Answer: 8"]) is None  # not our answer marker
