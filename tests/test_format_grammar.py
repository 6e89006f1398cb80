"""One grammar of `<think>...</think>answer`: the format reward (on text) and the tracer's span finder (on the
token ids of the shipped tiny Qwen3-VL's tokenizer) accept exactly the same completions, and find the same parts."""

from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from rewards import answer_text, format_reward, parse_reasoning
from saliency import SpecialTokens, find_spans

TINY_BASE = Path(__file__).resolve().parents[1] / "vlm" / "tiny_base"

# ASCII whitespace only: a multi-byte whitespace character (U+00A0, U+3000) that the vocabulary lacks is split into
# byte tokens, which are not whitespace one by one (see SpecialTokens.blank_ids).
WHITESPACE = st.text(alphabet=" \t\n\r\x0b\x0c", min_size=1, max_size=3)
WORDS = st.sampled_from(
    ["a", "red", "x y", "12", "🟥", "答案", "<", "think>", "</", "<|", "im_end|>", "<|vision_start|>"]
)
TEXT = WORDS | st.text(alphabet=st.characters(exclude_categories=("Z", "Cc", "Cs")), min_size=1, max_size=4)
PIECES = st.sampled_from(["<think>", "</think>", "<|im_end|>", "<|endoftext|>"]) | WHITESPACE | TEXT
COMPLETIONS = st.lists(PIECES, max_size=12).map("".join) | st.builds(
    lambda lead, thinking, answer, tail: f"{lead}<think>{thinking}</think>{answer}{tail}",
    st.lists(WHITESPACE | TEXT, max_size=2).map("".join),
    st.lists(WHITESPACE | TEXT, max_size=3).map("".join),
    st.lists(WHITESPACE | TEXT, max_size=3).map("".join),
    st.lists(WHITESPACE | st.sampled_from(["<|im_end|>", "<|endoftext|>"]), max_size=3).map("".join),
)


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TINY_BASE)


@pytest.fixture(scope="module")
def tokens(tokenizer):
    return SpecialTokens.from_tokenizer(tokenizer)


@settings(deadline=None, max_examples=300)
@given(text=COMPLETIONS)
@example(text="preamble <think>reasoning</think>red")
@example(text="<think> \n</think>red")
@example(text="<think>a</think>\n\n<|im_end|>")
@example(text="<think>a</think>red<|im_end|>\n<|endoftext|>")
@example(text="<think>a</think>red<|im_end|>blue")
@example(text="<think>a<|endoftext|></think>red")
def test_the_format_reward_is_one_exactly_when_the_tracer_finds_spans(tokenizer, tokens, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    spans = find_spans(ids, tokens)
    reasoned = parse_reasoning(text)
    assert format_reward(None, [text]) == [float(reasoned is not None)]
    assert (reasoned is not None) == (not isinstance(spans, str)), spans
    if reasoned is not None:
        for (start, end), part in ((spans.thinking, reasoned.thinking), (spans.answer, reasoned.answer)):
            assert tokenizer.decode(ids[start:end], clean_up_tokenization_spaces=False).strip() == part
        assert answer_text(text) == reasoned.answer  # the accuracy reward reads the same answer
        assert all(t not in tokens.stop_ids for t in ids[slice(*spans.answer)])
