"""The object-phrase extractor and the alignment of phrases to completion tokens."""

import pytest

from evaluation.phrases import noun_phrases, token_char_spans, tokens_overlapping

SHAPES = ["circle", "square", "triangle", "diamond"]


def texts(phrases):
    return [p.text for p in phrases]


def test_phrases_follow_determiners_and_stop_at_function_words():
    text = "The blue circle is at the top left. It is a red square."
    assert texts(noun_phrases(text)) == ["blue circle", "top left", "red square"]


def test_object_nouns_cut_and_filter_phrases():
    text = "The yellow diamond is at the centre. The only shape left of it is at the top left. It is a red diamond."
    assert texts(noun_phrases(text, object_nouns=SHAPES)) == ["yellow diamond", "red diamond"]


def test_lists_commas_and_numbers():
    text = "The top half has a red circle, a blue square and a green triangle, so the count is 3."
    assert texts(noun_phrases(text, object_nouns=SHAPES)) == ["red circle", "blue square", "green triangle"]
    assert "count" in texts(noun_phrases(text))


def test_spans_reasons_and_repeats():
    text = "A red circle is here. Then a red circle again!"
    (phrase,) = noun_phrases(text, object_nouns=SHAPES, offset=100)
    second = text.rindex("red circle")
    assert phrase.spans == [(102, 112), (100 + second, 110 + second)]
    assert phrase.sentence == "A red circle is here"


def test_whole_text_as_phrase_for_short_answers_and_max_words():
    assert texts(noun_phrases("green triangle", whole_text_is_phrase=True)) == ["green triangle"]
    assert texts(noun_phrases("green triangle")) == []
    assert texts(noun_phrases("the very big round red ball", max_words=3)) == []
    assert texts(noun_phrases("the big round red ball", max_words=3)) == ["big round red"]


@pytest.mark.parametrize("text", ["", "...", "is of the", "The"])
def test_no_phrases_in_empty_or_function_text(text):
    assert noun_phrases(text) == []


def test_token_char_spans_cover_the_decoded_text(tmp_path_factory):
    from vlm import build_tiny_vlm, load_processor

    tokenizer = load_processor(str(build_tiny_vlm(tmp_path_factory.mktemp("tok")))).tokenizer
    completion = "<think>The blue circle is at the top left.</think>circle<|im_end|>"
    ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    text, spans = token_char_spans(tokenizer, ids)
    assert text == "<think>The blue circle is at the top left.</think>circle"
    assert len(spans) == len(ids) and spans[-1] == (len(text), len(text))  # <|im_end|> is skipped
    assert "".join(text[a:b] for a, b in spans) == text
    start = text.index("blue circle")
    tokens = tokens_overlapping(spans, [(start, start + len("blue circle"))])
    assert "".join(text[spans[k][0] : spans[k][1]] for k in tokens).strip() == "blue circle"
