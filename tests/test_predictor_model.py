"""Backbone naming/stride, weight loading, and the prioritisation logic of the predictor."""

import pytest
import torch

from predictor import (
    DilatedResNet,
    ExplainableSaliencyPredictor,
    PredictorModelConfig,
    load_backbone_weights,
)

TINY = PredictorModelConfig(backbone_width=4, feature_dim=8, refine_dim=4)


def test_backbone_has_output_stride_8_for_every_layout():
    x = torch.randn(1, 3, 64, 48)
    for layout in ("resnet18", "resnet50"):
        net = DilatedResNet(layout, width=4).eval()
        assert net(x).shape == (1, net.out_channels, 8, 6)
    assert DilatedResNet("resnet50", width=4).out_channels == 4 * 8 * 4


def test_backbone_state_dict_matches_torchvision_resnet18_naming():
    # torchvision resnet18: 122 state_dict entries, of which fc.weight and fc.bias are the classifier.
    keys = DilatedResNet("resnet18", width=64).state_dict().keys()
    assert len(keys) == 120
    for key in (
        "conv1.weight",
        "bn1.num_batches_tracked",
        "layer1.1.bn2.running_var",
        "layer2.0.downsample.0.weight",
        "layer4.1.conv2.weight",
    ):
        assert key in keys
    assert "layer1.0.downsample.0.weight" not in keys
    r50 = DilatedResNet("resnet50", width=64).state_dict()
    assert r50["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert r50["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)


def test_load_backbone_weights_roundtrip_and_errors(tmp_path):
    src = DilatedResNet("resnet18", width=4)
    state = {**src.state_dict(), "fc.weight": torch.zeros(10, 32), "fc.bias": torch.zeros(10)}
    torch.save(state, tmp_path / "r18.pth")
    dst = DilatedResNet("resnet18", width=4)
    load_backbone_weights(dst, tmp_path / "r18.pth")
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v)
    with pytest.raises(ValueError, match="shape mismatch.*backbone_width 64"):
        load_backbone_weights(DilatedResNet("resnet18", width=8), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="missing"):
        load_backbone_weights(DilatedResNet("resnet34", width=4), tmp_path / "r18.pth")
    with pytest.raises(ValueError, match="--backbone"):
        DilatedResNet("vgg16")


def _inputs(b=2, p=4, s=32):
    torch.manual_seed(0)
    return torch.randn(b, 3, s, s), torch.rand(b, p, s, s), torch.ones(b, p, dtype=torch.bool), torch.rand(b, p)


def test_forward_shapes_weights_and_kept_indices():
    model = ExplainableSaliencyPredictor(TINY).eval()
    images, masks, valid, scores = _inputs()
    valid[1, 1:] = False  # the second image has one real proposal
    out = model(images, masks, valid, scores, topk=3)
    assert out.saliency.shape == (2, 32, 32)
    assert bool(((out.saliency > 0) & (out.saliency < 1)).all())
    assert out.kept.shape == out.weights.shape == (2, 3)
    assert out.weights[0].sum().item() == pytest.approx(1.0)
    assert (out.weights[0][:-1] >= out.weights[0][1:]).all()
    assert out.kept[1].tolist() == [0, -1, -1] and out.weights[1].tolist() == [1.0, 0.0, 0.0]
    assert torch.isinf(out.scores[1, 1:]).all()


def test_removed_proposals_cannot_change_the_map():
    model = ExplainableSaliencyPredictor(TINY).eval()
    images, masks, valid, scores = _inputs()
    valid[:, 3] = False
    base = model(images, masks, valid, scores, topk=2).saliency
    masks2 = masks.clone()
    masks2[:, 3] = torch.rand_like(masks2[:, 3])
    assert torch.allclose(base, model(images, masks2, valid, scores, topk=2).saliency)
    masks2[:, 0] = 1 - masks2[:, 0]
    assert not torch.equal(base, model(images, masks2, valid, scores, topk=4).saliency)


def test_proposals_off_ignores_proposals():
    model = ExplainableSaliencyPredictor(
        PredictorModelConfig(backbone_width=4, feature_dim=8, refine_dim=4, use_proposals=False)
    ).eval()
    images, masks, valid, scores = _inputs()
    a = model(images, masks, valid, scores, topk=3)
    b = model(images, torch.rand_like(masks), valid, torch.rand_like(scores), topk=3)
    assert torch.equal(a.saliency, b.saliency) and a.kept.numel() == 0


def test_prioritisation_head_ranks_by_exported_score_when_wired_to_it():
    # Head reads only the constant score plane, so score_i = s_i and the kept order is that of s_i.
    model = ExplainableSaliencyPredictor(TINY).eval()
    with torch.no_grad():
        model.priority.weight.zero_()
        model.priority.weight[0, -1] = 1.0
        model.priority.bias.zero_()
    images, masks, valid, _ = _inputs(b=1, p=4)
    masks[:] = masks[:, :1]
    scores = torch.tensor([[0.2, 0.9, 0.1, 0.5]])
    out = model(images, masks, valid, scores, topk=3)
    assert out.kept.tolist() == [[1, 3, 0]]


def test_gradient_reaches_the_prioritisation_head():
    model = ExplainableSaliencyPredictor(TINY)
    images, masks, valid, scores = _inputs()
    model(images, masks, valid, scores, topk=2).saliency.sum().backward()
    assert model.priority.weight.grad is not None and model.priority.weight.grad.abs().sum() > 0
    assert model.refine[0].weight.grad.abs().sum() > 0
