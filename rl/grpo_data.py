"""The RL split, validated and laid out the way TRL's GRPOTrainer reads it."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from data_tools import SYSTEM_PROMPT, load_source, prompt_messages

logger = logging.getLogger(__name__)


def load_grpo_dataset(
    name: str,
    *,
    source: str = "saliency_r1",
    split: str = "rl",
    image_dir: str | None = None,
    on_bad_row: str = "error",
    max_image_side: int | None = 512,
    report_path: str | Path | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> datasets.Dataset:
    """Validated rows with a conversational `prompt` (system + image(s) + question) beside the images, `solution`, `bbox`.

    The other columns (`solution`, `bbox`, `dataset`, `question_id`) reach the reward functions as keyword
    arguments. The rejection report goes to `report_path` when a row was rejected or converted.
    """
    dataset, report = load_source(
        source, name, image_dir=image_dir, split=split, kind="rl", max_image_side=max_image_side, on_bad_row=on_bad_row
    )
    logger.info("RL data: %s", report.summary())
    if report_path is not None and report.issues:
        report.write_jsonl(report_path)
    return dataset.map(lambda row: {"prompt": grpo_prompt(row, system_prompt)})


def grpo_prompt(row: dict, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """The conversational prompt of one row: one image placeholder per image of its `images` list (a clip's frames
    are its images), or one for its single `image`, then the question."""
    count = len(row["images"]) if row.get("images") is not None else 1
    return prompt_messages(row["problem"], system_prompt, images=count)
