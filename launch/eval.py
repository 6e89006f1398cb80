"""Held-out evaluation of a base model, an SFT or a GRPO checkpoint (merged or a LoRA adapter folder).

    python launch/eval.py --model_name_or_path outputs/grpo-tiny --dataset_name outputs/data --output_dir outputs/eval
    python launch/eval.py --config configs/eval/tiny_cpu.yaml --compare_to outputs/eval-sft/metrics.json

Writes `metrics.json` (summary with bootstrap intervals, per source, faithfulness curves, every row) and a
self-contained `report.html` to `--output_dir`. Every field of `EvalArguments` and `trl.ModelConfig` can be set in
the YAML recipe or on the command line (`--help` lists them).
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import logging

from trl import ModelConfig

from evaluation import EvalArguments, run_eval
from launch.parser import Parser

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    eval_args, model_args = Parser((EvalArguments, ModelConfig)).parse_args_and_config()
    print(f"report: {run_eval(eval_args, model_args)}")
