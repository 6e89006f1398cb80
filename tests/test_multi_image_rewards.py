"""Pointing games over several images and over a video's steps: properties (hypothesis) and worked examples."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_rewards_properties import ANY_FLOAT, COMPLETIONS, MODERATE_FLOAT, SHAPES, boxes, maps

from rewards import (
    SaliencyReward,
    box_mask,
    boxes_per_map,
    energy_pointing_game,
    frame_energy_pointing_games,
    multi_energy_pointing_game,
    multi_pointing_game,
    pointing_game,
)

FAST = settings(deadline=None, max_examples=60)
NON_NEGATIVE = st.floats(0.0, 1e6)


def panels(elements=ANY_FLOAT, min_size=1):
    """1 to 4 maps of their own shapes, each with 0 to 3 boxes (no box: an image without evidence)."""
    return st.lists(st.tuples(maps(elements), st.just([]) | boxes()), min_size=min_size, max_size=4)


def _split(drawn):
    return [m for m, _ in drawn], [b for _, b in drawn]


@FAST
@given(maps(), boxes())
def test_one_map_scores_exactly_as_the_single_image_metrics(saliency, box_list):
    assert multi_energy_pointing_game([saliency], [box_list]) == energy_pointing_game(saliency, box_list)
    assert multi_pointing_game([saliency], [box_list]) == pointing_game(saliency, box_list)


@FAST
@given(panels())
def test_in_range_and_none_exactly_when_the_maps_are_empty_together(drawn):
    arrays, box_lists = _split(drawn)
    energy = multi_energy_pointing_game(arrays, box_lists)
    pg = multi_pointing_game(arrays, box_lists)
    empty = not all(np.isfinite(a).all() for a in arrays) or not any((a > 0).any() for a in arrays)
    assert (energy is None) == empty and (pg is None) == empty
    if not empty:
        assert 0.0 <= energy <= 1.0 and pg in (0.0, 1.0)
        if not any(box_lists):  # no image carries evidence: nothing is inside
            assert energy == 0.0 and pg == 0.0


@FAST
@given(panels(MODERATE_FLOAT), st.integers(-30, 30))
def test_scaling_every_map_by_a_power_of_two_changes_nothing(drawn, exponent):
    arrays, box_lists = _split(drawn)
    scaled = [a * 2.0**exponent for a in arrays]
    assert multi_energy_pointing_game(scaled, box_lists) == multi_energy_pointing_game(arrays, box_lists)
    assert multi_pointing_game(scaled, box_lists) == multi_pointing_game(arrays, box_lists)


@FAST
@given(panels(NON_NEGATIVE), maps(NON_NEGATIVE))
def test_mass_on_an_image_without_evidence_counts_as_outside(drawn, elsewhere):
    arrays, box_lists = _split(drawn)
    before = multi_energy_pointing_game(arrays, box_lists)
    after = multi_energy_pointing_game(arrays + [elsewhere], box_lists + [[]])
    assume(before is not None)
    if not (elsewhere > 0).any():
        assert after == pytest.approx(before, rel=1e-12, abs=0)
    else:
        assert after <= before * (1 + 1e-12)
        if before > 0 and elsewhere.max() >= max(a.max() for a in arrays):
            assert after < before  # the extra mass is not negligible next to the rest
    # A single extra peak on the evidence-free image above everything else is a pointing-game miss.
    peak = elsewhere.copy()
    peak.flat[0] = 2 * max([float(a.max()) for a in arrays] + [float(elsewhere.max()), 1.0])
    assert multi_pointing_game(arrays + [peak], box_lists + [[]]) == 0.0


@FAST
@given(panels(MODERATE_FLOAT, min_size=2), st.randoms(use_true_random=False))
def test_the_order_of_the_images_does_not_matter(drawn, random):
    arrays, box_lists = _split(drawn)
    order = list(range(len(arrays)))
    random.shuffle(order)
    energy = multi_energy_pointing_game(arrays, box_lists)
    shuffled = multi_energy_pointing_game([arrays[i] for i in order], [box_lists[i] for i in order])
    assert (energy is None) == (shuffled is None)
    assert energy is None or shuffled == pytest.approx(energy, rel=1e-9, abs=1e-12)
    assert multi_pointing_game([arrays[i] for i in order], [box_lists[i] for i in order]) == multi_pointing_game(
        arrays, box_lists
    )


@FAST
@given(st.lists(st.tuples(SHAPES, st.just([]) | boxes()), min_size=1, max_size=4), st.floats(1e-3, 1e3))
def test_uniform_maps_score_the_pooled_box_area_fraction(drawn, value):
    arrays = [np.full(shape, value) for shape, _ in drawn]
    box_lists = [b for _, b in drawn]
    inside = sum(int(box_mask(a.shape, b).sum()) if b else 0 for a, b in zip(arrays, box_lists))
    total = sum(a.size for a in arrays)
    assert multi_energy_pointing_game(arrays, box_lists) == pytest.approx(inside / total, rel=1e-12)


def test_a_map_on_the_wrong_image_scores_low():
    box = [[0.25, 0.25, 0.75, 0.75]]
    on_target = np.zeros((8, 8))
    on_target[3:5, 3:5] = 1.0
    blank = np.zeros((8, 8))
    assert multi_energy_pointing_game([blank, on_target], [[], box]) == 1.0
    assert multi_pointing_game([blank, on_target], [[], box]) == 1.0
    # The same blob on the other image, at the very place the box would be: all of its mass is outside.
    assert multi_energy_pointing_game([on_target, blank], [[], box]) == 0.0
    assert multi_pointing_game([on_target, blank], [[], box]) == 0.0
    # Half the mass on each image.
    assert multi_energy_pointing_game([on_target, on_target], [[], box]) == pytest.approx(0.5)


def test_boxes_are_placed_on_their_image_or_on_the_step_of_their_frame():
    a, b, c = [0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.1, 0.1, 0.2, 0.2]
    assert boxes_per_map(1, [a, b]) == [[tuple(a), tuple(b)]]
    assert boxes_per_map(3, [a, b, c], box_image=[2, 0, 2]) == [[tuple(b)], [], [tuple(a), tuple(c)]]
    steps = [(0, 2), (2, 4), (4, 6)]
    assert boxes_per_map(3, [a, b, c], box_frame=[1, 0, 5], map_frames=steps) == [
        [tuple(a), tuple(b)],
        [],
        [tuple(c)],
    ]
    with pytest.raises(ValueError, match="box 1 lies on image 3, which none of the 3 maps covers"):
        boxes_per_map(3, [a, b], box_image=[0, 3])
    with pytest.raises(ValueError, match="box 0 lies on frame 6"):
        boxes_per_map(3, [a], box_frame=[6], map_frames=steps)
    with pytest.raises(ValueError, match="no bbox_image or bbox_frame says which image or frame"):
        boxes_per_map(2, [a])
    with pytest.raises(ValueError, match="bbox_image has 1 entries for 2 boxes"):
        boxes_per_map(2, [a, b], box_image=[0])


def test_video_scores_per_frame_and_over_the_clip():
    # Two steps of two frames each; the shape moves from the left half (frames 0-1) to the right half (frames 2-3).
    left, right = [0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]
    step_left = np.zeros((4, 4))
    step_left[:, :2] = 1.0
    step_right = step_left[:, ::-1].copy()
    frames = [(0, 2), (2, 4)]
    bbox, box_frame = [left, left, right, right], [0, 1, 2, 3]
    placed = boxes_per_map(2, bbox, box_frame=box_frame, map_frames=frames)
    assert multi_energy_pointing_game([step_left, step_right], placed) == 1.0
    assert frame_energy_pointing_games([step_left, step_right], frames, bbox, box_frame) == {
        0: 1.0,
        1: 1.0,
        2: 1.0,
        3: 1.0,
    }
    # Looking at where the shape was, not where it is: every frame of the second step misses.
    assert multi_energy_pointing_game([step_left, step_left], placed) == 0.5
    assert frame_energy_pointing_games([step_left, step_left], frames, bbox, box_frame) == {
        0: 1.0,
        1: 1.0,
        2: 0.0,
        3: 0.0,
    }


def test_saliency_reward_scores_several_images_and_video_steps():
    completion = "<think>the circle is in the second image</think>2"
    box = [[0.25, 0.25, 0.75, 0.75]]
    on_target = np.zeros((8, 8))
    on_target[3:5, 3:5] = 1.0
    blank = np.zeros((6, 10))
    reward = SaliencyReward()
    rows = {
        "saliency_map": [[blank, on_target], [on_target, blank], on_target],
        "bbox": [box, box, box],
        "bbox_image": [[1], [1], None],
        "bbox_frame": [None, None, None],
        "saliency_frames": [None, None, None],
    }
    assert reward(["q"] * 3, [completion] * 3, **rows) == [1.0, 0.0, 1.0]
    pg = SaliencyReward(metric="pg")
    assert pg(["q"] * 3, [completion] * 3, **rows) == [1.0, 0.0, 1.0]
    video = {
        "saliency_map": [[on_target, blank]],
        "bbox": [box],
        "bbox_frame": [[1]],
        "saliency_frames": [[(0, 2), (2, 4)]],
    }
    assert reward(["q"], [completion], **video) == [1.0]
    with pytest.raises(ValueError, match=r"row 0, column 'bbox': box 0 lies on image 5"):
        reward(["q"], [completion], saliency_map=[[blank, on_target]], bbox=[box], bbox_image=[[5]])
    with pytest.raises(ValueError, match="column 'bbox_image' has 2 entries for 1 completions"):
        reward(["q"], [completion], saliency_map=[[blank, on_target]], bbox=[box], bbox_image=[[1], [1]])


@FAST
@given(st.lists(st.tuples(COMPLETIONS, st.none() | panels().map(_split)), min_size=1, max_size=3))
def test_saliency_reward_on_several_images_never_raises_and_stays_in_range(rows):
    completions, saliency_maps, bbox, bbox_image = [], [], [], []
    for completion, drawn in rows:
        completions.append(completion)
        if drawn is None:
            saliency_maps.append(None)
            bbox.append([[0.0, 0.0, 1.0, 1.0]])
            bbox_image.append(None)
            continue
        arrays, box_lists = drawn
        assume(any(box_lists))  # a row has evidence somewhere
        saliency_maps.append(arrays)
        bbox.append([box for own in box_lists for box in own])
        bbox_image.append([i for i, own in enumerate(box_lists) for _ in own])
    for metric in ("energy_pg", "pg"):
        reward = SaliencyReward(metric=metric)
        values = reward(["q"] * len(rows), completions, saliency_map=saliency_maps, bbox=bbox, bbox_image=bbox_image)
        assert len(values) == len(rows)
        assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
        assert sum(reward.counts.values()) == len(rows)
