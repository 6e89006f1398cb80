"""Evaluation of rows of several images and of clips: their scores over every image's (frame's) map, their overlay
strips, single-image rows scored as before beside them, and faithfulness left to the single-image rows."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from PIL import Image
from trl import ModelConfig

from data_tools import generate_split
from data_tools.synthetic import CLIP_FRAMES, generate_multi_split
from data_tools.validation import as_several_images
from evaluation import EvalArguments
from evaluation.evaluate import evaluate_model, load_rows, write_outputs
from evaluation.generation import completion_maps, image_sizes, prompt_inputs
from evaluation.metrics import frame_scores, several_pointing_scores, summarise
from rewards import multi_energy_pointing_game, multi_pointing_game
from saliency import SaliencyTracer, SpecialTokens
from vlm import build_tiny_vlm, load_model_and_processor

HALF = [[0.0, 0.0, 0.5, 0.5]]  # the top-left 5 x 5 pixels of a 10 x 10 map (pixel centres inside the box)


def test_several_pointing_scores_by_hand():
    evidence = np.zeros((10, 10))
    evidence[:5, :5] = 1.0
    elsewhere = np.full((10, 10), 0.5)
    scores = several_pointing_scores("flow", [evidence, elsewhere], [HALF, []])
    assert scores["flow/energy_pg"] == pytest.approx(25 / (25 + 50))  # the other image's mass is outside
    assert scores["flow/pg"] == 1.0  # the peak lies in image 0's box
    assert scores["flow/box_area_fraction"] == pytest.approx(25 / 200)
    assert scores["flow/centre_point_pg"] == 0.0  # image 1 has no evidence at its centre
    assert scores["flow/status"] == "scored"
    # The peak on the image without evidence is a miss.
    assert several_pointing_scores("flow", [evidence, 2 * evidence], [HALF, []])["flow/pg"] == 0.0
    centred = several_pointing_scores("flow", [evidence, evidence], [[[0.4, 0.4, 0.6, 0.6]], [[0.0, 0.0, 1.0, 1.0]]])
    assert centred["flow/centre_point_pg"] == 1.0
    assert centred["flow/box_area_fraction"] == pytest.approx((4 + 100) / 200)
    assert several_pointing_scores("flow", None, [HALF, []])["flow/status"] == "no_map"
    empty = several_pointing_scores("flow", [np.zeros((10, 10))] * 2, [HALF, []])
    assert empty["flow/status"] == "empty_map" and empty["flow/energy_pg"] is None


def test_frame_scores_by_hand():
    first, second = np.zeros((10, 10)), np.zeros((10, 10))
    first[:5, :5] = 1.0  # all inside frame 0's box
    second[:, :] = 1.0  # a quarter inside frame 1's box
    scores = frame_scores("direct", [first, second], [HALF[0], HALF[0]], [0, 1])
    assert scores == {"direct/frame_0_energy_pg": 1.0, "direct/frame_1_energy_pg": pytest.approx(0.25)}
    assert frame_scores("direct", None, [HALF[0]], [1]) == {"direct/frame_1_energy_pg": None}


def test_summary_counts_a_score_only_some_rows_have_as_missing_on_the_others():
    rows = [{"format": 1.0, "flow/status": "scored"}, {"format": 0.0, "flow/frame_0_energy_pg": 0.5}]
    summary = summarise(rows, ["a", "b"], bootstrap_samples=0)
    assert summary["flow/frame_0_energy_pg"]["mean"] == 0.5 and summary["flow/frame_0_energy_pg"]["n"] == 1
    assert summary["flow/counts"]["scored"] == 1
    assert summary["per_source"]["a"]["flow/frame_0_energy_pg"]["n"] == 0


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny model, and on disk the same two single-image rows alone (``single``) and beside two rows of several
    images and a clip (``mixed``, where they are one-image lists)."""
    root = tmp_path_factory.mktemp("multi_eval")
    model_dir = build_tiny_vlm(root / "model", seed=1)
    single = generate_split("rl", 2, seed=0)
    several = [generate_multi_split("multi", 2, seed=0), generate_multi_split("clip", 1, seed=0)]
    undecoded = [d.cast_column("images", datasets.List(datasets.Image(decode=False))) for d in several]
    rows = [as_several_images(dict(r)) for r in single.cast_column("image", datasets.Image(decode=False))]
    rows += [dict(r) for d in undecoded for r in d]
    mixed = datasets.Dataset.from_list(rows, features=several[0].features)
    datasets.DatasetDict({"single": single, "mixed": mixed}).save_to_disk(str(root / "data"))
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(model_dir), dtype="float32"))
    return {"root": root, "data": str(root / "data"), "model": model, "processor": processor}


def _assert_close(ours, theirs, where: str = "") -> None:
    """Nested metrics equal, numbers to a relative 1e-5 (the rows are batched with other rows, padded otherwise)."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            _assert_close(ours[key], theirs[key], f"{where}/{key}")
    elif isinstance(ours, list):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(ours, float):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-7), where
    else:
        assert ours == theirs, where


def _run(setting, split: str, **flags):
    args = EvalArguments(
        dataset_name=setting["data"],
        dataset_test_split=split,
        output_dir=str(setting["root"] / split),
        batch_size=4,
        bootstrap_samples=0,
        faithfulness_steps=2,
        faithfulness_random_orders=1,
        sanity_samples=0,
        **flags,
    )
    rows, _ = load_rows(args)
    answers = [f"<think>It is {row['solution']}.</think>{row['solution']}" for row in rows]
    metrics = evaluate_model(setting["model"], setting["processor"], rows, args, model_name="tiny", completions=answers)
    return rows, answers, args, metrics


def test_rows_of_several_images_and_clips_are_scored_over_every_map(setting):
    rows, answers, args, metrics = _run(setting, "mixed", faithfulness_samples=0, report_samples=5)
    model, processor = setting["model"], setting["processor"]
    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))
    tokenizer = processor.tokenizer
    records = metrics["rows"]
    assert [r.get("images") for r in records] == [None, None, 2, 3, CLIP_FRAMES]
    assert [r.get("boxes_on") for r in records] == [None, None, "image", "image", "frame"]
    assert metrics["several_images"]["rows"] == 3
    for index in (2, 3, 4):
        row, record = rows[index], records[index]
        # The reference: this row alone, scored by the tracer, placed by hand.
        inputs = prompt_inputs(processor, [row])
        ids = tokenizer(answers[index], add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        maps = completion_maps(tracer.score, inputs, ids, image_sizes([row])[0])
        for kind in args.saliency_maps:
            arrays = [m.upsampled_mass() for m in maps.answer_map(kind)]
            boxes = [[] for _ in arrays]
            for box, where in zip(row["bbox"], row["bbox_image"] or row["bbox_frame"]):
                boxes[where].append(box)
            assert record["scores"][f"{kind}/status"] == "scored"
            energy = multi_energy_pointing_game(arrays, boxes)
            assert record["scores"][f"{kind}/energy_pg"] == pytest.approx(energy, rel=1e-4)
            assert record["scores"][f"{kind}/pg"] == multi_pointing_game(arrays, boxes)
            frames = [k for k in record["scores"] if k.startswith(f"{kind}/frame_")]
            assert len(frames) == (CLIP_FRAMES if row["bbox_frame"] else 0)
        strip = Image.open(args.output_dir + "/" + record["overlays"]["flow"])
        single = Image.open(args.output_dir + "/" + records[0]["overlays"]["flow"])
        assert strip.width > (len(row["images"]) - 0.5) * single.width  # one panel per image or frame
    _, report = write_outputs(metrics, setting["root"] / "mixed")
    assert "3 rows of several images or clip frames" in report.read_text()


def test_single_image_rows_score_as_alone_and_alone_feed_faithfulness(setting):
    _, _, _, alone = _run(setting, "single", faithfulness_samples=2, report_samples=0)
    _, _, _, mixed = _run(setting, "mixed", faithfulness_samples=5, report_samples=0)
    assert "several_images" not in alone
    for ours, theirs in zip(mixed["rows"][:2], alone["rows"]):
        assert ours["question_id"] == theirs["question_id"]
        _assert_close(ours["scores"], theirs["scores"])
    # Faithfulness asked for 5 rows, got the 2 single-image ones: the curves of the single-image run.
    assert mixed["faithfulness"]["pointing"]["n"] == alone["faithfulness"]["pointing"]["n"] == 2
    _assert_close(mixed["faithfulness"], alone["faithfulness"])
    assert mixed["several_images"]["single_image_only"] == ["faithfulness", "sanity", "faithfulness_baselines"]
