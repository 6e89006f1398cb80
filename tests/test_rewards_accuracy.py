"""Rule-based accuracy: which answers match which reference solutions."""

import pytest

from rewards import accuracy_reward, answer_matches, choice_letter, normalize_answer, parse_numbers


def reasoned(answer):
    return f"<think>Looking at the image.</think>{answer}"


@pytest.mark.parametrize(
    ("answer", "solution", "expected"),
    [
        # normalised exact match: case, punctuation, articles, whitespace, unicode width
        ("Red.", "red", True),
        ("The red square", "red square", True),
        ("  RED   SQUARE! ", "red square", True),
        ("ｒｅｄ", "red", True),  # full-width letters (NFKC)
        ("Answer: red", "red", True),
        ("\\boxed{red}", "red", True),
        ("red square", "blue square", False),
        ("redsquare", "red square", False),
        ("", "red", False),
        # numbers with tolerance; the last number in the answer counts
        ("3", "3", True),
        ("3.0", "3", True),
        ("There are 3 circles.", "3", True),
        ("2 red and 3 blue, so 5", "5", True),
        ("three", "3", True),
        ("3", "three", True),
        ("1,000", "1000", True),
        ("0.50001", "0.5", True),  # relative difference 2e-5 <= 1e-4
        ("0.51", "0.5", False),
        ("-2", "2", False),
        ("3/4", "0.75", True),
        ("25%", "25", True),
        ("no number", "4", False),
        # multiple-choice letters
        ("B", "B", True),
        ("(b)", "B", True),
        ("B. the blue one", "(B)", True),
        ("Option C", "C", True),
        ("The answer is (D)", "D", True),
        ("A", "B", False),
        ("A red circle", "A", False),  # "A" followed by a word is an article, not a choice
        # yes / no
        ("Yes", "yes", True),
        ("yes, it is on the left", "Yes", True),
        ("No.", "no", True),
        ("no", "yes", False),
        ("I think yes", "yes", False),  # the first word decides
        # short lists, any order
        ("blue, red", "red, blue", True),
        ("red and blue", "blue; red", True),
        ("red, blue, green", "red, blue", False),
        ("red", "red, blue", False),
    ],
)
def test_answer_matches(answer, solution, expected):
    assert answer_matches(answer, solution) is expected


def test_numeric_tolerance_is_configurable():
    assert not answer_matches("10.4", "10")
    assert answer_matches("10.4", "10", rel_tol=0.05)
    assert answer_matches("0.0001", "0", abs_tol=1e-3)


def test_accuracy_reward_reads_the_answer_after_the_reasoning():
    completions = [
        reasoned("red"),
        "<think>It might be red</think>blue",  # "red" only in the reasoning: wrong
        "<think>the answer is red but I was cut off",  # no answer
        [{"role": "assistant", "content": reasoned("Red")}],  # conversational
        "red",  # no reasoning: the whole text is the answer (the format reward is separate)
    ]
    assert accuracy_reward(None, completions, solution=["red"] * 5) == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_accuracy_reward_accepts_non_string_solutions():
    assert accuracy_reward(None, [reasoned("4")], solution=[4]) == [1.0]


def test_accuracy_reward_names_the_missing_column():
    with pytest.raises(ValueError, match="'solution'"):
        accuracy_reward(None, [reasoned("red")])
    with pytest.raises(ValueError, match="'solution' has 1 entries for 2"):
        accuracy_reward(None, [reasoned("red")] * 2, solution=["red"])


def test_helpers():
    assert normalize_answer("The  Big, RED   square!") == "big red square"
    assert parse_numbers("from -1.5 to 2,500 or 1/2 and twenty") == [-1.5, 2500.0, 0.5, 20.0]
    assert parse_numbers("divide by 3/0") == []  # a zero denominator is no number
    assert choice_letter("(c) green") == "C"
    assert choice_letter("Because") is None
