"""The tracer's extra memory and time at the hub models' real widths (``vlm.real_shapes``), on one real-size image.

    python bench/real_shapes.py --models qwen2_vl_2b qwen2_5_vl_7b --output bench/real_shapes.json

Per model, one at a time (built, measured, freed): the real widths, heads, vocabulary and vision tower cut to
``--num_layers`` decoder layers and ``--vision_depth`` vision blocks with random weights, the hub image processor
with the recipes' ``max_pixels`` (262144), and a ``--width`` x ``--height`` image (default 1024 x 768) under a
short question, followed by a ``<think>`` completion and its answer. Two calls on the same inputs: a plain scoring
forward (``logits_to_keep=1``, as the tracer runs it) and ``SaliencyTracer.score``. Memory as in
``bench/tracer_bench.py``: the kernel's peak RSS during the call above the RSS before it (``malloc_trim`` first),
median over ``--repeats``; time is CPU seconds, the fastest repeat.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
from pathlib import Path

import torch
from tracer_bench import measure

from saliency import SaliencyTracer, SpecialTokens
from vlm.real_shapes import REAL_SHAPES, build_real_shape, example_inputs


def bench_model(name: str, args: argparse.Namespace) -> dict:
    """Plain and traced scoring forward of model ``name``: CPU seconds and extra peak MiB of each."""
    model, processor = build_real_shape(name, num_layers=args.num_layers, vision_depth=args.vision_depth)
    prompt, prompt_mask, completion, vision = example_inputs(processor, (args.width, args.height))
    ids = torch.cat([prompt, completion], 1)
    plain_inputs = {**vision, "input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if "mm_token_type_ids" in vision:
        plain_inputs["mm_token_type_ids"] = torch.cat([vision["mm_token_type_ids"], torch.zeros_like(completion)], 1)
    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))

    def plain() -> object:
        with torch.no_grad():
            return model(**plain_inputs, logits_to_keep=1)

    def traced() -> object:
        maps = tracer.score(prompt, completion, prompt_mask, **vision)
        assert maps[0].has_map, maps[0].reason
        return maps

    runs = {"plain": [], "traced": []}
    for _ in range(args.repeats):
        for method, run in (("plain", plain), ("traced", traced)):
            runs[method].append(measure(run))
    image_tokens = int(prompt.eq(model.config.image_token_id).sum())
    result = {
        "model": name,
        "hub": REAL_SHAPES[name].hub,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "sequence": ids.shape[1],
        "image_tokens": image_tokens,
        **{
            f"{method}_{key}": (min if key == "seconds" else statistics.median)(r[key] for r in measured)
            for method, measured in runs.items()
            for key in ("seconds", "extra_peak_mib")
        },
    }
    return result


def markdown(results: list[dict], args: argparse.Namespace) -> str:
    """The results as a Markdown table."""
    header = (
        f"{args.num_layers} decoder layer(s), {args.vision_depth} vision blocks, float32, {args.width} x {args.height} "
        f"image, max_pixels 262144; extra peak MiB above the RSS before the call, median of {args.repeats}."
    )
    lines = [
        header,
        "",
        "| model | params (M) | tokens (image) | plain forward s / MiB | traced s / MiB | tracer extra MiB |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['hub']} | {r['parameters_m']:.0f} | {r['sequence']} ({r['image_tokens']}) | "
            f"{r['plain_seconds']:.1f} / {r['plain_extra_peak_mib']:.0f} | "
            f"{r['traced_seconds']:.1f} / {r['traced_extra_peak_mib']:.0f} | "
            f"{r['traced_extra_peak_mib'] - r['plain_extra_peak_mib']:+.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Parse the flags, measure each model in turn, print the table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(REAL_SHAPES), choices=list(REAL_SHAPES))
    parser.add_argument("--num_layers", type=int, default=1)
    parser.add_argument("--vision_depth", type=int, default=2)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="JSON file the results are written to.")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    results = []
    for name in args.models:
        results.append(bench_model(name, args))
        gc.collect()  # the model is freed before the next one is built
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(markdown(results, args))
    return results


if __name__ == "__main__":
    main()
