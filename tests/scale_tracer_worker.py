"""The tracer on a tiny VLM whose parameters DeepSpeed ZeRO-3 partitions over the ranks (worker of test_scale_tracer).

    deepspeed --num_accelerators 2 tests/scale_tracer_worker.py OUT_DIR

Every rank traces the same prompts (a left-padded batch of two samples, three images) in both capture modes and
writes its maps to ``OUT_DIR/rank{R}.pt``; :func:`traced_scores` is also what the test runs in one process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from saliency_reference import (
    END_THINK,
    IDS,
    IM_END,
    THINK,
    TOKENS,
    prompt_batch,
    right_pad,
    scripted_generate_kwargs,
    text_inputs,
    tiny_vlm,
    vision_inputs,
)

from saliency import SaliencyTracer

FAMILY = "qwen2_5_vl"
SAMPLES = [([(2, 3)], [11, 12, 13]), ([(2, 2), (1, 2)], [14, 15, 16, 17, 18])]
COMPLETIONS = [[THINK, 20, 21, 22, END_THINK, 30, 31, IM_END, IDS.eos], [THINK, 23, 24, END_THINK, 32, IM_END]]
# Every parameter, norms and biases included, is partitioned: nothing stays whole by being small.
ZERO3 = {
    "train_micro_batch_size_per_gpu": 1,
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
}


def tiny_model() -> torch.nn.Module:
    """The same random tiny Qwen2.5-VL in every process (seeded)."""
    return tiny_vlm(FAMILY, torch.float32)


def traced_scores(model: torch.nn.Module) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Per capture mode ("score", "generate"), each sample's direct and flow scores (tokens x image positions)."""
    prompt, prompt_mask = prompt_batch(model, FAMILY, SAMPLES)
    vision = {
        **vision_inputs(model, FAMILY, [grid for grids, _ in SAMPLES for grid in grids], torch.float32),
        **text_inputs(FAMILY, prompt),
    }
    tracer = SaliencyTracer(model, TOKENS)
    completion_ids, completion_mask = right_pad(COMPLETIONS)
    scored = tracer.score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    generated = tracer.generate(
        prompt, attention_mask=prompt_mask, **vision, **scripted_generate_kwargs(COMPLETIONS, prompt.shape[1])
    ).maps
    return {
        mode: [{kind: sample.scores[kind] for kind in ("direct", "flow")} for sample in maps]
        for mode, maps in (("score", scored), ("generate", generated))
    }


def main(out_dir: Path) -> None:
    import deepspeed
    from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

    deepspeed.init_distributed(dist_backend="gloo")
    engine, *_ = deepspeed.initialize(model=tiny_model(), config=ZERO3)
    model = engine.module.eval()
    o_proj = model.model.language_model.layers[0].self_attn.o_proj.weight
    partitioned = o_proj.ds_status == ZeroParamStatus.NOT_AVAILABLE and o_proj.numel() == 0
    with torch.no_grad():
        scores = traced_scores(model)
    rank = torch.distributed.get_rank()
    torch.save(
        {"partitioned": partitioned, "world_size": torch.distributed.get_world_size(), "scores": scores},
        out_dir / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(next(a for a in sys.argv[1:] if not a.startswith("--local_rank"))))
