"""Which checkpoint an interrupted run resumes from, and that its weights come back exactly."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, TrainingArguments

from vlm import build_tiny_vlm, load_full_weights, resolve_resume_checkpoint


def test_newest_complete_checkpoint_is_chosen_and_a_cut_save_is_skipped(tmp_path, caplog):
    for step, state in ((2, {"global_step": 2}), (10, {"global_step": 10}), (16, None), (18, '{"global_step": 1')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if state is not None:  # checkpoint-18 was killed while writing its trainer_state.json
            (folder / "trainer_state.json").write_text(state if isinstance(state, str) else json.dumps(state))
    args = TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint="true", use_cpu=True, report_to=[])
    assert resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir) == str(tmp_path / "checkpoint-10")
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-18" in caplog.text


@pytest.mark.parametrize("resume", [None, False, "false", "None", ""])
def test_no_resume(resume, tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert resolve_resume_checkpoint(resume, tmp_path) is None


def test_resuming_newest_without_a_checkpoint_starts_fresh_and_a_missing_path_is_named(tmp_path, caplog):
    for keyword in ("true", True, "last", "latest"):
        assert resolve_resume_checkpoint(keyword, tmp_path / "new") is None
    assert "no checkpoint in" in caplog.text
    assert resolve_resume_checkpoint(str(tmp_path), tmp_path) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="--resume_from: no checkpoint at"):
        resolve_resume_checkpoint(str(tmp_path / "gone"), tmp_path, flag="--resume_from")


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "llava"])
def test_full_weights_come_back_under_the_module_names(family, tmp_path):
    # Qwen2.5-VL and LLaVA save under hub names that differ from their module names; Qwen3-VL does not.
    saved = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "a", family=family, seed=0))
    target = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "b", family=family, seed=1))
    saved.save_pretrained(tmp_path / "checkpoint")
    assert any(not torch.equal(p, q) for p, q in zip(saved.state_dict().values(), target.state_dict().values()))
    load_full_weights(target, tmp_path / "checkpoint")
    for key, value in saved.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


@pytest.mark.parametrize("size", [{"num_layers": 3}, {"hidden_size": 96}])
def test_a_checkpoint_of_another_architecture_is_an_error(size, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(build_tiny_vlm(tmp_path / "a", family="qwen2_5_vl"))
    other = build_tiny_vlm(tmp_path / "b", family="qwen2_5_vl", **size)
    with pytest.raises(ValueError, match="does not match the model being trained"):
        load_full_weights(model, other)
