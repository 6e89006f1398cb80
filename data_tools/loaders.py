"""Loaders that turn public grounded-reasoning layouts into validated splits.

Each source has a row adapter (records of that layout -> raw rows, see :mod:`data_tools.validation`); every loaded
row then goes through :func:`~data_tools.validation.validate_rows`. ``source`` is a local file (``.json`` list,
``.jsonl``, ``.parquet``), a folder written by ``save_to_disk``, or a hub name read with ``datasets.load_dataset``.

Layouts:

- ``saliency_r1`` (the public ``saliency-r1-8k`` layout): ``image`` (image feature, bytes dict or a path relative to
  ``image_dir``), ``problem``, ``solution``, ``bbox`` (``"[x1, y1, x2, y2]"`` normalised; also a list or lists).
  ``dataset``/``question_id`` are kept when present, else ``saliency_r1_8k`` / ``saliency_r1_8k-<split>-<row>``;
  so are a decoy benchmark's ``decoy_answer``/``decoy_bbox`` (:data:`~data_tools.schema.DECOY_FEATURES`).
  Rows of several images have ``images`` and ``bbox_image`` (per box, its image); a clip has ``video`` (its frames)
  and ``bbox_frame`` (per box, its frame), or, as :data:`~data_tools.schema.MULTI_RL_FEATURES` saves it (the
  synthetic ``multi`` / ``clip`` splits), its frames under ``images`` with ``bbox_frame`` set and ``bbox_image``
  None. Default split kind: ``rl``.
- ``visual_cot`` (Visual-CoT metadata JSONL): ``question``, ``answer``, ``image`` (relative to
  ``<image_dir>/<dataset>/``, where Visual-CoT keeps ``textcap`` images under ``textvqa``), ``bboxs`` (pixel xyxy
  boxes; several boxes are kept as a list, union semantics), ``width``, ``height``, ``dataset``. Kind ``rl``.
- ``llava_cot`` (LLaVA-CoT ``train.jsonl``): ``id``, ``image`` (relative to ``image_dir``), ``conversations`` of
  ``{"from": "human"|"gpt", "value"}``; the gpt turn holds ``<SUMMARY>``, ``<CAPTION>``, ``<REASONING>`` and
  ``<CONCLUSION>``. The first three become the reasoning, the conclusion the answer; one row per human/gpt pair.
  Kind ``sft``.
- ``mulberry`` (Mulberry SFT, LLaMA-Factory sharegpt layout): ``messages`` of ``{"role", "content"}`` (user content
  with an ``<image>`` tag) and ``images`` (paths relative to ``image_dir``); the assistant turn ends with
  ``The final answer is: ...`` which becomes the answer, the text before it the reasoning. Kind ``sft``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import datasets

from .schema import DECOY_FEATURES
from .validation import PARSE_ERRORS, ValidationReport, rows_to_dataset, validate_rows

_IMAGE_TAG = re.compile(r"<image>\s*")


class MissingSplitError(ValueError):
    """A saved data set has no split of the requested name."""


LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet")


class JsonlRecords(list):
    """The records of a JSON Lines file, with ``unreadable``: ``(line number, reason)`` of each line that is not
    a JSON object in UTF-8 (blank lines are not records). A UTF-8 byte-order mark at the start is allowed."""

    unreadable: list[tuple[int, str]]


def read_jsonl(path: str | Path) -> JsonlRecords:
    """Read a JSON Lines file line by line; a bad line is named in ``unreadable`` instead of stopping the read."""
    records = JsonlRecords()
    records.unreadable = []
    with Path(path).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                records.unreadable.append((number, f"not UTF-8 ({error.reason} at byte {error.start})"))
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                records.unreadable.append((number, f"not JSON ({error.msg} at column {error.colno})"))
                continue
            if not isinstance(record, dict):
                records.unreadable.append((number, f"a JSON {type(record).__name__}, not an object"))
                continue
            records.append(record)
    return records


def read_records(source: str | Path, split: str = "train") -> Iterable[Mapping[str, Any]]:
    """Records of ``source``: a local ``.json``/``.jsonl``/``.parquet`` file, a ``save_to_disk`` folder or a hub name.

    Image columns of ``datasets`` sources are read undecoded (``{"bytes", "path"}``) so validation sees the raw bytes.
    ``split`` may join splits of a folder or hub data set with ``+`` (``"rl+multi+clip"``, as in ``datasets``): one
    data set when they share their columns, otherwise the rows of each in turn, each row with its own split's columns.
    """
    if "+" in split:
        return _joined_splits(source, split)
    path = Path(source)
    if not path.exists() and (path.suffix in LOCAL_SUFFIXES or path.is_absolute() or str(source).startswith(".")):
        raise FileNotFoundError(f"{source}: no such file or folder")
    if path.is_file() and path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.is_file() and path.suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable UTF-8 JSON file ({error})") from error
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of records, got {type(records).__name__}")
        return records
    if path.is_file() and path.suffix == ".parquet":
        data = datasets.load_dataset("parquet", data_files=str(path), split="train")
    elif path.is_dir() and ((path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()):
        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            if split not in data:
                hint = " (make it with `python -m data_tools.synthetic --num_caption N`)" if split == "caption" else ""
                raise MissingSplitError(f"{path} has no split {split!r}; it has {sorted(data)}{hint}")
            data = data[split]
    elif path.exists():
        raise ValueError(f"{path}: expected a .json, .jsonl or .parquet file or a save_to_disk folder")
    else:
        data = datasets.load_dataset(str(source), split=split)
    return _undecoded(data)


def _joined_splits(source: str | Path, split: str) -> datasets.Dataset | list[dict]:
    names = split.split("+")
    if "" in names:
        raise ValueError(f"split {split!r}: an empty split name (join splits as 'a+b')")
    if Path(source).is_file():
        raise ValueError(f"split {split!r}: joining splits needs a save_to_disk folder or a hub data set, not a file")
    parts = [read_records(source, name) for name in names]
    if all(part.features == parts[0].features for part in parts):
        return datasets.concatenate_datasets(parts)
    return [dict(row) for part in parts for row in part]


def _undecoded(data: datasets.Dataset) -> datasets.Dataset:
    for name, feature in data.features.items():
        if isinstance(feature, datasets.Image):
            data = data.cast_column(name, datasets.Image(decode=False))
        elif isinstance(feature, datasets.List) and isinstance(feature.feature, datasets.Image):
            data = data.cast_column(name, datasets.List(datasets.Image(decode=False)))
    return data


def _text_id(value: Any) -> str | None:
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) else None


def saliency_r1_rows(
    records: Iterable[Mapping[str, Any]], split: str = "train", dataset_name: str = "saliency_r1_8k"
) -> Iterator[dict]:
    """Raw rows from the ``saliency-r1-8k`` layout (see the module docstring)."""
    for index, rec in enumerate(records):
        images, video = rec.get("images"), rec.get("video")
        if video is None and images is not None and rec.get("bbox_frame") is not None and rec.get("bbox_image") is None:
            images, video = None, images  # a saved clip: its frames under `images`, its boxes placed by `bbox_frame`
        yield {
            "image": rec.get("image"),
            "images": images,
            "video": video,
            "bbox_image": rec.get("bbox_image"),
            "bbox_frame": rec.get("bbox_frame"),
            "problem": rec.get("problem"),
            "solution": rec.get("solution"),
            "bbox": rec.get("bbox"),
            "reasoning": rec.get("reasoning"),
            "dataset": rec.get("dataset") if isinstance(rec.get("dataset"), str) else dataset_name,
            "question_id": _text_id(rec.get("question_id")) or f"{dataset_name}-{split}-{index:06d}",
            **{name: rec[name] for name in DECOY_FEATURES if name in rec},
        }


def visual_cot_rows(records: Iterable[Mapping[str, Any]], dataset_name: str = "visual_cot") -> Iterator[dict]:
    """Raw rows from Visual-CoT metadata records (pixel boxes; see the module docstring)."""
    for index, rec in enumerate(records):
        source = rec.get("dataset")
        image = rec.get("image")
        if isinstance(source, str) and isinstance(image, str):
            image = str(Path("textvqa" if source == "textcap" else source) / image)
        yield {
            "image": image,
            "problem": rec.get("question"),
            "solution": rec.get("answer"),
            "bbox": rec.get("bboxs"),
            "bbox_format": "xyxy_px",
            "width": rec.get("width"),
            "height": rec.get("height"),
            "dataset": f"{dataset_name}/{source}" if isinstance(source, str) else dataset_name,
            "question_id": f"{dataset_name}-{_text_id(rec.get('question_id')) or index}",
        }


_LLAVA_COT_TAG = re.compile(r"<(SUMMARY|CAPTION|REASONING|CONCLUSION)>(.*?)</\1>", re.DOTALL)


def llava_cot_rows(records: Iterable[Mapping[str, Any]], dataset_name: str = "llava_cot") -> Iterator[dict]:
    """Raw SFT rows from LLaVA-CoT records, one per human/gpt turn pair (see the module docstring)."""
    for index, rec in enumerate(records):
        base_id = _text_id(rec.get("id")) or str(index)
        turns = rec.get("conversations")
        if not isinstance(turns, list) or len(turns) < 2 or len(turns) % 2:
            yield {
                "question_id": f"{dataset_name}-{base_id}",
                "dataset": dataset_name,
                PARSE_ERRORS: [("conversations", "expected human/gpt turn pairs")],
            }
            continue
        pairs = [(turns[i], turns[i + 1]) for i in range(0, len(turns), 2)]
        for k, (human, gpt) in enumerate(pairs):
            errors = []
            if not (
                isinstance(human, Mapping)
                and isinstance(gpt, Mapping)
                and human.get("from") == "human"
                and gpt.get("from") == "gpt"
            ):
                errors.append(("conversations", f"turn pair {k} is not human then gpt"))
                human, gpt = {}, {}
            question = human.get("value")
            parts = {tag: text.strip() for tag, text in _LLAVA_COT_TAG.findall(str(gpt.get("value", "")))}
            if gpt and "CONCLUSION" not in parts:
                errors.append(("solution", "the gpt turn has no <CONCLUSION>...</CONCLUSION>"))
            reasoning = "\n\n".join(parts[t] for t in ("SUMMARY", "CAPTION", "REASONING") if parts.get(t))
            yield {
                "image": rec.get("image"),
                "problem": _IMAGE_TAG.sub("", question) if isinstance(question, str) else question,
                "reasoning": reasoning or None,
                "solution": parts.get("CONCLUSION"),
                "dataset": dataset_name,
                "question_id": f"{dataset_name}-{base_id}" + (f"-{k}" if len(pairs) > 1 else ""),
                PARSE_ERRORS: errors,
            }


_FINAL_ANSWER = re.compile(r"(?:#+\s*)?the final answer is\s*:?\s*", re.IGNORECASE)


def mulberry_rows(records: Iterable[Mapping[str, Any]], dataset_name: str = "mulberry") -> Iterator[dict]:
    """Raw SFT rows from Mulberry sharegpt records (see the module docstring)."""
    for index, rec in enumerate(records):
        qid = f"{dataset_name}-{_text_id(rec.get('id')) or index}"
        messages = rec.get("messages")
        user = next((m for m in messages or [] if isinstance(m, Mapping) and m.get("role") == "user"), None)
        reply = next((m for m in messages or [] if isinstance(m, Mapping) and m.get("role") == "assistant"), None)
        if user is None or reply is None or not isinstance(reply.get("content"), str):
            yield {
                "question_id": qid,
                "dataset": dataset_name,
                PARSE_ERRORS: [("messages", "expected a user and an assistant message with text content")],
            }
            continue
        text = reply["content"]
        marks = list(_FINAL_ANSWER.finditer(text))
        errors = [] if marks else [("solution", "the assistant turn has no 'The final answer is' marker")]
        question = user.get("content")
        yield {
            "images": rec.get("images"),
            "problem": _IMAGE_TAG.sub("", question) if isinstance(question, str) else question,
            "reasoning": text[: marks[-1].start()].strip() if marks else None,
            "solution": text[marks[-1].end() :].strip() if marks else None,
            "dataset": dataset_name,
            "question_id": qid,
            PARSE_ERRORS: errors,
        }


SOURCES: dict[str, tuple[Callable[..., Iterator[dict]], str]] = {
    "saliency_r1": (saliency_r1_rows, "rl"),
    "visual_cot": (visual_cot_rows, "rl"),
    "llava_cot": (llava_cot_rows, "sft"),
    "mulberry": (mulberry_rows, "sft"),
}
"""Source layout name -> (row adapter, default split kind)."""


def load_source(
    source_format: str,
    source: str | Path,
    *,
    image_dir: str | Path | None = None,
    split: str = "train",
    kind: str | None = None,
    bbox_format: str = "xyxy_norm",
    max_image_side: int | None = 1024,
    on_bad_row: str = "error",
    allow_outside_image_dir: bool = False,
) -> tuple[datasets.Dataset, ValidationReport]:
    """Read ``source`` in the ``source_format`` layout, validate every row and return the split and the report.

    ``kind`` (``"sft"``, ``"rl"`` or ``"eval"``) defaults to the layout's (see :data:`SOURCES`). Raises
    :class:`~data_tools.validation.BadRowsError` listing every bad row unless ``on_bad_row="skip"``. Unreadable
    lines of a ``.jsonl`` source are bad rows named ``line N``; image paths stay inside ``image_dir`` unless
    ``allow_outside_image_dir``.
    """
    if source_format not in SOURCES:
        raise ValueError(f"unknown source format {source_format!r}; choose one of {sorted(SOURCES)}")
    adapter, default_kind = SOURCES[source_format]
    kind = kind or default_kind
    records = read_records(source, split)
    raw = adapter(records, split=split) if source_format == "saliency_r1" else adapter(records)
    rows, report = validate_rows(
        raw,
        kind,
        bbox_format=bbox_format,
        image_dir=image_dir,
        max_image_side=max_image_side,
        on_bad_row=on_bad_row,
        unreadable=getattr(records, "unreadable", ()),
        allow_outside_image_dir=allow_outside_image_dir,
    )
    return rows_to_dataset(rows, kind), report
