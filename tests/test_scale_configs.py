"""The accelerate and DeepSpeed configs both stages read, and the exact command lines of the SLURM scripts."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType
from scale_helpers import REPO, slurm_env

ACCELERATE = sorted((REPO / "configs/accelerate").glob("*.yaml"))
DEEPSPEED = sorted((REPO / "configs/deepspeed").glob("*.json"))
RECIPES = sorted((REPO / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.stem)
def test_accelerate_configs_load_and_name_an_existing_deepspeed_config(path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= config.num_machines >= 1
    if config.distributed_type == DistributedType.DEEPSPEED:
        deepspeed_file = REPO / config.deepspeed_config["deepspeed_config_file"]
        assert deepspeed_file in DEEPSPEED
        stage = json.loads(deepspeed_file.read_text())["zero_optimization"]["stage"]
        assert config.deepspeed_config["zero3_init_flag"] == (stage == 3)  # ZeRO-3 partitions at load time
    if config.num_machines > 1:  # one launcher per node (SLURM), no ssh/pdsh between nodes
        assert config.deepspeed_config.get("deepspeed_multinode_launcher") == "standard"


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.stem)
def test_deepspeed_configs_take_batch_and_precision_from_the_trainer(path):
    config = json.loads(path.read_text())
    for key in ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"):
        assert config[key] == "auto", key  # one source of truth: the recipe's TrainingArguments
    assert config["bf16"]["enabled"] == config["fp16"]["enabled"] == "auto"
    zero = config["zero_optimization"]
    assert path.stem.startswith(f"zero{zero['stage']}")
    if zero["stage"] == 3:  # a checkpoint saved on N processes must load in one
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True
    if "offload" in path.stem:
        assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == "cpu"


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipes_name_existing_deepspeed_configs(path):
    deepspeed = (yaml.safe_load(path.read_text()) or {}).get("deepspeed")
    assert deepspeed is None or REPO / deepspeed in DEEPSPEED


def _dry_run(tmp_path, script: str, *args: str, **env: str) -> list[list[str]]:
    """Run an sbatch script on two stand-in nodes with `accelerate`/`deepspeed` stand-ins that record their argv."""
    record = tmp_path / "argv"
    bin_dir = tmp_path / "launchers"
    bin_dir.mkdir()
    for name in ("accelerate", "deepspeed"):
        (bin_dir / name).write_text(f'#!/bin/bash\necho "$(basename "$0") $*" >> {record}.$SLURM_NODEID\n')
        (bin_dir / name).chmod(0o755)
    environment = slurm_env(tmp_path, MASTER_PORT="29555", **env)
    environment["PATH"] = f"{bin_dir}:{environment['PATH']}"
    subprocess.run(["bash", script, *args], cwd=REPO, env=environment, check=True, timeout=60)
    return [(tmp_path / f"argv.{node}").read_text().split() for node in (0, 1)]


def test_sft_sbatch_starts_one_accelerate_launch_per_node_with_slurm_ranks(tmp_path):
    nodes = _dry_run(
        tmp_path, "launch/slurm/sft.sbatch", "--config", "configs/sft/qwen2_5_vl_7b_zero3.yaml", "--seed", "3"
    )
    for rank, argv in enumerate(nodes):
        assert argv == [
            "accelerate", "launch", "--config_file", "configs/accelerate/multi_node_zero3.yaml",
            "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
            "--main_process_ip", "127.0.0.1", "--main_process_port", "29555",
            "launch/sft.py", "--config", "configs/sft/qwen2_5_vl_7b_zero3.yaml", "--seed", "3",
        ]  # fmt: skip


def test_grpo_sbatch_writes_the_hostfile_and_starts_one_deepspeed_launcher_per_node(tmp_path):
    hostfile = tmp_path / "hostfile"
    nodes = _dry_run(tmp_path, "launch/slurm/grpo.sbatch", "--config", "configs/grpo/qwen2_5_vl_7b.yaml",
                     GPUS_PER_NODE="8", HOSTFILE=str(hostfile))  # fmt: skip
    assert hostfile.read_text() == "127.0.0.1 slots=8\nlocalhost slots=8\n"
    for rank, argv in enumerate(nodes):
        assert argv == [
            "deepspeed", "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(rank),
            "--master_addr", "127.0.0.1", "--master_port", "29555",
            "launch/grpo.py", "--config", "configs/grpo/qwen2_5_vl_7b.yaml",
        ]  # fmt: skip
