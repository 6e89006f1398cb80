"""Export for the downstream saliency predictor: per image, the explanation, the answer and semantic proposals.

Output folder layout (paths in the JSONL are relative to it)::

    proposals.jsonl   one line per image: {"image_id", "file_name", "image_path", "width", "height", "question",
                      "explanation", "answer", "no_map_reason", "saliency_map_path",
                      "proposals": [{"phrase", "reason", "mask_path", "box", "score"}], "phrases_without_mask"}
    masks/            one 8-bit greyscale PNG per proposal, at the image size (255 = the mask's maximum)
    maps/             one 8-bit greyscale PNG per image: the answer's saliency map (``saliency_map_path``)
    lens/             with ``--logit_lens_layers``: one float32 .npy per image, its logit-lens patch features
    summary.json      written when a run finishes: images, exported, errors, with a map, proposals, model
    images/           the images of a data set source (folder sources point at the original files)
    errors.jsonl      one line per image that could not be read: {"image_id", "file_name", "image_path", "error"}

Image ids follow the one rule of `predictor.image_ids`, the same the fixation readers key by: an image of
``--image_folder`` has as ``image_id`` its path relative to the folder without the extension (``sub/img01``) and as
``file_name`` that path as found (``sub/img01.png``); a data set row has its ``question_id`` and ``file_name`` null
(the data set holds image bytes, not file names). Two files of one folder with the same id (``a.jpg``, ``a.png``)
stop the export, naming both.

A proposal is an object phrase of the completion (see `evaluation.phrases`), the sentence it comes from as its
reason, the tracer's direct map over the phrase's tokens as its mask (`SaliencyMaps.map_over(..., kind="direct")`),
the box bounding the mask pixels at or above ``mask_threshold`` times the mask's maximum, and as its score the
fraction of the mask's mass inside that box. The image's own saliency map is the answer's reasoning-flow map (the map
the saliency reward scores, ``SaliencyMaps.answer_map("flow")``), saved like a mask; ``saliency_map_path`` is null when
the completion has no map or its map has no positive mass. A completion without the ``<think>...</think>answer``
format has no map and no proposals (``no_map_reason`` says why); a phrase whose mask is all zero is listed under
``phrases_without_mask``.

With ``--logit_lens_layers`` each line also has ``"logit_lens": {"path", "features", "layers", "grid"}``: an array of
shape (channels, layers, grid rows, grid cols) over the model's (merged) patch grid, from the hidden states of the
image tokens in the pass that made the maps (`evaluation.logit_lens`; no second forward). With ``features`` =
``phrases`` channel i belongs to ``proposals[i]``: the lens probability mass on the distinct token ids that spell its
phrase; with ``topk`` channel i is the (i+1)-th largest lens probability. ``layers`` are the decoder layers as
non-negative indices (the output of layer l; the last one is the model's own read-out).

Resuming: images already in ``proposals.jsonl`` or ``errors.jsonl`` are skipped; a line cut off by a crash is
removed before the run goes on. Masks are written before their line, so a finished line always has its files, and
``summary.json`` only once every image is in one of the two files (the main job's mark of a finished export).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from PIL import Image
from tqdm.auto import tqdm
from trl import ModelConfig

from data_tools import load_image
from predictor.image_ids import IMAGE_SUFFIXES, exported_image_id, image_id
from rewards import answer_text, parse_reasoning
from saliency import SaliencyMaps, SpecialTokens
from vlm import load_model_and_processor

from .eval_config import ExportArguments
from .evaluate import load_rows, read_completions
from .generation import TracedCompletion, trace_completions
from .logit_lens import LogitLensCapture
from .phrases import Phrase, noun_phrases, token_char_spans, tokens_overlapping

logger = logging.getLogger(__name__)


@dataclass
class ExportItem:
    """One image to export: its id, the question asked, and where it is (a file, or a row of the data set).

    ``file_name`` is a folder image's path relative to the folder, extension included (None for a data set row).
    """

    image_id: str
    question: str
    path: Path | None = None
    row: int | None = None
    file_name: str | None = None


def folder_items(folder: str | Path, question: str) -> list[ExportItem]:
    """Every image file under ``folder`` (by suffix, recursively, sorted), with its id by `predictor.image_ids.image_id`
    (the path relative to ``folder`` without the extension) and its relative path as ``file_name``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--image_folder {str(folder)!r} is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    items, seen = [], {}
    for p in files:
        name = p.relative_to(folder).as_posix()
        item = ExportItem(image_id(name), question, path=p, file_name=name)
        if item.image_id in seen:
            raise ValueError(
                f"--image_folder {str(folder)!r}: {seen[item.image_id]!r} and {name!r} both have the image id "
                f"{item.image_id!r} (ids are file paths without the extension); rename or move one of them"
            )
        seen[item.image_id] = name
        items.append(item)
    return items


def mask_box(mask: np.ndarray, threshold: float) -> tuple[list[float], float] | None:
    """The normalised box of the pixels at or above ``threshold`` times the mask's maximum, and the fraction of the
    mask's positive mass inside it; None for a mask without positive mass."""
    positive = np.maximum(mask, 0.0)
    peak = positive.max()
    if not np.isfinite(peak) or peak <= 0:
        return None
    rows, cols = np.nonzero(positive >= threshold * peak)
    height, width = mask.shape
    y1, y2, x1, x2 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    score = float(positive[y1:y2, x1:x2].sum() / positive.sum())
    return [x1 / width, y1 / height, x2 / width, y2 / height], min(1.0, score)


def mask_png(mask: np.ndarray) -> Image.Image:
    """The mask as an 8-bit greyscale image, 255 at its maximum, 0 at or below zero."""
    positive = np.maximum(mask, 0.0)
    return Image.fromarray(np.round(255 * positive / positive.max()).astype(np.uint8), mode="L")


def completion_phrases(
    tokenizer, maps: SaliencyMaps, object_nouns: Sequence[str] | None
) -> list[tuple[Phrase, list[int]]]:
    """The object phrases of a completion's thinking and answer, each with the completion tokens that spell it."""
    ids = maps.completion_ids.tolist()
    text, char_spans = token_char_spans(tokenizer, ids)
    phrases: dict[str, Phrase] = {}
    for (start, end), whole in ((maps.spans.thinking, False), (maps.spans.answer, True)):
        lo, hi = char_spans[max(start, 0)][0], char_spans[end - 1][1]
        for phrase in noun_phrases(text[lo:hi], object_nouns=object_nouns, offset=lo, whole_text_is_phrase=whole):
            kept = phrases.setdefault(phrase.text.lower(), phrase)
            if kept is not phrase:
                kept.spans += phrase.spans
    answer_end = maps.spans.answer[1]
    located = []
    for phrase in phrases.values():
        tokens = [k for k in tokens_overlapping(char_spans, phrase.spans) if k < answer_end]
        if tokens:
            located.append((phrase, tokens))
    return located


def _mask_name(image_id: str, index: int) -> str:
    digest = hashlib.sha1(image_id.encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9._-]+', '_', image_id)[-60:]}-{digest}-{index:02d}.png"


def export_record(
    item: ExportItem,
    image: Image.Image,
    traced: TracedCompletion,
    tokenizer,
    args: ExportArguments,
    out: Path,
    image_path: str,
    lens: LogitLensCapture | None = None,
) -> dict[str, Any]:
    """Write the masks of one image's proposals under ``out/masks`` and return its JSONL record.

    With ``lens`` (the capture of the pass that traced ``traced``), its logit-lens features go under ``out/lens``."""
    text = traced.text
    reasoned = parse_reasoning(text)
    record = {
        "image_id": item.image_id,
        "file_name": item.file_name,
        "image_path": image_path,
        "width": image.width,
        "height": image.height,
        "question": item.question,
        "explanation": reasoned.thinking if reasoned else "",
        "answer": reasoned.answer if reasoned else answer_text(text),
        "no_map_reason": traced.maps.reason,
        "saliency_map_path": None,
        "proposals": [],
        "phrases_without_mask": [],
    }
    phrase_ids: list[list[int]] = []
    if traced.maps.has_map:
        phrase_ids = _add_maps(record, item, traced, tokenizer, args, out)
    if lens is not None:
        name = Path("lens") / (_mask_name(item.image_id, 0).removesuffix(".png") + ".npy")
        record["logit_lens"] = _write_lens(lens, traced, phrase_ids, args, out, name)
    return record


def _add_maps(
    record: dict[str, Any], item: ExportItem, traced: TracedCompletion, tokenizer, args: ExportArguments, out: Path
) -> list[list[int]]:
    """Write the answer's map and the proposals' masks, fill them into ``record``; return each proposal's token ids."""
    phrase_ids = []
    answer_map = traced.maps.answer_map("flow")[0].upsampled()
    if np.isfinite(answer_map).all() and answer_map.max() > 0:
        name = Path("maps") / _mask_name(item.image_id, 0)
        mask_png(answer_map).save(out / name)
        record["saliency_map_path"] = name.as_posix()
    for phrase, tokens in completion_phrases(tokenizer, traced.maps, args.object_nouns):
        mask = traced.maps.map_over(tokens, kind="direct")[0].upsampled()
        boxed = mask_box(mask, args.mask_threshold)
        if boxed is None:
            record["phrases_without_mask"].append(phrase.text)
            continue
        box, score = boxed
        name = Path("masks") / _mask_name(item.image_id, len(record["proposals"]))
        mask_png(mask).save(out / name)
        record["proposals"].append(
            {"phrase": phrase.text, "reason": phrase.sentence, "mask_path": name.as_posix(), "box": box, "score": score}
        )
        phrase_ids.append(traced.maps.completion_ids[tokens].tolist())
    return phrase_ids


def _write_lens(
    lens: LogitLensCapture,
    traced: TracedCompletion,
    phrase_ids: list[list[int]],
    args: ExportArguments,
    out: Path,
    name: Path,
) -> dict[str, Any]:
    """Save one image's logit-lens features (channels, layers, rows, cols) as ``out/name``; return the line's field."""
    if args.logit_lens_features == "phrases":
        features = lens.phrase_probabilities(traced.index, phrase_ids)
    else:
        features = lens.topk_probabilities(traced.index, args.logit_lens_topk)
    (layout,) = traced.maps.images  # an export row holds one image
    grid = features[..., layout.positions.to(features.device)].reshape(*features.shape[:2], *layout.grid)
    np.save(out / name, grid.cpu().numpy().astype(np.float32))
    return {
        "path": name.as_posix(),
        "features": args.logit_lens_features,
        "layers": lens.layers,
        "grid": list(layout.grid),
    }


def finished_ids(path: Path) -> set[str]:
    """The image id of every complete line of a JSONL file; a cut-off last line (a crash mid-write) is removed.

    Lines of an export written before the id rule count under their id by the rule (`exported_image_id`), so a rerun
    over an older output folder skips what it holds."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        logger.warning("%s: removing a cut-off last line left by an interrupted run", path)
        path.write_bytes(complete)
    return {exported_image_id(json.loads(line)) for line in complete.decode().splitlines() if line.strip()}


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _dataset_items(args: ExportArguments, errors: Path, done: set[str]) -> tuple[datasets.Dataset, list[ExportItem]]:
    """The data set and its rows as items; rows rejected by validation (``--on_bad_row skip``) go to ``errors``."""
    rows, report = load_rows(args)
    for issue in report.rejected:
        if issue.row_id not in done:
            line = {"image_id": issue.row_id, "file_name": None, "image_path": None}
            _append(errors, {**line, "error": f"{issue.field}: {issue.reason}"})
            done.add(issue.row_id)
    ids, problems = rows["question_id"], rows["problem"]
    return rows, [ExportItem(str(q), p, row=i) for i, (q, p) in enumerate(zip(ids, problems))]


def _open(item: ExportItem, out: Path, rows: datasets.Dataset | None) -> tuple[Image.Image, str]:
    """The item's RGB image and its path relative to ``out`` (a data set image is saved under ``out/images``)."""
    if item.path is not None:
        data, _, _ = load_image(str(item.path))
        with Image.open(io.BytesIO(data["bytes"])) as image:
            return image.convert("RGB"), os.path.relpath(item.path.resolve(), out.resolve())
    image = rows[item.row]["image"].convert("RGB")
    name = Path("images") / _mask_name(item.image_id, 0)
    image.save(out / name)
    return image, name.as_posix()


def _completions(path: str, todo: list[ExportItem]) -> list[str]:
    """The completion of each item from ``--completions_file``, keyed by image id; a file keyed by the folder images'
    file names (as ids were before the id rule) is read too."""
    try:
        return read_completions(path, [i.image_id for i in todo])
    except ValueError:
        if not todo or any(i.file_name is None for i in todo):
            raise
        try:
            found = read_completions(path, [i.file_name for i in todo])
        except ValueError:
            pass
        else:
            logger.info("--completions_file %s is keyed by file name (older export ids); read as such", path)
            return found
        raise


def run_export(args: ExportArguments, model_args: ModelConfig) -> Path:
    """Export every image not yet exported to ``args.output_dir``; return the path of ``proposals.jsonl``."""
    out = Path(args.output_dir)
    for folder in ("masks", "maps", "images") + (("lens",) if args.logit_lens_layers is not None else ()):
        (out / folder).mkdir(parents=True, exist_ok=True)
    jsonl, errors = out / "proposals.jsonl", out / "errors.jsonl"
    (out / "summary.json").unlink(missing_ok=True)  # written again when this run finishes
    done = finished_ids(jsonl) | finished_ids(errors)
    if args.image_folder:
        rows, items = None, folder_items(args.image_folder, args.question)
    else:
        rows, items = _dataset_items(args, errors, done)
    todo = [item for item in items if item.image_id not in done]
    logger.info("%d images, %d already exported, %d to go", len(items), len(items) - len(todo), len(todo))
    completions = None
    if args.completions_file:
        completions = dict(zip((i.image_id for i in todo), _completions(args.completions_file, todo)))
    if not todo:
        write_summary(out, len(items), model_args.model_name_or_path)
        return jsonl
    model, processor = load_model_and_processor(model_args, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    tokenizer = getattr(processor, "tokenizer", processor)
    tracer = args.make_tracer(model, SpecialTokens.from_tokenizer(processor))
    lens = None
    if args.logit_lens_layers is not None:
        try:
            lens = LogitLensCapture(model, args.logit_lens_layers)
        except ValueError as error:
            raise ValueError(f"--logit_lens_layers {args.logit_lens_layers}: {error}") from error
    progress = tqdm(total=len(todo), desc="exporting", unit="image")
    for start in range(0, len(todo), args.batch_size):
        batch, opened = todo[start : start + args.batch_size], []
        for item in batch:
            try:
                opened.append((item, *_open(item, out, rows)))
            except (ValueError, OSError) as err:
                logger.warning("image %s: %s (recorded in %s)", item.image_id, err, errors)
                path = None if item.path is None else os.path.relpath(item.path.resolve(), out.resolve())
                line = {"image_id": item.image_id, "file_name": item.file_name, "image_path": path}
                _append(errors, {**line, "error": str(err)})
                progress.update()
        inputs = [{"image": image, "problem": item.question} for item, image, _ in opened]
        given = None if completions is None else [completions[item.image_id] for item, _, _ in opened]
        # One trace_completions batch: one traced generate (or scoring forward), whose first forward the lens reads.
        with nullcontext() if lens is None else lens.capturing():
            for traced in trace_completions(
                tracer,
                processor,
                inputs,
                completions=given,
                batch_size=max(len(inputs), 1),
                max_new_tokens=args.max_new_tokens,
                system_prompt=args.system_prompt,
                progress=False,
            ):
                item, image, image_path = opened[traced.index]
                _append(jsonl, export_record(item, image, traced, tokenizer, args, out, image_path, lens))
                progress.update()
    progress.close()
    write_summary(out, len(items), model_args.model_name_or_path)
    return jsonl


def write_summary(out: Path, num_images: int, model: str | None) -> dict[str, Any]:
    """Write ``out/summary.json`` (counts over the whole output folder, earlier runs included) and return it."""
    jsonl, errors = out / "proposals.jsonl", out / "errors.jsonl"
    text = jsonl.read_text() if jsonl.is_file() else ""
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    summary = {
        "model": model,
        "images": num_images,
        "exported": len(lines),
        "errors": sum(1 for line in errors.read_text().splitlines() if line.strip()) if errors.is_file() else 0,
        "with_map": sum(1 for line in lines if line.get("no_map_reason") is None),
        "proposals": sum(len(line["proposals"]) for line in lines),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
