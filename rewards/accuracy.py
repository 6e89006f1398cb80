"""Rule-based answer checking: normalised exact match, numbers with tolerance, choice letters, yes/no, short lists.

`answer_matches` picks the rule from the reference solution:

1. a choice letter (`"B"`, `"(B)"`, `"B."`)  -> the answer's choice letter must be the same;
2. `yes` / `no`                             -> the answer's first word must be the same;
3. a number (`"12"`, `"-0.5"`, `"1,000"`, `"25%"`, `"3/4"`, `"seven"`) -> the last number in the answer must be
   equal within `rel_tol` / `abs_tol`;
4. a short list (items separated by `,` `;` or ` and `) -> the same items in any order;
5. anything else                            -> equal after `normalize_answer`.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from typing import Any

from data_tools.answers import strip_answer_markup

from .text import answer_text, completion_text

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION_TABLE = str.maketrans({c: " " for c in string.punctuation})
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty"
)
_WORD_NUMBERS = {word: float(value) for value, word in enumerate(_NUMBER_WORDS.split(" "))}
_NUMBER = re.compile(
    r"(?<![\w.])([-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+)(?:\s*/\s*(\d+(?:\.\d+)?))?(\s*%)?"
)
_CHOICE_SOLUTION = re.compile(r"^\s*\(?([A-Ha-h])\)?\s*[.:)]?\s*$")
# A letter followed by a space is not a choice ("A red circle"): it needs brackets, `.`, `)`, `:` or nothing after.
_CHOICE_IN_ANSWER = re.compile(
    r"^\s*(?:(?:option|choice)\s+)?(?:\(([A-Ha-h])\)|([A-Ha-h])(?:[.:)]|\s*$))", re.IGNORECASE
)
_LIST_SEPARATORS = re.compile(r"\s*(?:[,;]|\band\b)\s*")


def normalize_answer(text: str) -> str:
    """Lower-cased NFKC text without punctuation, articles (a, an, the) and repeated whitespace."""
    text = unicodedata.normalize("NFKC", strip_answer_markup(text)).lower()
    text = text.translate(_PUNCTUATION_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_numbers(text: str) -> list[float]:
    """All numbers in `text`, in order: integers, decimals, `1,000`, fractions `3/4`, percentages (as given:
    `25%` is 25.0) and the words zero..twenty. Non-finite results are left out."""
    numbers: list[tuple[int, float]] = []
    for match in _NUMBER.finditer(text):
        value = float(match.group(1).replace(",", ""))
        if match.group(2) is not None:
            denominator = float(match.group(2))
            if denominator == 0:
                continue
            value /= denominator
        if math.isfinite(value):
            numbers.append((match.start(), value))
    for match in re.finditer(r"\b(" + "|".join(_WORD_NUMBERS) + r")\b", text.lower()):
        numbers.append((match.start(), _WORD_NUMBERS[match.group(1)]))
    return [value for _, value in sorted(numbers, key=lambda item: item[0])]


def _as_single_number(text: str) -> float | None:
    """The value of `text` when it is nothing but one number (with an optional `%`)."""
    stripped = strip_answer_markup(text).strip().rstrip(".")
    if stripped.lower() in _WORD_NUMBERS:
        return _WORD_NUMBERS[stripped.lower()]
    match = _NUMBER.fullmatch(stripped)
    if not match:
        return None
    numbers = parse_numbers(stripped)
    return numbers[0] if numbers else None


def numbers_match(answer: str, solution: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """True when the last number in `answer` equals the number `solution` within the tolerances."""
    expected = _as_single_number(solution)
    found = parse_numbers(strip_answer_markup(answer))
    if expected is None or not found:
        return False
    return math.isclose(found[-1], expected, rel_tol=rel_tol, abs_tol=abs_tol)


def choice_letter(text: str) -> str | None:
    """The multiple-choice letter (A-H, upper-cased) that `text` starts with: `"B"`, `"(B)"`, `"B. red"`,
    `"B)"`, `"Option B"`, `"The answer is (B)"`; None when there is none (`"A red circle"` states no choice)."""
    match = _CHOICE_IN_ANSWER.match(strip_answer_markup(text))
    return (match.group(1) or match.group(2)).upper() if match else None


def _items(text: str) -> list[str]:
    return sorted(item for item in (normalize_answer(part) for part in _LIST_SEPARATORS.split(text)) if item)


def answer_matches(answer: str, solution: str, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    """Whether `answer` (the text after `</think>`) matches the reference `solution`, by the rule the solution
    calls for (see the module docstring)."""
    solution = str(solution)
    if _CHOICE_SOLUTION.match(solution):
        return choice_letter(answer) == solution.strip().strip("().:").upper()
    normalized_solution = normalize_answer(solution)
    if normalized_solution in ("yes", "no"):
        words = normalize_answer(answer).split()
        return bool(words) and words[0] == normalized_solution
    if _as_single_number(solution) is not None:
        return numbers_match(answer, solution, rel_tol=rel_tol, abs_tol=abs_tol)
    solution_items = _items(strip_answer_markup(solution))
    if len(solution_items) > 1:
        return _items(strip_answer_markup(answer)) == solution_items
    return bool(normalized_solution) and normalize_answer(answer) == normalized_solution


def accuracy_reward(
    prompts: list[Any],
    completions: list[Any],
    completion_ids: Any = None,
    solution: list[Any] | None = None,
    **kwargs: Any,
) -> list[float]:
    """1.0 when the completion's answer matches the row's `solution` (see `answer_matches`), else 0.0.

    Reads the dataset column `solution`. The answer is the text after `</think>` (see `text.answer_text`), so a
    completion cut off inside its reasoning scores 0.
    """
    if solution is None:
        raise ValueError("accuracy_reward needs the dataset column 'solution' (the reference answer of each row)")
    if len(solution) != len(completions):
        raise ValueError(f"column 'solution' has {len(solution)} entries for {len(completions)} completions")
    return [
        1.0 if answer_matches(answer_text(completion_text(completion)), reference) else 0.0
        for completion, reference in zip(completions, solution)
    ]
