"""Export explanations and semantic proposals of a (tuned) model for the downstream saliency predictor.

    python launch/export.py --model_name_or_path outputs/grpo-tiny --image_folder my_images --output_dir outputs/export
    python launch/export.py --config configs/eval/export_tiny.yaml

Writes `proposals.jsonl` (one line per image), `masks/*.png` and `errors.jsonl` (unreadable images) to
`--output_dir`; rerunning the same command resumes where it stopped. An image of `--image_folder` gets as `image_id`
its path in the folder without the extension (`COCO_val2014_000000000042.jpg` -> `COCO_val2014_000000000042`) and
keeps its file name in `file_name`: the ids the predictor's fixation readers (SALICON, OSIE, MIT1003) key by when
their `--images_dir` is this folder (`predictor/image_ids.py`); a `--completions_file` is keyed by the same ids. Every field of `ExportArguments` and
`trl.ModelConfig` can be set in the YAML recipe or on the command line (`--help` lists them). With
`--logit_lens_layers 0 -1` each image also gets logit-lens patch features (`lens/*.npy`, from the maps' own pass;
`--logit_lens_features phrases|topk`), which the predictor takes as extra channels with `--logit_lens`.
"""

import launch._unshadow  # noqa: F401  (first: it takes launch/ off sys.path)

# isort: split

import logging

from trl import ModelConfig

from evaluation import ExportArguments, run_export
from launch.parser import Parser

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    export_args, model_args = Parser((ExportArguments, ModelConfig)).parse_args_and_config()
    print(f"proposals: {run_export(export_args, model_args)}")
