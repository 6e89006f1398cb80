"""The system prompt and the chat layout shared by every split and converter."""

from __future__ import annotations

SYSTEM_PROMPT = (
    "Look at the image and answer the question. First reason inside <think> </think>, "
    "saying where in the image the evidence is. Then give only the short answer."
)


def format_assistant(reasoning: str, answer: str) -> str:
    """Return the assistant turn ``<think>{reasoning}</think>{answer}`` that the format reward expects."""
    return f"<think>{reasoning.strip()}</think>{answer.strip()}"


def prompt_messages(problem: str, system_prompt: str = SYSTEM_PROMPT, images: int = 1) -> list[dict]:
    """Return the prompt of one grounded question: system, then user (``images`` image blocks, then the question).

    Every ``content`` is a list of ``{"type", "text"}`` blocks so that all rows share one Arrow schema;
    an image block is a placeholder (``text`` None) that TRL fills from the row's image(s), in order.
    """
    image_blocks = [{"type": "image", "text": None}] * images
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {"role": "user", "content": [*image_blocks, {"type": "text", "text": problem}]},
    ]


def sft_messages(
    problem: str, reasoning: str, answer: str, system_prompt: str = SYSTEM_PROMPT, images: int = 1
) -> list[dict]:
    """Return one conversational SFT example: the prompt of :func:`prompt_messages`, then the assistant turn."""
    return prompt_messages(problem, system_prompt, images) + [
        {"role": "assistant", "content": [{"type": "text", "text": format_assistant(reasoning, answer)}]}
    ]


CAPTION_PROMPT = "Describe the image."


def caption_messages(caption: str, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """Return one perception pre-training example: the prompt of :func:`prompt_messages` asking for a description,
    then the description as the assistant turn (no ``<think>``)."""
    return prompt_messages(CAPTION_PROMPT, system_prompt) + [
        {"role": "assistant", "content": [{"type": "text", "text": caption}]}
    ]
