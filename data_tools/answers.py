"""How a short answer is written: the one clean-up that data conversion and the accuracy reward share."""

from __future__ import annotations

import re

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*)?[:：]?\s*", re.IGNORECASE)
_TRAILING = " \t\r\n.!;,"


def strip_answer_markup(text: str) -> str:
    """The answer inside the markup public data sets and models wrap it in.

    ``<answer> red </answer>`` (first tag), ``\\boxed{red}``, ``Answer: red`` / ``The final answer is red`` become
    ``red``; surrounding whitespace and trailing ``. ! ; ,`` go. Case and inner punctuation stay (``3.5``, ``St. Ives``).
    """
    tagged = _ANSWER_TAG.search(text)
    if tagged:
        text = tagged.group(1)
    boxed = _BOXED.search(text)
    if boxed:
        text = boxed.group(1)
    return _ANSWER_PREFIX.sub("", text, count=1).strip(_TRAILING)
