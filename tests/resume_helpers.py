"""Shared by the resume tests: kill a training job after a checkpoint, and compare its trajectory with a clean run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]


def kill_after_checkpoint(command: list[str], out: Path, step: int, timeout: float = 400) -> int:
    """Start ``command``, SIGKILL its process group once ``checkpoint-<step>`` is complete; return the newest
    complete checkpoint's step (the job may have gone on a little before the kill)."""
    process = subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + timeout
    while not (out / f"checkpoint-{step}" / "trainer_state.json").is_file():
        assert process.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    steps = []
    for state in out.glob("checkpoint-*/trainer_state.json"):
        try:
            steps.append(json.loads(state.read_text())["global_step"])
        except ValueError:  # killed while writing it
            continue
    return max(steps)


def logged(trainer_state: Path, key: str) -> dict[int, float]:
    """``key`` as logged per step in a ``trainer_state.json``."""
    history = json.loads(trainer_state.read_text())["log_history"]
    return {entry["step"]: float(entry[key]) for entry in history if key in entry}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The saved tensors of a model or adapter folder."""
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").is_file() else "model.safetensors"
    return load_file(str(folder / name))


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=atol, rtol=0.0, msg=key)
