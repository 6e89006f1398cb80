"""The main job's chain report (`predictor.chain_report`): every section, for every image the predictor was
evaluated on."""

import html
import json
import re

import numpy as np
from PIL import Image

from data_tools.synthetic import make_example, shape_mask
from predictor.chain_report import render_chain_report
from predictor.evaluation import METRICS
from predictor.synthetic import QUESTION_GAZE, fixation_rows, regenerate_example, simulate_export_fixations


def _export(root, count: int) -> list[dict]:
    """An export folder of ``count`` synthetic eval rows as `launch/export.py` writes it: row 0 without a map (no
    proposals), the others with the answer's map and one proposal per object."""
    for folder in ("images", "masks", "maps"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        ex = make_example(0, "eval", i)
        ex.image.save(root / "images" / f"{i}.png")
        line = {
            "image_id": ex.question_id, "file_name": None, "image_path": f"images/{i}.png", "width": 168,
            "height": 168, "question": ex.problem, "explanation": f"reasoning number {i}: {ex.reasoning}",
            "answer": f"answer-{i}", "no_map_reason": None, "saliency_map_path": f"maps/{i}.png", "proposals": [],
            "phrases_without_mask": [],
        }  # fmt: skip
        if i == 0:
            line.update(no_map_reason="no <think> block", saliency_map_path=None)
        else:
            Image.fromarray(np.full((168, 168), 200, np.uint8)).save(root / "maps" / f"{i}.png")
            for j, obj in enumerate(ex.objects):
                mask = Image.new("L", (168, 168), 0)
                mask.paste(shape_mask(obj.shape, obj.size), (obj.x, obj.y))
                mask.save(root / "masks" / f"{i}-{j}.png")
                x0, y0, x1, y1 = obj.box_px
                line["proposals"].append(
                    {"phrase": f"{obj.color} {obj.shape} {i}{j}", "reason": f"reason <{i}{j}> for it",
                     "mask_path": f"masks/{i}-{j}.png", "box": [x0 / 168, y0 / 168, x1 / 168, y1 / 168], "score": 0.5}
                )  # fmt: skip
        lines.append(line)
    (root / "proposals.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "summary.json").write_text(json.dumps({"model": "grpo-x", "images": count, "exported": count}))
    return lines


def _predictor_eval(root, image_ids: list[str]) -> None:
    """What `launch/predictor_eval.py --save_maps true --ablation_checkpoint ...` writes."""
    (root / "maps").mkdir(parents=True)
    metrics = {name: 0.5 for name in METRICS}
    report = {"num_images": len(image_ids), "topk": 3, "model": metrics, "centre_bias": metrics,
              "proposals_off": metrics, "checkpoint": {"path": "x.pt", "epoch": 2},
              "faithfulness": {"weight": {"nss": [1.0, 0.5], "area": 0.7, "drop": 0.5},
                               "random": {"nss": [1.0, 0.9], "area": 0.9, "drop": 0.1}}}  # fmt: skip
    (root / "eval_report.json").write_text(json.dumps(report))
    rng = np.random.default_rng(0)
    with open(root / "explanations.jsonl", "w") as f:
        for i, image_id in enumerate(image_ids):
            for kind in ("model", "off"):
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / "maps" / f"{kind}{i}.png")
            scores = {k: {"NSS": 1.0, "CC": 0.1} for k in ("model", "centre_bias", "proposals_off")}
            selected = [{"proposal": 0, "weight": 0.75, "phrase": "p", "reason": "r", "box": [0, 0, 1, 1]}]
            line = {"image_id": image_id, "selected": selected, "map_path": f"maps/model{i}.png",
                    "proposals_off_map_path": f"maps/off{i}.png", "scores": scores}  # fmt: skip
            f.write(json.dumps(line) + "\n")


def test_the_chain_report_shows_every_section_for_every_image(tmp_path):
    lines = _export(tmp_path / "export", 5)
    _, fixations = simulate_export_fixations(tmp_path / "export" / "proposals.jsonl", tmp_path / "fix", num_eval=3)
    held_out = [line["image_id"] for line in lines[-3:]]
    # the predictor was evaluated on the held-out images; also put row 0 (no map) among them
    _predictor_eval(tmp_path / "pe", [lines[0]["image_id"], *held_out[1:]])
    first = regenerate_example(lines[0]["image_id"])
    extra = fixation_rows(first, lines[0]["image_path"], "eval", np.random.default_rng(0), QUESTION_GAZE)
    fixations.write_text(json.dumps(json.loads(fixations.read_text()) + extra))
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "report.html").write_text("<html></html>")
    out = render_chain_report(
        tmp_path / "export", fixations, tmp_path / "pe", tmp_path / "eval" / "chain_report.html", tmp_path / "eval"
    )
    page = out.read_text()
    assert '<a href="report.html">' in page  # the evaluation report, linked from beside it
    for heading in ("Export of explanations and proposals", "Simulated fixations", "Saliency predictor", "Per image"):
        assert heading in page
    assert "proposals-off ablation" in page and "centre-bias Gaussian" in page and "60 % on the objects" in page
    cards = page.split("<div class=card>")[1:]
    shown = [lines[0], *(line for line in lines if line["image_id"] in held_out[1:])]
    assert len(cards) == len(shown) == 3
    for card, line in zip(cards, shown):
        assert html.escape(line["image_id"]) in card and html.escape(line["question"]) in card
        assert f"tuned model's answer: <b>{line['answer']}</b>" in card  # its answer
        assert f"reference answer: {make_example(0, 'eval', int(line['image_id'][-6:])).solution}<" in card
        assert html.escape(line["explanation"]) in card  # its reasoning
        assert "predictor&#x27;s map" in card and "fixations" in card and "proposals-off ablation&#x27;s map" in card
        assert "<th>NSS</th>" in card
        if line["saliency_map_path"] is None:
            assert "tuned model: no saliency map" in card and "No proposals (no &lt;think&gt; block)" in card
            continue
        assert "tuned model: saliency map of its answer" in card
        for j, proposal in enumerate(line["proposals"]):  # each proposal with its reason
            assert html.escape(proposal["phrase"]) in card and html.escape(proposal["reason"]) in card
        assert "(weight 0.75)" in card  # the predictor's kept proposal
        assert len(re.findall(r"<img ", card)) == 4 + min(len(line["proposals"]), 6)
