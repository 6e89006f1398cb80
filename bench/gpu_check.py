"""One prepared GPU check (issue 20 item 5): on a CUDA machine, in about 10 minutes, one summary table of

- the tracer's exactness tests on CUDA (tests/test_saliency_exactness.py, tests/test_saliency_attention_kernels.py,
  run by pytest with this module as a plugin that puts their tiny models and inputs on CUDA, see `pytest_configure`);
- the quick start (launch/pipeline.py) with its cold start and GRPO on the GPU under SDPA, from GPU copies of the
  tiny SFT and GRPO recipes (the evaluation, export and predictor stages run where their launchers put them: the
  evaluation and export load the model on the CPU);
- the GRPO-overhead benchmark (bench/grpo_overhead.py --device cuda) on the quick start's cold start;
- the quick start's GRPO and the stages after it again with GRPO under flash-attention-2 (bf16), from the same
  cold start, if flash_attn imports;
- the tracer benchmark (bench/tracer_bench.py; it measures CPU time and memory, so it runs on the machine's CPU).

    python bench/gpu_check.py                                   # every step; exits 1 if one fails
    python bench/gpu_check.py --dry_run                         # print the exact commands (and write the recipe
                                                                # copies they name), run nothing
    python bench/gpu_check.py --dry_run --run_cpu_subset        # ... and run a tiny subset of them on the CPU

Without CUDA (and without --dry_run) it says so and exits 2. Each step gets what is left of `--budget_s`, capped
by its own time limit; a step the budget no longer covers is skipped and named in the table.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
DEVICE_ENV = "GPU_CHECK_DEVICE"
EXACTNESS_TESTS = ["tests/test_saliency_exactness.py", "tests/test_saliency_attention_kernels.py"]
TRACER_BENCH = ["--lengths", "512", "2048", "--repeats", "1", "--threads", "4"]
TRACER_BENCH_CPU = [
    "--lengths",
    "512",
    "--repeats",
    "1",
    "--hidden_size",
    "64",
    "--num_layers",
    "1",
    "--vocab_size",
    "1024",
]
REFERENCE_HELPERS = ("tiny_vlm", "vision_inputs", "prompt_batch", "text_inputs", "right_pad")


def pytest_configure(config: object) -> None:
    """pytest plugin hook (`-p gpu_check` with bench/ on PYTHONPATH). With `$GPU_CHECK_DEVICE` set, the tracer
    tests' tiny models and inputs (the helpers `REFERENCE_HELPERS` of tests/saliency_reference.py) are moved to that
    device, and the brute-force reference's scores (`saliency.reference.reference_scores`) come back to the CPU,
    where the tracer returns its maps. The tests themselves run unchanged."""
    device = os.environ.get(DEVICE_ENV)
    if not device:
        return
    sys.path.insert(0, str(REPO / "tests"))
    import saliency_reference

    import saliency.reference

    for name in REFERENCE_HELPERS:
        setattr(saliency_reference, name, _moved(getattr(saliency_reference, name), device))
    saliency.reference.reference_scores = _moved(saliency.reference.reference_scores, "cpu")


def _moved(function: Callable, device: str) -> Callable:
    """`function` whose tensors and modules (also inside tuples, lists and dicts) are returned on `device`."""

    def to(value: Any) -> Any:
        if hasattr(value, "to") and callable(value.to) and not isinstance(value, type):
            return value.to(device)
        if isinstance(value, dict):
            return {key: to(item) for key, item in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(to(item) for item in value)
        return value

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return to(function(*args, **kwargs))

    return wrapper


@dataclass
class Step:
    """One command of the check, the time it may take and how its result reads in the table."""

    name: str
    command: list[str]
    limit_s: int
    result: Callable[[str], str]
    env: dict[str, str] = field(default_factory=dict)
    links: dict[Path, Path] = field(default_factory=dict)  # symbolic link -> what it points to, made first

    def shell(self) -> str:
        """The step as one shell line (links, environment, command)."""
        parts = [
            f"mkdir -p {shlex.quote(str(link.parent))} && ln -sfn {shlex.quote(str(target))} {shlex.quote(str(link))}"
            for link, target in self.links.items()
        ]
        env = " ".join(f"{name}={shlex.quote(value)}" for name, value in self.env.items())
        parts.append((env + " " if env else "") + shlex.join(self.command))
        return " && ".join(parts)


def write_recipes(out: Path, attention: str, sft_max_steps: int | None) -> dict[str, Path]:
    """GPU copies of the quick start's SFT and GRPO recipes under `out`: `use_cpu` off, GRPO under `attention` (in
    bf16 for flash-attention-2, which has no float32 kernel). The SFT recipe keeps eager attention, which its
    attention-grounding loss reads; the evaluation and export keep their recipes (SDPA): their launchers load the
    model on the CPU."""
    out.mkdir(parents=True, exist_ok=True)
    flash = attention == "flash_attention_2"
    changes = {
        "sft": ("configs/sft/tiny_cpu.yaml", {"use_cpu": False}),
        "grpo": (
            "configs/grpo/tiny_cpu.yaml",
            {"use_cpu": False, "attn_implementation": attention}
            | ({"dtype": "bfloat16", "bf16": True} if flash else {}),
        ),
    }
    if sft_max_steps is not None:
        changes["sft"][1]["max_steps"] = sft_max_steps
    paths = {}
    for stage, (source, values) in changes.items():
        recipe = yaml.safe_load((REPO / source).read_text()) | values
        paths[stage] = out / f"{stage}.yaml"
        paths[stage].write_text(yaml.safe_dump(recipe, sort_keys=False))
    return paths


def count_result(output: str) -> str:
    """pytest's closing count line, e.g. '57 passed, 2 skipped in 41.0s'."""
    lines = [line.strip("= ") for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    return lines[-1] if lines else "no pytest summary"


def eval_result(root: Path) -> Callable[[str], str]:
    """The quick start's held-out numbers from `<root>/eval/metrics.json`."""

    def read(_: str) -> str:
        path = root / "eval" / "metrics.json"
        if not path.is_file():
            return f"no {path}"
        summary = json.loads(path.read_text())["summary"]
        numbers = {key: summary[key]["mean"] for key in ("accuracy", "flow/pg", "flow/energy_pg")}
        return f"{summary['n']} rows: " + ", ".join(f"{key} {value:.3f}" for key, value in numbers.items())

    return read


def overhead_result(output: str) -> str:
    """bench/grpo_overhead.py's ratio of the median step with the saliency reward to the one without."""
    for line in output.splitlines():
        if line.startswith("| with saliency reward |"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            return f"step {cells[2]} s, {cells[3]}x the step without tracing; tracer share {cells[5]}"
    return "no result row"


def tracer_result(path: Path) -> Callable[[str], str]:
    """bench/tracer_bench.py's traced / plain CPU-time ratios per prompt length, from its JSON."""

    def read(_: str) -> str:
        if not path.is_file():
            return f"no {path}"
        rows = json.loads(path.read_text())["rows"]
        return "; ".join(
            f"{row['tokens']} tok: generate {row['traced_generate']['seconds'] / row['generate']['seconds']:.2f}x, "
            f"score {row['traced_score']['seconds'] / row['score']['seconds']:.2f}x"
            for row in rows
        )

    return read


def steps(out: Path, *, device: str, sft_max_steps: int | None, flash: bool) -> list[Step]:
    """The check's steps in order (`device`: where the exactness tests and the GRPO benchmark run)."""
    python = sys.executable
    sdpa, fa2 = out / "quickstart-sdpa", out / "quickstart-flash_attention_2"

    def pipeline(root: Path, attention: str) -> list[str]:
        recipes = write_recipes(out / "recipes" / attention, attention, sft_max_steps)
        configs = [part for stage, path in recipes.items() for part in (f"--{stage}_config", str(path))]
        return [python, "launch/pipeline.py", "--output_root", str(root), *configs]

    table = [
        Step(
            "tracer exactness tests (pytest)",
            [python, "-m", "pytest", "-q", "-p", "gpu_check", "-p", "no:cacheprovider", *EXACTNESS_TESTS],
            240,
            count_result,
            env={DEVICE_ENV: device, "PYTHONPATH": "bench"},
        ),
        Step("quick start, SDPA", pipeline(sdpa, "sdpa"), 360, eval_result(sdpa)),
        Step(
            "GRPO overhead (bench/grpo_overhead.py)",
            [python, "bench/grpo_overhead.py", "--model_name_or_path", str(sdpa / "sft-tiny")]
            + ["--dataset_name", str(sdpa / "data"), "--rounds", "1", "--steps", "3", "--device", device]
            + ["--output", str(out / "grpo_overhead.json")],
            120,
            overhead_result,
        ),
    ]
    if flash:
        links = {fa2 / "data": sdpa / "data", fa2 / "sft-tiny": sdpa / "sft-tiny"}  # GRPO on, from the same start
        table.append(
            Step(
                "quick start, flash-attention-2", pipeline(fa2, "flash_attention_2"), 180, eval_result(fa2), links=links
            )
        )
    tracer_json = out / "tracer_bench.json"
    table.append(
        Step(
            "tracer benchmark (CPU)",
            [python, "bench/tracer_bench.py", *TRACER_BENCH, "--output", str(tracer_json)],
            150,
            tracer_result(tracer_json),
        )
    )
    return table


def cpu_subset(out: Path) -> list[Step]:
    """A tiny CPU version of the check's commands: one exactness test through the device plugin, the tracer
    benchmark at one short length on a small model."""
    exactness, *_, tracer = steps(out, device="cpu", sft_max_steps=None, flash=False)
    exactness.command += ["-k", "test_per_layer_maps_add_up_to_the_all_layer_map"]
    tracer.command = [*tracer.command[:2], *TRACER_BENCH_CPU, "--output", tracer.command[-1]]
    return [exactness, tracer]


def run_step(step: Step, limit_s: float, log: Path) -> tuple[str, float, str]:
    """Run one step within `limit_s` (its whole process group is killed after that), its output to `log`; the
    step's status, seconds and result."""
    for link, target in step.links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink():
            link.unlink()
        link.symlink_to(target.resolve(), target_is_directory=True)
    print(f"[gpu_check] {step.name}: {step.shell()}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log.open("w") as sink:
        process = subprocess.Popen(
            step.command,
            cwd=REPO,
            env={**os.environ, **step.env},
            stdout=subprocess.PIPE,
            stderr=sink,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=limit_s)
            status = "ok" if process.returncode == 0 else f"failed (exit {process.returncode}, see {log})"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            status = f"timeout ({limit_s:.0f} s, see {log})"
        sink.write(output)
    return status, time.perf_counter() - start, step.result(output)


def summary_table(rows: Sequence[tuple[str, str, float, str]]) -> str:
    """The results as one Markdown table."""
    lines = ["| step | status | seconds | result |", "|---|---|---:|---|"]
    lines += [f"| {name} | {status} | {seconds:.0f} | {result} |" for name, status, seconds, result in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/gpu_check"), help="Where every step writes.")
    parser.add_argument("--budget_s", type=float, default=600, help="Seconds the whole check may take.")
    parser.add_argument(
        "--sft_max_steps", type=int, default=None, help="Cut the quick start's cold start (recipe's 1000 when unset)."
    )
    parser.add_argument("--dry_run", action="store_true", help="Print the exact commands instead of running them.")
    parser.add_argument(
        "--run_cpu_subset",
        action="store_true",
        help="With --dry_run: also run a tiny CPU subset of the commands (one exactness test through the device "
        "plugin, the tracer benchmark on a small model).",
    )
    args = parser.parse_args(argv)
    if args.run_cpu_subset and not args.dry_run:
        parser.error("--run_cpu_subset goes with --dry_run")
    if args.budget_s <= 0 or (args.sft_max_steps is not None and args.sft_max_steps < 1):
        parser.error("--budget_s must be > 0 and --sft_max_steps >= 1")
    out = args.output_dir.resolve()
    flash = importlib.util.find_spec("flash_attn") is not None
    if args.dry_run:
        for step in steps(out, device="cuda", sft_max_steps=args.sft_max_steps, flash=True):
            print(f"# {step.name} (at most {step.limit_s} s)\n{step.shell()}")
        print(f"# flash_attn {'imports' if flash else 'is not installed here: that step would be skipped'}")
        if not args.run_cpu_subset:
            return 0
        subset = cpu_subset(out / "cpu_subset")
        rows = [(s.name, *run_step(s, args.budget_s, out / "cpu_subset" / f"{i}.log")) for i, s in enumerate(subset)]
        print(summary_table([(f"{name} [CPU subset]", *rest) for name, *rest in rows]))
        return 0 if all(status == "ok" for _, status, _, _ in rows) else 1

    import torch

    if not torch.cuda.is_available():
        message = (
            "no CUDA device here (torch.cuda.is_available() is False); nothing run. --dry_run prints the commands."
        )
        print(f"gpu_check: {message}", file=sys.stderr)
        return 2
    print(f"[gpu_check] {torch.cuda.get_device_name()}, torch {torch.__version__}, flash_attn: {flash}", flush=True)
    start, rows = time.perf_counter(), []
    for index, step in enumerate(steps(out, device="cuda", sft_max_steps=args.sft_max_steps, flash=flash)):
        left = args.budget_s - (time.perf_counter() - start)
        if left < 30:
            rows.append((step.name, "skipped (budget spent)", 0.0, ""))
            continue
        rows.append((step.name, *run_step(step, min(step.limit_s, left), out / "logs" / f"{index}.log")))
    if not flash:
        rows.append(("quick start, flash-attention-2", "skipped (flash_attn not installed)", 0.0, ""))
    table = summary_table(rows)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    return 0 if all(status == "ok" or "flash_attn" in status for _, status, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
