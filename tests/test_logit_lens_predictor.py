"""The predictor's logit-lens channels: the export's features read, resized, batched, used, validated by flag."""

import json
from dataclasses import replace

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
    collate,
    load_predictor,
    predict,
    read_air_fixations,
    read_export,
    write_export,
)
from predictor.proposals import LogitLensFeatures

TINY = PredictorModelConfig(backbone_width=4, feature_dim=8, refine_dim=4)
SCORES = (0.3, 0.9, 0.6)  # proposals in export order; the dataset orders them by score: 1, 2, 0
GRID = (4, 4)
LAYERS = [1, 3]


def _export(root, features: str | None, n_images: int = 4, layers=LAYERS, topk: int = 2):
    """32x32 images, three quadrant proposals each, fixations in the top-left quadrant; with ``features`` each image's
    logit-lens array: channel j of a "phrases" array is the constant j + 1 on layer 0 and 10 (j + 1) on layer 1."""
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (128, 128, 128)).save(root / "img.png")
    proposals = []
    for j, (x, y) in enumerate(((0, 0), (16, 16), (16, 0))):
        mask = np.zeros((32, 32), dtype=np.uint8)
        mask[y : y + 16, x : x + 16] = 255
        Image.fromarray(mask).save(root / f"m{j}.png")
        box = (x / 32, y / 32, (x + 16) / 32, (y + 16) / 32)
        proposals.append(Proposal(f"p{j}", "r", root / f"m{j}.png", box, SCORES[j]))
    records = []
    for i in range(n_images):
        lens = None
        if features is not None:
            if features == "phrases":
                array = np.stack(
                    [np.stack([np.full(GRID, (j + 1) * 10.0**l) for l in range(len(layers))]) for j in range(3)]
                )
            else:
                array = np.random.default_rng(i).random((topk, len(layers), *GRID))
            np.save(root / f"lens{i}.npy", array.astype(np.float32))
            lens = LogitLensFeatures(root / f"lens{i}.npy", features, list(layers), GRID)
        records.append(ExportRecord(f"q{i}", root / "img.png", 32, 32, "", "", proposals, lens))
    write_export(records, root / "export.jsonl")
    rows = [{"question_id": f"q{i}", "image_id": "img.png", "width": 32, "height": 32, "X": [4.0, 8.0], "Y": [4.0, 9.0]}
            for i in range(n_images)]  # fmt: skip
    (root / "fix.json").write_text(json.dumps(rows))
    return read_air_fixations(root / "fix.json", root), read_export(root / "export.jsonl")


def test_export_lines_keep_their_features_and_plain_lines_have_none(tmp_path):
    _, export = _export(tmp_path / "lens", "phrases")
    lens = export["q0"].logit_lens
    assert (lens.features, lens.layers, lens.grid) == ("phrases", LAYERS, GRID) and lens.load().shape == (3, 2, 4, 4)
    _, plain = _export(tmp_path / "plain", None)
    assert plain["q0"].logit_lens is None
    assert "logit_lens" not in json.loads((tmp_path / "plain" / "export.jsonl").read_text().splitlines()[0])


def test_dataset_items_carry_the_features_in_proposal_order_and_collate_pads_them(tmp_path):
    records, export = _export(tmp_path / "p", "phrases")
    ds = FixationDataset(records, export, image_size=16, max_proposals=2, logit_lens="phrases")
    assert ds.logit_lens_channels == 2 and ds.proposal_order(0) == [1, 2]
    item = ds[0]
    assert item["lens"].shape == (2, 2, 16, 16)  # kept proposals x layers, at the input size
    assert torch.allclose(item["lens"][:, 0], torch.tensor([2.0, 3.0])[:, None, None].expand(2, 16, 16))
    assert torch.allclose(item["lens"][:, 1], torch.tensor([20.0, 30.0])[:, None, None].expand(2, 16, 16))
    short = dict(item, masks=item["masks"][:1], scores=item["scores"][:1], lens=item["lens"][:1])
    batch = collate([short, item])
    assert batch["lens"].shape == (2, 2, 2, 16, 16) and not batch["lens"][0, 1].any()

    records, export = _export(tmp_path / "t", "topk", topk=3)
    ds = FixationDataset(records, export, image_size=16, logit_lens="topk")
    assert ds.logit_lens_channels == 6
    batch = collate([ds[0], ds[1]])
    assert batch["lens"].shape == (2, 6, 16, 16)
    assert collate([FixationDataset(records, export, image_size=16)[0]])["lens"] is None


@pytest.mark.parametrize("mode", ["phrases", "topk"])
def test_features_reach_the_map_and_training_takes_the_channels_from_the_export(tmp_path, mode):
    records, export = _export(tmp_path / mode, mode)
    ds = FixationDataset(records, export, image_size=32, logit_lens=mode)
    args = PredictorTrainingConfig(output_dir=str(tmp_path / "run"), num_epochs=2, batch_size=2, topk=2, topk_start=3)
    trainer = PredictorTrainer(replace(TINY, logit_lens=mode), args, ds)
    losses = trainer.train()
    assert trainer.model_config.logit_lens_channels == ds.logit_lens_channels and all(np.isfinite(losses))
    model, _ = load_predictor(tmp_path / "run" / "checkpoint-epoch2.pt")  # rebuilt with the channels it trained on
    np.testing.assert_allclose(
        predict(model, ds, 2, progress=False)[0].saliency, predict(trainer.model, ds, 2, progress=False)[0].saliency
    )
    batch = collate([ds[0]])
    inputs = (batch["images"], batch["masks"], batch["valid"], batch["scores"], 2)
    with torch.no_grad():
        same = model(*inputs, batch["lens"]).saliency
        other = model(*inputs, batch["lens"] * 3 + 1).saliency
    assert not torch.allclose(same, other)  # the features are an input of the map
    if mode == "phrases":  # ... and a removed proposal's features cannot change it
        valid = batch["valid"].clone()
        valid[0, 2] = False
        changed = batch["lens"].clone()
        changed[0, 2] += 5
        with torch.no_grad():
            a = model(batch["images"], batch["masks"], valid, batch["scores"], 2, batch["lens"]).saliency
            b = model(batch["images"], batch["masks"], valid, batch["scores"], 2, changed).saliency
        assert torch.equal(a, b)


def test_mismatches_are_named_by_flag(tmp_path):
    records, plain = _export(tmp_path / "plain", None)
    with pytest.raises(ValueError, match=r"--logit_lens phrases: image_id 'q0' has no logit-lens features"):
        FixationDataset(records, plain, image_size=16, logit_lens="phrases")
    records, topk = _export(tmp_path / "topk", "topk")
    with pytest.raises(ValueError, match=r"--logit_lens_features phrases"):
        FixationDataset(records, topk, image_size=16, logit_lens="phrases")
    with pytest.raises(ValueError, match="--logit_lens phrases .* needs --use_proposals true"):
        FixationDataset(records, topk, image_size=16, logit_lens="phrases", use_proposals=False)
    mixed = dict(topk, q1=replace(topk["q1"], logit_lens=replace(topk["q1"].logit_lens, layers=[0, 1])))
    with pytest.raises(ValueError, match=r"image_id 'q1' has features of layers \[0, 1\]"):
        FixationDataset(records, mixed, image_size=16, logit_lens="topk")
    only_features = FixationDataset(records, topk, image_size=16, logit_lens="topk", use_proposals=False)
    assert only_features[0]["masks"].shape[0] == 0 and only_features[0]["lens"].shape[0] == 4

    ds = FixationDataset(records, topk, image_size=16, logit_lens="topk")
    args = PredictorTrainingConfig(output_dir=str(tmp_path / "run"), num_epochs=1, topk=2, topk_start=2)
    with pytest.raises(ValueError, match=r"--logit_lens_channels 3: the export's topk features have 4 channels"):
        PredictorTrainer(replace(TINY, logit_lens="topk", logit_lens_channels=3), args, ds)
    with pytest.raises(ValueError, match=r"--logit_lens off: the data set was read with logit-lens features 'topk'"):
        PredictorTrainer(TINY, args, ds)
    with pytest.raises(ValueError, match=r"--logit_lens_channels 4 with --logit_lens off"):
        ExplainableSaliencyPredictor(replace(TINY, logit_lens_channels=4))
    with pytest.raises(ValueError, match=r"--logit_lens phrases .* needs --use_proposals true"):
        ExplainableSaliencyPredictor(replace(TINY, logit_lens="phrases", logit_lens_channels=2, use_proposals=False))
    model = ExplainableSaliencyPredictor(replace(TINY, logit_lens="topk", logit_lens_channels=4))
    batch = collate([ds[0]])
    with pytest.raises(ValueError, match=r"--logit_lens topk --logit_lens_channels 4 got lens None"):
        model(batch["images"], batch["masks"], batch["valid"], batch["scores"], 2)
    np.save(topk["q0"].logit_lens.path, np.zeros((2, 3, *GRID), dtype=np.float32))
    with pytest.raises(ValueError, match=r"lens0.npy: logit-lens features of shape \(2, 3, 4, 4\)"):
        ds[0]
