"""Finding the checkpoint an interrupted training run resumes from, and loading its weights exactly."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, TrainingArguments
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_INDEX_NAME, WEIGHTS_NAME

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
        # A job killed while saving leaves a folder without trainer_state.json (written last), or with a truncated one.
        complete = [p for p in found if _readable_state(p / "trainer_state.json")]
        if found and (not complete or found[-1] != complete[-1]):
            logger.warning("skipping incomplete checkpoint %s (the job stopped while saving it)", found[-1])
        if not complete:
            logger.warning("no checkpoint in %s to resume from; starting from scratch", output_dir)
            return None
        return str(complete[-1])
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no checkpoint folder at {resume!r}")
    return str(resume)


def _readable_state(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def has_full_weights(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` holds a whole model's weights (not only a PEFT adapter)."""
    names = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, WEIGHTS_NAME, WEIGHTS_INDEX_NAME)
    return any((Path(checkpoint) / name).is_file() for name in names)


@torch.no_grad()
def load_full_weights(model: PreTrainedModel, checkpoint: str | Path) -> None:
    """Load a full checkpoint's weights into ``model`` in place; any missing, unexpected or misshapen key is an error.

    `save_pretrained` writes some families' weights under their hub names (Qwen2-VL/2.5-VL: ``model.layers.*``,
    ``visual.*``; LLaVA: ``language_model.model.*``) while the module tree uses ``model.language_model.*``. Only
    `from_pretrained` knows each family's renaming, so the checkpoint is read through it and copied over strictly.
    """
    try:
        loaded, info = type(model).from_pretrained(
            str(checkpoint), config=model.config, dtype=next(model.parameters()).dtype, output_loading_info=True
        )
    except RuntimeError as error:  # a tensor of another shape
        raise ValueError(f"checkpoint {checkpoint} does not match the model being trained: {error}") from error
    problems = {k: sorted(v) for k, v in info.items() if k != "error_msgs" and v}
    if info.get("error_msgs"):
        problems["error_msgs"] = list(info["error_msgs"])
    if problems:
        raise ValueError(f"checkpoint {checkpoint} does not match the model being trained: {problems}")
    state = loaded.state_dict()
    own = model.state_dict()
    if set(state) != set(own):
        raise ValueError(
            f"checkpoint {checkpoint} does not match the model being trained: missing "
            f"{sorted(set(own) - set(state))[:5]}, unexpected {sorted(set(state) - set(own))[:5]}"
        )
    misshapen = [k for k, v in state.items() if v.shape != own[k].shape]
    if misshapen:
        raise ValueError(f"checkpoint {checkpoint} does not match the model being trained: shapes of {misshapen[:5]}")
    model.load_state_dict(state, strict=True)


class ExactResumeMixin:
    """For a `transformers.Trainer` subclass: resuming a full fine-tune restores the checkpoint's weights exactly.

    The Trainer loads a full checkpoint with `load_state_dict(strict=False)`, so when the saved names differ from
    the module names (`load_full_weights`) every key is skipped with a warning and training goes on from the start
    weights. PEFT adapters and DeepSpeed/FSDP checkpoints keep the Trainer's own loading.
    """

    model: nn.Module

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> Any:
        target = self.model if model is None else model
        sharded = getattr(self, "is_fsdp_enabled", False) or getattr(self, "is_deepspeed_enabled", False)
        if not sharded and isinstance(target, PreTrainedModel) and has_full_weights(resume_from_checkpoint):
            logger.info("Loading model from %s.", resume_from_checkpoint)
            return load_full_weights(target, resume_from_checkpoint)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)  # type: ignore[misc]
