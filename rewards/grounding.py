"""The IoU reward for answers that state a box (grounding tasks), in the coordinate frame the model answers in."""

from __future__ import annotations

import functools
from typing import Any

from .boxes import as_boxes, box_iou, find_answer_box
from .text import answer_text, completion_text

COORDINATE_FRAMES: tuple[str, ...] = ("auto", "normalized", "grid_1000", "input_pixels", "original_pixels")
# The frame each family's boxes are stated in: Qwen2-VL and Qwen3-VL on a 0-1000 grid, Qwen2.5-VL in absolute pixels
# of the resized image it was given (not of the original file), LLaVA-1.5 normalised to [0, 1].
FAMILY_COORDINATE_FRAMES: dict[str, str] = {
    "qwen2_vl": "grid_1000",
    "qwen2_5_vl": "input_pixels",
    "qwen3_vl": "grid_1000",
    "llava": "normalized",
}


def _check_frame(coordinate_frame: str) -> None:
    if coordinate_frame not in COORDINATE_FRAMES:
        raise ValueError(f"coordinate_frame {coordinate_frame!r}; choose one of {COORDINATE_FRAMES}")


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
    image_input_size: list[Any] | None = None,
    coordinate_frame: str = "auto",
    **kwargs: Any,
) -> list[float]:
    """IoU between the first box stated in the answer and the row's `bbox` (the best over several reference boxes).

    The answer is the text after `</think>` (see `text.answer_text`); its box is read by `boxes.find_answer_box`
    (notations there; Qwen2-VL's `<|box_start|>` tokens are always on the 0-1000 grid). `coordinate_frame` says what
    the numbers of other notations mean (`FAMILY_COORDINATE_FRAMES` gives each family's; bind it with
    :func:`iou_reward_for`): ``normalized`` [0, 1]; ``grid_1000``; ``input_pixels``, pixels of the image as the
    processor resized it for the model, the column `image_input_size` (`(width, height)` per row, which
    `rl.SaliencyGRPOTrainer` fills); ``original_pixels``, pixels of the row's `image` (or first of `images`);
    ``auto``, normalised when all four numbers lie in [0, 1], else original pixels. An answer without a readable
    box scores 0.0.
    """
    if bbox is None:
        raise ValueError("iou_reward needs the dataset column 'bbox' (the reference box(es) of each row)")
    if len(bbox) != len(completions):
        raise ValueError(f"column 'bbox' has {len(bbox)} entries for {len(completions)} completions")
    _check_frame(coordinate_frame)
    if coordinate_frame == "input_pixels" and image_input_size is None:
        raise ValueError(
            "iou_reward with coordinate_frame='input_pixels' needs the column 'image_input_size' (the (width, height) "
            "the processor resized each image to; rl.SaliencyGRPOTrainer fills it)"
        )
    rewards = []
    for row, (completion, reference) in enumerate(zip(completions, bbox)):
        references = as_boxes(reference, row=row, field="bbox")
        row_image = (
            image[row] if image is not None else (images[row][0] if images is not None and images[row] else None)
        )
        frame: float | tuple[float, float] | None = {"normalized": 1.0, "grid_1000": 1000.0}.get(coordinate_frame)
        if coordinate_frame in ("input_pixels", "original_pixels"):
            size = image_input_size[row] if coordinate_frame == "input_pixels" else _image_size(row_image)
            if size is None:
                raise ValueError(
                    f"row {row}, field 'image': no image, so pixel coordinates (coordinate_frame={coordinate_frame!r}) "
                    "cannot be read; use a normalized or grid frame for text-only rows"
                )
            frame = (float(size[0]), float(size[1]))
        stated = find_answer_box(answer_text(completion_text(completion)), _image_size(row_image), frame)
        rewards.append(0.0 if stated is None else max(box_iou(stated, box) for box in references))
    return rewards


def iou_reward_for(coordinate_frame: str) -> Any:
    """`iou_reward` bound to `coordinate_frame` (a name of `COORDINATE_FRAMES`), keeping its name for TRL's logs."""
    _check_frame(coordinate_frame)
    bound = functools.partial(iou_reward, coordinate_frame=coordinate_frame)
    functools.update_wrapper(bound, iou_reward)
    bound.reads_image_input_size = coordinate_frame == "input_pixels"  # type: ignore[attr-defined]
    return bound


def coordinate_frame_for(setting: str, model_type: str | None) -> str:
    """The IoU frame a run uses: `setting` itself, or for ``model_family`` the frame of `model_type`'s family."""
    if setting != "model_family":
        if setting not in COORDINATE_FRAMES:
            raise ValueError(f"--iou_coordinate_frame {setting!r}; choose model_family or one of {COORDINATE_FRAMES}")
        return setting
    if model_type not in FAMILY_COORDINATE_FRAMES:
        raise ValueError(
            f"--iou_coordinate_frame model_family: no known box frame for model_type {model_type!r} (known: "
            f"{', '.join(FAMILY_COORDINATE_FRAMES)}); name one of {COORDINATE_FRAMES}"
        )
    return FAMILY_COORDINATE_FRAMES[model_type]
