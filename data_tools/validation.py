"""Up-front validation of grounded-reasoning rows (SPEC section 2).

Every loader and converter funnels its rows through :func:`validate_rows`. It checks each row, normalises what can be
normalised (boxes to normalised xyxy, images to RGB within a maximum side) and reports what it did: every rejected row
with its id, field and reason, and every conversion as a note. With ``on_bad_row="error"`` it raises one
:class:`BadRowsError` that lists all bad rows; with ``"skip"`` it drops them and returns the report. Nothing is dropped
silently.

A *raw row* (what loaders yield) has ``problem``, ``solution``, ``dataset``, ``question_id``, one image under ``image``
(or a one-element ``images`` list) given as a PIL image, bytes, a ``{"bytes", "path"}`` dict or a path (relative to
``image_dir``), and, depending on the kind of split, ``bbox`` and ``reasoning``. A row of several images has an
``images`` list and ``bbox_image`` (per box, the index of the image it lies on); a short clip has ``video`` (a list
of frames of one size) and ``bbox_frame`` (per box, the index of its frame). A split that holds such rows is laid out
as :data:`~data_tools.schema.MULTI_RL_FEATURES` (its single-image rows too, as one-image lists). A row may carry ``bbox_format`` to
override the call's, ``width``/``height`` (the size its pixel boxes refer to; checked against the image), and
``parse_errors`` (``[(field, reason)]`` found by a converter while parsing the source layout).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features
from PIL import Image
from tqdm.auto import tqdm

from .answers import strip_answer_markup
from .images import open_displayed
from .prompts import SYSTEM_PROMPT, sft_messages
from .schema import DECOY_FEATURES, EVAL_FEATURES, MULTI_EVAL_FEATURES, MULTI_RL_FEATURES, RL_FEATURES, SFT_FEATURES

BBOX_FORMATS = ("xyxy_norm", "xyxy_px", "xywh_px")
KINDS = ("sft", "rl", "eval")
ON_BAD_ROW = ("error", "skip")
MIN_IMAGE_SIDE = 14  # one vision patch of Qwen2-VL/2.5-VL/3-VL and most ViTs: less holds no detail to point at
MAX_ASPECT_RATIO = 200  # Qwen-VL processors refuse longer images
PARSE_ERRORS = "parse_errors"

_REQUIRED = {
    "rl": ("problem", "solution", "bbox", "dataset", "question_id"),
    "eval": ("problem", "solution", "bbox", "dataset", "question_id"),
    "sft": ("problem", "solution", "reasoning", "dataset", "question_id"),
}
_FEATURES = {"sft": SFT_FEATURES, "rl": RL_FEATURES, "eval": EVAL_FEATURES}


@dataclass(frozen=True)
class RowIssue:
    """One finding about one row: a rejection reason, or a note on a conversion applied to a kept row."""

    index: int  # position among the records read; -N for line N of a file that gave no record
    row_id: str
    field: str
    reason: str
    action: str  # "rejected" or "converted"


@dataclass
class ValidationReport:
    """What validation did to a set of rows."""

    num_rows: int = 0
    num_kept: int = 0
    issues: list[RowIssue] = field(default_factory=list)

    @property
    def rejected(self) -> list[RowIssue]:
        return [i for i in self.issues if i.action == "rejected"]

    @property
    def notes(self) -> list[RowIssue]:
        return [i for i in self.issues if i.action == "converted"]

    def summary(self) -> str:
        bad = len({i.index for i in self.rejected})
        return f"{self.num_rows} rows: {self.num_kept} kept, {bad} rejected, {len(self.notes)} conversion notes"

    def write_jsonl(self, path: str | Path) -> None:
        """Write one JSON object per issue (``index, row_id, field, reason, action``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for issue in self.issues:
                f.write(json.dumps(asdict(issue)) + "\n")


class BadRowsError(ValueError):
    """Raised by ``on_bad_row="error"``; lists every rejected row. The report is attached as ``.report``."""

    def __init__(self, report: ValidationReport):
        self.report = report
        lines = [f"{_where(i)}, field {i.field!r}: {i.reason}" for i in report.rejected]
        bad = len({i.index for i in report.rejected})
        super().__init__(
            f"{bad} of {report.num_rows} rows are bad (on_bad_row='error'; use 'skip' to drop them):\n  "
            + "\n  ".join(lines)
        )


def _where(issue: RowIssue) -> str:
    return issue.row_id if issue.index < 0 else f"row {issue.index} ({issue.row_id})"


class _Reject(Exception):
    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field, self.reason = field, reason


# ---------------------------------------------------------------- boxes


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def parse_boxes(value: Any) -> list[list[float]]:
    """Read one box or several from the string ``"[x1, y1, x2, y2]"``, a list of 4 numbers or a list of such lists.

    Raises ``ValueError`` naming what is wrong (not a list, not numbers, wrong count, NaN, no boxes).
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"bbox string {value!r} is not a JSON list of numbers") from err
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"bbox must be a box or a non-empty list of boxes, got {value!r}")
    boxes = [value] if all(_is_number(v) for v in value) else list(value)
    parsed = []
    for box in boxes:
        if isinstance(box, np.ndarray):
            box = box.tolist()
        if not isinstance(box, (list, tuple)) or not all(_is_number(v) for v in box):
            raise ValueError(f"bbox entry {box!r} is not a list of numbers")
        if len(box) != 4:
            raise ValueError(f"a box needs 4 coordinates, got {len(box)}: {list(box)}")
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"box {list(box)} has a NaN or infinite coordinate")
        parsed.append([float(v) for v in box])
    return parsed


def normalise_boxes(boxes: Sequence[Sequence[float]], bbox_format: str, width: int, height: int) -> list[list[float]]:
    """Convert ``boxes`` in ``bbox_format`` on a ``width`` x ``height`` image to checked normalised xyxy boxes.

    Raises ``ValueError`` for a box outside the image, with swapped corners or with zero area; a normalised box
    with coordinates above 1 gets a hint that pixel boxes were probably passed as normalised.
    """
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
    out = []
    for box in boxes:
        x1, y1, a, b = box
        if bbox_format == "xywh_px":
            if a <= 0 or b <= 0:
                raise ValueError(f"xywh box {list(box)} has a width or height <= 0")
            x2, y2 = x1 + a, y1 + b
        else:
            x2, y2 = a, b
        if bbox_format == "xyxy_norm":
            if max(box) >= 2 and min(box) >= 0:
                raise ValueError(
                    f"box {list(box)} has coordinates > 1 but bbox_format is 'xyxy_norm': pixel boxes passed as "
                    "normalised? Use bbox_format 'xyxy_px' or 'xywh_px'"
                )
        else:
            if min(x1, y1) < 0 or x2 > width or y2 > height:
                raise ValueError(f"pixel box {list(box)} lies outside the {width}x{height} image")
            x1, x2, y1, y2 = x1 / width, x2 / width, y1 / height, y2 / height
        if min(x1, y1, x2, y2) < 0 or max(x1, y1, x2, y2) > 1:
            raise ValueError(f"box {list(box)} lies outside [0, 1]")
        if x2 < x1 or y2 < y1:
            raise ValueError(f"box {list(box)} has swapped corners (x2 < x1 or y2 < y1)")
        if x2 == x1 or y2 == y1:
            raise ValueError(f"box {list(box)} has zero area")
        out.append([x1, y1, x2, y2])
    return out


# ---------------------------------------------------------------- images


def _read_image_bytes(
    value: Any, image_dir: Path | None, allow_outside: bool = False
) -> tuple[bytes | None, Image.Image | None]:
    """Return ``(encoded bytes, None)`` or ``(None, PIL image)`` for any accepted image value."""
    if isinstance(value, Image.Image):
        return None, value
    if isinstance(value, Mapping):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, (str, Path)) and str(value):
        path = Path(value)
        if not path.is_absolute() and image_dir is not None:
            path = Path(image_dir) / path
        if image_dir is not None and not allow_outside and not path.resolve().is_relative_to(image_dir.resolve()):
            raise _Reject(
                "image",
                f"image path {str(value)!r} leads outside --image_dir (allow it with --allow_outside_image_dir)",
            )
        if not path.is_file():
            raise _Reject("image", f"image file not found: {path}")
        return path.read_bytes(), None
    raise _Reject("image", f"no image: expected a PIL image, bytes, a {{'bytes','path'}} dict or a path, got {value!r}")


def _to_rgb(image: Image.Image) -> tuple[Image.Image, str | None]:
    """Return ``image`` as 8-bit RGB and a note saying what was converted (None when it already was)."""
    mode = image.mode
    if mode == "RGB":
        return image, None
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (Pillow may open it as 32-bit "I"): map the 16-bit range to 8 bits instead of clipping.
        grey = np.clip(np.rint(np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), f"converted {mode} (16-bit greyscale) to 8-bit RGB"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        if image.mode == "RGB":
            return image, "converted palette (P) image to RGB"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or image.mode == "RGBA":
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB"), (
            f"converted {mode} to RGB (alpha composited on white)"
        )
    return image.convert("RGB"), f"converted {mode} to RGB"


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def load_image(
    value: Any,
    image_dir: str | Path | None = None,
    max_image_side: int | None = None,
    *,
    min_image_side: int = MIN_IMAGE_SIDE,
    allow_outside_image_dir: bool = False,
) -> tuple[dict, tuple[int, int], list[str]]:
    """Load, check and normalise one image, as displayed (`data_tools.images.open_displayed`).

    A relative path is read under ``image_dir``; with an ``image_dir``, a path that leads outside it (absolute,
    ``..``, a symbolic link) is refused unless ``allow_outside_image_dir``. Images with a side under
    ``min_image_side`` px or an aspect ratio over :data:`MAX_ASPECT_RATIO` are refused.

    Returns ``({"bytes", "path": None}, original (width, height), notes)``: the bytes are the original file when it
    is already RGB and within ``max_image_side``, else a PNG of the converted / resized image.
    Raises ``ValueError`` for a missing file or unreadable bytes.
    """
    try:
        data, image = _read_image_bytes(
            value, Path(image_dir) if image_dir is not None else None, allow_outside_image_dir
        )
    except _Reject as err:
        raise ValueError(err.reason) from None
    notes = []
    if image is None:
        try:
            image, turned = open_displayed(data)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL's corrupt-data errors
            raise ValueError(f"unreadable image bytes ({type(err).__name__}: {err})") from None
        notes += [turned] if turned else []
    size = image.size
    if min(size) < min_image_side:
        raise ValueError(
            f"image is {size[0]}x{size[1]}: a side under {min_image_side} px is smaller than one vision patch, and "
            "every box on it would cover most of the image"
        )
    if max(size) / min(size) > MAX_ASPECT_RATIO:
        raise ValueError(f"image is {size[0]}x{size[1]}: aspect ratio over {MAX_ASPECT_RATIO}, which Qwen-VL refuses")
    image, note = _to_rgb(image)
    notes += [note] if note else []
    if max_image_side is not None and max(size) > max_image_side:
        scale = max_image_side / max(size)
        new = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        image = image.resize(new, Image.Resampling.BICUBIC)
        notes.append(f"resized from {size[0]}x{size[1]} to {new[0]}x{new[1]} (max side {max_image_side})")
    if notes or data is None:
        data = _png_bytes(image)
    return {"bytes": data, "path": None}, size, notes


# ---------------------------------------------------------------- rows


def _check_text(row: Mapping, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise _Reject(name, f"must be a string, got {type(value).__name__}: {value!r}")
    if not value.strip():
        raise _Reject(name, "is empty")
    return value.strip()


def _row_id(row: Any, index: int) -> str:
    qid = row.get("question_id") if isinstance(row, Mapping) else None
    return qid if isinstance(qid, str) and qid else f"#{index}"


def _validate_row(
    row: Any,
    kind: str,
    bbox_format: str,
    image_dir: str | Path | None,
    max_image_side: int | None,
    allow_outside_image_dir: bool = False,
) -> tuple[dict | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """Return (normalised row or None, [(field, reason)] problems, [(field, note)] conversion notes)."""
    if not isinstance(row, Mapping):
        return None, [("row", f"must be a mapping, got {type(row).__name__}")], []
    problems: list[tuple[str, str]] = [tuple(p) for p in row.get(PARSE_ERRORS) or []]
    parse_failed = bool(problems)  # the converter already said why fields are absent
    for name in _REQUIRED[kind]:
        if (name not in row or row[name] is None) and not parse_failed:
            problems.append((name, "missing field"))
    texts = {}
    for name in ("problem", "solution", "dataset", "question_id") + (("reasoning",) if kind != "rl" else ()):
        if row.get(name) is not None:
            try:
                texts[name] = _check_text(row, name)
            except _Reject as err:
                problems.append((err.field, err.reason))

    notes: list[tuple[str, str]] = []
    if "solution" in texts:
        cleaned = strip_answer_markup(texts["solution"])
        if not cleaned:
            problems.append(("solution", f"no answer left in {texts['solution']!r:.80} once its markup is removed"))
        elif cleaned != texts["solution"]:
            notes.append(("solution", f"answer markup removed: {texts['solution']!r:.80} -> {cleaned!r:.80}"))
            texts["solution"] = cleaned
    for tag in ("<think>", "</think>"):
        if tag in texts.get("reasoning", ""):
            problems.append(("reasoning", f"contains {tag}, which would end or restart the reasoning in the target"))

    several = _several_images(row)
    if several is not None:
        return _validate_several(
            row, kind, several, texts, problems, notes, bbox_format, image_dir, max_image_side, allow_outside_image_dir
        )
    image_value = row.get("image")
    if image_value is None and row.get("images") is not None:
        image_value = row["images"][0]
    image = None
    if image_value is None and not parse_failed and not any(f in ("image", "images") for f, _ in problems):
        problems.append(("image", "missing field"))
    elif image_value is not None:
        try:
            image, size, image_notes = load_image(
                image_value, image_dir, max_image_side, allow_outside_image_dir=allow_outside_image_dir
            )
            notes += [("image", note) for note in image_notes]
        except ValueError as err:
            problems.append(("image", str(err)))

    boxes = None
    if row.get("bbox") is not None:
        fmt = row.get("bbox_format") or bbox_format
        try:
            boxes = parse_boxes(row["bbox"])
            if image is not None:
                stated = (row.get("width"), row.get("height"))
                if fmt != "xyxy_norm" and stated[0] is not None and stated != size:
                    raise ValueError(
                        f"pixel boxes refer to a {row.get('width')}x{row.get('height')} image but the image is "
                        f"{size[0]}x{size[1]}"
                    )
                boxes = normalise_boxes(boxes, fmt, *size)
        except ValueError as err:
            problems.append(("bbox", str(err)))

    decoy = _decoy_columns(row, problems) if kind != "sft" else {}

    if problems:
        return None, problems, notes
    base = {"dataset": texts["dataset"], "question_id": texts["question_id"]}
    if kind == "sft":
        messages = sft_messages(texts["problem"], texts["reasoning"], texts["solution"], SYSTEM_PROMPT)
        return {"messages": messages, "images": [image], **base}, [], notes
    out = {"image": image, "problem": texts["problem"], "solution": texts["solution"], "bbox": boxes, **base}
    if kind == "eval":
        out["reasoning"] = texts.get("reasoning")
    return out | decoy, [], notes


def _several_images(row: Mapping) -> tuple[str, list] | None:
    """``("images", values)`` for a row of several images, ``("video", frames)`` for a clip, None for one image.

    A one-element ``images`` list is a single-image row, laid out as ever.
    """
    images, video = row.get("images"), row.get("video")
    if video is not None or (isinstance(images, (list, tuple)) and len(images) > 1):
        return ("video", video) if video is not None else ("images", list(images))
    if images is not None and (not isinstance(images, (list, tuple)) or not images):
        return ("images", images)
    return None


def _validate_several(
    row: Mapping,
    kind: str,
    several: tuple[str, Any],
    texts: dict,
    problems: list[tuple[str, str]],
    notes: list[tuple[str, str]],
    bbox_format: str,
    image_dir: str | Path | None,
    max_image_side: int | None,
    allow_outside_image_dir: bool,
) -> tuple[dict | None, list[tuple[str, str]], list[tuple[str, str]]]:
    """:func:`_validate_row` for a row of several images (``images``) or a clip (``video``, a list of frames).

    Each box says what it lies on: ``bbox_image`` (per box, the index of its image) or ``bbox_frame`` (per box, the
    index of its frame); pixel boxes refer to that image or frame. The kept row holds the images (a clip: its frames)
    under ``images``, with ``bbox_image`` or ``bbox_frame`` (:data:`~data_tools.schema.MULTI_RL_FEATURES`).
    """
    name, values = several
    index_field = "bbox_image" if name == "images" else "bbox_frame"
    other_field = "bbox_frame" if name == "images" else "bbox_image"
    if name == "video" and row.get("images") is not None:
        problems.append(("video", "a row holds either images or a video (its frames), not both"))
        return None, problems, notes
    if not isinstance(values, (list, tuple)) or not values:
        what = "a non-empty list of images" if name == "images" else "a non-empty list of frames"
        problems.append((name, f"expected {what}, got {values!r:.80}"))
        return None, problems, notes
    images, sizes = [], []
    for i, value in enumerate(values):
        try:
            image, size, image_notes = load_image(
                value, image_dir, max_image_side, allow_outside_image_dir=allow_outside_image_dir
            )
        except ValueError as err:
            problems.append((f"{name}[{i}]", str(err)))
            continue
        notes += [(f"{name}[{i}]", note) for note in image_notes]
        images.append(image)
        sizes.append(size)
    if name == "video" and len(set(sizes)) > 1:
        problems.append(("video", f"the frames differ in size: {sorted(set(sizes))}"))
    boxes, placement = None, None
    if row.get(other_field) is not None:
        problems.append((other_field, f"a row of {name} places its boxes with {index_field}, not {other_field}"))
    if row.get("bbox") is not None:
        fmt = row.get("bbox_format") or bbox_format
        try:
            parsed = parse_boxes(row["bbox"])
            placement = row.get(index_field)
            if placement is None:
                what = "several images says which image" if name == "images" else "video says which frame"
                raise _Reject(index_field, f"missing field: a row of {what} each box lies on")
            if not isinstance(placement, (list, tuple)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in placement
            ):
                raise _Reject(index_field, f"must be a list of integers, one per box, got {placement!r:.80}")
            if len(placement) != len(parsed):
                raise _Reject(index_field, f"has {len(placement)} entries for {len(parsed)} boxes")
            outside = [int(v) for v in placement if not 0 <= v < len(values)]
            if outside:
                raise _Reject(index_field, f"indices {outside} lie outside the row's {len(values)} {name}")
            placement = [int(v) for v in placement]
            if len(sizes) == len(values):
                boxes = [normalise_boxes([box], fmt, *sizes[i])[0] for box, i in zip(parsed, placement)]
        except _Reject as err:
            problems.append((err.field, err.reason))
        except ValueError as err:
            problems.append(("bbox", str(err)))
    decoy = _decoy_columns(row, problems) if kind != "sft" else {}
    if decoy:
        problems.append(("decoy_bbox", "decoy columns are for single-image rows"))
    if problems:
        return None, problems, notes
    base = {"dataset": texts["dataset"], "question_id": texts["question_id"]}
    if kind == "sft":
        messages = sft_messages(texts["problem"], texts["reasoning"], texts["solution"], SYSTEM_PROMPT)
        user = messages[1]
        messages[1] = {**user, "content": [user["content"][0]] * len(images) + user["content"][1:]}
        return {"messages": messages, "images": images, **base}, [], notes
    out = {
        "images": images,
        "problem": texts["problem"],
        "solution": texts["solution"],
        "bbox": boxes,
        "bbox_image": placement if name == "images" else None,
        "bbox_frame": placement if name == "video" else None,
        **base,
    }
    if kind == "eval":
        out["reasoning"] = texts.get("reasoning")
    return out, [], notes


def _decoy_columns(row: Mapping, problems: list[tuple[str, str]]) -> dict:
    """The row's decoy columns (:data:`~data_tools.schema.DECOY_FEATURES`) checked, or {} when it has none."""
    present = [name for name in DECOY_FEATURES if row.get(name) is not None]
    if not present:
        return {}
    if len(present) != len(DECOY_FEATURES):
        missing = next(name for name in DECOY_FEATURES if name not in present)
        problems.append((missing, f"missing field (a decoy row needs both {' and '.join(DECOY_FEATURES)})"))
        return {}
    answer, boxes = row["decoy_answer"], row["decoy_bbox"]
    if not isinstance(answer, str):
        problems.append(("decoy_answer", f"must be a string ('' without a cue), got {answer!r:.80}"))
        return {}
    if isinstance(boxes, (list, tuple)) and not boxes and not answer:
        return {"decoy_answer": "", "decoy_bbox": []}
    try:
        parsed = normalise_boxes(parse_boxes(boxes), "xyxy_norm", 1, 1)  # normalised, as the synthetic data writes
    except ValueError as err:
        problems.append(("decoy_bbox", str(err)))
        return {}
    if not answer:
        problems.append(("decoy_answer", "is empty but decoy_bbox places a cue"))
        return {}
    return {"decoy_answer": answer, "decoy_bbox": parsed}


def validate_rows(
    rows: Iterable[Any],
    kind: str = "rl",
    *,
    bbox_format: str = "xyxy_norm",
    image_dir: str | Path | None = None,
    max_image_side: int | None = 1024,
    on_bad_row: str = "error",
    unreadable: Sequence[tuple[int, str]] = (),
    allow_outside_image_dir: bool = False,
) -> tuple[list[dict], ValidationReport]:
    """Validate and normalise raw rows into rows of the ``kind`` split (``"sft"``, ``"rl"`` or ``"eval"``).

    ``unreadable`` are the ``(line number, reason)`` of input lines that gave no record (`data_tools.read_jsonl`);
    each is reported as a rejected row named ``line N``. Image paths must stay inside ``image_dir`` unless
    ``allow_outside_image_dir`` (see :func:`load_image`).

    Returns the kept rows (laid out as :data:`~data_tools.schema.RL_FEATURES` etc., images as PNG/original bytes)
    and the report. Duplicate ``question_id``: the first row is kept, the later ones are rejected.
    Raises :class:`BadRowsError` listing every bad row when ``on_bad_row="error"`` and any row is bad.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if on_bad_row not in ON_BAD_ROW:
        raise ValueError(f"on_bad_row must be one of {ON_BAD_ROW}, got {on_bad_row!r}")
    if bbox_format not in BBOX_FORMATS:
        raise ValueError(f"bbox_format must be one of {BBOX_FORMATS}, got {bbox_format!r}")
    if max_image_side is not None and max_image_side < 1:
        raise ValueError(f"max_image_side must be >= 1 or None, got {max_image_side}")
    report, kept, first_seen = ValidationReport(), [], {}
    for number, reason in unreadable:
        report.num_rows += 1
        report.issues.append(RowIssue(-number, f"line {number}", "line", reason, "rejected"))
    for index, row in enumerate(tqdm(rows, desc=f"validating {kind} rows", unit="row", mininterval=2.0)):
        report.num_rows += 1
        row_id = _row_id(row, index)
        out, problems, notes = _validate_row(row, kind, bbox_format, image_dir, max_image_side, allow_outside_image_dir)
        if out is not None:
            qid = out["question_id"]
            if qid in first_seen:
                problems.append(("question_id", f"duplicate question_id {qid!r} (first at row {first_seen[qid]})"))
            else:
                first_seen[qid] = index
        report.issues += [RowIssue(index, row_id, f, r, "rejected") for f, r in problems]
        if problems:
            continue
        report.issues += [RowIssue(index, row_id, f, n, "converted") for f, n in notes]
        kept.append(out)
    report.num_kept = len(kept)
    if report.rejected and on_bad_row == "error":
        raise BadRowsError(report)
    return kept, report


def as_several_images(row: dict) -> dict:
    """A single-image rl/eval row in the layout of several images: ``images`` = [its image], every box on image 0."""
    out = {key: value for key, value in row.items() if key not in ("image", "decoy_answer", "decoy_bbox")}
    return {"images": [row["image"]], **out, "bbox_image": [0] * len(row["bbox"] or []), "bbox_frame": None}


def rows_to_dataset(rows: list[dict], kind: str) -> Dataset:
    """Build a ``datasets.Dataset`` with the ``kind`` split's schema from rows returned by :func:`validate_rows`."""
    features = _FEATURES[kind]
    if kind != "sft" and any("images" in row for row in rows):
        features = MULTI_EVAL_FEATURES if kind == "eval" else MULTI_RL_FEATURES
        rows = [row if "images" in row else as_several_images(row) for row in rows]
    elif rows and "decoy_answer" in rows[0]:
        features = Features({**features, **DECOY_FEATURES})
    if not rows:
        return Dataset.from_dict({name: [] for name in features}, features=features)
    return Dataset.from_list(rows, features=features)
