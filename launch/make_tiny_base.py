"""Remake the grounded tiny base model shipped in `vlm/tiny_base/`: build, pre-train, evaluate, write the model card.

    python launch/make_tiny_base.py                                   # the shipped recipe (about an hour on 2 cores)
    python launch/make_tiny_base.py --output_dir my-base --max_steps 50 --num_perception 800   # a quick try

The base stands in for a pretrained VLM (the quick start starts its cold start from it, as users start from
Qwen2.5-VL). Steps, each a command a user could type and each seeded:

1. `python -m vlm.build_tiny` with the base's architecture (Qwen3-VL classes; a vision tower without attention
   blocks, so each image token is computed from its own 28 x 28 pixels and its learned position embedding);
2. `python -m data_tools.synthetic --num_perception N` (its own data seed, disjoint from the quick start's data);
3. `launch/sft.py --config configs/sft/tiny_base.yaml` (short answers: captions, pointing, reading, the scenes'
   questions; no reasoning, no system prompt);
4. short-answer accuracy on held-out scenes (`evaluation.perception`), and the folder written with its model
   card: command, commit, seeds, held-out numbers, size and sha256 of the weights.

Rerunning skips finished steps (the pre-training resumes from its last checkpoint); `--force` starts over.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from launch.pipeline import run

# The architecture chosen side by side (BENCHMARKS.md, "The grounded tiny base model").
ARCHITECTURE = {
    "family": "qwen3_vl",
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "num_kv_heads": 2,
    "vision_hidden_size": 64,
    "vision_depth": 0,
    "vision_patch_size": 14,
}
BASE_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def git_commit() -> str:
    """The commit the recipe ran at, marked ``-dirty`` when tracked files had uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=REPO, check=False).returncode != 0
    return head.stdout.strip() + ("-dirty" if dirty else "")


def evaluate_base(model_dir: Path, num_rows: int, seed: int) -> dict:
    """Short-answer accuracy of the base on ``num_rows`` held-out scenes of the data seed ``seed``."""
    from trl import ModelConfig

    from evaluation.perception import evaluate_short_answers, perception_rows
    from vlm import load_model_and_processor

    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(model_dir), dtype="float32", attn_implementation="sdpa")
    )
    model.eval()
    return evaluate_short_answers(model, processor, perception_rows(num_rows, seed=seed))


def train_minutes(trained: Path) -> float:
    """Minutes the pre-training run took (the Trainer's own ``train_runtime``, summed over resumed runs)."""
    history = json.loads((trained / "trainer_state.json").read_text())["log_history"]
    return sum(entry["train_runtime"] for entry in history if "train_runtime" in entry) / 60


def model_card(args: argparse.Namespace, command: str, results: dict, weights: Path, minutes: float) -> str:
    """The README.md of the base folder: what it is, how it was made, how well it reads held-out scenes."""
    arch = ", ".join(f"{k}={v}" for k, v in ARCHITECTURE.items())
    params = results["parameters"]
    rows = "\n".join(
        f"| {task} | {v['mean']:.3f} ({v['low']:.3f}-{v['high']:.3f}) | {v['n']} | {results['chance'][task]:.3f} |"
        for task, v in results["per_task"].items()
    )
    acc = results["accuracy"]
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [{ARCHITECTURE["family"]}, tiny, synthetic, saliency-r1-toolkit]
---

# Grounded tiny Qwen3-VL base (the toolkit's embedded default)

A {params / 1e6:.2f}M-parameter Qwen3-VL (the transformers classes, no custom code) pre-trained on the toolkit's
synthetic coloured-shape scenes. It stands in for a pretrained VLM: the quick start (`launch/pipeline.py`) runs the
SFT cold start, GRPO with the saliency reward and the evaluation from it. It answers short questions about 168 x 168
scenes; it knows no `<think>` format (the cold start teaches that). Load it like a hub model:
`--model_name_or_path vlm/tiny_base`, or `vlm.load_model_and_processor(ModelConfig(model_name_or_path="vlm/tiny_base"))`.

**Architecture**: {arch}. The vision tower has no attention blocks: 14-px patch embedding plus a learned
position embedding, then the 2 x 2 patch merger, so each of the 6 x 6 image tokens is computed from its own
28 x 28 pixels and a map over image tokens is a map over image regions. Why this one: BENCHMARKS.md, "The grounded
tiny base model".

**Made by** (at commit `{args.commit}`; pre-training took {minutes:.0f} min of training time):

```
{command}
```

Data: `python -m data_tools.synthetic --seed {args.data_seed} --num_perception {args.num_perception}` (split
`perception`: captions, "Where is the red circle?", "What is at the top left?", the scenes' own questions; short
answers, no system prompt). Weights init seed {args.seed}; training seed {args.training_seed}; recipe
`configs/sft/tiny_base.yaml` ({args.max_steps} steps).

**Held-out short answers** ({args.eval_rows} scenes of the `eval` split of data seed {args.data_seed}, never
trained on; greedy; 95% bootstrap intervals): accuracy on the scenes' questions **{acc["mean"]:.3f}**
({acc["low"]:.3f}-{acc["high"]:.3f}).

| task | accuracy | rows | chance |
|---|---|---|---|
{rows}

**Files**: `model.safetensors` {weights.stat().st_size / 1e6:.1f} MB (float32), sha256
`{sha256(weights)}`; tokenizer (byte-level BPE trained on the synthetic corpus, `<think>` and `</think>` single
tokens), processor (168 x 168 images) and chat template (the Qwen2-VL/2.5-VL hub layout).
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=REPO / "vlm" / "tiny_base", help="Where the base goes.")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/tiny-base-work"), help="Scratch folder.")
    parser.add_argument("--config", type=Path, default=Path("configs/sft/tiny_base.yaml"), help="Training recipe.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the initial weights.")
    parser.add_argument("--training_seed", type=int, default=42, help="Seed of the training run (data order).")
    parser.add_argument("--data_seed", type=int, default=1, help="Seed of the pre-training and held-out scenes.")
    parser.add_argument("--num_perception", type=int, default=80000, help="Pre-training rows.")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the recipe's max_steps.")
    parser.add_argument("--eval_rows", type=int, default=200, help="Held-out scenes the base is scored on.")
    parser.add_argument("--force", action="store_true", help="Rerun steps whose output already exists.")
    args = parser.parse_args(argv)

    work, python = args.work_dir, sys.executable
    init, data, trained = work / "init", work / "data", work / "trained"
    run(
        "build the initial model",
        [python, "-m", "vlm.build_tiny", "--output_dir", str(init), "--seed", str(args.seed)]
        + ["--initializer_range", "width"]
        + [f"--{k}={v}" for k, v in ARCHITECTURE.items()],
        init / "config.json",
        args.force,
    )
    run(
        "generate the pre-training data",
        [python, "-m", "data_tools.synthetic", "--output_dir", str(data), "--seed", str(args.data_seed)]
        + ["--num_sft", "0", "--num_rl", "0", "--num_eval", "0", "--num_perception", str(args.num_perception)],
        data / "dataset_dict.json",
        args.force,
    )
    steps = ["--max_steps", str(args.max_steps)] if args.max_steps else []
    commit_file = work / "recipe_commit.txt"  # the commit the pre-training started at, kept across resumes
    if args.force or not ((trained / "processor_config.json").exists() or commit_file.exists()):
        commit_file.write_text(git_commit() + "\n")
    run(
        "pre-training",
        [python, "launch/sft.py", "--config", str(args.config), "--model_name_or_path", str(init)]
        + ["--dataset_name", str(data), "--output_dir", str(trained), "--seed", str(args.training_seed)]
        + ["--resume_from_checkpoint", "true", "--report_to", "none", *steps],
        trained / "processor_config.json",
        args.force,
    )
    if args.max_steps is None:
        import yaml

        args.max_steps = yaml.safe_load(args.config.read_text())["max_steps"]
    print("[make_tiny_base] evaluating the base on held-out scenes", flush=True)
    results = evaluate_base(trained, args.eval_rows, args.data_seed)
    from safetensors import safe_open

    with safe_open(str(trained / "model.safetensors"), "pt") as weights:
        results["parameters"] = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118 (safe_open is no dict)

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in BASE_FILES:
        shutil.copy2(trained / name, out / name)
    args.commit = commit_file.read_text().strip()
    command = shlex.join(["python", "launch/make_tiny_base.py", *(argv if argv is not None else sys.argv[1:])])
    (out / "perception_eval.json").write_text(json.dumps(results, indent=1) + "\n")
    card = model_card(args, command, results, out / "model.safetensors", train_minutes(trained))
    (out / "README.md").write_text(card)
    print(f"[make_tiny_base] wrote {out}: held-out accuracy {results['accuracy']['mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
