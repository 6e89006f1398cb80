"""Thinking and answer spans of a completion, found on token ids."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SpecialTokens:
    """Token ids the tracer needs to find the spans of a completion.

    ``stop_ids`` are the end-of-turn / EOS / padding ids that are never part of the answer.
    """

    think_open: int
    think_close: int
    stop_ids: frozenset[int]

    @classmethod
    def from_tokenizer(cls, tokenizer, think_open: str = "<think>", think_close: str = "</think>") -> SpecialTokens:
        """Read the ids from a tokenizer (or a processor holding one); every tag must be a single known token."""
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
        ids = {}
        for tag in (think_open, think_close):
            token_id = tokenizer.convert_tokens_to_ids(tag)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(f"the tokenizer has no single token {tag!r}; add it as a special token")
            ids[tag] = token_id
        stops = {tokenizer.eos_token_id, tokenizer.pad_token_id}
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<end_of_turn>"):
            token_id = tokenizer.convert_tokens_to_ids(name)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                stops.add(token_id)
        stops.discard(None)
        return cls(think_open=ids[think_open], think_close=ids[think_close], stop_ids=frozenset(stops))


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
    (see :func:`prompt_opens_thinking`); those tokens are thinking tokens too. Tokens before ``<think>`` in the
    completion belong to no span.
    """
    ids = list(completion_ids)
    opens = [i for i, t in enumerate(ids) if t == tokens.think_open]
    closes = [i for i, t in enumerate(ids) if t == tokens.think_close]
    if open_think_in_prompt is None:
        if len(opens) != 1:
            return f"expected exactly one <think> in the completion, found {len(opens)}"
        think_start = opens[0] + 1
    else:
        if opens:
            return "the prompt already opened <think> and the completion opens another"
        think_start = -open_think_in_prompt
    if len(closes) != 1:
        return f"expected exactly one </think> in the completion, found {len(closes)}"
    think_end = closes[0]
    if think_end < think_start:
        return "</think> comes before <think>"
    if think_end == think_start:
        return "the thinking span is empty"
    answer_end = len(ids)
    while answer_end > think_end + 1 and ids[answer_end - 1] in tokens.stop_ids:
        answer_end -= 1
    if any(t in tokens.stop_ids for t in ids[think_end + 1 : answer_end]):
        # A stop token inside the answer means generation went on past the end of the turn.
        return "a stop token occurs inside the answer"
    if answer_end == think_end + 1:
        return "the answer after </think> is empty"
    return CompletionSpans(thinking=(think_start, think_end), answer=(think_end + 1, answer_end))


def completion_spans(prompt: Sequence[int], completion: Sequence[int], tokens: SpecialTokens) -> CompletionSpans | str:
    """The completion's spans, counting as thinking the tokens after a ``<think>`` left open by the prompt."""
    opened = prompt_opens_thinking(prompt, tokens)
    return find_spans(completion, tokens, None if opened is None else len(prompt) - opened - 1)
