"""Steering a tiny random model's generation to a chosen text, so trainer tests see real, known completions."""

from __future__ import annotations


def steer_to(tokenizer, text: str, end_token: str = "<|im_end|>") -> dict[tuple[int, ...], float]:
    """`sequence_bias` that makes generation spell `text` then end the turn, whatever the random weights say.

    Each token gets a large bias when the tokens before it match (contexts of up to two tokens, enough for texts
    whose repeated tokens are followed by different ones), so the model is steered through the trainer's own
    `generate` call.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids(end_token)]
    bias = {(ids[0],): 100.0}
    for i in range(1, len(ids)):
        bias[tuple(ids[max(0, i - 2) : i + 1])] = 300.0
    return bias
