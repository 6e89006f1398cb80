"""Which checkpoint an interrupted run resumes from."""

import json

from transformers import TrainingArguments

from vlm import resolve_resume_checkpoint


def test_newest_complete_checkpoint_is_chosen_and_a_cut_save_is_skipped(tmp_path, caplog):
    for step, complete in ((2, True), (4, True), (6, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    args = TrainingArguments(output_dir=str(tmp_path), resume_from_checkpoint="true", use_cpu=True, report_to=[])
    assert resolve_resume_checkpoint(args) == str(tmp_path / "checkpoint-4")
    assert "skipping incomplete checkpoint" in caplog.text and "checkpoint-6" in caplog.text
