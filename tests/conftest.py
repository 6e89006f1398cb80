"""Fixtures shared by the stage tests: the embedded tiny model and a small synthetic data set, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded default: a tiny random Qwen2.5-VL with its locally trained tokenizer and processor."""
    from vlm import build_tiny_vlm

    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-qwen2_5_vl"), family="qwen2_5_vl", seed=0)


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic grounded-reasoning DatasetDict (sft, rl, eval splits) saved with `save_to_disk`."""
    from data_tools import generate_synthetic

    path = tmp_path_factory.mktemp("synthetic") / "data"
    generate_synthetic(num_sft=32, num_rl=16, num_eval=8, seed=0).save_to_disk(str(path))
    return path
