"""The whole pipeline on one machine: the synthetic data, then from the shipped tiny base model (`vlm/tiny_base/`,
a pretrained stand-in for a real VLM) the SFT cold start, GRPO with the saliency reward and the evaluation, and on
to the saliency predictor: the export of the tuned model's explanations and proposals on held-out images, fixations
simulated on those images (`predictor.synthetic`), the predictor trained on them with the proposals and without
(the ablation), its evaluation against the centre bias and the ablation, and one report of the whole chain
(`eval/chain_report.html`, beside the evaluation's `eval/report.html`).

    python launch/pipeline.py                       # the embedded default on a CPU (configs/*/tiny_cpu.yaml)
    python launch/pipeline.py --output_root runs/x --sft_config my_sft.yaml --grpo_config my_grpo.yaml
    python launch/pipeline.py --base_model my-base  # another base (e.g. one remade by launch/make_tiny_base.py)

Each stage runs as its own process with the same command line a user would type (`launch/sft.py --config ...`),
and is skipped when its output already exists, so an interrupted pipeline picks up where it stopped (the
training stages, the predictor's included, resume from their last checkpoint, and the export from its last image).
`--force` reruns everything.
"""

from __future__ import annotations

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 12


def run(step: str, command: list[str], done: Path, force: bool, output: Path | None = None) -> None:
    """Run one stage unless `done` exists; stop the pipeline with the stage's name when it fails.

    With ``force`` the stage's ``output`` (a folder or a file) is removed first, so that it starts over instead of
    resuming from its own checkpoints or leaving files of the earlier run beside the new ones.
    """
    if done.exists() and not force:
        print(f"[pipeline] {step}: already done ({done})", flush=True)
        return
    if force and output is not None and output.exists():
        print(f"[pipeline] {step}: --force, removing {output}", flush=True)
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    print(f"[pipeline] {step}: {shlex.join(command)}", flush=True)
    start = time.perf_counter()
    if subprocess.run(command, cwd=REPO, check=False).returncode != 0:
        sys.exit(f"[pipeline] {step} failed; fix the error above and rerun: finished stages are skipped")
    print(f"[pipeline] {step}: done in {time.perf_counter() - start:.0f} s", flush=True)


def flags(**values: object) -> list[str]:
    """``--name value`` for each keyword, in order."""
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def stages(args: argparse.Namespace) -> list[tuple[str, list[str], Path, Path]]:
    """The stages in order, each (name, command, the file whose presence marks it done, what it writes: the done
    mark's folder, or for the chain report its one file in the evaluation's folder)."""
    root, python = args.output_root, sys.executable
    data, sft, grpo, evaluation = root / "data", root / "sft-tiny", root / "grpo-tiny", root / "eval"
    trained = {"dataset_name": data, "resume_from_checkpoint": "true"}
    export, fixations, proposals = root / "export", root / "fixations", root / "export" / "proposals.jsonl"
    predictor, ablation, predictor_eval = root / "predictor", root / "predictor-no-proposals", root / "predictor-eval"
    train_fixations, eval_fixations = fixations / "AiR_fixations_train.json", fixations / "AiR_fixations_eval.json"
    recipe = flags(config=args.predictor_config, fixation_format="air", images_dir=export, torch_threads=1)
    recipe += flags(train_fixations=train_fixations, train_proposals=proposals)
    recipe += flags(eval_fixations=eval_fixations, eval_proposals=proposals)
    epochs = args.predictor_epochs
    train = [python, "launch/predictor_train.py", *recipe, *flags(num_epochs=epochs, resume_from="latest")]
    train += flags(evaluate="false")  # launch/predictor_eval.py scores it beside the ablation
    checkpoint, ablation_checkpoint = (folder / f"checkpoint-epoch{epochs}.pt" for folder in (predictor, ablation))
    chain_report = evaluation / "chain_report.html"
    return [
        (
            "generate the synthetic data",
            [python, "-m", "data_tools.synthetic"]
            + flags(output_dir=data, num_sft=args.num_sft, num_rl=args.num_rl, num_eval=args.num_eval, seed=args.seed),
            data / "dataset_dict.json",
            data,
        ),
        (
            "SFT cold start",
            [python, "launch/sft.py"]
            + flags(config=args.sft_config, model_name_or_path=args.base_model, output_dir=sft, **trained),
            sft / "processor_config.json",
            sft,
        ),
        (
            "GRPO with the saliency reward",
            [python, "launch/grpo.py"]
            + flags(config=args.grpo_config, model_name_or_path=sft, output_dir=grpo, **trained),
            grpo / "processor_config.json",
            grpo,
        ),
        (
            "evaluation",
            [python, "launch/eval.py"]
            + flags(config=args.eval_config, model_name_or_path=grpo, compare_model_name_or_path=sft, dataset_name=data)
            + flags(output_dir=evaluation, max_eval_samples=args.eval_samples, faithfulness_samples=4),
            evaluation / "report.html",
            evaluation,
        ),
        (
            "export of explanations and proposals",
            [python, "launch/export.py"]
            + flags(config=args.export_config, model_name_or_path=grpo, dataset_name=data, dataset_test_split="eval")
            + flags(max_eval_samples=args.export_images, output_dir=export),
            export / "summary.json",
            export,
        ),
        (
            "fixations simulated on the exported images",
            [python, "-m", "predictor.synthetic"]
            + flags(from_export=proposals, out_dir=fixations, num_eval=args.predictor_eval_images, seed=args.seed),
            eval_fixations,
            fixations,
        ),
        ("predictor training", train + flags(output_dir=predictor), checkpoint, predictor),
        (
            "predictor training without proposals (the ablation)",
            train + flags(use_proposals="false", output_dir=ablation),
            ablation_checkpoint,
            ablation,
        ),
        (
            "predictor evaluation",
            [python, "launch/predictor_eval.py", *recipe]
            + flags(checkpoint=checkpoint, ablation_checkpoint=ablation_checkpoint, report_dir=predictor_eval)
            + flags(save_maps="true"),
            predictor_eval / "eval_report.json",
            predictor_eval,
        ),
        (
            "chain report",
            [python, "-m", "predictor.chain_report"]
            + flags(export_dir=export, fixations=eval_fixations, predictor_eval_dir=predictor_eval)
            + flags(evaluation_dir=evaluation, output=chain_report),
            chain_report,
            chain_report,
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_root", type=Path, default=Path("outputs"), help="Where every stage writes.")
    parser.add_argument(
        "--base_model",
        default="vlm/tiny_base",
        help="The pretrained model the cold start starts from: the shipped tiny base (default), a folder or a hub name.",
    )
    parser.add_argument("--sft_config", type=Path, default=Path("configs/sft/tiny_cpu.yaml"), help="SFT recipe.")
    parser.add_argument("--grpo_config", type=Path, default=Path("configs/grpo/tiny_cpu.yaml"), help="GRPO recipe.")
    parser.add_argument("--eval_config", type=Path, default=Path("configs/eval/tiny_cpu.yaml"), help="Eval recipe.")
    parser.add_argument("--eval_samples", type=int, default=64, help="Held-out rows the evaluation answers.")
    parser.add_argument(
        "--export_config", type=Path, default=Path("configs/eval/export_tiny.yaml"), help="Export recipe."
    )
    parser.add_argument(
        "--export_images",
        type=int,
        default=64,
        help="Held-out rows whose explanations and proposals are exported (the first ones, as in the evaluation).",
    )
    parser.add_argument(
        "--predictor_config",
        type=Path,
        default=Path("configs/predictor/synthetic_tiny.yaml"),
        help="Predictor recipe (its data paths are replaced by the export's and the simulated fixations').",
    )
    parser.add_argument(
        "--predictor_eval_images",
        type=int,
        default=16,
        help="Exported images held out for the predictor's evaluation; it trains on the others.",
    )
    parser.add_argument("--predictor_epochs", type=int, default=EPOCHS, help="Predictor training epochs.")
    parser.add_argument("--num_sft", type=int, default=8000, help="Synthetic rows for the cold start.")
    parser.add_argument("--num_rl", type=int, default=1000, help="Synthetic rows for GRPO.")
    parser.add_argument("--num_eval", type=int, default=200, help="Held-out synthetic rows for evaluation.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the synthetic data.")
    parser.add_argument("--force", action="store_true", help="Rerun stages whose output already exists.")
    args = parser.parse_args(argv)

    start, table = time.perf_counter(), stages(args)
    for step, command, done, output in table:
        run(step, command, done, args.force, output)
    evaluation = next(done for step, _, done, _ in table if step == "evaluation")
    print(f"[pipeline] evaluation report: {evaluation}")
    print(f"[pipeline] finished in {time.perf_counter() - start:.0f} s; report: {table[-1][2]}")


if __name__ == "__main__":
    main()
