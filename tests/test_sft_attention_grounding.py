"""The attention-grounding loss of the SFT stage: its math on toy attention, its hooks, and the trainer with it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import DatasetDict
from torch import nn
from trl import ModelConfig, SFTConfig, TrlParser

from data_tools.synthetic import generate_synthetic
from saliency.adapters import ImageGrid
from sft import SFTScriptArguments, run_sft
from sft.attention_grounding import (
    attention_grounding_loss,
    evidence_coverage,
    recorded_attention,
    row_coverage,
)
from sft.sft_data import load_sft_dataset


def test_coverage_is_the_fraction_of_each_cell_inside_the_boxes():
    assert evidence_coverage([[0.0, 0.0, 0.5, 0.5]], (2, 2)).tolist() == [1.0, 0.0, 0.0, 0.0]
    assert evidence_coverage([[0.25, 0.25, 0.75, 0.75]], (2, 2)).tolist() == [0.25] * 4
    # a 3 x 2 grid: the box spans the left column and half of the middle row's height
    grid = evidence_coverage([[0.0, 0.5, 0.5, 1.0]], (3, 2)).view(3, 2)
    assert torch.allclose(grid, torch.tensor([[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]))
    overlapping = evidence_coverage([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]], (2, 2))
    assert overlapping.tolist() == [1.0, 0.0, 0.0, 0.0]  # clipped at 1


def test_row_coverage_puts_leading_tokens_off_the_grid_and_needs_the_image_of_each_box_with_several():
    grid = ImageGrid(num_tokens=5, grid=(2, 2), pixels=(28, 28), skip_leading=1)
    assert row_coverage([[0.5, 0.5, 1.0, 1.0]], [grid], 0).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert row_coverage([], [grid], 0) is None
    with pytest.raises(ValueError, match="row 3: 2 images but no `bbox_image`"):
        row_coverage([[0.0, 0.0, 1.0, 1.0]], [grid, grid], 3)
    with pytest.raises(ValueError, match=r"row 3: `bbox_image` \[2\] must give one image index in 0..1"):
        row_coverage([[0.0, 0.0, 1.0, 1.0]], [grid, grid], 3, [2])


def test_with_several_images_each_box_covers_only_its_own_images_tokens():
    small = ImageGrid(num_tokens=4, grid=(2, 2), pixels=(28, 28))
    wide = ImageGrid(num_tokens=3, grid=(1, 2), pixels=(28, 56), skip_leading=1, index=1)
    boxes = [[0.5, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]]
    coverage = row_coverage(boxes, [small, wide, small], 0, [2, 1]).tolist()
    # image 0 has no evidence; image 1 (a leading token, then a 1 x 2 grid): half of its left cell;
    # image 2: its right column
    assert coverage == [0.0] * 4 + [0.0, 0.5, 0.0] + [0.0, 1.0, 0.0, 1.0]


def test_attention_on_an_image_without_evidence_counts_outside():
    # the toy row's 4 image tokens as two images of 2 tokens, the evidence wholly on the second
    input_ids, labels = toy_batch()
    grid = ImageGrid(num_tokens=2, grid=(1, 2), pixels=(28, 56))
    coverage = row_coverage([[0.0, 0.0, 1.0, 1.0]], [grid, grid], 0, [1])
    on_first = attention_with(torch.tensor([0.4, 0.4, 0.1, 0.1]))
    loss = attention_grounding_loss([on_first], input_ids, labels, 9, [coverage])
    assert loss.item() == pytest.approx(-math.log(0.2), rel=1e-4)


def toy_batch():
    """One row: 2 text tokens, 4 image tokens (id 9), then 3 answer tokens; labels on the answer."""
    input_ids = torch.tensor([[1, 2, 9, 9, 9, 9, 5, 6, 7]])
    labels = torch.full_like(input_ids, -100)
    labels[0, 6:] = input_ids[0, 6:]
    return input_ids, labels


def attention_with(image_share: torch.Tensor, heads: int = 2) -> torch.Tensor:
    """(1, heads, 9, 9) attention whose rows give 0.5 to token 0 and 0.5 spread over the image as ``image_share``."""
    attention = torch.zeros(1, heads, 9, 9)
    attention[..., 0] = 0.5
    attention[..., 2:6] = 0.5 * image_share
    return attention


def test_loss_is_minus_log_of_the_evidence_share_of_the_answer_rows():
    input_ids, labels = toy_batch()
    coverage = torch.tensor([1.0, 0.0, 0.5, 0.0])
    uniform = attention_with(torch.full((4,), 0.25))
    # uniform attention over the image: the evidence share is (1 + 0.5) / 4
    loss = attention_grounding_loss([uniform], input_ids, labels, 9, [coverage])
    assert math.isclose(loss.item(), -math.log(1.5 / 4), rel_tol=1e-4)
    on_evidence = attention_with(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert attention_grounding_loss([on_evidence], input_ids, labels, 9, [coverage]).item() < 1e-5
    # two layers: the mean of the two
    both = attention_grounding_loss([uniform, on_evidence], input_ids, labels, 9, [coverage])
    assert math.isclose(both.item(), -math.log(1.5 / 4) / 2, rel_tol=1e-4)


def test_loss_reads_only_the_rows_that_predict_answer_tokens():
    input_ids, labels = toy_batch()
    attention = attention_with(torch.full((4,), 0.25))
    attention[0, :, 5:8, 2:6] = 0.5 * torch.tensor([1.0, 0.0, 0.0, 0.0])  # rows 5, 6, 7 predict tokens 6, 7, 8
    coverage = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert attention_grounding_loss([attention], input_ids, labels, 9, [coverage]).item() < 1e-5
    attention[0, :, 8, 2:6] = 0.0  # the last row predicts nothing: not read
    assert attention_grounding_loss([attention], input_ids, labels, 9, [coverage]).item() < 1e-5


def test_rows_without_boxes_add_nothing_and_a_batch_without_any_gives_zero_with_a_gradient():
    input_ids, labels = toy_batch()
    share = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    attention = attention_with(share)
    loss = attention_grounding_loss([attention], input_ids, labels, 9, [None])
    assert loss.item() == 0.0
    loss.backward()
    assert share.grad is not None
    with pytest.raises(ValueError, match="row 0: 4 image tokens in input_ids but 3 on its grid"):
        attention_grounding_loss([attention], input_ids, labels, 9, [torch.ones(3)])


def test_the_gradient_moves_attention_towards_the_evidence():
    input_ids, labels = toy_batch()
    logits = torch.zeros(4, requires_grad=True)
    attention = attention_with(torch.softmax(logits, 0))
    attention_grounding_loss([attention], input_ids, labels, 9, [torch.tensor([0.0, 1.0, 0.0, 0.0])]).backward()
    assert logits.grad[1] < 0 and (logits.grad[[0, 2, 3]] > 0).all()  # descent raises the evidence token's logit


class Block(nn.Module):
    def __init__(self, returns_weights: bool):
        super().__init__()
        self.returns_weights = returns_weights

    def forward(self, x):
        return x, (torch.softmax(x, -1) if self.returns_weights else None)


def test_recorded_attention_keeps_each_blocks_weights_and_always_removes_its_hooks():
    blocks = [Block(True), Block(True)]
    x = torch.randn(2, 3)
    with recorded_attention(blocks) as weights:
        for block in blocks:
            block(x)
    assert len(weights) == 2 and torch.equal(weights[0], torch.softmax(x, -1))
    assert all(not block._forward_hooks for block in blocks)
    without_weights = Block(False)  # what an SDPA block returns
    with pytest.raises(RuntimeError, match="--attn_implementation eager"), recorded_attention([without_weights]):
        without_weights(x)
    assert not without_weights._forward_hooks


@pytest.fixture(scope="module")
def grounding_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grounding") / "data"
    data = generate_synthetic(
        num_sft=8, num_rl=0, num_eval=0, seed=3, num_grounding=8, num_multi_image_sft=4, num_clip_sft=4
    )
    unboxed = data["sft"].remove_columns("bbox")  # like converted public cold-start data
    splits = {"unboxed": unboxed, **{name: data[name] for name in ("grounding", "multi_sft", "clip_sft")}}
    DatasetDict(splits).save_to_disk(str(folder))
    return folder


def sft_args(model, data, out, *extra):
    argv = [
        "--model_name_or_path", str(model), "--dataset_name", str(data), "--dataset_train_split", "grounding",
        "--output_dir", str(out), "--dtype", "float32", "--attn_implementation", "eager", "--max_steps", "1",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true", "--bf16", "false",
        "--activation_checkpointing", "false", "--max_length", "512", "--seed", "0", *extra,
    ]  # fmt: skip
    return TrlParser((SFTScriptArguments, SFTConfig, ModelConfig)).parse_args_and_config(argv)


def first_log(out):
    return json.loads((out / "trainer_state.json").read_text())["log_history"][0]


def test_the_trainer_adds_the_weighted_grounding_loss_to_the_token_loss(tiny_model_dir, grounding_data, tmp_path):
    plain = first_log(run_sft(*sft_args(tiny_model_dir, grounding_data, tmp_path / "plain")))
    weighted = first_log(
        run_sft(*sft_args(tiny_model_dir, grounding_data, tmp_path / "w", "--attention_grounding_weight", "2.0"))
    )
    grounding = weighted["attention_grounding_loss"]
    assert grounding > 0.1  # random weights spread attention beyond the boxes
    assert "attention_grounding_loss" not in plain
    assert math.isclose(weighted["loss"] - plain["loss"], 2.0 * grounding, rel_tol=1e-3)
    last_layer_only = first_log(
        run_sft(
            *sft_args(
                tiny_model_dir, grounding_data, tmp_path / "last", "--attention_grounding_weight", "2.0",
                "--attention_grounding_layers", "-1",
            )
        )
    )  # fmt: skip
    assert last_layer_only["attention_grounding_loss"] != pytest.approx(grounding)


def test_the_grounding_loss_trains_on_joined_splits_of_single_and_several_images(
    tiny_model_dir, grounding_data, tmp_path
):
    mix = ("--dataset_train_split", "grounding+multi_sft+clip_sft", "--per_device_train_batch_size", "16")
    plain = first_log(run_sft(*sft_args(tiny_model_dir, grounding_data, tmp_path / "plain", *mix)))
    weighted = first_log(
        run_sft(*sft_args(tiny_model_dir, grounding_data, tmp_path / "w", *mix, "--attention_grounding_weight", "1.0"))
    )
    grounding = weighted["attention_grounding_loss"]
    assert grounding > 0.1 and math.isfinite(grounding)
    assert math.isclose(weighted["loss"] - plain["loss"], grounding, rel_tol=1e-3)
    single = first_log(run_sft(*sft_args(tiny_model_dir, grounding_data, tmp_path / "one", *mix[2:])))
    assert plain["num_tokens"] > 2 * single["num_tokens"]  # the 8 rows of 2-4 images were trained on too


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attn_implementation", "sdpa"], "needs --attn_implementation eager, got 'sdpa'"),
        (["--activation_checkpointing", "true"], "set --activation_checkpointing false"),
        (["--dataset_train_split", "unboxed"], "split 'unboxed' of --dataset_name .* has no `bbox` column"),
        (["--attention_grounding_layers", "7"], "--attention_grounding_layers \\[7\\]: the model has 4 layers"),
    ],
)
def test_what_the_grounding_loss_cannot_use_is_refused_by_name(
    tiny_model_dir, grounding_data, tmp_path, extra, message
):
    args = sft_args(tiny_model_dir, grounding_data, tmp_path / "out", "--attention_grounding_weight", "1.0", *extra)
    with pytest.raises(ValueError, match=message):
        run_sft(*args)


def test_a_box_tied_to_an_image_the_row_lacks_is_refused_by_row_before_training(tmp_path):
    rows = generate_synthetic(num_sft=0, num_rl=0, num_eval=0, seed=3, num_multi_image_sft=3)["multi_sft"]
    broken = rows.map(lambda row, index: {"bbox_image": [5] if index == 1 else row["bbox_image"]}, with_indices=True)
    DatasetDict({"multi_sft": rows, "broken": broken}).save_to_disk(str(tmp_path / "data"))
    assert len(load_sft_dataset(str(tmp_path / "data"), split="multi_sft")) == 3
    with pytest.raises(ValueError, match=r"split 'broken': 1 row\(s\).*row 1 \(synthetic_shapes-multi_sft-3-000001\): "
                       r"`bbox_image` \[5\] for 1 boxes on 3 images"):  # fmt: skip
        load_sft_dataset(str(tmp_path / "data"), split="broken")
