"""Cost of the saliency tracer against plain inference, the published approach and the gradient baselines.

    python bench/tracer_bench.py --lengths 512 1024 2048 4096 8192 --output bench/tracer_results.json

One randomly initialised Qwen2.5-VL of a small-but-real shape (hidden 256, 4 layers, 32k vocabulary, so that a
vocabulary-sized tensor costs what it costs on real models) and, per prompt length, the same inputs for every
method: half image tokens (images of 16 x 16 merged patches, 256 tokens each), half text, and one scripted
completion (``<think>`` + thinking tokens + ``</think>`` + answer + EOS) forced by a logits processor, so
plain and traced generation produce the same tokens and the tracer always has a map to compute.

Methods: (i) ``model.generate`` with and without the tracer; (ii) one scoring forward over prompt + completion,
plain and traced (``SaliencyTracer.score``); (iii) the published approach: eager attention with
``output_attentions=True`` (every layer's full L x L attention) and the per-head decomposition projected through
the lm_head to a vocabulary-sized tensor (heads x image positions x vocabulary per layer); (iv) the
gradient x activation and Integrated Gradients baselines.

Memory: each measurement runs after ``gc.collect()`` and ``malloc_trim`` with the kernel's peak-RSS counter
reset (``/proc/self/clear_refs`` = 5); its extra peak is ``VmHWM`` after the run minus ``VmRSS`` before. It counts
every allocation of the process (torch's CPU allocator returns large blocks to the OS), at page granularity.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForImageTextToText, LogitsProcessor, LogitsProcessorList

from saliency import SaliencyTracer, SpecialTokens, completion_spans
from saliency.baselines import GradientTimesActivation, IntegratedGradients
from saliency.reference import reference_scores
from vlm import TinyTokenIds, tiny_model_config

IDS = TinyTokenIds(vocab_size=32000, pad=0, bos=1, eos=2, image=3, video=4, vision_start=5, vision_end=6)
THINK, END_THINK = 7, 8
TOKENS = SpecialTokens(think_open=THINK, think_close=END_THINK, stop_ids=frozenset({IDS.pad, IDS.eos}))
FIRST_TEXT_ID = 16
IMAGE_GRID = (16, 16)  # merged patches per image: 256 image tokens


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[512, 1024, 2048, 4096, 8192],
        help="Prompt lengths in tokens (multiples of 512: half image tokens, half text).",
    )
    parser.add_argument("--hidden_size", type=int, default=256, help="Text decoder width.")
    parser.add_argument("--num_layers", type=int, default=4, help="Text decoder layers.")
    parser.add_argument("--num_heads", type=int, default=4, help="Query heads.")
    parser.add_argument("--num_kv_heads", type=int, default=2, help="Key/value heads (grouped-query attention).")
    parser.add_argument("--vocab_size", type=int, default=32000, help="Vocabulary size.")
    parser.add_argument("--think_tokens", type=int, default=24, help="Thinking tokens of the scripted completion.")
    parser.add_argument("--answer_tokens", type=int, default=4, help="Answer tokens of the scripted completion.")
    parser.add_argument("--ig_steps", type=int, default=4, help="Integrated Gradients steps (cost is linear in it).")
    parser.add_argument(
        "--published_max_tokens",
        type=int,
        default=4096,
        help="Longest prompt the published approach runs at (its L x L matrices grow quadratically).",
    )
    parser.add_argument(
        "--gradient_max_tokens", type=int, default=8192, help="Longest prompt for the gradient baselines."
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads; 1 keeps CPU-time accounting stable on a shared machine."
    )
    parser.add_argument(
        "--saliency_layers",
        type=int,
        nargs="+",
        default=None,
        help="Decoder layers the traced runs capture and sum (all when unset); the published check uses all.",
    )
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each plain/traced pair (fastest kept).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of weights and inputs.")
    parser.add_argument("--output", default="bench/tracer_results.json", help="Where the JSON results are written.")
    parser.add_argument(
        "--render", default=None, help="Print the tables of a results JSON written before; run nothing."
    )
    args = parser.parse_args(argv)
    bad = [n for n in args.lengths if n < 512 or n % 512]
    if bad:
        parser.error(f"--lengths must be multiples of 512, got {bad}")
    return args


# ------------------------------------------------------------------ memory and time


_LIBC = ctypes.CDLL("libc.so.6") if platform.system() == "Linux" else None


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def measure(run: Callable[[], object]) -> dict:
    """CPU seconds (``seconds``), wall seconds and extra peak resident memory (MiB) of one call of ``run``."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    start, start_cpu = time.perf_counter(), time.process_time()
    result = run()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    peak = _status_kb("VmHWM")
    del result
    return {"seconds": cpu_seconds, "wall_seconds": seconds, "extra_peak_mib": (peak - before) / 1024}


# ------------------------------------------------------------------ model and inputs


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    ids = TinyTokenIds(**{**IDS.__dict__, "vocab_size": args.vocab_size})
    config = tiny_model_config(
        "qwen2_5_vl",
        ids,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        vision_hidden_size=64,
        vision_depth=1,
    )
    torch.manual_seed(args.seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    model.generation_config.pad_token_id = IDS.pad
    model.generation_config.eos_token_id = IDS.eos
    return model


def build_inputs(model, length: int, args: argparse.Namespace) -> dict:
    """Prompt of ``length`` tokens (half image, half text), its vision inputs and the scripted completion."""
    generator = torch.Generator().manual_seed(args.seed + length)
    num_images = length // 2 // (IMAGE_GRID[0] * IMAGE_GRID[1])
    text = lambda n: torch.randint(FIRST_TEXT_ID, args.vocab_size, (n,), generator=generator).tolist()
    ids = [IDS.bos]
    for _ in range(num_images):
        ids += [IDS.vision_start] + [IDS.image] * (IMAGE_GRID[0] * IMAGE_GRID[1]) + [IDS.vision_end]
    ids += text(length - len(ids))
    prompt = torch.tensor([ids])
    vision = model.config.vision_config
    thw = torch.tensor([[1, 2 * IMAGE_GRID[0], 2 * IMAGE_GRID[1]]] * num_images)
    patch = 3 * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(int(thw.prod(-1).sum()), patch, generator=generator)
    completion = [THINK, *text(args.think_tokens), END_THINK, *text(args.answer_tokens), IDS.eos]
    return {
        "prompt": prompt,
        "vision": {"pixel_values": pixels, "image_grid_thw": thw, "mm_token_type_ids": prompt.eq(IDS.image).long()},
        "completion": torch.tensor([completion]),
        "num_images": num_images,
        "layers": args.saliency_layers,
    }


class Scripted(LogitsProcessor):
    """Forces the completion, token by token, whatever the model would say."""

    def __init__(self, script: list[int], prompt_length: int):
        self.script, self.prompt_length = script, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.script[min(step, len(self.script) - 1)]] = 0.0
        return forced


# ------------------------------------------------------------------ the methods


def plain_generate(model, inputs):
    prompt = inputs["prompt"]
    with torch.no_grad():
        return model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            **inputs["vision"],
            do_sample=False,
            max_new_tokens=inputs["completion"].shape[1],
            logits_processor=LogitsProcessorList([Scripted(inputs["completion"][0].tolist(), prompt.shape[1])]),
        )


def traced_generate(model, inputs):
    prompt = inputs["prompt"]
    traced = SaliencyTracer(model, TOKENS, layers=inputs["layers"]).generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        **inputs["vision"],
        do_sample=False,
        max_new_tokens=inputs["completion"].shape[1],
        logits_processor=LogitsProcessorList([Scripted(inputs["completion"][0].tolist(), prompt.shape[1])]),
    )
    if not traced.maps[0].has_map or not torch.equal(traced.sequences[0, prompt.shape[1] :], inputs["completion"][0]):
        raise RuntimeError(f"traced generation did not follow the script: {traced.maps[0].reason}")
    return traced


def _full_sequence(inputs):
    completion = inputs["completion"]
    input_ids = torch.cat([inputs["prompt"], completion], 1)
    vision = dict(inputs["vision"])
    vision["mm_token_type_ids"] = torch.cat([vision["mm_token_type_ids"], torch.zeros_like(completion)], 1)
    return input_ids, vision


def plain_score(model, inputs):
    input_ids, vision = _full_sequence(inputs)
    with torch.no_grad():
        # One logit row, as in the tracer's scoring forward, so that the pair differs by the tracing alone.
        return model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), logits_to_keep=1, **vision).logits


def traced_score(model, inputs):
    return SaliencyTracer(model, TOKENS, layers=inputs["layers"]).score(
        inputs["prompt"], inputs["completion"], **inputs["vision"]
    )


def published_approach(model, inputs) -> dict[str, torch.Tensor]:
    """Direct and flow scores (K, N) the published way: full attention matrices and vocabulary-sized logits.

    The brute-force reference the tests check the tracer against (:func:`saliency.reference.reference_scores`),
    every layer summed.
    """
    input_ids, vision = _full_sequence(inputs)
    spans = completion_spans(inputs["prompt"][0].tolist(), inputs["completion"][0].tolist(), TOKENS)
    (scores,) = reference_scores(
        model, input_ids, torch.ones_like(input_ids), vision, inputs["prompt"].shape[1], [spans]
    )
    return scores


def gradient_baseline(model, inputs):
    return GradientTimesActivation(model, TOKENS).attribute(inputs["prompt"], inputs["completion"], **inputs["vision"])


def integrated_gradients(model, inputs, steps: int):
    return IntegratedGradients(model, TOKENS, steps=steps).attribute(
        inputs["prompt"], inputs["completion"], **inputs["vision"]
    )


# ------------------------------------------------------------------ the sweep


def check_agreement(model, inputs) -> float:
    """Largest difference between the tracer's and the published approach's maps, relative to the map's scale."""
    traced = traced_score(model, {**inputs, "layers": None})[0]  # the published maps sum every layer
    published = published_approach(model, inputs)
    start, end = traced.spans.answer
    worst = 0.0
    for kind in ("direct", "flow"):
        ours, theirs = traced.scores[kind][start:end], published[kind][start:end]
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
    return worst


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = build_model(args)
    results = {
        "command": "python bench/tracer_bench.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_before": os.getloadavg(),
        },
        "model": {
            k: getattr(args, k) for k in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "vocab_size")
        },
        "completion": {"think_tokens": args.think_tokens, "answer_tokens": args.answer_tokens},
        "ig_steps": args.ig_steps,
        "saliency_layers": args.saliency_layers,
        "repeats": args.repeats,
        "rows": [],
    }
    warmup = build_inputs(model, 512, args)
    for method in (plain_generate, traced_generate, plain_score, traced_score, gradient_baseline):
        method(model, warmup)
    results["relative_difference_tracer_vs_published_at_512"] = check_agreement(model, warmup)
    # (name, method, longest prompt, repeats): the plain/traced pairs the targets are about are repeated, interleaved.
    methods: list[tuple[str, Callable, int, int]] = [
        ("generate", plain_generate, 1 << 30, args.repeats),
        ("traced_generate", traced_generate, 1 << 30, args.repeats),
        ("score", plain_score, 1 << 30, args.repeats),
        ("traced_score", traced_score, 1 << 30, args.repeats),
        ("published", published_approach, args.published_max_tokens, 1),
        ("gradient", gradient_baseline, args.gradient_max_tokens, 1),
        (
            "integrated_gradients",
            functools.partial(integrated_gradients, steps=args.ig_steps),
            args.gradient_max_tokens,
            1,
        ),
    ]
    work = [
        (length, name, fn)
        for length in args.lengths
        for repeat in range(args.repeats)
        for name, fn, limit, repeats in methods
        if length <= limit and repeat < repeats
    ]
    runs: dict[int, dict[str, list[dict]]] = {}
    inputs, inputs_length = None, None
    for length, name, fn in tqdm(work, desc="measurements"):
        if length != inputs_length:
            inputs, inputs_length = build_inputs(model, length, args), length
            runs[length] = {}
            results["rows"].append(
                {
                    "tokens": length,
                    "images": inputs["num_images"],
                    "image_tokens": int(inputs["prompt"].eq(IDS.image).sum()),
                }
            )
        run = measure(functools.partial(fn, model, inputs))
        runs[length].setdefault(name, []).append(run)
        tqdm.write(
            f"{length:>6} {name:<22} {run['seconds']:8.2f} s cpu {run['wall_seconds']:8.2f} s wall {run['extra_peak_mib']:9.1f} MiB"
        )
    for row in results["rows"]:
        for name, measured in runs[row["tokens"]].items():
            # The fastest run is the least disturbed by other processes; memory is the median.
            row[name] = {
                "seconds": min(m["seconds"] for m in measured),
                "wall_seconds": min(m["wall_seconds"] for m in measured),
                "extra_peak_mib": statistics.median(m["extra_peak_mib"] for m in measured),
                "runs": measured,
            }
    results["machine"]["load_average_after"] = os.getloadavg()
    return results


METHODS = ("generate", "traced_generate", "score", "traced_score", "published", "gradient", "integrated_gradients")


def _paired_overhead(row: dict, traced: str, plain: str) -> float | None:
    """Median over repeats of (traced - plain) extra peak MiB, runs paired in the order they were interleaved."""
    if traced not in row or plain not in row:
        return None
    return statistics.median(
        t["extra_peak_mib"] - p["extra_peak_mib"] for t, p in zip(row[traced]["runs"], row[plain]["runs"])
    )


def markdown(results: dict) -> str:
    """The results as two Markdown tables: CPU time, then extra peak memory."""

    def fmt(value, spec=".2f", suffix=""):
        return "n/a" if value is None else f"{value:{spec}}{suffix}"

    def ratio(a, b):
        return None if a is None or b is None or b == 0 else a / b

    lines = [
        "CPU time (seconds of this process, all threads; fastest of the repeats; ratios against the plain run beside it)",
        "",
        (
            "| tokens | images | generate | traced generate | score forward | traced score | published | "
            f"published / traced score | gradient | IG ({results['ig_steps']} steps) |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        t = {name: row[name]["seconds"] if name in row else None for name in METHODS}
        lines.append(
            f"| {row['tokens']} | {row['images']} | {fmt(t['generate'])} | {fmt(t['traced_generate'])} "
            f"({fmt(ratio(t['traced_generate'], t['generate']), '.2f', 'x')}) | {fmt(t['score'])} | "
            f"{fmt(t['traced_score'])} ({fmt(ratio(t['traced_score'], t['score']), '.2f', 'x')}) | "
            f"{fmt(t['published'])} | {fmt(ratio(t['published'], t['traced_score']), '.1f', 'x')} | "
            f"{fmt(t['gradient'])} | {fmt(t['integrated_gradients'])} |"
        )
    lines += [
        "",
        (
            "Extra peak memory (MiB above the resident set before the call, median of the repeats; tracing overhead: "
            "median of the paired differences traced - plain; noise: max - min of the plain scoring forward's repeats)"
        ),
        "",
        (
            "| tokens | generate | traced generate | tracing overhead (gen) | score forward | traced score | "
            "tracing overhead (score) | noise | published | published overhead | published / tracing overhead "
            "(tracing floored at 1 MiB) | gradient | IG |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        m = {name: row[name]["extra_peak_mib"] if name in row else None for name in METHODS}
        generation = _paired_overhead(row, "traced_generate", "generate")
        scoring = _paired_overhead(row, "traced_score", "score")
        published = None if m["published"] is None else m["published"] - m["score"]
        noise = [r["extra_peak_mib"] for r in row["score"]["runs"]]
        lines.append(
            f"| {row['tokens']} | {fmt(m['generate'], '.0f')} | {fmt(m['traced_generate'], '.0f')} | "
            f"{fmt(generation, '.1f')} | {fmt(m['score'], '.0f')} | {fmt(m['traced_score'], '.0f')} | "
            f"{fmt(scoring, '.1f')} | {max(noise) - min(noise):.1f} | {fmt(m['published'], '.0f')} | {fmt(published, '.0f')} | "
            f"{fmt(ratio(published, max(scoring or 0.0, 1.0)), '.0f', 'x')} | "
            f"{fmt(m['gradient'], '.0f')} | {fmt(m['integrated_gradients'], '.0f')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.render:
        results = json.loads(Path(args.render).read_text())
    else:
        results = run(args)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))
    print(markdown(results))
    print(
        f"\nmax relative difference tracer vs published maps (512 tokens): "
        f"{results['relative_difference_tracer_vs_published_at_512']:.2e}"
    )
    return results


if __name__ == "__main__":
    main()
