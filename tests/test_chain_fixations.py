"""The fixation simulator of the main job (`predictor.synthetic`): where the simulated subjects look, and fixations for
the images of an export of the synthetic data set."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from data_tools.synthetic import make_example
from predictor import read_air_fixations, read_export
from predictor.synthetic import (
    QUESTION_GAZE,
    FixationSimulation,
    fixation_rows,
    gaze_targets,
    regenerate_example,
    simulate_export_fixations,
)


def _inside(points: np.ndarray, boxes) -> np.ndarray:
    """Per point (normalised x, y): inside any of the boxes."""
    x, y = points[:, 0:1], points[:, 1:2]
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return ((x >= boxes[:, 0]) & (x < boxes[:, 2]) & (y >= boxes[:, 1]) & (y < boxes[:, 3])).any(1)


def _shares(simulation: FixationSimulation, rows: int = 48) -> dict[str, float]:
    """Over ``rows`` synthetic questions (every question type): the share of fixations inside the question's evidence
    boxes, inside another object's box, and the share of the image those evidence boxes cover (a uniform gaze's)."""
    rng = np.random.default_rng(0)
    evidence, other, area = [], [], []
    for index in range(rows):
        ex = make_example(0, "eval", index)
        w, h = ex.image.size
        points = np.concatenate(
            [np.c_[r["X"], r["Y"]] for r in fixation_rows(ex, "x.png", "eval", rng, simulation)]
        ) / [w, h]
        objects = [(x0 / w, y0 / h, x1 / w, y1 / h) for x0, y0, x1, y1 in (o.box_px for o in ex.objects)]
        in_evidence = _inside(points, ex.bbox)
        outside_objects = [
            b for b in objects if not _inside(np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]]), ex.bbox)[0]
        ]
        evidence.append(in_evidence.mean())
        other.append((_inside(points, outside_objects) & ~in_evidence).mean() if outside_objects else 0.0)
        area.append(sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in ex.bbox))
    return {"evidence": float(np.mean(evidence)), "other": float(np.mean(other)), "area": float(np.mean(area))}


def test_most_fixations_land_in_the_evidence_boxes_of_the_question():
    shares = _shares(QUESTION_GAZE)
    # 60 % aimed at the evidence (jitter moves some out), plus what centre bias and noise put there by chance: most
    assert shares["evidence"] > 0.5, shares
    assert shares["evidence"] > 3 * shares["area"]  # far above a uniform gaze over the same boxes
    assert 0.12 < shares["other"] < 0.3, shares  # about p_objects = 0.2 on the other objects
    # the comparison can fail: subjects that do not look at the evidence stay far below it
    elsewhere = _shares(replace(QUESTION_GAZE, p_target=0.0, p_objects=0.8))
    assert elsewhere["evidence"] < 0.25 and elsewhere["other"] > 0.6, elsewhere


def test_targets_follow_the_question():
    count = make_example(0, "eval", 3)  # index 3: a count question, its evidence a half of the image
    assert count.question_type == "count"
    evidence, others, _ = gaze_targets(count, QUESTION_GAZE)
    counted = [o for o in count.objects if _inside(np.array([[o.centre[0] / 168, o.centre[1] / 168]]), count.bbox)[0]]
    if counted:  # the counted shapes, not the whole half
        assert len(evidence) == len(counted) and all(_inside(np.array([[b[0], b[1]]]), count.bbox)[0] for b in evidence)
    assert gaze_targets(count, FixationSimulation())[0] == count.bbox  # the benchmark's simulation: the half itself
    assert len(others) == len(count.objects) - len(counted)

    left_of = make_example(0, "eval", 2)  # "Which shape is left of the <colour> <shape>?"
    assert left_of.question_type == "left_of"
    evidence, others, weights = gaze_targets(left_of, QUESTION_GAZE)
    assert evidence == [tuple(b) for b in left_of.bbox] or np.allclose(evidence, left_of.bbox)
    assert sorted(weights).count(QUESTION_GAZE.named_weight) == 1  # the reference object, named by the question


def test_simulation_is_seeded_and_checked():
    ex = make_example(0, "eval", 0)
    first = fixation_rows(ex, "a.png", "eval", np.random.default_rng(5), QUESTION_GAZE)
    again = fixation_rows(ex, "a.png", "eval", np.random.default_rng(5), QUESTION_GAZE)
    other = fixation_rows(ex, "a.png", "eval", np.random.default_rng(6), QUESTION_GAZE)
    assert first == again and first != other
    assert len(first) == QUESTION_GAZE.subjects and all(
        r["length"] == QUESTION_GAZE.fixations_per_subject for r in first
    )
    with pytest.raises(ValueError, match="sum to <= 1"):
        FixationSimulation(p_target=0.7, p_centre=0.2, p_objects=0.2)
    with pytest.raises(ValueError, match="not a synthetic question id"):
        regenerate_example("COCO_val2014_000000000042")


def _export(root, count: int, broken: int | None = None):
    """An export-like folder of ``count`` synthetic eval rows (no proposals needed here); row ``broken`` gets another
    image than its id's scene."""
    (root / "images").mkdir(parents=True)
    lines = []
    for i in range(count):
        ex = make_example(0, "eval", i)
        image = make_example(0, "eval", i + 1).image if i == broken else ex.image
        image.save(root / "images" / f"{i}.png")
        lines.append(
            {"image_id": ex.question_id, "file_name": None, "image_path": f"images/{i}.png", "width": 168,
             "height": 168, "question": ex.problem, "explanation": "", "answer": "", "proposals": []}
        )  # fmt: skip
    (root / "proposals.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return root / "proposals.jsonl"


def test_fixations_for_an_export_meet_its_images_and_split_them(tmp_path):
    jsonl = _export(tmp_path / "export", 6)
    train, evaluation = simulate_export_fixations(jsonl, tmp_path / "fix", num_eval=2, seed=0)
    export = read_export(jsonl)
    train_records = read_air_fixations(train, tmp_path / "export")
    eval_records = read_air_fixations(evaluation, tmp_path / "export")
    assert [r.key for r in eval_records] == sorted(export)[-2:]  # the last ids in id order are held out
    assert {r.key for r in train_records} | {r.key for r in eval_records} == set(export)
    for r in train_records + eval_records:  # the image of each record is the exported one, at its size
        assert r.image_path == export[r.key].image_path and Image.open(r.image_path).size == (r.width, r.height)
    info = json.loads((tmp_path / "fix" / "simulation.json").read_text())
    assert info["train_images"] == 4 and info["simulation"]["p_objects"] == QUESTION_GAZE.p_objects
    # each image's fixations depend on the seed and its id only, not on which other images were exported
    fewer = _export(tmp_path / "fewer", 4)
    simulate_export_fixations(fewer, tmp_path / "fix_fewer", num_eval=1, seed=0)
    rows = {(r["question_id"], r["subject"]): r["X"] for r in json.loads(train.read_text())}
    again = json.loads((tmp_path / "fix_fewer" / "AiR_fixations_train.json").read_text())
    assert all(rows[(r["question_id"], r["subject"])] == r["X"] for r in again)


def test_an_export_of_other_scenes_is_refused(tmp_path):
    jsonl = _export(tmp_path / "export", 3, broken=1)
    with pytest.raises(ValueError, match="not the synthetic scene of that id"):
        simulate_export_fixations(jsonl, tmp_path / "fix", num_eval=1)
    with pytest.raises(ValueError, match="hold out at least 1"):
        simulate_export_fixations(jsonl, tmp_path / "fix", num_eval=3)
