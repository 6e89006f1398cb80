"""Training, checkpoints/resume, the synthetic fixation set, faithfulness, and the launchers end to end."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from predictor import (
    ExplainableSaliencyPredictor,
    ExportRecord,
    FixationDataset,
    PredictorModelConfig,
    PredictorTrainer,
    PredictorTrainingConfig,
    Proposal,
    deletion_curve,
    load_predictor,
    predict,
    read_air_fixations,
    read_export,
    topk_for_epoch,
    write_export,
)
from predictor.synthetic import build_synthetic_fixation_set, mentions

ROOT = Path(__file__).resolve().parents[1]
TINY = PredictorModelConfig(backbone_width=4, feature_dim=8, refine_dim=4)


def test_topk_anneals_linearly_from_start_to_target():
    cfg = PredictorTrainingConfig(topk=3, topk_start=20, topk_anneal_epochs=3)
    assert [topk_for_epoch(e, cfg) for e in range(6)] == [20, 14, 9, 3, 3, 3]
    assert topk_for_epoch(0, replace(cfg, topk_anneal_epochs=0)) == 3


def test_mentions_matches_object_phrases():
    assert mentions("What color is the triangle?", "triangle", "red")
    assert mentions("What shape is the blue object?", "circle", "blue")
    assert mentions("Which shape is left of the red circle?", "circle", "red")
    assert not mentions("Which shape is left of the red circle?", "circle", "blue")
    assert not mentions("How many shapes are in the top half?", "square", "green")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    return build_synthetic_fixation_set(out, "train", 8, seed=0)


def test_synthetic_set_is_read_by_the_air_and_export_readers(synthetic):
    fixations, images, proposals = synthetic
    records = read_air_fixations(fixations, images)
    export = read_export(proposals)
    assert len(records) == 8 and set(export) == {r.key for r in records}
    first = export[records[0].key]  # index 0 is a "color" question: only the asked shape is mentioned
    assert first.explanation and sum(p.score for p in first.proposals) == 1.0
    assert all(len(r.points) == 6 * 8 for r in records)
    rows = json.loads(fixations.read_text())
    assert {"question_id", "image_id", "subject", "width", "height", "X", "Y"} <= set(rows[0])


def test_training_lowers_the_loss_and_resume_continues(synthetic, tmp_path):
    fixations, images, proposals = synthetic
    ds = FixationDataset(read_air_fixations(fixations, images), read_export(proposals), image_size=48)
    args = PredictorTrainingConfig(
        output_dir=str(tmp_path),
        num_epochs=6,
        batch_size=4,
        learning_rate=3e-3,
        topk=2,
        topk_start=4,
        topk_anneal_epochs=2,
    )
    losses = PredictorTrainer(TINY, args, ds).train()
    assert len(losses) == 6 and all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert max(p.name for p in tmp_path.glob("*.pt")) == "checkpoint-epoch6.pt"

    resumed = PredictorTrainer(TINY, replace(args, num_epochs=7, resume_from="latest"), ds)
    assert len(resumed.train()) == 1 and resumed.epoch == 7
    model, meta = load_predictor(tmp_path / "checkpoint-epoch7.pt")
    assert meta["epoch"] == 7
    a = predict(model, ds, 2, progress=False)[0].saliency
    b = predict(resumed.model, ds, 2, progress=False)[0].saliency
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_resume_latest_skips_a_cut_save_and_starts_fresh_without_a_checkpoint(synthetic, tmp_path, caplog):
    fixations, images, proposals = synthetic
    ds = FixationDataset(read_air_fixations(fixations, images), read_export(proposals), image_size=48)
    args = PredictorTrainingConfig(output_dir=str(tmp_path), num_epochs=2, batch_size=4, topk=2, topk_start=2)
    fresh = PredictorTrainer(TINY, replace(args, resume_from="latest"), ds)
    assert len(fresh.train()) == 2
    assert "no checkpoint in" in caplog.text
    (tmp_path / "checkpoint-epoch3.pt.partial").write_bytes(b"cut")  # a job killed while saving epoch 3
    resumed = PredictorTrainer(TINY, replace(args, num_epochs=3, resume_from="latest"), ds)
    assert len(resumed.train()) == 1 and resumed.epoch == 3


def _quadrant_set(tmp_path, n_images=4):
    """32x32 blank images; proposals A (top-left, score .9), B (bottom-right, .6), C (top-right, .3);
    every fixation falls inside A."""
    Image.new("RGB", (32, 32), (128, 128, 128)).save(tmp_path / "img.png")
    quads = {"A": (0, 0, 0.9), "B": (16, 16, 0.6), "C": (16, 0, 0.3)}
    props = []
    for name, (x, y, score) in quads.items():
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[y : y + 16, x : x + 16] = 255
        Image.fromarray(mask).save(tmp_path / f"{name}.png")
        props.append(
            Proposal(
                name, f"reason {name}", tmp_path / f"{name}.png", (x / 32, y / 32, (x + 16) / 32, (y + 16) / 32), score
            )
        )
    write_export(
        [ExportRecord(f"q{i}", tmp_path / "img.png", 32, 32, "", "", props) for i in range(n_images)],
        tmp_path / "export.jsonl",
    )
    rows = [
        {
            "question_id": f"q{i}",
            "image_id": "img.png",
            "width": 32,
            "height": 32,
            "X": [4.0, 8.0, 12.0],
            "Y": [4.0, 10.0, 6.0],
        }
        for i in range(n_images)
    ]
    (tmp_path / "fix.json").write_text(json.dumps(rows))
    return FixationDataset(
        read_air_fixations(tmp_path / "fix.json", tmp_path), read_export(tmp_path / "export.jsonl"), image_size=32
    )


def _wired_model():
    """Features = 1 everywhere; refined mask = the proposal mask; priority = exported score;
    decoder = sigmoid(8 * weighted kept masks - 4). The map is exactly what the kept proposals say."""
    model = ExplainableSaliencyPredictor(TINY).eval()
    d = TINY.feature_dim
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.adapter[0].bias.fill_(1.0)
        model.refine[0].weight[0, d, 1, 1] = 1.0
        model.refine[2].weight[0, 0, 1, 1] = 1.0
        model.refine[4].weight[0, 0, 1, 1] = 20.0
        model.refine[4].bias.fill_(-10.0)
        model.priority.weight[0, d] = 1.0
        model.decoder.weight[0, d : 2 * d] = 1.0
        model.decoder.bias.fill_(-4.0)
    return model


def test_wired_model_explains_with_its_top_proposals(tmp_path):
    ds = _quadrant_set(tmp_path)
    (pred, *_) = predict(_wired_model(), ds, topk=2, progress=False)
    assert pred.kept == [0, 1] and pred.weights[0] > pred.weights[1]  # A, then B
    assert pred.saliency[:16, :16].mean() > pred.saliency[16:, 16:].mean() > pred.saliency[:16, 16:].mean()


def test_removing_top_weighted_proposals_lowers_nss_faster_than_random(tmp_path):
    ds = _quadrant_set(tmp_path)
    model = _wired_model()
    by_weight = deletion_curve(model, ds, topk=2, steps=2, order="weight", progress=False)
    at_random = deletion_curve(model, ds, topk=2, steps=2, order="random", seed=0, progress=False)
    assert by_weight.nss[1] < by_weight.nss[0] and by_weight.drop > 0
    assert by_weight.nss[0] == pytest.approx(at_random.nss[0])
    assert by_weight.area < at_random.area


def _run(script: str, argv: list[str], monkeypatch) -> None:
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(ROOT / "launch" / script), run_name="__main__")


@pytest.mark.slow
def test_launchers_train_then_evaluate_from_the_recipe(tmp_path, monkeypatch, capsys):
    fixations, images, proposals = build_synthetic_fixation_set(tmp_path / "data", "train", 6)
    eval_fix, _, eval_props = build_synthetic_fixation_set(tmp_path / "data", "eval", 4)
    overrides = [
        "--config",
        str(ROOT / "configs" / "predictor" / "synthetic_tiny.yaml"),
        "--train_fixations",
        str(fixations),
        "--images_dir",
        str(images),
        "--train_proposals",
        str(proposals),
        "--eval_fixations",
        str(eval_fix),
        "--eval_proposals",
        str(eval_props),
        "--image_size",
        "32",
        "--backbone_width",
        "4",
        "--feature_dim",
        "8",
        "--refine_dim",
        "4",
        "--num_epochs",
        "2",
        "--batch_size",
        "3",
        "--topk_anneal_epochs",
        "1",
    ]
    _run("predictor_train.py", [*overrides, "--output_dir", str(tmp_path / "run")], monkeypatch)
    report = json.loads((tmp_path / "run" / "eval_report.json").read_text())
    assert set(report["model"]) == {"CC", "KLD", "NSS", "SIM", "AUC_Judd", "sAUC"}
    assert set(report["faithfulness"]) == {"weight", "random"} and len(report["faithfulness"]["weight"]["nss"]) == 4

    _run(
        "predictor_eval.py",
        [
            *overrides,
            "--checkpoint",
            str(tmp_path / "run" / "checkpoint-epoch2.pt"),
            "--report_dir",
            str(tmp_path / "eval"),
            "--deletion_steps",
            "1",
        ],
        monkeypatch,
    )
    again = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert again["model"] == pytest.approx(report["model"]) and again["checkpoint"]["epoch"] == 2
    lines = [json.loads(line) for line in (tmp_path / "eval" / "explanations.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and len(lines[0]["selected"]) == 3
    assert {"phrase", "reason", "weight", "proposal", "box"} <= set(lines[0]["selected"][0])
