"""The evaluation stage: one traced pass over a held-out split, then metrics, faithfulness, the sanity check of the
maps, metrics.json and report.html."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedModel, ProcessorMixin
from trl import ModelConfig

from data_tools import ValidationReport, load_source
from rewards import boxes_per_map
from saliency import MAP_KINDS, SaliencyMaps, SaliencyTracer, SpecialTokens
from saliency.baselines import BASELINES
from vlm import load_model_and_processor

from .eval_config import EvalArguments, InferenceArguments
from .faithfulness import FaithfulnessResult, faithfulness_curves
from .generation import TracedCompletion, completion_maps, image_sizes, prompt_inputs, row_images, trace_completions
from .metrics import answer_scores, cue_scores, frame_scores, pointing_scores, several_pointing_scores, summarise
from .report import render_report, sample_overlay, strip_overlay
from .sanity import SanityResult, cascading_randomisation, randomisation_steps

logger = logging.getLogger(__name__)


def load_rows(args: InferenceArguments) -> tuple[datasets.Dataset, ValidationReport]:
    """The validated rows of ``args.dataset_name`` (the first ``max_eval_samples``) and the validation report.

    See `data_tools.load_source`: a bad row stops the run before any inference (listing every bad row) unless
    ``--on_bad_row skip``, which leaves it out and logs it.
    """
    if not args.dataset_name:
        raise ValueError("--dataset_name is required")
    rows, report = load_source(
        args.dataset_source,
        args.dataset_name,
        image_dir=args.image_dir,
        split=args.dataset_test_split,
        kind="rl",
        on_bad_row=args.on_bad_row,
    )
    logger.info("rows of %s/%s: %s", args.dataset_name, args.dataset_test_split, report.summary())
    for issue in report.rejected:
        logger.warning("left out row %d (%s): %s: %s", issue.index, issue.row_id, issue.field, issue.reason)
    if not len(rows):
        raise ValueError(f"--dataset_name {args.dataset_name!r} split {args.dataset_test_split!r} holds no usable row")
    if args.max_eval_samples is not None:
        rows = rows.select(range(min(args.max_eval_samples, len(rows))))
    return rows, report


def read_completions(path: str | Path, question_ids: Sequence[str]) -> list[str]:
    """The completion of each question id from a JSONL of ``{"question_id", "completion"}`` lines."""
    found: dict[str, str] = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                found[str(record["question_id"])] = str(record["completion"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(
                    f"--completions_file {path} line {number}: expected a JSON object with "
                    f"'question_id' and 'completion' ({err})"
                ) from None
    missing = [q for q in question_ids if q not in found]
    if missing:
        raise ValueError(
            f"--completions_file {path} has no completion for {len(missing)} rows, e.g. question_id {missing[0]!r}"
        )
    return [found[q] for q in question_ids]


def _file_stem(index: int, question_id: str) -> str:
    return f"{index:05d}_{re.sub(r'[^A-Za-z0-9._-]+', '_', question_id)[:80]}"


def evaluate_model(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    rows: datasets.Dataset | Sequence[dict[str, Any]],
    args: EvalArguments,
    *,
    model_name: str,
    completions: Sequence[str] | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    baselines: Sequence[Any] = (),
) -> dict[str, Any]:
    """Evaluate ``model`` on ``rows`` and write the sample overlays under ``args.output_dir``; return the metrics.

    One traced pass produces each completion and its maps (see `trace_completions`). ``baselines`` are attribution
    methods with ``kind`` and ``attribute(...)`` (the signature of `SaliencyTracer.score`, e.g. the classes of
    `saliency.baselines`) over ``model``, scored beside the tracer's maps in the faithfulness curves and the sanity
    check (`evaluation.sanity`; it changes ``model``'s weights in place and restores them).
    """
    output_dir = Path(args.output_dir)
    (output_dir / "overlays").mkdir(parents=True, exist_ok=True)
    tracer = args.make_tracer(model, SpecialTokens.from_tokenizer(processor))
    if args.sanity_samples:
        randomisation_steps(tracer.adapter)  # a quantized model is refused here, before any inference
    records, mapped_rows, several = [], [], 0
    for traced in trace_completions(
        tracer,
        processor,
        rows,
        completions=completions,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        system_prompt=args.system_prompt,
        generate_kwargs=generate_kwargs,
    ):
        row = rows[traced.index]
        images = row_images(row)
        if is_several(row):
            record = _several_record(row, images, traced, args, output_dir)
            several += 1
            records.append(record)
            continue
        scores = answer_scores([traced.text], [row["solution"]])[0]
        upsampled = {
            kind: traced.maps.answer_map(kind)[0].upsampled() if traced.maps.has_map else None for kind in MAP_KINDS
        }
        for kind in args.saliency_maps:
            scores |= pointing_scores(kind, upsampled[kind], row["bbox"], args.pointing_tolerance_px)
        if "decoy_answer" in row:
            maps = {kind: upsampled[kind] for kind in args.saliency_maps}
            scores |= cue_scores(traced.text, maps, row["decoy_answer"], row["decoy_bbox"])
        record = _record(row, traced, scores)
        if traced.index < args.report_samples:
            record["overlays"] = {}
            for kind in args.saliency_maps:
                path = Path("overlays") / f"{_file_stem(traced.index, row['question_id'])}_{kind}.png"
                sample_overlay(images[0], upsampled[kind], row["bbox"]).save(output_dir / path)
                record["overlays"][kind] = str(path)
        if traced.maps.has_map and len(mapped_rows) < max(args.faithfulness_samples, args.sanity_samples):
            mapped_rows.append((traced.index, traced.completion_ids, traced.maps))
        records.append(record)

    summary = summarise(
        [r["scores"] for r in records],
        [r["dataset"] for r in records],
        bootstrap_samples=args.bootstrap_samples,
        confidence=args.confidence,
        seed=args.seed,
    )
    faithfulness = sanity = None
    faithful_rows = mapped_rows[: args.faithfulness_samples]
    if faithful_rows:
        curves, pointing = _faithfulness(model, processor, tracer, rows, faithful_rows, args, baselines)
        faithfulness = curves.to_dict(
            bootstrap_samples=args.bootstrap_samples, confidence=args.confidence, seed=args.seed
        )
        faithfulness["pointing"] = summarise(
            pointing,
            ["all"] * len(pointing),
            bootstrap_samples=args.bootstrap_samples,
            confidence=args.confidence,
            seed=args.seed,
        )
        faithfulness["pointing"].pop("per_source")
    sanity_rows = mapped_rows[: args.sanity_samples]
    if sanity_rows:
        sanity = _sanity(processor, tracer, rows, sanity_rows, args, baselines).to_dict()
    settings = {
        k: v
        for k, v in asdict(args).items()
        if k
        in (
            "dataset_test_split",
            "max_new_tokens",
            "saliency_row",
            "saliency_layers",
            "pointing_tolerance_px",
            "bootstrap_samples",
            "confidence",
            "seed",
            "faithfulness_steps",
            "faithfulness_random_orders",
        )
    }
    settings["completions"] = "given (scored)" if completions is not None else "generated (greedy)"
    metrics = {
        "model": model_name,
        "dataset": f"{args.dataset_name} [{args.dataset_test_split}]",
        "settings": settings,
        "summary": summary,
        "faithfulness": faithfulness,
        "sanity": sanity,
        "rows": records,
    }
    if several:
        metrics["several_images"] = {
            "rows": several,
            "single_image_only": list(SINGLE_IMAGE_ONLY),
            "note": f"{several} rows of several images or clip frames are scored by pointing games over all their "
            "maps (per frame for clips) and left out of the faithfulness curves, the sanity check and the baselines, "
            "which take one image per row",
        }
    return metrics


SINGLE_IMAGE_ONLY = ("faithfulness", "sanity", "faithfulness_baselines")
"""The parts of an evaluation that score single-image rows only; rows of several images or clips skip them."""


def is_several(row: dict[str, Any]) -> bool:
    """Whether a row holds several images, or a clip's frames (boxes placed by ``bbox_frame``, even on one frame)."""
    return len(row_images(row)) > 1 or row.get("bbox_frame") is not None


def _record(row: dict[str, Any], traced: TracedCompletion, scores: dict[str, Any]) -> dict[str, Any]:
    """What `metrics.json` keeps of one evaluated row."""
    return {
        "question_id": row["question_id"],
        "dataset": row["dataset"],
        "problem": row["problem"],
        "solution": row["solution"],
        "completion": traced.text,
        "no_map_reason": traced.maps.reason,
        "scores": scores,
    }


def _several_record(
    row: dict[str, Any], images: list[Any], traced: TracedCompletion, args: EvalArguments, output_dir: Path
) -> dict[str, Any]:
    """The record of a row of several images or a clip's frames (one map per image or frame, as in training).

    Its scores have the keys of a single-image row's, over all its maps (`evaluation.metrics.several_pointing_scores`),
    plus each frame's energy-PG for a clip; its overlays are strips of its images on one colour scale per kind.
    """
    frames = row.get("bbox_frame")
    spans = [(i, i + 1) for i in range(len(images))]
    boxes = boxes_per_map(len(images), row["bbox"], row.get("bbox_image"), frames, spans)
    scores = answer_scores([traced.text], [row["solution"]])[0]
    maps: dict[str, list | None] = {}
    for kind in args.saliency_maps:
        image_maps = traced.maps.answer_map(kind) if traced.maps.has_map else None
        if image_maps is not None and len(image_maps) != len(images):
            raise ValueError(
                f"row {row['question_id']!r}: the tracer returned {len(image_maps)} {kind} maps for "
                f"{len(images)} images"
            )
        maps[kind] = None if image_maps is None else [m.upsampled_mass() for m in image_maps]
        scores |= several_pointing_scores(kind, maps[kind], boxes, args.pointing_tolerance_px)
        if frames is not None:
            scores |= frame_scores(kind, maps[kind], row["bbox"], frames)
    boxes_on = "frame" if frames is not None else "image"
    record = _record(row, traced, scores) | {"images": len(images), "boxes_on": boxes_on}
    if traced.index < args.report_samples:
        record["overlays"] = {}
        titles = [f"{boxes_on} {i}" for i in range(len(images))]
        for kind in args.saliency_maps:
            path = Path("overlays") / f"{_file_stem(traced.index, row['question_id'])}_{kind}.png"
            strip_overlay(images, maps[kind], boxes, titles).save(output_dir / path)
            record["overlays"][kind] = str(path)
    return record


def _faithfulness(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    tracer: SaliencyTracer,
    rows: datasets.Dataset | Sequence[dict[str, Any]],
    faithful_rows: Sequence[tuple[int, torch.Tensor, SaliencyMaps]],
    args: EvalArguments,
    baselines: Sequence[Any],
) -> tuple[FaithfulnessResult, list[dict[str, Any]]]:
    """Deletion/insertion curves of the tracer's maps (``args.saliency_maps``) and of each baseline's, per row.

    Also each method's pointing-game scores on the same rows, so that the tracer's maps can be told apart from the
    model's: when perturbation or gradient maps do not point at the evidence either, the model does not use it.
    """
    device = next(model.parameters()).device
    samples, pointing = [], []
    for index, completion_ids, maps in faithful_rows:
        row = rows[index]
        inputs = prompt_inputs(processor, [row], args.system_prompt).to(device)
        by_method = {kind: maps for kind in args.saliency_maps}
        for method in baselines:
            by_method[method.kind] = completion_maps(method.attribute, inputs, completion_ids, image_sizes([row])[0])
        samples.append((inputs, completion_ids, by_method))
        scores: dict[str, Any] = {}
        for kind, method_maps in by_method.items():
            image_map = method_maps.answer_map(kind)
            upsampled = image_map[0].upsampled() if image_map else None
            scores |= pointing_scores(kind, upsampled, row["bbox"], args.pointing_tolerance_px)
        pointing.append(scores)
    curves = faithfulness_curves(
        model,
        tracer.adapter,
        samples,
        steps=args.faithfulness_steps,
        random_orders_per_row=args.faithfulness_random_orders,
        seed=args.seed,
        batch_size=max(args.batch_size, 8),
    )
    return curves, pointing


def _sanity(
    processor: ProcessorMixin,
    tracer: SaliencyTracer,
    rows: datasets.Dataset | Sequence[dict[str, Any]],
    sanity_rows: Sequence[tuple[int, torch.Tensor, SaliencyMaps]],
    args: EvalArguments,
    baselines: Sequence[Any],
) -> SanityResult:
    """Cascading randomisation of the decoder, with the tracer's maps (``args.saliency_maps``) and each baseline's."""
    device = next(tracer.model.parameters()).device
    samples = [
        (prompt_inputs(processor, [rows[index]], args.system_prompt).to(device), completion_ids)
        for index, completion_ids, _ in sanity_rows
    ]
    return cascading_randomisation(tracer, samples, kinds=args.saliency_maps, baselines=baselines, seed=args.seed)


def write_outputs(
    metrics: dict[str, Any],
    output_dir: str | Path,
    other: dict[str, Any] | None = None,
    other_dir: str | Path | None = None,
) -> tuple[Path, Path]:
    """Write ``metrics.json`` and the self-contained ``report.html`` to ``output_dir``; return both paths."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path, report_path = output_dir / "metrics.json", output_dir / "report.html"
    metrics_path.write_text(json.dumps(metrics, indent=1))
    report_path.write_text(render_report(metrics, output_dir, other=other, other_dir=other_dir))
    return metrics_path, report_path


def _evaluate_checkpoint(args: EvalArguments, model_args: ModelConfig, rows) -> dict[str, Any]:
    completions = None
    if args.completions_file:
        completions = read_completions(args.completions_file, rows["question_id"])
    model, processor = load_model_and_processor(model_args, min_pixels=args.min_pixels, max_pixels=args.max_pixels)
    tokens = SpecialTokens.from_tokenizer(processor)
    baselines = [BASELINES[name](model, tokens) for name in args.faithfulness_baselines]
    return evaluate_model(
        model,
        processor,
        rows,
        args,
        model_name=model_args.model_name_or_path,
        completions=completions,
        baselines=baselines,
    )


def run_eval(args: EvalArguments, model_args: ModelConfig) -> Path:
    """Evaluate the checkpoint (and the one to compare with); write metrics.json and report.html; return the report."""
    torch.manual_seed(args.seed)
    rows, validation = load_rows(args)
    left_out = [{"row_id": issue.row_id, "field": issue.field, "reason": issue.reason} for issue in validation.rejected]
    other = other_dir = None
    if args.compare_model_name_or_path:
        other_dir = Path(args.output_dir) / "compare"
        other_args = replace(args, output_dir=str(other_dir), compare_model_name_or_path=None)
        other = _evaluate_checkpoint(
            other_args, replace(model_args, model_name_or_path=args.compare_model_name_or_path), rows
        )
        write_outputs(other, other_dir)
    elif args.compare_to:
        other_dir = Path(args.compare_to).parent
        other = json.loads(Path(args.compare_to).read_text())
    metrics = _evaluate_checkpoint(args, model_args, rows)
    metrics["left_out"] = left_out  # bad input rows skipped with --on_bad_row skip, with their reasons
    _, report = write_outputs(metrics, args.output_dir, other, other_dir)
    logger.info("wrote %s", report)
    return report
