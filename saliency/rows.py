"""The answer-row convention of SPEC section 3, stated and computed here only.

In a sequence of prompt + completion, completion token k (counted from 0) stands at position ``P + k`` (``P``: the
prompt's length, padding included). Its logit is read from the output at ``q(k) = P + k - 1``, the position that
predicts it. In the flow map a thinking token t at position ``pos(t)`` reads the image through ``row(t)``: ``q(t) =
pos(t) - 1`` (the position that generated it; mode ``"q"``, the published choice and the default) or ``pos(t)``
itself (mode ``"pos"``).
"""

from __future__ import annotations

from typing import Literal, TypeVar, get_args

import torch

RowMode = Literal["q", "pos"]
ROW_MODES: tuple[str, ...] = get_args(RowMode)

Position = TypeVar("Position", int, torch.Tensor)


def predicting_row(position: Position) -> Position:
    """``q``: the position whose output predicts the token at absolute ``position``."""
    return position - 1


def completion_rows(prompt_length: int, tokens: Position) -> Position:
    """``q(k) = P + k - 1`` of completion token(s) ``tokens``."""
    return predicting_row(prompt_length + tokens)


def thinking_row(position: Position, row: RowMode) -> Position:
    """``row(t)`` of the thinking token(s) at absolute ``position``: ``q(t)`` for ``"q"``, ``pos(t)`` for ``"pos"``."""
    return predicting_row(position) if row == "q" else position
