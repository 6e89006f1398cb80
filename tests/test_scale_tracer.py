"""The tracer under DeepSpeed ZeRO-3: with o_proj, final-norm and lm_head weights partitioned over two processes,
its maps (scoring forward and generate capture) equal the maps of the same model in one process."""

from __future__ import annotations

import pytest
import torch
from scale_helpers import deepspeed_command, run
from scale_tracer_worker import tiny_model, traced_scores

pytestmark = pytest.mark.slow


def test_maps_under_zero3_equal_single_process_maps(tmp_path):
    out = tmp_path / "maps"
    out.mkdir()
    run(deepspeed_command(2, "tests/scale_tracer_worker.py", str(out)), tmp_path)
    with torch.no_grad():
        expected = traced_scores(tiny_model())
    for rank in (0, 1):
        got = torch.load(out / f"rank{rank}.pt")
        assert got["world_size"] == 2
        assert got["partitioned"], "o_proj was whole outside the tracer: the test would not exercise the gather"
        for mode, samples in expected.items():
            assert len(got["scores"][mode]) == len(samples) == 2
            for want, have in zip(samples, got["scores"][mode]):
                for kind in ("direct", "flow"):
                    assert want[kind].abs().max() > 0
                    torch.testing.assert_close(have[kind], want[kind], rtol=1e-5, atol=1e-6)
