"""The IoU reward for answers that state a box (grounding tasks)."""

from __future__ import annotations

from typing import Any

from .boxes import as_boxes, box_iou, find_answer_box
from .text import answer_text, completion_text


def _image_size(image: Any) -> tuple[int, int] | None:
    """`(width, height)` of a PIL image (or anything with a `.size` pair), None when unknown."""
    size = getattr(image, "size", None)
    if isinstance(size, tuple) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def iou_reward(
    prompts: list[Any],
    completions: list[Any],
    completion_ids: Any = None,
    bbox: list[Any] | None = None,
    image: list[Any] | None = None,
    images: list[Any] | None = None,
    coordinate_range: float | None = None,
    **kwargs: Any,
) -> list[float]:
    """IoU between the first box stated in the answer and the row's `bbox` (the best over several reference boxes).

    The answer is the text after `</think>` (see `text.answer_text`); its box is read by `boxes.find_answer_box`
    (notations and scale rules there). Pixel coordinates are divided by the size of the row's `image` (or first of
    `images`). An answer without a readable box scores 0.0. Bind `coordinate_range` with `functools.partial` for
    models that answer on a fixed grid (1000 for Qwen2-VL text decoded without its box tokens).
    """
    if bbox is None:
        raise ValueError("iou_reward needs the dataset column 'bbox' (the reference box(es) of each row)")
    if len(bbox) != len(completions):
        raise ValueError(f"column 'bbox' has {len(bbox)} entries for {len(completions)} completions")
    rewards = []
    for row, (completion, reference) in enumerate(zip(completions, bbox)):
        references = as_boxes(reference, row=row, field="bbox")
        row_image = (
            image[row] if image is not None else (images[row][0] if images is not None and images[row] else None)
        )
        stated = find_answer_box(answer_text(completion_text(completion)), _image_size(row_image), coordinate_range)
        rewards.append(0.0 if stated is None else max(box_iou(stated, box) for box in references))
    return rewards
