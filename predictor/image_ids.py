"""The one rule for image ids, shared by the export (`evaluation.export`) and every fixation reader.

**Rule.** An image file's id is its path relative to the image folder, with ``/`` separators and without its last
suffix: ``COCO_val2014_000000000042.jpg`` -> ``COCO_val2014_000000000042``, ``sub/img01.png`` -> ``sub/img01``,
``a.b.jpeg`` -> ``a.b``. The export applies it to each file under ``--image_folder`` and keeps the file's own
relative path (with its extension) in the record's ``file_name`` field; each fixation reader applies it to the
stimulus file named by the fixation data, relative to ``--images_dir``. So the export of a folder meets the
fixation files of that same folder without renaming, as long as ``--image_folder`` (export) and ``--images_dir``
(predictor) are the same folder (for SALICON: ``images/train``, not ``images``).

**Older exports.** Exports written before this rule used the file name itself as ``image_id`` and have no
``file_name`` field; :func:`exported_image_id` maps such a folder record's id to its stem (an id is taken for a file
name only when it ends with an image suffix and the record's ``image_path`` ends with it, which a data set record's
``images/...`` copy never does).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePath, PurePosixPath
from typing import Any

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
"""Image files the export picks up from a folder (compared lower case)."""


def image_id(path: str | PurePath) -> str:
    """The id of the image file at ``path``, a path relative to its image folder (see the module's rule)."""
    posix = PurePosixPath(PurePath(path).as_posix())
    if posix.is_absolute() or ".." in posix.parts or not posix.name:
        raise ValueError(f"image path {str(path)!r} is not a file path relative to the image folder")
    return posix.with_suffix("").as_posix()


def exported_image_id(record: Mapping[str, Any]) -> str:
    """The id an export record (a line of ``proposals.jsonl`` or ``errors.jsonl``) stands for under the rule.

    Records written under the rule carry ``file_name`` and their ``image_id`` is returned as is; an older folder
    record (no ``file_name``, ``image_id`` a file name with an image suffix that ends its ``image_path``) gets the
    id of that file.
    """
    value = record["image_id"]
    if "file_name" in record or not isinstance(value, str):
        return value
    path = record.get("image_path")
    posix = PurePosixPath(value)
    if (
        posix.suffix.lower() in IMAGE_SUFFIXES
        and isinstance(path, str)
        and (path == value or PurePosixPath(path).as_posix().endswith("/" + value))
    ):
        return image_id(value)
    return value
