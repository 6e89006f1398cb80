"""bench/gpu_check.py without a GPU: it refuses to run, its dry run prints the exact commands (and the GPU recipe
copies they name), its pytest plugin sets torch's default device, and a step over its limit is killed."""

from __future__ import annotations

import importlib.util
import shlex
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(SPEC)  # its dataclass looks itself up
SPEC.loader.exec_module(gpu_check)
SPEC = importlib.util.spec_from_file_location("tracer_bench", REPO / "bench" / "tracer_bench.py")
tracer_bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tracer_bench)


def test_without_cuda_it_says_so_exits_non_zero_and_runs_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--output_dir", str(tmp_path / "out")]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_dry_run_prints_the_exact_commands_of_every_step(tmp_path, capsys):
    assert gpu_check.main(["--dry_run", "--output_dir", str(tmp_path), "--sft_max_steps", "50"]) == 0
    printed = capsys.readouterr().out
    names = [
        line[2:].rsplit(" (at most", 1)[0] for line in printed.splitlines() if line.startswith("# ") and "(at" in line
    ]
    assert names == [
        "tracer exactness tests (pytest)",
        "quick start, SDPA",
        "GRPO overhead (bench/grpo_overhead.py)",
        "quick start, flash-attention-2",
        "tracer benchmark (CPU)",
    ]
    commands = [line for line in printed.splitlines() if line and not line.startswith("#")]
    exactness, sdpa, overhead, flash, tracer = (shlex.split(c.split(" && ")[-1]) for c in commands)
    assert exactness[:2] == ["GPU_CHECK_DEVICE=cuda", "PYTHONPATH=bench"]
    assert exactness[3:7] == ["-m", "pytest", "-q", "-p"] and exactness[7] == "gpu_check"
    assert all((REPO / test).is_file() for test in gpu_check.EXACTNESS_TESTS)
    assert overhead[overhead.index("--device") + 1] == "cuda"
    assert overhead[overhead.index("--model_name_or_path") + 1] == str(tmp_path / "quickstart-sdpa" / "sft-tiny")
    assert tracer_bench.parse_args(tracer[2:]).lengths == [512, 2048]
    assert "ln -sfn" in commands[3] and str(tmp_path / "quickstart-sdpa" / "sft-tiny") in commands[3]

    for command, attention in ((sdpa, "sdpa"), (flash, "flash_attention_2")):
        assert command[1] == "launch/pipeline.py" and (REPO / command[1]).is_file()
        recipes = {
            flag[2:-7]: yaml.safe_load(Path(path).read_text()) for flag, path in zip(command[4::2], command[5::2])
        }
        assert set(recipes) == {"sft", "grpo"}  # the evaluation and export keep theirs: they run on the CPU
        assert recipes["sft"]["use_cpu"] is False and recipes["grpo"]["use_cpu"] is False
        assert recipes["sft"]["attn_implementation"] == "eager"  # the attention-grounding loss reads the weights
        assert recipes["sft"]["max_steps"] == 50
        assert recipes["grpo"]["attn_implementation"] == attention
        if attention == "flash_attention_2":  # no float32 kernel
            assert recipes["grpo"]["dtype"] == "bfloat16" and recipes["grpo"]["bf16"]


def test_run_cpu_subset_needs_the_dry_run(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--run_cpu_subset"])
    assert "--run_cpu_subset goes with --dry_run" in capsys.readouterr().err


def test_the_pytest_plugin_puts_the_tracer_tests_models_and_inputs_on_the_named_device(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "tests"))
    import saliency_reference

    import saliency.reference

    for name in gpu_check.REFERENCE_HELPERS:  # restored after the test
        monkeypatch.setattr(saliency_reference, name, getattr(saliency_reference, name))

    class Scores:
        def to(self, device: str) -> str:
            return f"moved to {device}"

    monkeypatch.setattr(saliency.reference, "reference_scores", lambda: [{"flow": Scores()}])
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv(gpu_check.DEVICE_ENV, "meta")
    gpu_check.pytest_configure(None)
    ids, mask = saliency_reference.right_pad([[5, 6], [7]])
    assert ids.device.type == mask.device.type == "meta" and ids.shape == (2, 2)
    model = saliency_reference.tiny_vlm("qwen2_5_vl", torch.float32, hidden_size=16, num_layers=1)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert saliency.reference.reference_scores() == [{"flow": "moved to cpu"}]  # where the tracer's maps are


def test_a_step_over_its_limit_is_killed_with_its_children(tmp_path):
    child = "import time; time.sleep(60)"
    script = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); print('up'); time.sleep(60)"
    step = gpu_check.Step("sleeper", [sys.executable, "-c", script], 60, lambda output: output.strip())
    start = time.perf_counter()
    status, seconds, result = gpu_check.run_step(step, 3, tmp_path / "sleeper.log")
    assert status.startswith("timeout (3 s") and seconds < 20 and result == "up"
    assert time.perf_counter() - start < 20
    failing = gpu_check.Step("fails", [sys.executable, "-c", "import sys; sys.exit(3)"], 60, lambda output: "-")
    assert gpu_check.run_step(failing, 30, tmp_path / "fails.log")[0].startswith("failed (exit 3")


@pytest.mark.slow
def test_the_cpu_subset_runs_its_commands(tmp_path, capsys):
    assert gpu_check.main(["--dry_run", "--run_cpu_subset", "--output_dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| tracer exactness tests (pytest) [CPU subset] | ok |" in table and "1 passed" in table
    assert "| tracer benchmark (CPU) [CPU subset] | ok |" in table and "512 tok: generate" in table
