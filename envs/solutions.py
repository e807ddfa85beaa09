"""Reference solutions as steps (for few-shot prompts and SFT warm starts), from the two common layouts.

GSM8K (``answer`` = worked lines, then ``#### n``): one step per non-blank line, calculator annotations
``<<48/2=24>>`` removed, then ``A: n``.

MATH (``solution`` = prose with LaTeX, final answer in ``\\boxed{…}``): one step per sentence. The text is
cut into lines, then each line at a sentence end (``.``, ``!`` or ``?`` followed by space and a capital,
``$`` or ``\\``); math (``$…$``, ``$$…$$``, ``\\[…\\]``, ``\\(…\\)``, ``\\begin{env}…\\end{env}``) is never
cut and its line breaks become spaces, since a step is one line. The steps end with the sentence holding
the last ``\\boxed{…}`` (it states the answer); a solution without one gets ``A: <answer>`` appended.
"""

from __future__ import annotations

import re

_CALCULATOR = re.compile(r"<<[^>]*>>")
_MATH = re.compile(r"\$\$.*?\$\$|\$.*?\$|\\\[.*?\\\]|\\\(.*?\\\)|\\begin\{([a-zA-Z*]+)\}.*?\\end\{\1\}", re.S)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\x00\\])")
_HOLE = re.compile(r"\x00(\d+)\x00")


def gsm8k_steps(rationale: str, answer: str | None) -> list[str] | None:
    """The lines of a GSM8K worked solution (text before ``####``) and ``A: answer``; None when it has none."""
    lines = [_CALCULATOR.sub("", line).strip() for line in rationale.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return None
    return [*lines, f"A: {answer}"] if answer is not None else lines


def math_steps(solution: str, answer: str | None = None) -> list[str] | None:
    """The sentences of a MATH solution (see the module docstring); None when it has no text."""
    held: list[str] = []

    def hold(m: re.Match) -> str:
        held.append(" ".join(m.group(0).split()))
        return f"\x00{len(held) - 1}\x00"

    text = _MATH.sub(hold, solution)
    steps: list[str] = []
    for line in text.splitlines():
        for sentence in _SENTENCE.split(line):
            sentence = _HOLE.sub(lambda m: held[int(m.group(1))], sentence).strip()
            if sentence:
                steps.append(sentence)
    if not steps:
        return None
    boxed = [i for i, s in enumerate(steps) if "\\boxed" in s or "\\fbox" in s]
    if boxed:
        return steps[: boxed[-1] + 1]
    return [*steps, f"A: {answer}"] if answer is not None else steps
