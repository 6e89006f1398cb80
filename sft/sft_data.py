"""Loading the cold-start split: our conversational layout or a public cold-start layout, validated up front."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from data_tools import SYSTEM_PROMPT, load_source, read_records

logger = logging.getLogger(__name__)


def load_sft_dataset(
    name: str,
    *,
    source: str = "conversational",
    split: str = "sft",
    image_dir: str | None = None,
    on_bad_row: str = "error",
    max_image_side: int | None = None,
    report_path: str | Path | None = None,
    system_prompt: str = SYSTEM_PROMPT,
) -> datasets.Dataset:
    """Return the rows to train on, with `messages` and `images` columns.

    `source="conversational"` reads our SFT layout (a `save_to_disk` folder, a local file or a hub data set);
    `llava_cot` / `mulberry` convert public cold-start JSON and validate every row (see `data_tools.load_source`),
    writing the rejection report to `report_path` when one is given. Every row's system turn becomes
    `system_prompt`, the one the held-out answers, GRPO and the evaluation prompt with (a row without one keeps
    none).
    """
    if source == "conversational":
        records = read_records(name, split)
        unreadable = getattr(records, "unreadable", [])
        if unreadable:
            lines = "; ".join(f"line {n}: {reason}" for n, reason in unreadable)
            if on_bad_row == "error":
                raise ValueError(f"--dataset_name {name}: {len(unreadable)} unreadable line(s): {lines}")
            logger.warning("--dataset_name %s: skipped %d unreadable line(s): %s", name, len(unreadable), lines)
        dataset = records if isinstance(records, datasets.Dataset) else _rows_to_dataset(list(records))
        missing = {"messages", "images"} - set(dataset.column_names)
        if missing:
            raise ValueError(
                f"--dataset_name {name!r} split {split!r} has no column(s) {sorted(missing)}; conversational SFT rows "
                "need `messages` and `images` (use --dataset_source llava_cot/mulberry for public cold-start JSON)"
            )
        if "bbox_image" in dataset.column_names:
            _check_box_images(dataset, f"--dataset_name {name!r} split {split!r}")
        return _with_system_prompts(dataset.cast_column("images", datasets.List(datasets.Image())), system_prompt)
    dataset, report = load_source(
        source, name, image_dir=image_dir, split=split, kind="sft", max_image_side=max_image_side, on_bad_row=on_bad_row
    )
    logger.info("cold-start data: %s", report.summary())
    if report_path is not None and report.issues:
        report.write_jsonl(report_path)
    return _with_system_prompts(dataset, system_prompt)


def _with_system_prompts(dataset: datasets.Dataset, system_prompt: str) -> datasets.Dataset:
    """``dataset`` with every row's system turn saying ``system_prompt``; rows without one (short-answer
    pre-training rows) are left as they are."""
    if all(_says(messages, system_prompt) for messages in dataset["messages"]):
        return dataset
    logger.info("cold-start rows: system turn set to --system_prompt %r", system_prompt)
    return dataset.map(
        lambda messages: {"messages": _with_system_prompt(messages, system_prompt)}, input_columns="messages"
    )


def _says(messages: list[dict], system_prompt: str) -> bool:
    return (
        not messages
        or messages[0]["role"] != "system"
        or [c["text"] for c in messages[0]["content"]] == [system_prompt]
    )


def _with_system_prompt(messages: list[dict], system_prompt: str) -> list[dict]:
    """``messages`` with the text of their system turn (the first message, if any) replaced by ``system_prompt``."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, *rest = messages
    return [{**system, "content": [{"type": "text", "text": system_prompt}]}, *rest]


def _rows_to_dataset(rows: list[dict]) -> datasets.Dataset:
    """Rows that may differ in their columns (splits joined with ``+``: single-image rows beside rows of several
    images with `bbox_image`) as one data set, a column a row lacks being None there."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    return datasets.Dataset.from_list([{name: row.get(name) for name in names} for row in rows])


def _check_box_images(dataset: datasets.Dataset, where: str) -> None:
    """Refuse, naming every bad row, a `bbox_image` that does not give one index into the row's images per box."""
    bad = []
    columns = [name for name in ("images", "bbox", "bbox_image", "question_id") if name in dataset.column_names]
    for index, row in enumerate(dataset.select_columns(columns)):
        boxes, on, count = row.get("bbox") or [], row["bbox_image"], len(row["images"] or [])
        if on is None:
            if count > 1 and boxes:
                bad.append(f"row {index} ({row.get('question_id')}): {count} images but no `bbox_image`")
        elif len(on) != len(boxes) or any(not 0 <= i < count for i in on):
            bad.append(
                f"row {index} ({row.get('question_id')}): `bbox_image` {on} for {len(boxes)} boxes on {count} images"
            )
    if bad:
        raise ValueError(f"{where}: {len(bad)} row(s) whose boxes do not say their image: " + "; ".join(bad))
