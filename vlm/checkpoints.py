"""Checkpoints, in one place: which one a run resumes from, what a checkpoint folder holds, and loading a full
fine-tune's weights exactly. `vlm.load_model_and_processor` loads any of them for inference (an adapter folder
through `adapter_base`)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig
from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME
from torch import nn
from transformers import PreTrainedModel
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import (
    CONFIG_NAME,
    SAFE_WEIGHTS_INDEX_NAME,
    SAFE_WEIGHTS_NAME,
    WEIGHTS_INDEX_NAME,
    WEIGHTS_NAME,
)

logger = logging.getLogger(__name__)

TRAINER_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
_NEWEST = ("true", "last", "latest")


def resolve_resume_checkpoint(
    resume: str | bool | None,
    output_dir: str | Path,
    *,
    flag: str = "--resume_from_checkpoint",
    pattern: re.Pattern[str] = TRAINER_CHECKPOINT,
) -> str | None:
    """The checkpoint to resume from: ``resume`` itself when it is a path, or the newest complete checkpoint of
    ``output_dir`` for ``true``/``last``/``latest``; None for ``false``/``none``/unset.

    The newest one is searched for, not required, so a killed job restarts with the command line it was started
    with, also when it was killed while saving, and starts fresh (with a warning) when there is no checkpoint yet.
    ``pattern`` matches a checkpoint's name and captures its step (default: the Trainer's ``checkpoint-N``).
    """
    if resume is None or str(resume).lower() in ("false", "none", ""):
        return None
    if str(resume).lower() in _NEWEST:
        newest = newest_checkpoint(output_dir, pattern)
        if newest is None:
            logger.warning("no checkpoint in %s to resume from; starting from scratch", output_dir)
        return None if newest is None else str(newest)
    if not Path(resume).exists():
        raise FileNotFoundError(f"{flag}: no checkpoint at {resume!r}")
    return str(resume)


def newest_checkpoint(output_dir: str | Path, pattern: re.Pattern[str] = TRAINER_CHECKPOINT) -> Path | None:
    """The complete checkpoint with the highest step in ``output_dir`` whose name matches ``pattern``, or None.

    A folder is complete once its ``trainer_state.json`` (the Trainer writes it last) reads; a file is complete by
    being there (write it to another name and rename it). transformers' `get_last_checkpoint` would return a
    folder cut while saving.
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = sorted((int(m.group(1)), p) for p in output_dir.iterdir() if (m := pattern.match(p.name)))
    complete = [p for _, p in found if p.is_file() or _readable_json(p / TRAINER_STATE_NAME)]
    if found and (not complete or found[-1][1] != complete[-1]):
        logger.warning("skipping incomplete checkpoint %s (the job stopped while saving it)", found[-1][1])
    return complete[-1] if complete else None


def _readable_json(path: Path) -> bool:
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


def adapter_base(path: str | Path) -> str | None:
    """The base model named by the PEFT adapter saved in folder ``path``; None when ``path`` holds no adapter (or a
    whole model beside one)."""
    path = Path(path).expanduser()
    if not (path / ADAPTER_CONFIG_NAME).is_file() or (path / CONFIG_NAME).is_file():
        return None
    base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
    if not base:
        raise ValueError(
            f"{path / ADAPTER_CONFIG_NAME} names no base_model_name_or_path; merge the adapter or fix its config"
        )
    return base


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
