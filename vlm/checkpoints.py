"""Finding the checkpoint an interrupted training run resumes from."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainingArguments

logger = logging.getLogger(__name__)


def resolve_resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from: an explicit path, or the newest one in `output_dir` for `true`/`last`.

    `--resume_from_checkpoint true` picks the newest complete `checkpoint-N` folder of the output directory (one
    with its `trainer_state.json`), so a killed job restarts with the command line it was started with, also when
    it was killed while saving, and starts fresh when there is no checkpoint yet.
    """
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() in ("true", "last"):
        output_dir = Path(training_args.output_dir)
        found = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        found.sort(key=lambda p: int(p.name.split("-")[-1]))
        # A job killed while saving leaves a folder without trainer_state.json (written last); skip it.
        complete = [p for p in found if (p / "trainer_state.json").is_file()]
        if found and (not complete or found[-1] != complete[-1]):
            logger.warning("skipping incomplete checkpoint %s (the job stopped while saving it)", found[-1])
        if not complete:
            logger.warning("no checkpoint in %s to resume from; starting from scratch", output_dir)
            return None
        return str(complete[-1])
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder at {resume!r}")
    return str(resume)
