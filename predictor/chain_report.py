"""The main job's last report: the whole chain from the tuned VLM to the saliency predictor, one card per image.

    python -m predictor.chain_report --export_dir outputs/export --fixations outputs/fixations/AiR_fixations_eval.json \
        --predictor_eval_dir outputs/predictor-eval --evaluation_dir outputs/eval --output outputs/eval/chain_report.html

It reads files only (what ``launch/export.py``, ``python -m predictor.synthetic --from_export`` and
``launch/predictor_eval.py --save_maps true`` wrote) and draws them with the evaluation report's helpers
(``evaluation.report``), as one self-contained HTML file. At the top: the export's counts, the fixation simulation,
the predictor's metrics beside the proposals-off ablation and the centre bias, its deletion curves, and a link to the
evaluation report. Then, for each image the predictor was evaluated on: the tuned model's answer and reasoning, its
saliency map (the answer's flow map) with the evidence boxes, its proposals with their reasons (and the weight the
predictor gave the ones it kept), the predictor's map next to the simulated fixations, and the proposals-off map, with
per-image NSS and CC.
"""

from __future__ import annotations

import argparse
import html
import json
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from evaluation.report import _STYLE as EVALUATION_STYLE  # one look for both reports
from evaluation.report import png_data_uri, sample_overlay

from .evaluation import METRICS, resize_map
from .fixations import load_map_png
from .image_ids import exported_image_id

_SIDE = 256
_STYLE = (
    EVALUATION_STYLE
    + """
figure img{display:block}.small img{width:128px}.props td{font-size:90%}.kept{background:#efe}
"""
)


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _grey_map(path: Path, height: int, width: int) -> np.ndarray:
    """An 8-bit greyscale PNG map (any size) as floats at ``(height, width)``."""
    with Image.open(path) as im:
        size = im.size
    return resize_map(load_map_png(path, size[1], size[0]), height, width)


def fixation_image(image: Image.Image, points: np.ndarray, boxes: Sequence[Sequence[float]]) -> Image.Image:
    """The image (enlarged like the overlays) with the evidence boxes in green and each fixation as a red dot."""
    scale = max(1.0, _SIDE / max(image.size))
    shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
    draw = ImageDraw.Draw(shown)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle(
            [x1 * shown.width, y1 * shown.height, x2 * shown.width - 1, y2 * shown.height - 1],
            outline=(0, 200, 0),
            width=2,
        )
    for x, y in np.asarray(points, dtype=float) * scale:
        draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(230, 20, 20), outline=(0, 0, 0))
    return shown


def _figure(image: Image.Image, caption: str, small: bool = False) -> str:
    cls = " class=small" if small else ""
    return (
        f'<figure{cls}><img alt="{html.escape(caption)}" src="{png_data_uri(image)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _value(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metrics_table(report: Mapping[str, Any]) -> str:
    rows = [("predictor (the tuned model's proposals)", "model"), ("proposals-off ablation", "proposals_off")]
    rows.append(("centre-bias Gaussian", "centre_bias"))
    head = "<tr><th>condition</th>" + "".join(f"<th>{m}{' ↓' if m == 'KLD' else ''}</th>" for m in METRICS) + "</tr>"
    body = [
        f"<tr><td>{label}</td>" + "".join(f"<td>{_value(report[key].get(m))}</td>" for m in METRICS) + "</tr>"
        for label, key in rows
        if key in report
    ]
    return "<table>" + head + "".join(body) + "</table>"


def _faithfulness_table(faithfulness: Mapping[str, Any] | None) -> str:
    if not faithfulness:
        return ""
    rows = [
        "<tr><th>removal order</th><th>NSS after removing 0, 1, ... proposals</th><th>area ↓</th><th>drop</th></tr>"
    ]
    for order, curve in faithfulness.items():
        nss = " / ".join(f"{v:.3f}" for v in curve["nss"])
        rows.append(f"<tr><td>{html.escape(order)}</td><td>{nss}</td><td>{_value(curve.get('area'))}</td>"
                    f"<td>{_value(curve.get('drop'))}</td></tr>")  # fmt: skip
    return (
        "<p>Faithfulness of the predictor's explanations: the proposal it weights highest is removed, step by step, "
        "and the map predicted again (the control removes a random one); a lower area means the kept proposals carry "
        "the map.</p><table>" + "".join(rows) + "</table>"
    )


def _evaluation_line(evaluation_dir: Path | None, output: Path) -> str:
    if evaluation_dir is None:
        return ""
    report, metrics_path = evaluation_dir / "report.html", evaluation_dir / "metrics.json"
    link = os.path.relpath(report, output.parent)
    text = f'<p>The evaluation of the tuned model: <a href="{html.escape(link)}">{html.escape(str(report))}</a>'
    if metrics_path.is_file():
        summary = json.loads(metrics_path.read_text())["summary"]
        parts = [
            f"{label} {100 * summary[key]['mean']:.1f} %"
            for key, label in (("accuracy", "accuracy"), ("flow/energy_pg", "energy-PG"), ("flow/pg", "PG"))
            if isinstance(summary.get(key), dict) and summary[key].get("mean") is not None
        ]
        if parts:
            text += f" ({', '.join(parts)} on {summary['n']} held-out rows)"
    return text + ".</p>"


def _scores_table(scores: Mapping[str, Mapping[str, float | None]] | None) -> str:
    if not scores:
        return ""
    labels = {"model": "predictor", "proposals_off": "proposals off", "centre_bias": "centre bias"}
    rows = ["<tr><th>this image</th><th>NSS</th><th>CC</th></tr>"]
    rows += [
        f"<tr><td>{labels.get(k, k)}</td><td>{_value(v.get('NSS'))}</td><td>{_value(v.get('CC'))}</td></tr>"
        for k, v in scores.items()
    ]
    return "<table>" + "".join(rows) + "</table>"


def _proposal_table(record: Mapping[str, Any], weights: Mapping[int, float]) -> str:
    proposals = record["proposals"]
    if not proposals:
        reason = record.get("no_map_reason") or "no object phrase with a mask"
        return f"<p class=n>No proposals ({html.escape(reason)}).</p>"
    rows = ["<tr><th>#</th><th>phrase</th><th>reason</th><th>score</th><th>predictor weight</th></tr>"]
    for j, p in enumerate(proposals):
        kept = j in weights
        rows.append(
            f"<tr{' class=kept' if kept else ''}><td>{j}</td><td>{html.escape(p['phrase'])}</td>"
            f"<td>{html.escape(p['reason'])}</td><td>{p['score']:.2f}</td>"
            f"<td>{_value(weights[j], 2) if kept else 'not kept'}</td></tr>"
        )
    return "<table class=props>" + "".join(rows) + "</table>"


def _card(
    line: Mapping[str, Any],
    record: Mapping[str, Any],
    fixations: Mapping[str, Any],
    export_dir: Path,
    eval_dir: Path,
    max_proposal_figures: int,
) -> str:
    image = Image.open(export_dir / record["image_path"]).convert("RGB")
    width, height = image.size
    boxes = fixations["bbox"]
    figures = []
    if record.get("saliency_map_path"):
        answer_map = _grey_map(export_dir / record["saliency_map_path"], height, width)
        figures.append(_figure(sample_overlay(image, answer_map, boxes), "tuned model: saliency map of its answer"))
    else:
        figures.append(_figure(sample_overlay(image, None, boxes), "tuned model: no saliency map"))
    if line.get("map_path"):
        predicted = _grey_map(eval_dir / line["map_path"], height, width)
        figures.append(_figure(sample_overlay(image, predicted, boxes), "predictor's map"))
    figures.append(_figure(fixation_image(image, fixations["points"], boxes), f"{len(fixations['points'])} fixations"))
    if line.get("proposals_off_map_path"):
        plain = _grey_map(eval_dir / line["proposals_off_map_path"], height, width)
        figures.append(_figure(sample_overlay(image, plain, boxes), "proposals-off ablation's map"))
    weights = {s["proposal"]: s["weight"] for s in line.get("selected", [])}
    proposal_figures = []
    for j, p in enumerate(record["proposals"][:max_proposal_figures]):
        mask = _grey_map(export_dir / p["mask_path"], height, width)
        caption = f"#{j} {p['phrase']}" + (f" (weight {weights[j]:.2f})" if j in weights else "")
        proposal_figures.append(_figure(sample_overlay(image, mask, [p["box"]]), caption, small=True))
    return (
        f"<div class=card><p><b>{html.escape(line['image_id'])}</b></p>"
        f"<p>Q: {html.escape(fixations['question'])}<br>reference answer: {html.escape(str(fixations['answer']))}"
        f"<br>tuned model's answer: <b>{html.escape(record['answer'])}</b></p>"
        f"<p class=n>its reasoning:</p><pre>{html.escape(record['explanation'] or '(none)')}</pre>"
        f"<div class=figs>{''.join(figures)}</div>"
        f"<p class=n>its proposals (mask and box of each; green rows were kept by the predictor):</p>"
        f"<div class=figs>{''.join(proposal_figures)}</div>{_proposal_table(record, weights)}"
        f"{_scores_table(line.get('scores'))}</div>"
    )


def _fixations_by_question(path: Path) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    points: dict[str, list] = defaultdict(list)
    for row in json.loads(path.read_text()):
        merged.setdefault(row["question_id"], row)
        points[row["question_id"]] += list(zip(row["X"], row["Y"]))
    for qid, row in merged.items():
        row["points"] = np.asarray(points[qid], dtype=float).reshape(-1, 2)
    return merged


def render_chain_report(
    export_dir: str | Path,
    fixations: str | Path,
    predictor_eval_dir: str | Path,
    output: str | Path,
    evaluation_dir: str | Path | None = None,
    max_images: int | None = None,
    max_proposal_figures: int = 6,
) -> Path:
    """Write the chain report to ``output`` (see the module's docstring) and return its path."""
    export_dir, eval_dir, output = Path(export_dir), Path(predictor_eval_dir), Path(output)
    fixations = Path(fixations)
    records = {exported_image_id(r): r for r in _read_jsonl(export_dir / "proposals.jsonl")}
    by_question = _fixations_by_question(fixations)
    report = json.loads((eval_dir / "eval_report.json").read_text())
    lines = _read_jsonl(eval_dir / "explanations.jsonl")[:max_images]
    missing = [
        line["image_id"] for line in lines if line["image_id"] not in records or line["image_id"] not in by_question
    ]
    if missing:
        raise ValueError(
            f"image {missing[0]!r} of {eval_dir / 'explanations.jsonl'} is not in both the export and {fixations}"
        )
    summary_path, simulation_path = export_dir / "summary.json", fixations.parent / "simulation.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    simulation = json.loads(simulation_path.read_text()) if simulation_path.is_file() else {}
    parts = [
        "<h1>The whole chain: tuned model → explanations and proposals → saliency predictor</h1>",
        _evaluation_line(None if evaluation_dir is None else Path(evaluation_dir), output),
        "<h2>Export of explanations and proposals</h2>",
        _export_text(summary, records),
        "<h2>Simulated fixations</h2>",
        _simulation_text(simulation),
        "<h2>Saliency predictor</h2>",
        _predictor_text(simulation, report),
        _metrics_table(report),
        _faithfulness_table(report.get("faithfulness")),
        "<h2>Per image</h2>",
        "<p>Heatmaps are normalised to their maximum (brighter = more); evidence boxes in green.</p>",
    ]
    parts += [
        _card(
            line, records[line["image_id"]], by_question[line["image_id"]], export_dir, eval_dir, max_proposal_figures
        )
        for line in lines
    ]
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>Chain report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    os.replace(partial, output)
    return output


def _export_text(summary: Mapping[str, Any], records: Mapping[str, Mapping[str, Any]]) -> str:
    proposals = summary.get("proposals", sum(len(r["proposals"]) for r in records.values()))
    return (
        f"<p>Model {html.escape(str(summary.get('model', '?')))}: {summary.get('exported', len(records))} held-out "
        f"images exported ({summary.get('with_map', '?')} with a saliency map, {summary.get('errors', 0)} "
        f"unreadable), {proposals} proposals in all: object phrases of its reasoning and answer, each with the "
        "sentence it comes from as its reason and the tracer's map over the phrase's tokens as its mask.</p>"
    )


def _predictor_text(simulation: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    return (
        f"<p>Trained on the fixations of {simulation.get('train_images', '?')} exported images, evaluated on "
        f"{report['num_images']} others (checkpoint epoch {report.get('checkpoint', {}).get('epoch', '?')}; "
        f"top-{report['topk']} proposals). Mean over the evaluation images, KLD lower is better:</p>"
    )


def _simulation_text(info: Mapping[str, Any]) -> str:
    sim = info.get("simulation")
    if not sim:
        return "<p>(no simulation.json beside the fixations)</p>"
    noise = max(0.0, 1 - sim["p_target"] - sim["p_centre"] - sim["p_objects"])
    evidence = "the objects inside the question's evidence" if sim["evidence_on_objects"] else "the evidence boxes"
    return (
        f"<p>{sim['subjects']} simulated subjects x {sim['fixations_per_subject']} fixations per image (seed "
        f"{info['seed']}, <code>predictor.synthetic</code>): {100 * sim['p_target']:.0f} % on {evidence}, "
        f"{100 * sim['p_objects']:.0f} % on the other objects (those the question names {sim['named_weight']:g}x as "
        f"likely), {100 * sim['p_centre']:.0f} % around the centre (sigma {sim['centre_sigma']:g} of the side), "
        f"{100 * noise:.0f} % anywhere. These stand in for human fixations; the predictor learns them, not people.</p>"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export_dir", required=True, help="Folder of launch/export.py (proposals.jsonl, masks/).")
    parser.add_argument("--fixations", required=True, help="AiR-layout fixations of the predictor's eval images.")
    parser.add_argument("--predictor_eval_dir", required=True, help="--report_dir of launch/predictor_eval.py.")
    parser.add_argument("--evaluation_dir", default=None, help="Folder of launch/eval.py's report, linked at the top.")
    parser.add_argument("--output", required=True, help="The HTML file to write.")
    parser.add_argument("--max_images", type=int, default=None, help="Cards for the first N images only.")
    args = parser.parse_args(argv)
    path = render_chain_report(
        args.export_dir, args.fixations, args.predictor_eval_dir, args.output, args.evaluation_dir, args.max_images
    )
    print(f"chain report: {path}")


if __name__ == "__main__":
    main()
