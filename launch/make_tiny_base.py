"""Remake the grounded tiny base model shipped in `vlm/tiny_base/`: build, pre-train, evaluate, write the model card.

    python launch/make_tiny_base.py                                   # the shipped recipe (39 + 18 + 10 + 3 min of training on 2 cores)
    python launch/make_tiny_base.py --output_dir my-base --max_steps 50 --grounding_max_steps 20 \
        --attention_max_steps 20 --count_max_steps 20 --num_perception 800 --num_grounding 320   # a quick try
    python launch/make_tiny_base.py --third_stage_model old-base        # only the fourth stage, from a three-stage base

The base stands in for a pretrained VLM (the quick start starts its cold start from it, as users start from
Qwen2.5-VL). Steps, each a command a user could type and each seeded:

1. `python -m vlm.build_tiny` with the base's architecture (Qwen3-VL classes; a vision tower without attention
   blocks, so each image token is computed from its own 28 x 28 pixels and its learned position embedding);
2. `python -m data_tools.synthetic --num_perception N` (its own data seed, disjoint from the quick start's data);
3. `launch/sft.py --config configs/sft/tiny_base.yaml` (short answers: captions, pointing, reading, the scenes'
   questions; no reasoning, no system prompt);
4. `python -m data_tools.synthetic --num_grounding N` and `launch/sft.py --config configs/sft/tiny_base_grounding.yaml`
   from step 3's weights: pointing and reading on full scenes (the first stage leaves pointing weak);
5. `python -m data_tools.synthetic --num_attention N` and `launch/sft.py --config configs/sft/tiny_base_attention.yaml`
   from step 4's weights, with the attention-grounding loss: on pointing, reading and the scenes' own questions
   (full scenes, a third each), the answer's attention over the image is trained towards the rows' evidence boxes;
6. `python -m data_tools.synthetic --num_attention N --num_attention_count N` (a data seed of its own, so that the
   scenes are new) and `launch/sft.py --config configs/sft/tiny_base_count.yaml` from step 5's weights: the third
   stage's tasks again, half of them on scenes that ask the count question, the question the base answered worst;
7. short-answer accuracy on held-out scenes (`evaluation.perception`) after each stage, and the folder written with
   its model card: command, commit, seeds, held-out numbers, size and sha256 of the weights.

`--second_stage_model` starts at step 5 from a two-stage base this recipe made before (the base shipped until the
third stage existed), `--third_stage_model` at step 6 from a three-stage base (the one shipped until the fourth stage
existed); the held-out numbers and the card's record of the stages it already had carry over.

Rerunning skips finished steps (the pre-training resumes from its last checkpoint); `--force` starts over.
"""

from __future__ import annotations

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import argparse
import hashlib
import json
import math
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from launch.pipeline import run

REPO = Path(__file__).resolve().parents[1]

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
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors")


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


def stage_record(run_dir: Path) -> str:
    """Where and how long a pre-training stage ran: its start commit and the Trainer's own ``train_runtime`` summed
    over resumes, each "not recorded" when the run folder lacks it (a stage copied in from an earlier make)."""
    commit_file = run_dir.with_name(f"{run_dir.name}_commit.txt")
    commit = f"commit `{commit_file.read_text().strip()}`" if commit_file.exists() else "commit not recorded"
    state = run_dir / "trainer_state.json"
    if not state.exists():
        return f"{commit}, training time not recorded"
    history = json.loads(state.read_text())["log_history"]
    minutes = sum(entry["train_runtime"] for entry in history if "train_runtime" in entry) / 60
    return f"{commit}, {minutes:.0f} min of training time"


def architecture(model_dir: Path) -> dict:
    """The ``ARCHITECTURE`` fields as ``model_dir``'s config.json has them (a base continued from a deepened one,
    ``bench/deepen_base.py``, has more layers than the recipe builds)."""
    config = json.loads((model_dir / "config.json").read_text())
    text, vision = config["text_config"], config["vision_config"]
    return {
        "family": config["model_type"],
        "hidden_size": text["hidden_size"],
        "num_layers": text["num_hidden_layers"],
        "num_heads": text["num_attention_heads"],
        "num_kv_heads": text["num_key_value_heads"],
        "vision_hidden_size": vision["hidden_size"],
        "vision_depth": vision["depth"],
        "vision_patch_size": vision["patch_size"],
    }


def model_card(args: argparse.Namespace, command: str, results: dict, weights: Path, stages: dict[str, str]) -> str:
    """The README.md of the base folder: what it is, how it was made, how well it reads held-out scenes."""
    arch = ", ".join(f"{k}={v}" for k, v in architecture(weights.parent).items())
    params = results["parameters"]
    rows = "\n".join(
        f"| {task} | {v['mean']:.3f} ({v['low']:.3f}-{v['high']:.3f}) | {v['n']} | {results['chance'][task]:.3f} |"
        for task, v in results["per_task"].items()
    )
    acc, second = results["accuracy"], results["second_stage"]["accuracy"]
    first, third = results["first_stage"]["per_task"], results["third_stage"]["per_task"]
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

**Made by** ({"; ".join(stages)}):

```
{command}
```

Four stages, short answers, no system prompt. First `configs/sft/tiny_base.yaml` ({args.max_steps} steps) on
`python -m data_tools.synthetic --seed {args.data_seed} --num_perception {args.num_perception}` (split `perception`:
captions, "Where is the red circle?", "What is at the top left?" on random parts of scenes, the scenes' own
questions); it left pointing at {first["point"]["mean"]:.3f} and reading at {first["read"]["mean"]:.3f}. Then
`configs/sft/tiny_base_grounding.yaml` ({args.grounding_max_steps} steps) on `python -m data_tools.synthetic --seed
{args.data_seed} --num_grounding {args.num_grounding}` (split `grounding`: pointing and reading on full scenes, a
quarter perception rows); held-out accuracy after it {second["mean"]:.3f}. Then `configs/sft/tiny_base_attention.yaml`
({args.attention_max_steps} steps) on `python -m data_tools.synthetic --seed {args.data_seed} --num_attention
{args.num_attention}` (split `attention`: pointing, reading and the scenes' own questions on full scenes, a third each)
with the attention-grounding loss (`--attention_grounding_weight`: the answer tokens' attention over the image is
trained towards each row's evidence boxes; BENCHMARKS.md, "Attention grounding in the base"); it left the scenes'
questions at {results["third_stage"]["accuracy"]["mean"]:.3f}, count at {third["count"]["mean"]:.3f}. Then
`{args.count_config}` ({args.count_max_steps} steps, learning rate {args.count_learning_rate:g}) on `python -m
data_tools.synthetic --seed {args.count_data_seed} --num_attention {args.num_count_stage} --num_attention_count
{args.num_count_stage}` (splits `attention` and `attention_count`: the third stage's tasks on new scenes, half of them
on scenes that all ask the count question), with the same loss (BENCHMARKS.md, "A count-heavy fourth stage"). Weights
init seed {args.seed}; training seed {args.training_seed}.

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


STAGES = ("first", "second", "third", "fourth")


def earlier_stages(model_dir: Path, done: int, flag: str) -> tuple[dict, str]:
    """Held-out numbers (``first_stage``, ... per stage) and the card's record of the first ``done`` stages of a base
    this recipe made with that many stages, for ``flag`` (``--second_stage_model``, ``--third_stage_model``)."""
    evaluation, card = model_dir / "perception_eval.json", model_dir / "README.md"
    if not (evaluation.exists() and card.exists() and (model_dir / "model.safetensors").exists()):
        raise SystemExit(
            f"{flag} {model_dir}: needs a base this recipe made (model.safetensors, perception_eval.json and README.md)"
        )
    results = json.loads(evaluation.read_text())
    recorded = sorted(k for k in results if k.endswith("_stage"))
    if recorded != sorted(f"{stage}_stage" for stage in STAGES[: done - 1]):
        raise SystemExit(
            f"{flag} {model_dir}: not a {done}-stage base (perception_eval.json has {recorded} stage results)"
        )
    made_by = re.search(r"\*\*Made by\*\* \((.*?)\):", card.read_text(), re.DOTALL)
    record = " ".join(made_by.group(1).split()) if made_by else f"the first {done} stages not recorded"
    final = {k: v for k, v in results.items() if k not in (*recorded, "parameters")}
    earlier = {k: results[k] for k in recorded} | {f"{STAGES[done - 1]}_stage": final}
    sha = sha256(model_dir / "model.safetensors")
    return earlier, f"first {done} stages as `{model_dir}` (sha256 `{sha}`) recorded them: {record}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=REPO / "vlm" / "tiny_base", help="Where the base goes.")
    parser.add_argument("--work_dir", type=Path, default=Path("outputs/tiny-base-work"), help="Scratch folder.")
    parser.add_argument("--config", type=Path, default=Path("configs/sft/tiny_base.yaml"), help="First stage.")
    parser.add_argument(
        "--grounding_config", type=Path, default=Path("configs/sft/tiny_base_grounding.yaml"), help="Second stage."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the initial weights.")
    parser.add_argument("--training_seed", type=int, default=42, help="Seed of the training run (data order).")
    parser.add_argument("--data_seed", type=int, default=1, help="Seed of the pre-training and held-out scenes.")
    parser.add_argument("--num_perception", type=int, default=80000, help="Rows of the first stage.")
    parser.add_argument("--num_grounding", type=int, default=40000, help="Rows of the second stage.")
    parser.add_argument("--num_attention", type=int, default=24000, help="Rows of the third stage.")
    parser.add_argument("--max_steps", type=int, default=None, help="Override the first stage's max_steps.")
    parser.add_argument("--grounding_max_steps", type=int, default=None, help="Override the second stage's max_steps.")
    parser.add_argument(
        "--attention_config", type=Path, default=Path("configs/sft/tiny_base_attention.yaml"), help="Third stage."
    )
    parser.add_argument("--attention_max_steps", type=int, default=None, help="Override the third stage's max_steps.")
    parser.add_argument(
        "--count_config", type=Path, default=Path("configs/sft/tiny_base_count.yaml"), help="Fourth stage."
    )
    parser.add_argument(
        "--num_count_stage",
        type=int,
        default=12000,
        help="Rows of each of the fourth stage's splits (attention, and attention_count: scenes asking to count).",
    )
    parser.add_argument(
        "--count_data_seed",
        type=int,
        default=3,
        help="Seed of the fourth stage's scenes (not --data_seed: its attention rows would repeat the third stage's).",
    )
    parser.add_argument("--count_max_steps", type=int, default=None, help="Override the fourth stage's max_steps.")
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--third_stage_model",
        type=Path,
        default=None,
        help="Skip the first three stages: start the fourth from this three-stage base made by the recipe before (its "
        "perception_eval.json and model card carry the earlier stages' numbers and record).",
    )
    start.add_argument(
        "--second_stage_model",
        type=Path,
        default=None,
        help="Skip the first two stages: start the third from this two-stage base made by the recipe before (its "
        "perception_eval.json and model card carry the earlier stages' numbers and record).",
    )
    parser.add_argument("--eval_rows", type=int, default=200, help="Held-out scenes the base is scored on.")
    parser.add_argument("--force", action="store_true", help="Rerun steps whose output already exists.")
    args = parser.parse_args(argv)
    for name in (
        "num_perception",
        "num_grounding",
        "num_attention",
        "max_steps",
        "grounding_max_steps",
        "attention_max_steps",
        "num_count_stage",
        "count_max_steps",
        "eval_rows",
    ):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")

    work, python = args.work_dir, sys.executable
    init, data, trained = work / "init", work / "data", work / "trained"
    grounding_data, grounded = work / "grounding-data", work / "grounded"
    attention_data, attention = work / "attention-data", work / "attention"
    count_data, counted = work / "count-data", work / "count"
    earlier = None
    if args.third_stage_model:
        earlier = earlier_stages(args.third_stage_model, 3, "--third_stage_model")
    elif args.second_stage_model:
        earlier = earlier_stages(args.second_stage_model, 2, "--second_stage_model")

    def pretrain(stage: str, config: Path, start: Path, rows: Path, out_dir: Path, max_steps: int | None) -> None:
        commit_file = out_dir.with_name(f"{out_dir.name}_commit.txt")  # where the stage started, kept on resume
        if args.force or not ((out_dir / "processor_config.json").exists() or commit_file.exists()):
            commit_file.parent.mkdir(parents=True, exist_ok=True)
            commit_file.write_text(git_commit() + "\n")
        run(
            f"pre-training, {stage} stage",
            [python, "launch/sft.py", "--config", str(config), "--model_name_or_path", str(start)]
            + ["--dataset_name", str(rows), "--output_dir", str(out_dir), "--seed", str(args.training_seed)]
            + ["--resume_from_checkpoint", "true", "--report_to", "none"]
            + (["--max_steps", str(max_steps)] if max_steps else []),
            out_dir / "processor_config.json",
            args.force,
            out_dir,
        )

    def generate(name: str, splits: dict[str, int], folder: Path, seed: int) -> None:
        """Pre-training splits (name: rows) of data seed ``seed``, alone in ``folder``."""
        run(
            f"generate the {name} data",
            [python, "-m", "data_tools.synthetic", "--output_dir", str(folder), "--seed", str(seed)]
            + ["--num_sft", "0", "--num_rl", "0", "--num_eval", "0"]
            + [part for split, rows in splits.items() for part in (f"--num_{split}", str(rows))],
            folder / "dataset_dict.json",
            args.force,
            folder,
        )

    if earlier is None:
        run(
            "build the initial model",
            [python, "-m", "vlm.build_tiny", "--output_dir", str(init), "--seed", str(args.seed)]
            + ["--initializer_range", "width"]
            + [f"--{k}={v}" for k, v in ARCHITECTURE.items()],
            init / "config.json",
            args.force,
            init,
        )
        generate("pre-training", {"perception": args.num_perception}, data, args.data_seed)
        pretrain("first", args.config, init, data, trained, args.max_steps)
        generate("grounding", {"grounding": args.num_grounding}, grounding_data, args.data_seed)
        pretrain("second", args.grounding_config, trained, grounding_data, grounded, args.grounding_max_steps)
    if args.third_stage_model is None:
        generate("attention-grounding", {"attention": args.num_attention}, attention_data, args.data_seed)
        second_model = args.second_stage_model or grounded
        pretrain("third", args.attention_config, second_model, attention_data, attention, args.attention_max_steps)
    count_splits = {"attention": args.num_count_stage, "attention_count": args.num_count_stage}
    generate("count-heavy", count_splits, count_data, args.count_data_seed)
    pretrain(
        "fourth", args.count_config, args.third_stage_model or attention, count_data, counted, args.count_max_steps
    )
    import yaml

    for flag, config in (
        ("max_steps", args.config),
        ("grounding_max_steps", args.grounding_config),
        ("attention_max_steps", args.attention_config),
        ("count_max_steps", args.count_config),
    ):
        setattr(args, flag, getattr(args, flag) or yaml.safe_load(config.read_text())["max_steps"])
    args.count_learning_rate = float(yaml.safe_load(args.count_config.read_text())["learning_rate"])
    print("[make_tiny_base] evaluating the stages on held-out scenes", flush=True)
    results = evaluate_base(counted, args.eval_rows, args.data_seed)
    ran = {"first": trained, "second": grounded, "third": attention}
    if earlier is not None:
        results |= earlier[0]
        stages = [earlier[1]]
        ran = {stage: folder for stage, folder in ran.items() if f"{stage}_stage" not in results}
    else:
        stages = []
    for stage, folder in ran.items():
        results[f"{stage}_stage"] = evaluate_base(folder, args.eval_rows, args.data_seed)
        stages.append(f"{stage} stage at {stage_record(folder)}")
    stages.append(f"fourth stage at {stage_record(counted)}")
    from safetensors import safe_open

    with safe_open(str(counted / "model.safetensors"), "pt") as weights:
        results["parameters"] = sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118 (safe_open is no dict)

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        shutil.copy2(counted / name, out / name)
    from vlm import load_processor

    load_processor(str(counted)).save_pretrained(str(out))  # without the truncation training left in the tokenizer
    command = shlex.join(["python", "launch/make_tiny_base.py", *(argv if argv is not None else sys.argv[1:])])
    (out / "perception_eval.json").write_text(json.dumps(results, indent=1) + "\n")
    card = model_card(args, command, results, out / "model.safetensors", stages)
    (out / "README.md").write_text(card)
    print(f"[make_tiny_base] wrote {out}: held-out accuracy {results['accuracy']['mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
