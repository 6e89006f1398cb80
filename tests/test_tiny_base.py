"""The shipped grounded tiny base (`vlm/tiny_base/`): it is what its model card says, it loads through `vlm` like a
hub model, its image tokens are local, it reads held-out scenes, and the recipe that made it still runs."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from datasets import load_from_disk
from trl import ModelConfig

from data_tools.synthetic import make_example
from evaluation.perception import CHANCE, evaluate_short_answers, perception_rows
from vlm import load_model_and_processor

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "vlm" / "tiny_base"


@pytest.fixture(scope="module")
def base():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing or unexpected key, or a deprecated path, is a bug
        model, processor = load_model_and_processor(
            ModelConfig(model_name_or_path=str(BASE), dtype="float32", attn_implementation="sdpa")
        )
    return model.eval(), processor


def test_weights_are_those_of_the_model_card():
    card = (BASE / "README.md").read_text()
    digest = hashlib.sha256((BASE / "model.safetensors").read_bytes()).hexdigest()
    assert re.search(r"`model.safetensors` .*? sha256\s+`([0-9a-f]{64})`", card, re.DOTALL).group(1) == digest
    size_mb = (BASE / "model.safetensors").stat().st_size / 1e6
    assert f"{size_mb:.1f} MB" in card and size_mb < 10
    assert "launch/make_tiny_base.py" in card and re.search(r"commit `[0-9a-f]{40}`", card)


def test_base_answers_held_out_scenes_far_above_chance(base):
    model, processor = base
    # The quick start's held-out scenes (data seed 0); the base was pre-trained on data seed 1 and never saw them.
    results = evaluate_short_answers(model, processor, perception_rows(48, seed=0), bootstrap_samples=200)
    # Chance is 0.23 over the four question types; the card's 200 rows of data seed 1 give 0.865 (0.820-0.910),
    # these 48 rows 0.833 (0.729-0.938).
    assert results["accuracy"]["low"] > 0.6
    # On the card's 200 rows it names what is at a place at 0.810 and where a thing is at 0.740.
    assert results["per_task"]["read"]["mean"] > 5 * CHANCE["read"]
    assert results["per_task"]["point"]["mean"] > 2 * CHANCE["point"]


@torch.no_grad()
def test_each_image_token_sees_only_its_own_28_pixel_cell(base):
    model, processor = base
    image = make_example(0, "eval", 0).image
    changed = image.copy()
    changed.paste((0, 0, 0), (28 * 2, 28 * 3, 28 * 3, 28 * 4))  # the cell in row 3, column 2 of the 6 x 6 grid
    tokens = []
    for picture in (image, changed):
        inputs = processor.image_processor(images=[picture], return_tensors="pt")
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        tokens.append(torch.cat(list(features.pooler_output)))
    moved = (tokens[0] - tokens[1]).abs().amax(-1) > 1e-6
    assert moved.nonzero().flatten().tolist() == [3 * 6 + 2]


@pytest.mark.slow
def test_recipe_still_runs_a_few_steps(tmp_path):
    from launch.make_tiny_base import main

    out, work = tmp_path / "base", tmp_path / "work"
    flags = ["--output_dir", str(out), "--work_dir", str(work), "--num_perception", "32", "--num_grounding", "32"]
    flags += ["--num_attention", "32", "--num_count_stage", "16", "--eval_rows", "4"]
    steps = ["--max_steps", "2", "--grounding_max_steps", "2", "--attention_max_steps", "2", "--count_max_steps", "2"]
    main([*flags, *steps])
    card = (out / "README.md").read_text()
    assert hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest() in card
    assert " ".join(steps) in card
    assert card.count("min of training time") == 4  # all four stages ran here, each with its commit and time
    assert "`configs/sft/tiny_base_count.yaml` (2 steps, learning rate 0.0001)" in card  # read from its config
    shipped = {"README.md", "perception_eval.json", "config.json", "generation_config.json", "model.safetensors"}
    shipped |= {"processor_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
    assert {f.name for f in out.iterdir()} == shipped
    assert json.loads((out / "tokenizer.json").read_text())["truncation"] is None  # training truncated to 512
    final = (out / "model.safetensors").read_bytes()
    for stage in ("trained", "grounded", "attention"):
        assert (work / stage / "model.safetensors").read_bytes() != final  # the shipped weights are the fourth stage's
    assert final == (work / "count" / "model.safetensors").read_bytes()
    count_data = load_from_disk(str(work / "count-data"))
    assert {k: len(v) for k, v in count_data.items()} == {"attention": 16, "attention_count": 16}
    assert count_data["attention"][0]["question_id"].endswith("-3-000000")  # its own data seed: new scenes
    results = json.loads((out / "perception_eval.json").read_text())
    assert {"first_stage", "second_stage", "third_stage"} <= results.keys()
    model, _ = load_model_and_processor(ModelConfig(model_name_or_path=str(out), dtype="float32"))
    assert model.config.vision_config.depth == 0

    def earlier_base(folder: str, stages: int) -> Path:
        """The weights of ``folder`` as the recipe wrote them when it had ``stages`` stages."""
        base = tmp_path / f"{stages}-stage"
        shutil.copytree(work / folder, base)
        (base / "README.md").write_text(card.replace("fourth stage at", "an older record at"))
        names = ("first", "second", "third")[:stages]
        evaluation = {f"{name}_stage": results[f"{name}_stage"] for name in names[:-1]}
        (base / "perception_eval.json").write_text(json.dumps(results[f"{names[-1]}_stage"] | evaluation))
        return base

    # A base made before the fourth stage existed: its evaluation and card carry the first three stages.
    with pytest.raises(SystemExit, match="not a 3-stage base"):
        main(["--third_stage_model", str(out), "--output_dir", str(tmp_path / "again")])
    three_stage, fourth = earlier_base("attention", 3), tmp_path / "fourth"
    main(["--third_stage_model", str(three_stage), "--output_dir", str(fourth), "--work_dir", str(tmp_path / "w4")]
         + ["--num_count_stage", "16", "--count_max_steps", "2", "--eval_rows", "4"])  # fmt: skip
    sha = hashlib.sha256((three_stage / "model.safetensors").read_bytes()).hexdigest()
    assert f"first 3 stages as `{three_stage}` (sha256 `{sha}`)" in (fourth / "README.md").read_text()
    assert sorted(p.name for p in (tmp_path / "w4").iterdir()) == ["count", "count-data", "count_commit.txt"]
    assert (fourth / "model.safetensors").read_bytes() != (three_stage / "model.safetensors").read_bytes()
    carried = json.loads((fourth / "perception_eval.json").read_text())
    assert {k: carried[k] for k in ("first_stage", "second_stage", "third_stage")} == {
        k: results[k] for k in ("first_stage", "second_stage", "third_stage")
    }

    # A base made before the third stage existed: the third and fourth stages run from it.
    with pytest.raises(SystemExit, match="not a 2-stage base"):
        main(["--second_stage_model", str(three_stage), "--output_dir", str(tmp_path / "again")])
    two_stage, third = earlier_base("grounded", 2), tmp_path / "third"
    flags = ["--second_stage_model", str(two_stage), "--output_dir", str(third), "--work_dir", str(tmp_path / "w3")]
    main([*flags, "--num_attention", "32", "--attention_max_steps", "2", "--num_count_stage", "16"]
         + ["--count_max_steps", "2", "--eval_rows", "4"])  # fmt: skip
    sha = hashlib.sha256((two_stage / "model.safetensors").read_bytes()).hexdigest()
    card3 = (third / "README.md").read_text()
    assert f"first 2 stages as `{two_stage}` (sha256 `{sha}`)" in card3
    assert card3.count("min of training time") == 4 + 2  # the copied card's record, then the two stages run here
    assert not (tmp_path / "w3" / "trained").exists()  # the first two stages did not run again
    assert not (tmp_path / "w3" / "grounding-data").exists()
    assert "third_stage" in json.loads((third / "perception_eval.json").read_text())


def test_recipe_takes_one_earlier_base_at_a_time(capsys):
    from launch.make_tiny_base import main

    with pytest.raises(SystemExit):
        main(["--second_stage_model", "a", "--third_stage_model", "b"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flag",
    [
        "--num_grounding",
        "--num_attention",
        "--num_count_stage",
        "--grounding_max_steps",
        "--attention_max_steps",
        "--count_max_steps",
        "--max_steps",
    ],
)
def test_recipe_flags_below_one_are_named(flag, capsys):
    from launch.make_tiny_base import main

    with pytest.raises(SystemExit):
        main([flag, "0"])
    assert f"{flag} must be at least 1" in capsys.readouterr().err
