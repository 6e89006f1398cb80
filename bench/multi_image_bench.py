"""Cost of tracing several images per prompt: extra time and memory against the number of images.

    python bench/multi_image_bench.py --num_images 1 2 4 8 16 --think_tokens 256 --output bench/multi_image_results.json

The model and the measurement are those of ``bench/tracer_bench.py`` (a randomly initialised Qwen2.5-VL of a
small-but-real shape, 32k vocabulary, and its flags such as ``--think_tokens``; peak resident memory from
``VmHWM``, CPU time). Each prompt holds
``--text_tokens`` text tokens and N images of 16 x 16 merged patches (256 image tokens each), then one scripted
completion; a plain scoring forward and a traced one (``SaliencyTracer.score``) run interleaved ``--repeats``
times. The tracing overhead (traced minus plain extra peak, paired runs) and the returned score matrices
(``maps_mib``: completion tokens x image positions) grow with the image tokens N x 256, not with their square.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import statistics
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location("tracer_bench", Path(__file__).resolve().parent / "tracer_bench.py")
tracer_bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tracer_bench)


MODEL_FLAGS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "vocab_size",
    "think_tokens",
    "answer_tokens",
    "seed",
)
"""tracer_bench's flags that shape the model and the completion, recorded with the results."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_images", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="Images per prompt.")
    parser.add_argument("--text_tokens", type=int, default=256, help="Text tokens of the prompt besides the images.")
    parser.add_argument("--repeats", type=int, default=3, help="Interleaved plain/traced pairs (fastest time kept).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: stable CPU-time accounting).")
    parser.add_argument("--output", default="bench/multi_image_results.json", help="Where the JSON results go.")
    args, model_argv = parser.parse_known_args(argv)
    args.model = tracer_bench.parse_args(model_argv + ["--lengths", "512"])  # tracer_bench's model flags
    if min(args.num_images) < 1:
        parser.error("--num_images must be >= 1")
    return args


def build_inputs(model, num_images: int, args: argparse.Namespace) -> dict:
    """A prompt of ``num_images`` images and ``args.text_tokens`` text tokens, as ``tracer_bench.build_inputs``."""
    image_tokens = tracer_bench.IMAGE_GRID[0] * tracer_bench.IMAGE_GRID[1]
    length = 2 * image_tokens * num_images  # half image tokens, as tracer_bench lays them out ...
    inputs = tracer_bench.build_inputs(model, length, args.model)
    prompt = inputs["prompt"][0].tolist()
    end_of_images = max(i for i, token in enumerate(prompt) if token == tracer_bench.IDS.vision_end) + 1
    prompt = torch.tensor([prompt[: end_of_images + args.text_tokens]])  # ... then only --text_tokens of text
    inputs["prompt"] = prompt
    inputs["vision"]["mm_token_type_ids"] = prompt.eq(tracer_bench.IDS.image).long()
    return inputs


def maps_mib(maps) -> float:
    """MiB of the score matrices the tracer returns (what a caller keeps): completion tokens x image positions."""
    return sum(s.numel() * s.element_size() for m in maps for s in m.scores.values()) / 2**20


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = tracer_bench.build_model(args.model)
    rows = []
    for count in args.num_images:
        inputs = build_inputs(model, count, args)
        plain, traced = [], []
        for _ in range(args.repeats):
            plain.append(tracer_bench.measure(functools.partial(tracer_bench.plain_score, model, inputs)))
            traced.append(tracer_bench.measure(functools.partial(tracer_bench.traced_score, model, inputs)))
        maps = tracer_bench.traced_score(model, inputs)
        if not maps[0].has_map or len(maps[0].answer_map()) != count:
            raise RuntimeError(f"the traced forward gave no map of each of the {count} images: {maps[0].reason}")
        row = {
            "num_images": count,
            "image_tokens": int(inputs["prompt"].eq(tracer_bench.IDS.image).sum()),
            "prompt_tokens": inputs["prompt"].shape[1],
            "plain_seconds": min(m["seconds"] for m in plain),
            "traced_seconds": min(m["seconds"] for m in traced),
            "tracing_extra_mib": statistics.median(
                t["extra_peak_mib"] - p["extra_peak_mib"] for t, p in zip(traced, plain)
            ),
            "plain_peak_mib": statistics.median(m["extra_peak_mib"] for m in plain),
            "maps_mib": maps_mib(maps),
        }
        rows.append(row)
        print(
            f"{count:>3} images ({row['image_tokens']:>5} image tokens): plain {row['plain_seconds']:.2f} s, traced "
            f"{row['traced_seconds']:.2f} s; tracing extra peak {row['tracing_extra_mib']:.1f} MiB, "
            f"maps {row['maps_mib']:.2f} MiB",
            flush=True,
        )
    model_flags = {name: getattr(args.model, name) for name in MODEL_FLAGS}
    return {"model": model_flags, "text_tokens": args.text_tokens, "threads": args.threads, "rows": rows}


def markdown(results: dict) -> str:
    lines = [
        "| images | image tokens | plain s | traced s | ratio | tracing extra peak MiB | per 1k image tokens |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['num_images']} | {r['image_tokens']} | {r['plain_seconds']:.2f} | {r['traced_seconds']:.2f} | "
            f"{r['traced_seconds'] / r['plain_seconds']:.2f} | {r['tracing_extra_mib']:.1f} | "
            f"{1000 * r['tracing_extra_mib'] / r['image_tokens']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = run(args)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
