"""The readable side of an evaluation: heatmap overlays, curve plots, and one self-contained HTML report.

Images are drawn with PIL and embedded in the HTML as base64 PNG, so the report is a single file that opens
anywhere without the run's folder.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from rewards import as_boxes
from saliency import heatmap

_LINE_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207)]
_DISPLAY_SIDE = 256


def sample_overlay(image: Image.Image, saliency_map: np.ndarray | None, boxes: Any) -> Image.Image:
    """`saliency.heatmap.overlay` of a row's map and evidence boxes, enlarged to a 256-pixel longer side at least.

    A row without a map (None) or with a map without positive mass is drawn with an all-zero map (darkened image,
    boxes only); negative values are clipped.
    """
    scale = max(1.0, _DISPLAY_SIDE / max(image.size))
    shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
    if saliency_map is None or not np.isfinite(saliency_map).all():
        saliency_map = np.zeros((image.height, image.width), dtype=np.float32)
    if saliency_map.shape != (image.height, image.width):
        raise ValueError(f"map of shape {saliency_map.shape} does not match the image's {(image.height, image.width)}")
    return heatmap.overlay(shown, np.maximum(saliency_map, 0), as_boxes(boxes))


def strip_overlay(
    images: Sequence[Image.Image],
    maps: Sequence[np.ndarray] | None,
    boxes: Sequence[Any],
    titles: Sequence[str] | None = None,
) -> Image.Image:
    """The overlays of a row of several images (or a clip's frames) side by side on one colour scale, so that the
    image the answer looked at stands out; ``maps[i]`` and ``boxes[i]`` are image i's (maps at the images' sizes).

    Without maps (None), or maps without positive mass together, every image is drawn as :func:`sample_overlay`
    draws a row without a map.
    """
    if maps is not None and len(maps) != len(images):
        raise ValueError(f"{len(maps)} maps for {len(images)} images")
    usable = maps is not None and all(np.isfinite(m).all() for m in maps)
    peak = max(float(np.max(m, initial=0.0)) for m in maps) if usable else 0.0
    panels = []
    for i, (image, own) in enumerate(zip(images, boxes, strict=True)):
        scale = max(1.0, _DISPLAY_SIDE / max(image.size))
        shown = image.convert("RGB").resize((round(image.width * scale), round(image.height * scale)))
        heat = np.maximum(maps[i], 0) if peak > 0 else np.zeros((image.height, image.width), dtype=np.float32)
        if heat.shape != (image.height, image.width):
            raise ValueError(f"map {i} of shape {heat.shape} does not match its image's {(image.height, image.width)}")
        panels.append(heatmap.overlay(shown, heat, as_boxes(own) if len(own) else [], peak=peak or None))
    return heatmap.side_by_side(panels, titles)


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (440, 300),
) -> Image.Image:
    """A line plot of named ``(x, y)`` series on shared axes, with tick labels and a legend."""
    width, height = size
    left, right, top, bottom = 58, 12, 28, 42
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    xs = np.concatenate([np.asarray(x, dtype=float) for x, _ in series.values()])
    ys = np.concatenate([np.asarray(y, dtype=float) for _, y in series.values()])
    x_lo, x_hi = float(xs.min()), float(xs.max())
    y_lo, y_hi = float(ys.min()), float(ys.max())
    if x_hi == x_lo:
        x_hi = x_lo + 1.0
    if y_hi == y_lo:
        y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_lo) / (x_hi - x_lo) * (width - left - right),
            height - bottom - (y - y_lo) / (y_hi - y_lo) * (height - top - bottom),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline=(90, 90, 90))
    for t in np.linspace(0, 1, 5):
        x, y = x_lo + t * (x_hi - x_lo), y_lo + t * (y_hi - y_lo)
        px, _ = to_px(x, y_lo)
        _, py = to_px(x_lo, y)
        draw.line([px, height - bottom, px, height - bottom + 4], fill=(90, 90, 90))
        draw.text((px - 10, height - bottom + 6), f"{x:.2g}", fill="black")
        draw.line([left - 4, py, left, py], fill=(90, 90, 90))
        draw.text((4, py - 6), f"{y:.3g}", fill="black")
    draw.text((left, 8), title, fill="black")
    draw.text(((width - len(x_label) * 6) / 2, height - 16), x_label, fill="black")
    draw.text((left + 4, top + 3), y_label, fill=(60, 60, 60))
    for i, (name, (x, y)) in enumerate(series.items()):
        colour = _LINE_COLOURS[i % len(_LINE_COLOURS)]
        points = [to_px(float(a), float(b)) for a, b in zip(x, y)]
        draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        legend_y = top + 6 + 14 * i
        draw.line([width - right - 110, legend_y + 6, width - right - 92, legend_y + 6], fill=colour, width=3)
        draw.text((width - right - 88, legend_y), name[:16], fill="black")
    return image


def png_data_uri(image: Image.Image) -> str:
    """``data:image/png;base64,...`` of a PIL image."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _file_data_uri(path: Path) -> str | None:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None


def _number(value: Any, percent: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.1f}" if percent else f"{value:.3g}"


def _estimate(entry: Mapping[str, Any] | None, percent: bool = True) -> str:
    """``mean [low, high] (n)`` of a :func:`evaluation.metrics.mean_interval` entry (in percent if ``percent``)."""
    if not entry or entry.get("mean") is None:
        return "–"
    interval = (
        ""
        if entry.get("low") is None
        else f" <span class=ci>[{_number(entry['low'], percent)}, {_number(entry['high'], percent)}]</span>"
    )
    return f"{_number(entry['mean'], percent)}{interval} <span class=n>n={entry['n']}</span>"


def _excludes_zero(entry: Mapping[str, Any] | None) -> str:
    """Whether a :func:`evaluation.metrics.mean_interval` entry's interval lies off 0, and on which side."""
    if not entry or entry.get("low") is None:
        return "–"
    if entry["low"] > 0:
        return "yes, above 0"
    if entry["high"] < 0:
        return "yes, below 0"
    return "no"


def _delta(ours: Mapping[str, Any] | None, theirs: Mapping[str, Any] | None) -> str:
    if not ours or not theirs or ours.get("mean") is None or theirs.get("mean") is None:
        return "–"
    return f"{100 * (ours['mean'] - theirs['mean']):+.1f}"


def _metric_names(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    names = [("format", "format rate"), ("accuracy", "accuracy")]
    if "follows_cue" in summary:  # a decoy benchmark's split
        names.append(("follows_cue", "answers that follow the decoy cue"))
    for key in summary:
        if "/" in key and not key.endswith("/counts"):
            kind, field = key.split("/", 1)
            names.append((key, f"{field.replace('_', ' ')} ({kind} map)"))
    return names


def _summary_table(summary: Mapping[str, Any], other: Mapping[str, Any] | None, labels: tuple[str, str]) -> str:
    head = f"<tr><th>metric (%)</th><th>{html.escape(labels[0])}</th>"
    if other is not None:
        head += f"<th>{html.escape(labels[1])}</th><th>Δ</th>"
    rows = [head + "</tr>"]
    for key, label in _metric_names(summary):
        cells = f"<td>{html.escape(label)}</td><td>{_estimate(summary.get(key))}</td>"
        if other is not None:
            cells += f"<td>{_estimate(other.get(key))}</td><td>{_delta(summary.get(key), other.get(key))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _counts_table(summary: Mapping[str, Any]) -> str:
    rows = ["<tr><th>map</th><th>scored</th><th>no map (bad format)</th><th>empty map</th></tr>"]
    for key, counts in summary.items():
        if key.endswith("/counts"):
            kind = key.removesuffix("/counts")
            rows.append(
                f"<tr><td>{html.escape(kind)}</td><td>{counts['scored']}</td><td>{counts['no_map']}</td>"
                f"<td>{counts['empty_map']}</td></tr>"
            )
    return "<table>" + "".join(rows) + "</table>"


def _per_source_table(summary: Mapping[str, Any]) -> str:
    keys = [
        (k, label)
        for k, label in _metric_names(summary)
        if (k.endswith(("energy_pg", "/pg")) and "/frame_" not in k) or "/" not in k
    ]
    head = "<tr><th>source</th><th>rows</th>" + "".join(f"<th>{html.escape(label)}</th>" for _, label in keys) + "</tr>"
    rows = [head]
    for source, group in summary["per_source"].items():
        cells = "".join(f"<td>{_estimate(group.get(k))}</td>" for k, _ in keys)
        rows.append(f"<tr><td>{html.escape(source)}</td><td>{group['n']}</td>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _faithfulness_section(faithfulness: Mapping[str, Any] | None, other: Mapping[str, Any] | None) -> str:
    if not faithfulness:
        return "<p>Not computed (no row with a saliency map, or --faithfulness_samples 0).</p>"
    rows = [
        "<tr><th>method</th><th>deletion AUC ↓</th><th>insertion AUC ↑</th><th>insertion − deletion ↑</th>"
        + ("<th>other run: insertion − deletion</th>" if other else "")
        + "</tr>"
    ]
    for method, areas in faithfulness["auc"].items():
        cells = "".join(f"<td>{areas[k]:.3f}</td>" for k in ("deletion", "insertion", "insertion_minus_deletion"))
        if other:
            theirs = other.get("auc", {}).get(method)
            cells += f"<td>{theirs['insertion_minus_deletion']:.3f}</td>" if theirs else "<td>–</td>"
        rows.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
    plots = []
    for curve in ("deletion", "insertion"):
        series = {m: (faithfulness["fractions"], c[curve]) for m, c in faithfulness["curves"].items()}
        title = f"{curve}: answer log-prob vs fraction of patches {'removed' if curve == 'deletion' else 'shown'}"
        plot = line_plot(series, title=title, x_label="fraction of image patches", y_label="log p(answer)")
        plots.append(f'<img alt="{curve} curves" src="{png_data_uri(plot)}">')
    return (
        f"<p>Mean over {faithfulness['n_rows']} rows. Patches are removed by zeroing their image-token embeddings; "
        "score = teacher-forced log-probability of the model's own answer.</p>"
        + "<table>"
        + "".join(rows)
        + "</table>"
        + _auc_interval_table(faithfulness.get("auc_vs_random"))  # absent from the metrics.json of older runs
        + _method_pointing_table(faithfulness.get("pointing"))
        + "<div class=plots>"
        + "".join(plots)
        + "</div>"
    )


def _auc_interval_table(intervals: Mapping[str, Any] | None) -> str:
    if not intervals:
        return ""
    head = ["method", "deletion AUC", "insertion AUC", "deletion − random ↓", "excludes 0"]
    head += ["insertion − random ↑", "excludes 0"]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for method, entries in intervals.items():
        cells = "".join(f"<td>{_estimate(entries[c], percent=False)}</td>" for c in ("deletion", "insertion"))
        for key in ("deletion_minus_random", "insertion_minus_random"):
            entry = entries.get(key)
            cells += f"<td>{_estimate(entry, percent=False)}</td><td>{_excludes_zero(entry)}</td>"
        rows.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
    return (
        "<p>Per row: the areas under its curves and their differences to the random order of the same row "
        "(method − random), mean with a percentile bootstrap interval over the rows. A faithful map has "
        "deletion − random below 0 and insertion − random above 0; an interval that excludes 0 says the difference "
        "holds beyond the resampling of these rows.</p><table>" + "".join(rows) + "</table>"
    )


def _method_pointing_table(pointing: Mapping[str, Any] | None) -> str:
    if not pointing:
        return ""
    fields = ("pg", "centre_point_pg", "energy_pg", "box_area_fraction")
    methods = [key.removesuffix("/counts") for key in pointing if key.endswith("/counts")]
    head = "<tr><th>method (%)</th>" + "".join(f"<th>{f.replace('_', ' ')}</th>" for f in fields) + "</tr>"
    rows = [head]
    for method in methods:
        cells = "".join(f"<td>{_estimate(pointing.get(f'{method}/{f}'))}</td>" for f in fields)
        rows.append(f"<tr><td>{html.escape(method)}</td>{cells}</tr>")
    return (
        "<p>Pointing games of every method on these rows. When the perturbation and gradient baselines do not point "
        "at the evidence either, the model does not use it; when only the tracer's maps miss, look at the tracer."
        "</p><table>" + "".join(rows) + "</table>"
    )


def _left_out(left_out: Sequence[Mapping[str, Any]] | None) -> str:
    if not left_out:
        return ""
    ids = sorted({entry["row_id"] for entry in left_out})
    items = "".join(
        f"<li>{html.escape(e['row_id'])}, {html.escape(e['field'])}: {html.escape(e['reason'])}</li>" for e in left_out
    )
    return (
        f"<p><b>{len(ids)} input rows left out</b> as bad input (--on_bad_row skip); none of the numbers below "
        f"counts them:</p><ul>{items}</ul>"
    )


def _sanity_section(sanity: Mapping[str, Any] | None) -> str:
    if not sanity:
        return "<p>Not computed (no row with a saliency map, or --sanity_samples 0).</p>"
    steps = sanity["steps"]
    plotted = {m: v for m, v in sanity["methods"].items() if v["n_rows"]}
    rows = ["<tr><th>method</th><th>rows</th><th>mean Spearman, last step</th><th>mean |Spearman|, last step</th></tr>"]
    for method, values in sanity["methods"].items():
        last, last_abs = values["spearman"][-1], values["abs_spearman"][-1]
        rows.append(
            f"<tr><td>{html.escape(method)}</td><td>{values['n_rows']}</td><td>{_number(last, False)}</td>"
            f"<td>{_number(last_abs, False)}</td></tr>"
        )
    plot = ""
    if plotted:
        series = {m: (list(range(len(steps))), v["spearman"]) for m, v in plotted.items()}
        image = line_plot(
            series,
            title="rank correlation with the original map",
            x_label="randomisation step",
            y_label="mean Spearman",
        )
        plot = f'<div class=plots><img alt="cascading randomisation" src="{png_data_uri(image)}"></div>'
    legend = "; ".join(f"{i}: {html.escape(label)}" for i, label in enumerate(steps))
    return (
        "<p>Cascading randomisation (Adebayo et al., 2018): the text decoder is re-initialised from the top, step "
        "by step, and each method's map of the same completion is compared with its map of the trained model "
        "(Spearman rank correlation over the image patches, mean over rows). A map that explains the model falls "
        "towards 0 as its weights are randomised; a map that does not change reads the input, not the model.</p>"
        f"<p class=n>Steps (re-initialised in total): {legend}.</p>" + plot + "<table>" + "".join(rows) + "</table>"
    )


def _several_images_note(several: Mapping[str, Any] | None) -> str:
    if not several:
        return ""
    return (
        f"<p><b>{several['rows']} rows of several images or clip frames</b>: scored over all their maps (mass or peak "
        "on an image without evidence counts as outside the boxes; per frame for clips) and left out of "
        f"{html.escape(', '.join(several['single_image_only']))}, which take one image per row.</p>"
    )


def _sample_cards(samples: Sequence[Mapping[str, Any]], run_dir: Path, other: tuple[Mapping, Path] | None) -> str:
    other_rows = {} if other is None else {r["question_id"]: r for r in other[0].get("rows", [])}
    cards = []
    for sample in samples:
        figures = []
        for kind, path in sample.get("overlays", {}).items():
            uri = _file_data_uri(run_dir / path)
            if uri:
                figures.append(
                    f'<figure><img alt="{kind} map" src="{uri}"><figcaption>{html.escape(kind)}</figcaption></figure>'
                )
        theirs = other_rows.get(sample["question_id"])
        if theirs is not None:
            for kind, path in theirs.get("overlays", {}).items():
                uri = _file_data_uri(other[1] / path)
                if uri:
                    figures.append(
                        f'<figure><img alt="other {kind} map" src="{uri}"><figcaption>other run: {html.escape(kind)}'
                        "</figcaption></figure>"
                    )
        scores = ", ".join(
            f"{k}: {_number(v)}" for k, v in sample["scores"].items() if not k.endswith("/status") and v is not None
        )
        text = f"<pre>{html.escape(sample['completion'])}</pre>"
        if sample.get("no_map_reason"):
            text += f"<p class=n>no saliency map: {html.escape(sample['no_map_reason'])}</p>"
        if theirs is not None:
            text += f"<p class=n>other run:</p><pre>{html.escape(theirs['completion'])}</pre>"
        cards.append(
            f"<div class=card><div class=figs>{''.join(figures)}</div><div class=text>"
            f"<p><b>{html.escape(sample['question_id'])}</b> <span class=n>{html.escape(sample['dataset'])}</span></p>"
            f"<p>Q: {html.escape(sample['problem'])}<br>reference: {html.escape(str(sample['solution']))}</p>"
            f"{text}<p class=n>{html.escape(scores)}</p></div></div>"
        )
    return "".join(cards) or "<p>No sample rows (--report_samples 0).</p>"


_STYLE = """
body{font-family:sans-serif;margin:24px;color:#222;background:#fff}
table{border-collapse:collapse;margin:8px 0 18px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#eef}.ci,.n{color:#777;font-size:90%}.card{border-top:1px solid #ddd;padding:10px 0}
figure{margin:0 6px 0 0}.figs{display:flex;flex-wrap:wrap;align-items:flex-start}figcaption{text-align:center;font-size:90%}
pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;max-width:640px}.plots img{margin-right:12px}
"""


def render_report(
    metrics: Mapping[str, Any],
    run_dir: str | Path,
    *,
    other: Mapping[str, Any] | None = None,
    other_dir: str | Path | None = None,
) -> str:
    """The HTML report of one run's ``metrics`` (as written to metrics.json), optionally beside another run's.

    Overlay paths in the metrics are relative to ``run_dir`` (``other_dir`` for the other run); the PNGs are read
    and embedded.
    """
    run_dir = Path(run_dir)
    summary = metrics["summary"]
    labels = (metrics["model"], other["model"] if other else "")
    settings = ", ".join(f"{k}={v}" for k, v in metrics.get("settings", {}).items())
    other_pair = None if other is None else (other, Path(other_dir or "."))
    parts = [
        f"<h1>Evaluation of {html.escape(metrics['model'])}</h1>",
        f"<p>{html.escape(metrics['dataset'])}: {summary['n']} rows. {html.escape(settings)}</p>",
        _left_out(metrics.get("left_out")),
        ""
        if other is None
        else f"<p>Compared with <b>{html.escape(other['model'])}</b> ({html.escape(other['dataset'])}).</p>",
        "<h2>Summary</h2>",
        (
            "<p>Means in percent with bootstrap confidence intervals. Pointing games score the rows with a usable "
            "map; the box-area fraction is what a uniform map scores on energy-PG, the centre point is the PG "
            "baseline.</p>"
        ),
        _summary_table(summary, None if other is None else other["summary"], labels),
        "<h2>Saliency map counts</h2>",
        _counts_table(summary),
        "<h2>Per source</h2>",
        _per_source_table(summary),
        _several_images_note(metrics.get("several_images")),
        "<h2>Faithfulness: deletion and insertion</h2>",
        _faithfulness_section(metrics.get("faithfulness"), None if other is None else other.get("faithfulness")),
        "<h2>Sanity check: cascading randomisation</h2>",
        _sanity_section(metrics.get("sanity")),
        "<h2>Sample rows</h2>",
        "<p>Heatmap of the answer's saliency over the image (brighter = more), evidence box in green.</p>",
        _sample_cards([r for r in metrics["rows"] if r.get("overlays")], run_dir, other_pair),
    ]
    return (
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>Evaluation report</title>"
        f"<style>{_STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
