"""Per-row scores and their summary: means, seeded bootstrap intervals, map statuses, per-source groups."""

import math

import numpy as np
import pytest

from evaluation import answer_metrics, answer_scores, mean_interval, pointing_scores, spread, summarise


def test_mean_interval_of_known_values():
    result = mean_interval([1.0, 0.0, None, 1.0, 1.0], bootstrap_samples=2000, seed=3)
    assert result["mean"] == 0.75 and result["n"] == 4
    assert 0.0 <= result["low"] <= 0.75 <= result["high"] <= 1.0
    assert result["low"] < result["high"]


def test_mean_interval_is_seeded_and_a_constant_has_a_point_interval():
    values = list(np.random.default_rng(0).random(30))
    assert mean_interval(values, seed=5) == mean_interval(values, seed=5)
    assert mean_interval(values, seed=5) != mean_interval(values, seed=6)
    constant = mean_interval([0.4] * 10, seed=1)
    assert constant["low"] == pytest.approx(0.4) and constant["high"] == pytest.approx(0.4)


def test_mean_interval_without_values_or_resamples():
    assert mean_interval([None, None]) == {"mean": None, "low": None, "high": None, "n": 0}
    assert mean_interval([0.5, 1.0], bootstrap_samples=0) == {"mean": 0.75, "low": None, "high": None, "n": 2}


def test_narrower_interval_at_lower_confidence():
    values = list(np.random.default_rng(1).random(50))
    wide = mean_interval(values, confidence=0.99, seed=0)
    narrow = mean_interval(values, confidence=0.5, seed=0)
    assert wide["high"] - wide["low"] > narrow["high"] - narrow["low"]


def test_pointing_scores_statuses_and_baselines():
    inside = np.zeros((4, 4))
    inside[0, 3] = 1.0
    box = [0.5, 0.0, 1.0, 0.5]
    scored = pointing_scores("flow", inside, box)
    assert scored == {
        "flow/energy_pg": 1.0,
        "flow/pg": 1.0,
        "flow/box_area_fraction": 0.25,
        "flow/centre_point_pg": 1.0,
        "flow/status": "scored",
    }
    assert pointing_scores("flow", None, box)["flow/status"] == "no_map"
    empty = pointing_scores("direct", np.zeros((4, 4)), box)
    assert empty["direct/status"] == "empty_map" and empty["direct/energy_pg"] is None


def test_summarise_counts_statuses_and_groups_by_source():
    box = [0.0, 0.0, 0.5, 0.5]
    hit = np.zeros((2, 2))
    hit[0, 0] = 1.0
    rows = [
        {"format": 1.0, "accuracy": 1.0, **pointing_scores("flow", hit, box)},
        {"format": 0.0, "accuracy": 0.0, **pointing_scores("flow", None, box)},
        {"format": 1.0, "accuracy": 0.0, **pointing_scores("flow", np.zeros((2, 2)), box)},
    ]
    summary = summarise(rows, ["a", "b", "a"], bootstrap_samples=100, seed=0)
    assert summary["n"] == 3
    assert summary["format"]["mean"] == pytest.approx(2 / 3)
    assert summary["flow/energy_pg"]["mean"] == 1.0 and summary["flow/energy_pg"]["n"] == 1
    assert summary["flow/counts"] == {"scored": 1, "no_map": 1, "empty_map": 1}
    assert summary["per_source"]["a"]["n"] == 2 and summary["per_source"]["b"]["accuracy"]["mean"] == 0.0
    assert summary["per_source"]["a"]["flow/counts"] == {"scored": 1, "no_map": 0, "empty_map": 1}
    with pytest.raises(ValueError, match="sources"):
        summarise(rows, ["a"])


def test_answer_scores_and_metrics():
    completions = ["<think>It is red.</think>red", "red", "<think>round</think> circle"]
    assert answer_scores(completions, ["red", "red", "square"]) == [
        {"format": 1.0, "accuracy": 1.0},
        {"format": 0.0, "accuracy": 1.0},
        {"format": 1.0, "accuracy": 0.0},
    ]
    metrics = answer_metrics(completions, ["red", "red", "square"], ["x", "y", "x"])
    assert metrics["n"] == 3 and math.isclose(metrics["format_rate"], 2 / 3)
    assert metrics["per_source"]["x"] == {"n": 2, "format_rate": 1.0, "accuracy": 0.5}


def test_cue_scores_say_whether_the_answer_and_the_map_follow_the_decoy():
    from evaluation.metrics import cue_scores

    on_cue = np.zeros((10, 10))
    on_cue[8:, 8:] = 1.0  # all the mass on the cue's box
    half = np.zeros((10, 10))
    half[8:, 8:], half[0, 0] = 1.0, 4.0  # four cells of 1 on the cue, one of 4 elsewhere
    cue_box = [[0.8, 0.8, 1.0, 1.0]]
    scores = cue_scores("<think>It is grey-coded red.</think>red", {"flow": on_cue, "direct": half}, "red", cue_box)
    assert scores == {"follows_cue": 1.0, "flow/cue_energy": 1.0, "direct/cue_energy": pytest.approx(0.5)}
    scores = cue_scores("<think>It is blue.</think>blue", {"flow": None, "direct": half}, "red", cue_box)
    assert scores["follows_cue"] == 0.0 and scores["flow/cue_energy"] is None  # no usable map
    assert cue_scores("<think>x</think>red", {"flow": on_cue}, "", []) == {"follows_cue": None, "flow/cue_energy": None}


def test_spread_is_mean_and_sample_std_of_present_values():
    assert spread([0.2, None, 0.4]) == pytest.approx((0.3, 0.1414213), rel=1e-5)
    assert spread([0.5]) == (0.5, 0.0)
    assert spread([None, None]) == (None, None)
