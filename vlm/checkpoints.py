"""Finding the checkpoint an interrupted training run resumes from."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)


def resolve_resume_checkpoint(training_args: TrainingArguments) -> str | None:
    """The checkpoint to resume from: an explicit path, or the newest one in `output_dir` for `true`/`last`.

    `--resume_from_checkpoint true` picks the newest `checkpoint-N` folder of the output directory, so a killed job
    restarts with the command line it was started with (and starts fresh when there is no checkpoint yet).
    """
    resume = training_args.resume_from_checkpoint
    if resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() in ("true", "last"):
        output_dir = Path(training_args.output_dir)
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            logger.warning("no checkpoint in %s to resume from; starting from scratch", output_dir)
        return last
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder at {resume!r}")
    return str(resume)
