"""Token lengths of conversational rows as the processor builds them (image tokens included), and the rows that
do not fit a limit: found before training, by id, instead of being cut silently inside a batch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import datasets
from tqdm.auto import tqdm
from trl.data_utils import prepare_multimodal_messages

logger = logging.getLogger(__name__)


def conversation_lengths(
    processor: Any,
    rows: datasets.Dataset,
    column: str,
    *,
    add_generation_prompt: bool = False,
    batch_size: int = 64,
) -> list[int]:
    """The token count of each row's ``column`` conversation with its ``images``/``image`` through ``processor``'s chat
    template (what TRL's collator builds for SFT, or the prompt of GRPO with ``add_generation_prompt``)."""
    image_column = "images" if "images" in rows.column_names else "image"
    lengths: list[int] = []
    for start in tqdm(range(0, len(rows), batch_size), desc=f"measuring {column} lengths", unit="batch", delay=2.0):
        batch = rows[start : start + batch_size]
        images = [value if isinstance(value, list) else [value] for value in batch[image_column]]
        messages = [prepare_multimodal_messages(m, images=i) for m, i in zip(batch[column], images)]
        encoded = processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            add_generation_prompt=add_generation_prompt,
            processor_kwargs={"padding": True},
        )
        lengths += encoded["attention_mask"].sum(-1).tolist()
    return lengths


def drop_too_long(
    rows: datasets.Dataset, lengths: Sequence[int], limit: int, *, what: str, flag: str, on_bad_row: str
) -> datasets.Dataset:
    """``rows`` without those longer than ``limit`` tokens; with ``on_bad_row="error"`` any such row is an error.

    ``what`` says what is measured, ``flag`` which option sets the limit; both go into the message, with row ids.
    """
    ids = rows["question_id"] if "question_id" in rows.column_names else [f"#{i}" for i in range(len(rows))]
    over = [(i, ids[i], n) for i, n in enumerate(lengths) if n > limit]
    if not over:
        return rows
    listed = ", ".join(f"row {i} ({row_id}): {n}" for i, row_id, n in over[:10]) + (" ..." if len(over) > 10 else "")
    message = f"{len(over)} of {len(rows)} rows have a {what} longer than {limit} tokens ({flag}): {listed}"
    if on_bad_row == "error":
        raise ValueError(f"{message}. Raise {flag} or leave them out with --on_bad_row skip")
    logger.warning("%s; left out (--on_bad_row skip)", message)
    too_long = {i for i, _, _ in over}
    return rows.select([i for i in range(len(rows)) if i not in too_long])
