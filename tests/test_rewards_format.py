"""The format reward and how completions are read (plain strings and TRL's conversational messages)."""

import pytest

from rewards import answer_text, completion_text, format_reward, parse_reasoning, prompt_text


def conversational(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "text",
    [
        "<think>The red square is left of the circle.</think>red",
        "\n  <think>\nlook at the top\n</think>\n\nA",
        "<think>x</think>answer<|im_end|>",  # end-of-turn marker after a non-empty answer
        "<think>x</think>answer\n<|im_end|>\n<|endoftext|>",  # end markers with whitespace between them
        "<think>émoji 🟥 ok</think>🟥",
    ],
)
def test_well_formed_completions_score_one(text):
    assert format_reward(None, [text]) == [1.0]
    assert format_reward(None, [conversational(text)]) == [1.0]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "red",  # no reasoning at all
        "<think>reasoning cut off by the length lim",  # truncated
        "<think></think>red",  # empty reasoning
        "<think>   \n </think>red",  # whitespace-only reasoning
        "<think>reasoning</think>",  # empty answer
        "<think>reasoning</think>  \n",  # whitespace-only answer
        "<think>reasoning</think><|im_end|>",  # only an end-of-turn marker after the reasoning
        "preamble <think>reasoning</think>red",  # text before <think>
        "<think>a</think><think>b</think>red",  # two reasoning blocks
        "<think>a</think>red</think>",  # a stray closing tag
        "</think>red<think>a",  # tags in the wrong order
        "<THINK>a</THINK>red",  # tags are case-sensitive
        "<think>a</think>red<|im_end|>blue",  # text after the end of the turn
        "<think>a<|im_end|></think>red",  # the turn ended inside the reasoning
        "<|im_end|><think>a</think>red",  # the turn ended before it began
    ],
)
def test_malformed_completions_score_zero(text):
    assert format_reward(None, [text]) == [0.0]
    assert format_reward(None, [conversational(text)]) == [0.0]


def test_one_reward_per_completion_in_order():
    completions = ["<think>a</think>b", "b", "<think>a</think>b"]
    assert format_reward(["p"] * 3, completions, completion_ids=[[1], [2], [3]], solution=["b"] * 3) == [1.0, 0.0, 1.0]


def test_parse_reasoning_splits_and_strips():
    parsed = parse_reasoning("<think>\n step one \n</think>\n The answer: 4 <|im_end|>")
    assert parsed.thinking == "step one"
    assert parsed.answer == "The answer: 4"


def test_completion_text_of_message_lists():
    # Content given as a list of typed parts (multimodal message layout); only text parts count.
    parts = [
        {"role": "assistant", "content": [{"type": "text", "text": "<think>a</think>"}, {"type": "text", "text": "b"}]}
    ]
    assert completion_text(parts) == "<think>a</think>b"
    # A response parser may split the reasoning off into `reasoning_content`; it is put back in front.
    parsed = [{"role": "assistant", "reasoning_content": "look left", "content": "red"}]
    assert completion_text(parsed) == "<think>look left</think>red"
    assert format_reward(None, [parsed]) == [1.0]
    # Tool or user turns are not part of the completion; None content is empty text.
    assert completion_text([{"role": "tool", "content": "x"}, {"role": "assistant", "content": None}]) == ""


def test_prompt_text_is_the_last_user_turn():
    prompt = [
        {"role": "system", "content": "Think first."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]},
    ]
    assert prompt_text(prompt) == "What colour is the square?"
    assert prompt_text("plain prompt") == "plain prompt"


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>a</think> red ", "red"),
        ("<think>a</think>x</think> blue", "blue"),  # after the last closing tag
        ("<think>cut off while reason", ""),  # reasoning never closed: no answer
        ("just an answer<|endoftext|>", "just an answer"),  # no tags at all: the whole text
    ],
)
def test_answer_text(text, answer):
    assert answer_text(text) == answer
