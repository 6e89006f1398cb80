"""Reading completions: plain strings or conversational messages, and the `<think>...</think>answer` layout.

The layout is checked once, by `layout`, over a completion cut into pieces (tags, end markers, whitespace, text):
the format reward cuts the decoded text (`parse_reasoning`), the saliency tracer cuts the token ids
(`saliency.spans.find_spans`), so both accept exactly the same completions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# End-of-turn / end-of-sequence / padding markers that may trail a completion decoded with special tokens kept.
# They are not part of the answer (SPEC section 3: the answer span excludes end-of-turn, EOS and padding).
END_MARKERS = (
    "<|im_end|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<end_of_turn>",
    "</s>",
    "<eos>",
    "<pad>",
    "<|pad|>",
)
# Longest first, so that a marker is never cut at a shorter one that begins it.
_PIECE_PATTERN = re.compile(
    "(" + "|".join(map(re.escape, sorted((THINK_OPEN, THINK_CLOSE, *END_MARKERS), key=len, reverse=True))) + ")"
)


def _content_text(content: Any) -> str:
    """Text of a message `content`: a string, or a list of parts of which only the text parts count."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                texts.append(str(part.get("text") or ""))
        return "".join(texts)
    return str(content)


def completion_text(completion: Any) -> str:
    """The text of one completion as TRL passes it to reward functions.

    A completion is either a string (standard format) or a list of message dicts (conversational format). For
    messages, the assistant turns are concatenated; a reasoning field that a response parser split off
    (`reasoning_content` or `thinking`) is put back as `<think>...</think>` in front of the content, so that the
    format and the answer read the same either way. Anything else is turned into text with `str`.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list):
        texts = []
        for message in completion:
            if not isinstance(message, dict):
                texts.append(_content_text(message))
                continue
            if message.get("role", "assistant") != "assistant":
                continue
            reasoning = message.get("reasoning_content") or message.get("thinking")
            content = _content_text(message.get("content"))
            if isinstance(reasoning, str) and reasoning.strip():
                content = f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{content}"
            texts.append(content)
        return "".join(texts)
    return "" if completion is None else str(completion)


def prompt_text(prompt: Any) -> str:
    """The text of the last user turn of a prompt (string or list of messages); images are left out."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        for message in reversed(prompt):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""
    return "" if prompt is None else str(prompt)


class Piece(Enum):
    """What a piece of a completion (a token, or a run of text between tags and markers) is to its layout."""

    OPEN = "<think>"
    CLOSE = "</think>"
    END = "end marker"
    BLANK = "whitespace"
    TEXT = "text"


def piece_kind(piece: str) -> Piece:
    """The kind of one piece of text: a tag, an end marker, whitespace only (or nothing), or other text."""
    if piece == THINK_OPEN:
        return Piece.OPEN
    if piece == THINK_CLOSE:
        return Piece.CLOSE
    if piece in END_MARKERS:
        return Piece.END
    return Piece.TEXT if piece.strip() else Piece.BLANK


def _pieces(text: str) -> list[str]:
    return [piece for piece in _PIECE_PATTERN.split(text) if piece]


@dataclass(frozen=True)
class Layout:
    """Where the parts of a well-formed completion lie, as half-open ``[start, end)`` indices into its pieces.

    ``thinking`` lies strictly between ``<think>`` and ``</think>`` (it starts at 0 when the prompt opened
    ``<think>``); ``answer`` runs from the piece after ``</think>`` up to the first end marker, or to the end.
    """

    thinking: tuple[int, int]
    answer: tuple[int, int]


def layout(pieces: Sequence[Piece], opened: bool = False) -> Layout | str:
    """The layout of a completion given as the kinds of its pieces, or the reason why it is not well-formed.

    The format (SPEC sections 3 and 4): optional whitespace, exactly one ``<think>``, a reasoning holding some text,
    exactly one ``</think>``, an answer holding some text, then nothing but end markers and whitespace: the
    completion ends at its first end marker. With ``opened`` the prompt already opened ``<think>``: the completion
    starts inside the reasoning, must not open another, and its own part of the reasoning must hold text.
    """
    pieces = list(pieces)
    opens = [i for i, piece in enumerate(pieces) if piece is Piece.OPEN]
    closes = [i for i, piece in enumerate(pieces) if piece is Piece.CLOSE]
    if opened:
        if opens:
            return "the prompt already opened <think> and the completion opens another"
        think_start = 0
    else:
        if len(opens) != 1:
            return f"expected exactly one <think> in the completion, found {len(opens)}"
        think_start = opens[0] + 1
    if len(closes) != 1:
        return f"expected exactly one </think> in the completion, found {len(closes)}"
    think_end = closes[0]
    if think_end < think_start:
        return "</think> comes before <think>"
    if any(piece is not Piece.BLANK for piece in pieces[: max(think_start - 1, 0)]):
        return "text comes before <think>"
    answer_end = next((i for i, piece in enumerate(pieces) if piece is Piece.END), len(pieces))
    if any(piece not in (Piece.END, Piece.BLANK) for piece in pieces[answer_end:]):
        return "the completion goes on after an end marker"
    if Piece.TEXT not in pieces[think_start:think_end]:
        return "the thinking span is empty or blank"
    if Piece.TEXT not in pieces[think_end + 1 : answer_end]:
        return "the answer after </think> is empty or blank"
    return Layout(thinking=(think_start, think_end), answer=(think_end + 1, answer_end))


def strip_end_markers(text: str) -> str:
    """`text` without trailing end-of-turn / EOS / padding markers and surrounding whitespace."""
    pieces = _pieces(text)
    end = len(pieces)
    while end and piece_kind(pieces[end - 1]) in (Piece.END, Piece.BLANK):
        end -= 1
    return "".join(pieces[:end]).strip()


@dataclass(frozen=True)
class Reasoned:
    """A well-formed completion split into its reasoning and its answer (both non-empty, stripped)."""

    thinking: str
    answer: str


def parse_reasoning(text: str) -> Reasoned | None:
    """Split `text` when it has the required format (see `layout`), else None."""
    pieces = _pieces(text)
    found = layout([piece_kind(piece) for piece in pieces])
    if isinstance(found, str):
        return None
    (think_start, think_end), (answer_start, answer_end) = found.thinking, found.answer
    return Reasoned(
        thinking="".join(pieces[think_start:think_end]).strip(),
        answer="".join(pieces[answer_start:answer_end]).strip(),
    )


def answer_text(text: str) -> str:
    """The answer part of a completion, also when its format is not valid.

    After the last `</think>` when there is one; empty when a `<think>` was opened but never closed (the
    completion was cut off while reasoning); otherwise the whole text. End markers are stripped.
    """
    if THINK_CLOSE in text:
        return strip_end_markers(text.rsplit(THINK_CLOSE, 1)[1])
    if THINK_OPEN in text:
        return ""
    return strip_end_markers(text)
