"""The tracer benchmark's pieces: its published-approach reference agrees with the tracer, and measure() counts."""

import importlib.util
from pathlib import Path

import pytest
import torch

SPEC = importlib.util.spec_from_file_location(
    "tracer_bench", Path(__file__).resolve().parents[1] / "bench" / "tracer_bench.py"
)
tracer_bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tracer_bench)

SMALL = [
    "--hidden_size",
    "64",
    "--num_layers",
    "2",
    "--vocab_size",
    "512",
    "--think_tokens",
    "3",
    "--answer_tokens",
    "2",
]


@pytest.fixture(scope="module")
def model_and_inputs():
    args = tracer_bench.parse_args(SMALL)
    model = tracer_bench.build_model(args)
    return model, tracer_bench.build_inputs(model, 512, args)


def test_the_published_approach_gives_the_tracers_maps(model_and_inputs):
    model, inputs = model_and_inputs
    assert inputs["prompt"].shape == (1, 512) and int(inputs["prompt"].eq(tracer_bench.IDS.image).sum()) == 256
    assert tracer_bench.check_agreement(model, inputs) < 1e-5


def test_plain_and_traced_generation_emit_the_script(model_and_inputs):
    model, inputs = model_and_inputs
    plain = tracer_bench.plain_generate(model, inputs)
    traced = tracer_bench.traced_generate(model, inputs)  # raises if the script was not followed
    assert torch.equal(plain, traced.sequences)


def test_measure_reports_time_and_the_memory_a_call_holds():
    # Two calls that hold 64 and 128 MiB (touched): the process's own overhead cancels in their difference.
    small = tracer_bench.measure(lambda: torch.ones(64 * 2**20 // 4))
    large = tracer_bench.measure(lambda: torch.ones(128 * 2**20 // 4))
    assert small["seconds"] >= 0 and small["wall_seconds"] > 0
    assert large["extra_peak_mib"] - small["extra_peak_mib"] == pytest.approx(64, rel=0.1)


def test_lengths_must_be_whole_blocks_of_images_and_text():
    with pytest.raises(SystemExit):
        tracer_bench.parse_args(["--lengths", "700"])
