"""Readers for human fixation data in the AiR, OSIE, SALICON and MIT1003 layouts, and fixation maps.

Every reader returns one :class:`FixationRecord` per stimulus, with the fixations of all subjects
merged, as continuous ``(x, y)`` image coordinates (pixel ``i`` spans ``[i, i + 1)``; 1-based
integer indices become pixel centres ``i - 0.5``).

Image ids: every reader names its stimulus by :func:`predictor.image_ids.image_id` of the stimulus
file's path relative to ``images_dir`` (the file stem for a flat folder), the same rule the export
gives the images of ``--image_folder``; ``FixationRecord.image_id`` holds it. Records are keyed by
it, except AiR's (keyed by question). Layouts read:

* **AiR** (``fixation_format: air``): the per-split JSON of the AiR scanpath release
  (``AiR_fixations_{train,validation,test}.json``), a list of one record per subject and question
  with ``question_id``, ``image_id`` (file name), ``width``, ``height``, ``X``, ``Y`` (pixels). AiR
  attention is question-driven, so records are keyed by ``question_id``: they meet an export made
  from a data set of AiR's questions (whose ``image_id`` is the row's ``question_id``).
* **OSIE** (``fixation_format: osie``): the JSON made from OSIE's ``fixations.mat``
  (``osie_fixations_*.json``), one record per subject and image with ``name`` (file name),
  ``subject``, ``X``, ``Y``; the image size is read from the stimulus file. Keyed by the file stem.
* **SALICON** (``fixation_format: salicon``): either the COCO-style JSON (``fixations_*.json``:
  ``images`` with ``id``/``file_name``/``width``/``height`` and ``annotations`` with ``image_id`` and
  ``fixations`` as 1-based ``[row, col]``), or a folder of the per-image ``.mat`` files (``image``,
  ``resolution`` = ``[height, width]``, ``gaze`` with per-subject ``fixations`` as 1-based
  ``[x, y]``; needs ``scipy``). Fixation-map PNGs (``maps/``) are used when
  ``fixation_maps_dir`` is given. Keyed by the file stem.
* **MIT1003** (``fixation_format: mit1003``): the folder ``ALLFIXATIONMAPS`` of the MIT1003 release
  (Judd et al. 2009), read for its ``<name>_fixPts.jpg`` files: greyscale images at the stimulus
  size whose marked pixels are the fixations of all 15 subjects; a pixel at or above 128 (half
  scale; the JPEG leaves faint values around each mark) is one fixation at its pixel centre (two
  subjects on one pixel count once). The stimulus is ``<name>.jpeg`` in ``images_dir``
  (``ALLSTIMULI``; another image suffix is accepted when it is the only one). With
  ``fixation_maps_dir`` (usually ``ALLFIXATIONMAPS`` itself) the maps are its
  ``<name>_fixMap.jpg``. The per-subject raw eye traces of ``DATA/`` are not read. Keyed by the
  stimulus stem.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path

import numpy as np
from PIL import Image

from data_tools.images import open_displayed

from .image_ids import IMAGE_SUFFIXES, image_id

FIXATION_FORMATS = ("air", "osie", "salicon", "mit1003")
MIT1003_POINTS_SUFFIX = "_fixPts.jpg"
MIT1003_MAP_SUFFIX = "_fixMap.jpg"
MIT1003_THRESHOLD = 128


@dataclass
class FixationRecord:
    """All subjects' fixations on one stimulus (image, or image + question for AiR).

    ``key`` joins the record with the export's ``image_id``; ``image_id`` is the stimulus's id by the id rule
    (equal to ``key`` except for AiR, whose key is the question id).
    """

    key: str
    image_path: Path
    width: int
    height: int
    points: np.ndarray  # (N, 2) float64 continuous (x, y) in [0, width] x [0, height]
    map_path: Path | None = None
    image_id: str | None = None


def _numbers(value: object, where: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
    ):
        raise ValueError(f"{where}: expected a list of finite numbers, got {str(value)[:80]}")
    return [float(v) for v in value]


def _field(record: dict, name: str, where: str) -> object:
    if not isinstance(record, dict):
        raise TypeError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r}")
    return record[name]


def _xy(record: dict, where: str) -> np.ndarray:
    xs, ys = (
        _numbers(_field(record, "X", where), f"{where} field 'X'"),
        _numbers(_field(record, "Y", where), f"{where} field 'Y'"),
    )
    if len(xs) != len(ys):
        raise ValueError(f"{where}: fields 'X' and 'Y' have different lengths ({len(xs)} vs {len(ys)})")
    return np.asarray([xs, ys], dtype=np.float64).T.reshape(-1, 2)


def _positive_int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _finish(
    key: str,
    image_path: Path,
    width: int,
    height: int,
    points: list[np.ndarray],
    on_out_of_bounds: str,
    map_path: Path | None,
    dropped: dict[str, int],
    stimulus_id: str | None = None,
) -> FixationRecord:
    pts = np.concatenate(points) if points else np.zeros((0, 2))
    inside = (pts[:, 0] >= 0) & (pts[:, 0] <= width) & (pts[:, 1] >= 0) & (pts[:, 1] <= height)
    if not inside.all():
        if on_out_of_bounds == "error":
            bad = pts[~inside][0]
            raise ValueError(
                f"record {key!r}: fixation ({bad[0]:g}, {bad[1]:g}) lies outside the {width}x{height} image "
                f"({int((~inside).sum())} such); pass --on_out_of_bounds drop to discard them"
            )
        dropped[key] = int((~inside).sum())
        pts = pts[inside]
    if len(pts) == 0:
        raise ValueError(f"record {key!r}: no fixation inside the image")
    return FixationRecord(key, image_path, width, height, pts, map_path, key if stimulus_id is None else stimulus_id)


def _check_policy(on_out_of_bounds: str) -> None:
    if on_out_of_bounds not in ("error", "drop"):
        raise ValueError(f"--on_out_of_bounds must be 'error' or 'drop', got {on_out_of_bounds!r}")


def _map_path(maps_dir: str | Path | None, stem: str, suffix: str = ".png") -> Path | None:
    if maps_dir is None:
        return None
    path = Path(maps_dir) / f"{stem}{suffix}"
    if not path.is_file():
        raise FileNotFoundError(f"--fixation_maps_dir: no fixation map {path} for image {stem!r}")
    return path


def _stimulus_id(name: str, where: str) -> str:
    """The id of a stimulus named ``name`` (relative to the images folder) by the id rule; errors say ``where``."""
    try:
        return image_id(name)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _stimulus_size(image_path: Path, where: str) -> tuple[int, int]:
    """``(width, height)`` of a stimulus as displayed (EXIF orientation applied); errors name the file."""
    try:
        return open_displayed(image_path)[0].size
    except OSError as e:
        raise ValueError(f"{where}: stimulus {image_path} is not a readable image ({e})") from None


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"fixation file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"fixation file {path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    except UnicodeDecodeError as e:
        raise ValueError(f"fixation file {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _report_dropped(dropped: dict[str, int]) -> None:
    if dropped:
        import logging

        logging.getLogger(__name__).warning(
            "dropped %d out-of-image fixations in %d records (e.g. %s)",
            sum(dropped.values()),
            len(dropped),
            next(iter(dropped)),
        )


def read_air_fixations(
    path: str | Path, images_dir: str | Path, on_out_of_bounds: str = "error", maps_dir: str | Path | None = None
) -> list[FixationRecord]:
    """Read an AiR fixation JSON; one record per question (all subjects merged)."""
    _check_policy(on_out_of_bounds)
    path, images_dir = Path(path), Path(images_dir)
    data = _load_json(path)
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a JSON list of per-subject records")
    groups: dict[str, dict] = {}
    for i, rec in enumerate(data):
        where = f"{path} record {i}"
        qid = str(_field(rec, "question_id", where))
        image_id = _field(rec, "image_id", where)
        if not isinstance(image_id, str) or not image_id:
            raise ValueError(f"{where} field 'image_id': expected a file name, got {image_id!r}")
        size = (
            _positive_int(_field(rec, "width", where), f"{where} field 'width'"),
            _positive_int(_field(rec, "height", where), f"{where} field 'height'"),
        )
        stimulus = _stimulus_id(image_id, f"{where} field 'image_id'")
        group = groups.setdefault(qid, {"image_id": image_id, "stimulus": stimulus, "size": size, "points": []})
        if (group["image_id"], group["size"]) != (image_id, size):
            raise ValueError(f"{where}: question {qid!r} has records for two images or sizes")
        group["points"].append(_xy(rec, where))
    dropped: dict[str, int] = {}
    records = [
        _finish(
            qid,
            images_dir / g["image_id"],
            *g["size"],
            g["points"],
            on_out_of_bounds,
            _map_path(maps_dir, g["stimulus"]),
            dropped,
            g["stimulus"],
        )
        for qid, g in groups.items()
    ]
    _report_dropped(dropped)
    return records


def read_osie_fixations(
    path: str | Path, images_dir: str | Path, on_out_of_bounds: str = "error", maps_dir: str | Path | None = None
) -> list[FixationRecord]:
    """Read an OSIE fixation JSON; one record per image (all subjects merged)."""
    _check_policy(on_out_of_bounds)
    path, images_dir = Path(path), Path(images_dir)
    data = _load_json(path)
    if not isinstance(data, list):
        raise TypeError(f"{path}: expected a JSON list of per-subject records")
    groups: dict[str, list[np.ndarray]] = defaultdict(list)
    for i, rec in enumerate(data):
        where = f"{path} record {i}"
        name = _field(rec, "name", where)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where} field 'name': expected a file name, got {name!r}")
        groups[name].append(_xy(rec, where))
    dropped: dict[str, int] = {}
    records = []
    for name, points in groups.items():
        image_path = images_dir / name
        if not image_path.is_file():
            raise FileNotFoundError(f"{path}: stimulus {image_path} for record name {name!r} does not exist")
        key = _stimulus_id(name, f"{path} field 'name'")
        width, height = _stimulus_size(image_path, f"{path} record name {name!r}")
        records.append(
            _finish(key, image_path, width, height, points, on_out_of_bounds, _map_path(maps_dir, key), dropped)
        )
    _report_dropped(dropped)
    return records


def _salicon_json(path: Path, images_dir: Path, on_out_of_bounds: str, maps_dir) -> list[FixationRecord]:
    data = _load_json(path)
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"{path}: expected a SALICON JSON object with 'images' and 'annotations'")
    for name in ("images", "annotations"):
        if not isinstance(data[name], list):
            raise TypeError(f"{path} field {name!r}: expected a list, got {type(data[name]).__name__}")
    images = {}
    for i, img in enumerate(data["images"]):
        where = f"{path} images[{i}]"
        file_name = _field(img, "file_name", where)
        if not isinstance(file_name, str) or not file_name:
            raise ValueError(f"{where} field 'file_name': expected a file name, got {file_name!r}")
        images[_field(img, "id", where)] = (
            file_name,
            _positive_int(_field(img, "width", where), f"{where} field 'width'"),
            _positive_int(_field(img, "height", where), f"{where} field 'height'"),
        )
    points: dict[object, list[np.ndarray]] = defaultdict(list)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path} annotations[{i}]"
        image_id = _field(ann, "image_id", where)
        if image_id not in images:
            raise ValueError(f"{where} field 'image_id': {image_id!r} is not in 'images'")
        fixations = _field(ann, "fixations", where)
        if not isinstance(fixations, list) or not all(isinstance(f, list) and len(f) == 2 for f in fixations):
            raise ValueError(f"{where} field 'fixations': expected a list of [row, col] pairs")
        rc = np.asarray([_numbers(f, f"{where} field 'fixations'") for f in fixations], dtype=np.float64)
        points[image_id].append(rc.reshape(-1, 2)[:, ::-1] - 0.5)  # 1-based (row, col) -> (x, y) pixel centre
    dropped: dict[str, int] = {}
    records = []
    for index, (file_name, width, height) in images.items():
        key = _stimulus_id(file_name, f"{path} image {index!r} field 'file_name'")
        records.append(
            _finish(
                key,
                images_dir / file_name,
                width,
                height,
                points.get(index, []),
                on_out_of_bounds,
                _map_path(maps_dir, key),
                dropped,
            )
        )
    _report_dropped(dropped)
    return records


def _salicon_mat(folder: Path, images_dir: Path, on_out_of_bounds: str, maps_dir) -> list[FixationRecord]:
    try:
        from scipy.io import loadmat
        from scipy.io.matlab import MatReadError
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading SALICON .mat fixation files needs scipy: pip install scipy") from e
    files = sorted(folder.glob("*.mat"))
    if not files:
        raise FileNotFoundError(f"{folder}: no SALICON .mat fixation files")
    dropped: dict[str, int] = {}
    records = []
    for file in files:
        try:
            mat = loadmat(str(file))
        except (MatReadError, ValueError, TypeError, IndexError, OSError) as e:  # what scipy raises for a non-.mat
            raise ValueError(f"{file}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
        for name in ("image", "resolution", "gaze"):
            if name not in mat:
                raise ValueError(f"{file}: missing field {name!r}")
        try:
            stem = str(np.asarray(mat["image"]).reshape(-1)[0])
            height, width = (int(v) for v in np.asarray(mat["resolution"]).reshape(-1)[:2])
        except (IndexError, TypeError, ValueError):
            raise ValueError(
                f"{file}: fields 'image' (a name) and 'resolution' ([height, width]) are malformed"
            ) from None
        if width < 1 or height < 1:
            raise ValueError(f"{file} field 'resolution': expected a positive [height, width], got {[height, width]}")
        points = []
        for s, subject in enumerate(np.asarray(mat["gaze"]).reshape(-1)):
            if "fixations" not in (getattr(subject, "dtype", np.dtype(float)).names or ()):
                raise ValueError(f"{file}: gaze[{s}] has no field 'fixations'")
            try:
                xy = np.asarray(subject["fixations"], dtype=np.float64).reshape(-1, 2)
            except (TypeError, ValueError):
                raise ValueError(f"{file}: gaze[{s}] field 'fixations' is not an N x 2 array of [x, y]") from None
            if not np.isfinite(xy).all():
                raise ValueError(f"{file}: gaze[{s}] field 'fixations' has non-finite values")
            points.append(xy - 0.5)  # MATLAB 1-based (x, y) -> pixel centre
        key = _stimulus_id(f"{stem}.jpg", f"{file} field 'image'")
        image_path = images_dir / f"{stem}.jpg"
        records.append(
            _finish(key, image_path, width, height, points, on_out_of_bounds, _map_path(maps_dir, key), dropped)
        )
    _report_dropped(dropped)
    return records


def read_salicon_fixations(
    path: str | Path, images_dir: str | Path, on_out_of_bounds: str = "error", maps_dir: str | Path | None = None
) -> list[FixationRecord]:
    """Read SALICON fixations: a COCO-style JSON file or a folder of per-image ``.mat`` files."""
    _check_policy(on_out_of_bounds)
    path, images_dir = Path(path), Path(images_dir)
    if path.is_dir():
        return _salicon_mat(path, images_dir, on_out_of_bounds, maps_dir)
    return _salicon_json(path, images_dir, on_out_of_bounds, maps_dir)


def _mit1003_stimulus(images_dir: Path, name: str, points_file: Path) -> Path:
    """``<name>.jpeg`` (as MIT1003 ships it) or the only ``<name>.<image suffix>`` in ``images_dir``."""
    distributed = images_dir / f"{name}.jpeg"
    if distributed.is_file():
        return distributed
    found = [p for p in images_dir.glob(f"{glob_escape(name)}.*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"{points_file}: no stimulus {distributed} (MIT1003 ALLSTIMULI/<name>.jpeg)")
    raise ValueError(f"{points_file}: several stimuli for {name!r} in {images_dir}: {sorted(p.name for p in found)}")


def _check_map_file(path: Path, width: int, height: int) -> None:
    try:
        with Image.open(path) as im:
            size, mode = im.size, im.mode
    except OSError as e:
        raise ValueError(f"fixation map {path}: not a readable image ({e})") from None
    if size != (width, height) or mode not in ("L", "I;16"):
        raise ValueError(
            f"fixation map {path}: {size[0]}x{size[1]} mode {mode!r}, expected a {width}x{height} greyscale image"
        )


def read_mit1003_fixations(
    path: str | Path, images_dir: str | Path, on_out_of_bounds: str = "error", maps_dir: str | Path | None = None
) -> list[FixationRecord]:
    """Read MIT1003's ``ALLFIXATIONMAPS`` folder (its ``*_fixPts.jpg``); one record per stimulus of ``images_dir``."""
    _check_policy(on_out_of_bounds)
    path, images_dir = Path(path), Path(images_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"fixations {path}: expected MIT1003's ALLFIXATIONMAPS folder (of *{MIT1003_POINTS_SUFFIX} files)"
        )
    files = sorted(p for p in path.iterdir() if p.name.endswith(MIT1003_POINTS_SUFFIX) and p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no MIT1003 fixation-point files (*{MIT1003_POINTS_SUFFIX})")
    dropped: dict[str, int] = {}
    records = []
    for file in files:
        name = file.name[: -len(MIT1003_POINTS_SUFFIX)]
        image_path = _mit1003_stimulus(images_dir, name, file)
        width, height = _stimulus_size(image_path, str(file))
        try:
            with Image.open(file) as im:
                marks = np.asarray(im.convert("L"))
        except OSError as e:
            raise ValueError(f"{file}: not a readable image ({e})") from None
        if marks.shape != (height, width):
            raise ValueError(
                f"{file}: {marks.shape[1]}x{marks.shape[0]} fixation points for the {width}x{height} stimulus "
                f"{image_path}"
            )
        rows, cols = np.nonzero(marks >= MIT1003_THRESHOLD)
        if len(rows) == 0:
            raise ValueError(f"{file}: no fixation (no pixel at or above {MIT1003_THRESHOLD})")
        key = _stimulus_id(image_path.relative_to(images_dir).as_posix(), str(file))
        map_path = _map_path(maps_dir, name, MIT1003_MAP_SUFFIX)
        if map_path is not None:
            _check_map_file(map_path, width, height)
        points = np.stack([cols + 0.5, rows + 0.5], axis=1).astype(np.float64)
        records.append(_finish(key, image_path, width, height, [points], on_out_of_bounds, map_path, dropped))
    _report_dropped(dropped)
    return records


def read_fixations(
    fixation_format: str,
    path: str | Path,
    images_dir: str | Path,
    on_out_of_bounds: str = "error",
    maps_dir: str | Path | None = None,
) -> list[FixationRecord]:
    """Dispatch to the reader of ``fixation_format`` (one of :data:`FIXATION_FORMATS`)."""
    readers = {
        "air": read_air_fixations,
        "osie": read_osie_fixations,
        "salicon": read_salicon_fixations,
        "mit1003": read_mit1003_fixations,
    }
    if fixation_format not in readers:
        raise ValueError(f"--fixation_format {fixation_format!r} is not one of {FIXATION_FORMATS}")
    return readers[fixation_format](path, images_dir, on_out_of_bounds, maps_dir)


def fixation_map(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Binary ``(height, width)`` map of the pixels holding at least one fixation."""
    out = np.zeros((height, width), dtype=np.float64)
    cols = np.clip(np.floor(points[:, 0]).astype(int), 0, width - 1)
    rows = np.clip(np.floor(points[:, 1]).astype(int), 0, height - 1)
    out[rows, cols] = 1.0
    return out


def density_map(points: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """Sum of isotropic Gaussians (``sigma`` pixels) centred on the fixations, at pixel centres."""
    if sigma <= 0:
        raise ValueError(f"--blur_sigma must be positive, got {sigma}")
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[:, None] + 0.5
    gy = np.exp(-((ys - points[None, :, 1]) ** 2) / (2 * sigma**2))  # (H, N)
    gx = np.exp(-((xs - points[None, :, 0]) ** 2) / (2 * sigma**2))  # (W, N)
    return gy @ gx.T


def load_map_png(path: Path, height: int, width: int) -> np.ndarray:
    """Read an 8-bit greyscale PNG map of the given size as floats in [0, 1]."""
    with Image.open(path) as im:
        if im.size != (width, height):
            raise ValueError(f"map {path} is {im.size[0]}x{im.size[1]}, expected {width}x{height}")
        if im.mode not in ("L", "I;16"):
            raise ValueError(f"map {path} has mode {im.mode!r}, expected an 8- or 16-bit greyscale PNG")
        return np.asarray(im, dtype=np.float64) / (255.0 if im.mode == "L" else 65535.0)
