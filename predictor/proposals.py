"""Read (and, for synthetic sets, write) the export of semantic proposals: JSONL + PNG masks.

One JSONL line per image::

    {"image_id", "image_path", "width", "height", "explanation", "answer",
     "proposals": [{"phrase", "reason", "mask_path", "box": [x1, y1, x2, y2], "score"}],
     "logit_lens": {"path", "features", "layers", "grid"}}   (optional)

Paths are relative to the JSONL file; each mask is an 8-bit greyscale PNG at the image size
(255 = most salient); boxes are normalised to [0, 1]; scores lie in [0, 1]. ``logit_lens`` (an export made with
``--logit_lens_layers``) points at a float32 .npy of shape (channels, layers, grid rows, grid cols): per proposal
with ``features`` = ``phrases``, the top-k lens probabilities with ``topk`` (see ``evaluation/export.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .fixations import load_map_png
from .image_ids import exported_image_id


@dataclass
class Proposal:
    """One semantic proposal: an object phrase, why it matters, where it is."""

    phrase: str
    reason: str
    mask_path: Path
    box: tuple[float, float, float, float]
    score: float


LENS_FEATURES = ("phrases", "topk")


@dataclass
class LogitLensFeatures:
    """An image's exported logit-lens patch features: which reduction, from which decoder layers, on which grid."""

    path: Path
    features: str
    layers: list[int]
    grid: tuple[int, int]

    def load(self) -> np.ndarray:
        """The (channels, layers, rows, cols) float32 array; a file of another shape is a ValueError naming it."""
        array = np.load(self.path)
        if array.ndim != 4 or array.shape[1:] != (len(self.layers), *self.grid):
            raise ValueError(
                f"{self.path}: logit-lens features of shape {array.shape}, expected (channels, {len(self.layers)}, "
                f"{self.grid[0]}, {self.grid[1]}) from its export line"
            )
        return array.astype(np.float32)


@dataclass
class ExportRecord:
    """The exported explanation and proposals of one image."""

    image_id: str
    image_path: Path
    width: int
    height: int
    explanation: str
    answer: str
    proposals: list[Proposal] = field(default_factory=list)
    logit_lens: LogitLensFeatures | None = None

    def load_mask(self, index: int) -> np.ndarray:
        """Proposal ``index``'s mask as floats in [0, 1], shape ``(height, width)``."""
        return load_map_png(self.proposals[index].mask_path, self.height, self.width)


def _require(obj: dict, name: str, kind: type | tuple[type, ...], where: str):
    if name not in obj:
        raise ValueError(f"{where}: missing field {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{where} field {name!r}: expected {getattr(kind, '__name__', kind)}, got {value!r:.80}")
    return value


def _parse_proposal(obj: object, base: Path, where: str) -> Proposal:
    if not isinstance(obj, dict):
        raise TypeError(f"{where}: expected a JSON object")
    box = _require(obj, "box", list, where)
    if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        raise ValueError(f"{where} field 'box': expected [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise ValueError(f"{where} field 'box': {box!r} is not a normalised box with x1 < x2 and y1 < y2")
    score = float(_require(obj, "score", (int, float), where))
    if not (math.isfinite(score) and 0 <= score <= 1):
        raise ValueError(f"{where} field 'score': {score!r} is not in [0, 1]")
    mask_path = base / _require(obj, "mask_path", str, where)
    if not mask_path.is_file():
        raise FileNotFoundError(f"{where} field 'mask_path': {mask_path} does not exist")
    return Proposal(
        phrase=_require(obj, "phrase", str, where),
        reason=_require(obj, "reason", str, where),
        mask_path=mask_path,
        box=(x1, y1, x2, y2),
        score=score,
    )


def _parse_lens(obj: object, base: Path, where: str) -> LogitLensFeatures:
    if not isinstance(obj, dict):
        raise TypeError(f"{where}: expected a JSON object")
    features = _require(obj, "features", str, where)
    if features not in LENS_FEATURES:
        raise ValueError(f"{where} field 'features': {features!r} is not one of {', '.join(LENS_FEATURES)}")
    layers, grid = _require(obj, "layers", list, where), _require(obj, "grid", list, where)
    if not layers or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in layers):
        raise ValueError(f"{where} field 'layers': expected decoder layer indices, got {layers!r}")
    if len(grid) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid):
        raise ValueError(f"{where} field 'grid': expected [rows, cols], got {grid!r}")
    path = base / _require(obj, "path", str, where)
    if not path.is_file():
        raise FileNotFoundError(f"{where} field 'path': {path} does not exist")
    return LogitLensFeatures(path=path, features=features, layers=layers, grid=(grid[0], grid[1]))


def read_export(path: str | Path) -> dict[str, ExportRecord]:
    """Read and validate an export JSONL; returns records keyed by image id.

    The id is :func:`predictor.image_ids.exported_image_id` of the line: its ``image_id``, except on a line of an
    export written before the id rule (an image-folder record without ``file_name`` whose ``image_id`` is the file
    name), which is keyed by that file's id under the rule (its path without the extension), so older exports still
    meet the fixation readers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"proposals file {path} does not exist")
    base = path.parent
    records: dict[str, ExportRecord] = {}
    with open(path) as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {n}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise TypeError(f"{where}: expected a JSON object")
            _require(obj, "image_id", str, where)
            image_id = exported_image_id(obj)
            if image_id in records:
                raise ValueError(f"{where}: duplicate image_id {image_id!r}")
            width, height = _require(obj, "width", int, where), _require(obj, "height", int, where)
            if width < 1 or height < 1:
                raise ValueError(f"{where}: width and height must be positive, got {width}x{height}")
            proposals = _require(obj, "proposals", list, where)
            records[image_id] = ExportRecord(
                image_id=image_id,
                image_path=base / _require(obj, "image_path", str, where),
                width=width,
                height=height,
                explanation=_require(obj, "explanation", str, where),
                answer=_require(obj, "answer", str, where),
                proposals=[_parse_proposal(p, base, f"{where} proposals[{j}]") for j, p in enumerate(proposals)],
                logit_lens=None if obj.get("logit_lens") is None else _parse_lens(obj["logit_lens"], base, where),
            )
    return records


def write_export(records: list[ExportRecord], path: str | Path) -> None:
    """Write records as export JSONL; image and mask paths are made relative to ``path``'s folder."""
    path = Path(path)
    base = path.parent.resolve()
    with open(path, "w") as f:
        for rec in records:
            line = asdict(rec)
            line["image_path"] = str(Path(rec.image_path).resolve().relative_to(base))
            for p, out in zip(rec.proposals, line["proposals"]):
                out["mask_path"] = str(Path(p.mask_path).resolve().relative_to(base))
                out["box"] = list(p.box)
            if rec.logit_lens is None:
                del line["logit_lens"]
            else:
                line["logit_lens"]["path"] = str(Path(rec.logit_lens.path).resolve().relative_to(base))
                line["logit_lens"]["grid"] = list(rec.logit_lens.grid)
            f.write(json.dumps(line) + "\n")
