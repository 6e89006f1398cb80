"""Thinking and answer spans of a completion, found on token ids.

Whether a completion has spans is decided by the grammar of the format reward (`rewards.text.layout`), over the
kinds of its tokens: the ids of a text have spans exactly when the text's format reward is 1. They can differ only
where a tag or an end marker is spelled by several tokens, or a whitespace character by byte tokens, none of which
reads as the tag, marker or whitespace alone; where the tokenizer's EOS or padding is none of `END_MARKERS`; and
when the prompt opened ``<think>``, which the text does not show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rewards.text import END_MARKERS, THINK_CLOSE, THINK_OPEN, Piece, layout, piece_kind


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the tracer needs to find the spans of a completion.

    ``stop_ids`` are the end-of-turn / EOS / padding ids that are never part of the answer; ``blank_ids`` the ids
    of tokens that decode to whitespace only (or to nothing), which do not make a reasoning or an answer non-empty.
    """

    think_open: int
    think_close: int
    stop_ids: frozenset[int]
    blank_ids: frozenset[int] = field(default=frozenset(), repr=False)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> SpecialTokens:
        """Read the ids from a tokenizer (or a processor holding one); each tag must be a single known token.

        The stop ids are those of `rewards.text.END_MARKERS` the vocabulary has, and the tokenizer's EOS and padding.
        """
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        ids = {}
        for tag in (THINK_OPEN, THINK_CLOSE):
            token_id = tokenizer.convert_tokens_to_ids(tag)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no single token {tag!r}; add it as a special token")
            ids[tag] = token_id
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        for name in END_MARKERS:
            token_id = tokenizer.convert_tokens_to_ids(name)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                stops.add(token_id)
        stops.discard(None)
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], clean_up_tokenization_spaces=False)
        blanks = frozenset(i for i, text in enumerate(texts) if piece_kind(text) is Piece.BLANK)
        return cls(ids[THINK_OPEN], ids[THINK_CLOSE], frozenset(stops), blanks)

    def kind(self, token_id: int) -> Piece:
        """What the token is to the layout of a completion (see `rewards.text.Piece`)."""
        if token_id == self.think_open:
            return Piece.OPEN
        if token_id == self.think_close:
            return Piece.CLOSE
        if token_id in self.stop_ids:
            return Piece.END
        return Piece.BLANK if token_id in self.blank_ids else Piece.TEXT


@dataclass(frozen=True)
class CompletionSpans:
    """Spans of one completion, as half-open ``[start, end)`` indices into the completion's tokens.

    ``thinking`` may start before 0 when the prompt itself opened ``<think>`` (its first tokens then lie in the
    prompt); ``answer`` excludes the trailing end-of-turn / EOS / padding tokens.
    """

    thinking: tuple[int, int]
    answer: tuple[int, int]


def prompt_opens_thinking(prompt_ids: Sequence[int], tokens: SpecialTokens) -> int | None:
    """Index of a ``<think>`` in the prompt that no ``</think>`` closes, else None."""
    for index in range(len(prompt_ids) - 1, -1, -1):
        if prompt_ids[index] == tokens.think_close:
            return None
        if prompt_ids[index] == tokens.think_open:
            return index
    return None


def find_spans(
    completion_ids: Sequence[int], tokens: SpecialTokens, open_think_in_prompt: int | None = None
) -> CompletionSpans | str:
    """Return the spans of a completion, or a reason why it has no valid ``<think>...</think>answer`` format.

    ``open_think_in_prompt`` is the number of prompt tokens that follow a ``<think>`` left open by the prompt
    (see :func:`prompt_opens_thinking`); those tokens are thinking tokens too.
    """
    found = layout([tokens.kind(int(t)) for t in completion_ids], opened=open_think_in_prompt is not None)
    if isinstance(found, str):
        return found
    (think_start, think_end), answer = found.thinking, found.answer
    return CompletionSpans(thinking=(think_start - (open_think_in_prompt or 0), think_end), answer=answer)


def completion_spans(prompt: Sequence[int], completion: Sequence[int], tokens: SpecialTokens) -> CompletionSpans | str:
    """The completion's spans, counting as thinking the tokens after a ``<think>`` left open by the prompt."""
    opened = prompt_opens_thinking(prompt, tokens)
    return find_spans(completion, tokens, None if opened is None else len(prompt) - opened - 1)
