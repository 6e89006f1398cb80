"""How fast the tiny model learns to read the image, by the std its weights start at, side by side in one process.

    python bench/tiny_init.py --steps 600 --inits 0.02 width

Each init builds the tiny Qwen2.5-VL (same seed, same tokenizer) and trains it on the same batches of synthetic
cold-start rows (loss on the assistant turn, AdamW). Every `--eval_every` steps it measures, on held-out rows
with teacher forcing, the accuracy of the token where the reasoning reads the answer from the image, the last
time the answer word appears before `</think>` ("... It is red.", "... It is a green diamond."), per question
type. For `count` that token ("... so the count is 2.") follows the listed shapes, so it mostly measures counting
the list. The other assistant tokens are reported apart (`template`). `width` stands for 1/sqrt(width) of each
tower (`python -m vlm.build_tiny --initializer_range width`). Prints a markdown table and writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from trl import ModelConfig

from data_tools.synthetic import QUESTION_TYPES, SyntheticConfig, corpus_texts, generate_split
from vlm import build_tiny_vlm, load_model_and_processor

KINDS = (*QUESTION_TYPES, "template")


class Batches:
    """Tokenised rows: inputs, labels on the assistant turn, and the kind of each label (question type at the
    answer's first position in the reasoning, ``template`` elsewhere)."""

    def __init__(self, processor, rows) -> None:
        self.processor, self.rows = processor, rows
        self.start = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.close = processor.tokenizer.convert_tokens_to_ids("</think>")

    def __call__(self, indices: list[int]) -> tuple[dict, torch.Tensor, torch.Tensor]:
        rows = [self.rows[i] for i in indices]
        texts = [self.processor.apply_chat_template(r["messages"], tokenize=False) for r in rows]
        inputs = self.processor(text=texts, images=[r["images"] for r in rows], return_tensors="pt", padding=True)
        labels = torch.full_like(inputs["input_ids"], -100)
        kinds = torch.full_like(labels, -1)
        tokenizer = self.processor.tokenizer
        for i, ids in enumerate(inputs["input_ids"].tolist()):
            first = max(j for j, t in enumerate(ids) if t == self.start) + 2  # after "<|im_start|>assistant\n"
            end = int(inputs["attention_mask"][i].sum())
            labels[i, first:end] = torch.tensor(ids[first:end])
            kinds[i, first:end] = KINDS.index("template")
            answer = rows[i]["messages"][-1]["content"][0]["text"].split("</think>")[-1]
            answer_id = tokenizer.encode(" " + answer, add_special_tokens=False)[0]
            close = next(j for j in range(first, end) if ids[j] == self.close)
            read = max(j for j in range(first, close) if ids[j] == answer_id)
            kinds[i, read] = KINDS.index(rows[i]["dataset"].split("/")[-1])
        return inputs, labels, kinds


@torch.no_grad()
def slot_accuracy(model, batches: list[tuple[dict, torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    hits, totals = torch.zeros(len(KINDS)), torch.zeros(len(KINDS))
    for inputs, labels, kinds in batches:
        predicted = model(**inputs).logits[:, :-1].argmax(-1)
        labels, kinds = labels[:, 1:], kinds[:, 1:]
        for k in range(len(KINDS)):
            mask = (labels != -100) & (kinds == k)
            hits[k] += (predicted[mask] == labels[mask]).sum()
            totals[k] += mask.sum()
    model.train()
    return {kind: round((hits[k] / totals[k].clamp(min=1)).item(), 3) for k, kind in enumerate(KINDS)}


def run(init: str, args: argparse.Namespace, train, held_out, out_dir: Path) -> list[dict]:
    std = init if init == "width" else float(init)
    path = build_tiny_vlm(out_dir / f"init-{init}", seed=args.seed, texts=list(corpus_texts()), initializer_range=std)
    pixels = SyntheticConfig().width * SyntheticConfig().height
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(path), dtype="float32"),
        for_training=True,
        min_pixels=pixels,
        max_pixels=pixels,
    )
    make = Batches(processor, train)
    evaluation = [
        Batches(processor, held_out)(list(range(i, min(i + 32, len(held_out))))) for i in range(0, len(held_out), 32)
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=0.0)
    order = random.Random(args.seed)
    curve, start = [], time.perf_counter()
    for step in range(args.steps + 1):
        if step % args.eval_every == 0:
            curve.append({"init": init, "step": step, **slot_accuracy(model, evaluation)})
            print(curve[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
        if step == args.steps:
            break
        inputs, labels, _ = make(order.sample(range(len(train)), args.batch_size))
        model(**inputs, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return curve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inits", nargs="+", default=["0.02", "width"], help="Init stds; `width` = 1/sqrt(width).")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval_every", type=int, default=200)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_train", type=int, default=4000)
    parser.add_argument("--num_held_out", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("bench/tiny_init.json"))
    args = parser.parse_args(argv)
    train = generate_split("sft", args.num_train, args.seed)
    held_out = generate_split("eval", args.num_held_out, args.seed, kind="sft")
    with tempfile.TemporaryDirectory() as out:
        curves = [run(init, args, train, held_out, Path(out)) for init in args.inits]
    args.output.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "curves": curves}, indent=1))
    print("\n| init | step | " + " | ".join(KINDS) + " |\n|---|---|" + "---|" * len(KINDS))
    for curve in curves:
        for point in curve:
            print(f"| {point['init']} | {point['step']} | " + " | ".join(f"{point[k]:.2f}" for k in KINDS) + " |")


if __name__ == "__main__":
    main()
