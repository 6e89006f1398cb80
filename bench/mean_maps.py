"""Where a checkpoint's maps put their mass on average, by image-token row, next to where the evidence lies.

    python bench/mean_maps.py --model outputs/sft-tiny --data outputs/data --rows 100

Each map (flow and direct, SPEC's all-layer tracer) over the answer tokens of a greedy completion is normalised to
sum 1 on its token grid and averaged over the rows that have one; the evidence boxes are rasterised on the same grid
(each row's boxes sum to 1). A map that credits the first image tokens in sequence order whatever the image shows
(an attention-sink pattern) has a top row heavier than the evidence's. Prints the mass per grid row.
"""

from __future__ import annotations

import argparse
import math

import datasets
import numpy as np
from trl import ModelConfig

from evaluation import EvalArguments
from evaluation.generation import trace_completions
from saliency import SpecialTokens
from vlm import load_model_and_processor


def box_mass(boxes: list[list[float]], rows: int, cols: int) -> np.ndarray:
    """Normalised ``[x0, y0, x1, y1]`` boxes as a ``rows x cols`` mask that sums to 1 (each touched cell counts)."""
    mask = np.zeros((rows, cols))
    for x0, y0, x1, y1 in boxes:
        r0, c0 = int(y0 * rows), int(x0 * cols)
        mask[r0 : max(math.ceil(y1 * rows), r0 + 1), c0 : max(math.ceil(x1 * cols), c0 + 1)] = 1
    return mask / mask.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--pixels", type=int, default=168 * 168)
    args = parser.parse_args()

    rows = datasets.load_from_disk(args.data)[args.split].select(range(args.rows))
    model_args = ModelConfig(model_name_or_path=args.model, dtype="float32", attn_implementation="sdpa")
    model, processor = load_model_and_processor(model_args, min_pixels=args.pixels, max_pixels=args.pixels)
    tracer = EvalArguments(dataset_name=args.data).make_tracer(model, SpecialTokens.from_tokenizer(processor))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for traced in trace_completions(tracer, processor, rows, batch_size=16, max_new_tokens=96):
        if not traced.maps.has_map:
            continue
        for kind in ("flow", "direct"):
            grid = traced.maps.answer_map(kind)[0].grid.float().numpy()
            if grid.sum() > 0:  # an empty map has no distribution to average
                sums[kind] = sums.get(kind, 0) + grid / grid.sum()
                counts[kind] = counts.get(kind, 0) + 1
        sums["evidence"] = sums.get("evidence", 0) + box_mass(rows[traced.index]["bbox"], *grid.shape)
        counts["evidence"] = counts.get("evidence", 0) + 1
    print(f"mass per image-token row, top to bottom (uniform: {1 / grid.shape[0]:.3f})")
    for name, total in sums.items():
        print(f"{name:9s}", " ".join(f"{v:.3f}" for v in (total / counts[name]).sum(axis=1)), f"({counts[name]} rows)")


if __name__ == "__main__":
    main()
