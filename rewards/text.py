"""Reading completions: plain strings or conversational messages, and the `<think>...</think>answer` layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

# End-of-turn / end-of-sequence markers that may trail a completion decoded with special tokens kept.
# They are not part of the answer (SPEC section 3: the answer span excludes end-of-turn, EOS and padding).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "</s>", "<pad>", "<|pad|>")


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


def strip_end_markers(text: str) -> str:
    """`text` without trailing end-of-turn / EOS / padding markers and surrounding whitespace."""
    end = len(text.rstrip())
    while (marker := next((m for m in END_MARKERS if text.endswith(m, 0, end)), None)) is not None:
        end -= len(marker)
        while end and text[end - 1].isspace():
            end -= 1
    return text[:end].strip()


@dataclass(frozen=True)
class Reasoned:
    """A well-formed completion split into its reasoning and its answer (both non-empty, stripped)."""

    thinking: str
    answer: str


def parse_reasoning(text: str) -> Reasoned | None:
    """Split `text` when it has the required format, else None.

    The format (SPEC section 4): optional leading whitespace, exactly one `<think>`, a reasoning with at least one
    non-whitespace character, exactly one `</think>`, then a non-empty answer. Trailing end-of-turn markers are not
    part of the answer.
    """
    if text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return None
    before, _, rest = text.partition(THINK_OPEN)
    if before.strip():
        return None
    thinking, _, answer = rest.partition(THINK_CLOSE)
    thinking, answer = thinking.strip(), strip_end_markers(answer)
    if not thinking or not answer:
        return None
    return Reasoned(thinking=thinking, answer=answer)


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
