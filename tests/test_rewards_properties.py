"""Properties of the rewards and metrics over generated inputs (hypothesis).

Maps range over all float64 values (negative, NaN, inf, zero, subnormal, huge), shapes from 1x1 to very thin or
tall; texts over arbitrary unicode and over jumbles of the tags and notations the parsers look for.
"""

import math
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from rewards import (
    SaliencyReward,
    accuracy_reward,
    answer_matches,
    box_area_fraction,
    box_iou,
    box_mask,
    centre_point_game,
    energy_pointing_game,
    find_answer_box,
    format_reward,
    get_reward_funcs,
    iou_reward,
    is_empty_map,
    normalize_answer,
    pointing_game,
)

# No deadline: CI machines are shared and slow. A few dozen examples per property keep the file fast.
FAST = settings(deadline=None, max_examples=80)

SHAPES = st.tuples(st.integers(1, 16), st.integers(1, 16)) | st.sampled_from(
    [(1, 1), (1, 300), (257, 1), (2, 150), (90, 3)]
)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
FINITE_FLOAT = st.floats(allow_nan=False, allow_infinity=False)
# No subnormals, so that scaling by a power of two is exact.
MODERATE_FLOAT = st.floats(-1e6, 1e6).filter(lambda v: v == 0.0 or abs(v) > 1e-200)


def maps(elements=ANY_FLOAT, shapes=SHAPES):
    return shapes.flatmap(lambda shape: hnp.arrays(np.float64, shape, elements=elements))


@st.composite
def boxes(draw):
    """1 to 3 valid normalised boxes (0 <= x1 < x2 <= 1, same for y), some of them much smaller than a pixel."""
    result = []
    for _ in range(draw(st.integers(1, 3))):
        x1, x2 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
        y1, y2 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
        result.append([x1, y1, x2, y2])
    return result


FRAGMENTS = [
    "<think>", "</think>", "<|im_end|>", "<|endoftext|>", "<|box_start|>", "<|box_end|>", "<box>", "</box>",
    "[", "]", "(", ")", ",", " ", "\n", "0.5", "12", "-3", "1e400", "9" * 400, "yes", "No", "(B)", "A.", "three",
    "\\boxed{", "}", " and ", "%", "/0", "🟥", "\x00", "\u202e", "答案",
]  # fmt: skip
TEXTS = st.text() | st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=24).map("".join)
COMPLETIONS = TEXTS | TEXTS.map(lambda text: [{"role": "assistant", "content": text}])


def brute_force_mask(shape, box_list):
    """SPEC's membership rule written pixel by pixel: pixel (r, c) is in when its centre ((c + .5) / W, (r + .5) / H)
    lies in a box; a box holding no pixel centre takes the pixel that holds its own centre."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for x1, y1, x2, y2 in box_list:
        covered = False
        for r in range(height):
            for c in range(width):
                if x1 <= (c + 0.5) / width <= x2 and y1 <= (r + 0.5) / height <= y2:
                    mask[r, c] = covered = True
        if not covered:
            mask[min(int((y1 + y2) / 2 * height), height - 1), min(int((x1 + x2) / 2 * width), width - 1)] = True
    return mask


@FAST
@given(maps(), boxes())
def test_metrics_stay_in_range_and_none_means_empty(saliency, box_list):
    energy = energy_pointing_game(saliency, box_list)
    pg = pointing_game(saliency, box_list)
    if is_empty_map(saliency):
        assert energy is None and pg is None
    else:
        assert 0.0 <= energy <= 1.0
        assert pg in (0.0, 1.0)
    assert 0.0 < box_area_fraction(saliency.shape, box_list) <= 1.0  # never an empty box
    assert centre_point_game(saliency.shape, box_list) in (0.0, 1.0)


@settings(FAST, max_examples=50)
@given(SHAPES.filter(lambda s: s[0] * s[1] <= 400), boxes())
def test_box_mask_matches_the_pixel_by_pixel_rule(shape, box_list):
    assert np.array_equal(box_mask(shape, box_list), brute_force_mask(shape, box_list))


@FAST
@given(SHAPES, boxes(), st.floats(min_value=0.0, exclude_min=True, allow_infinity=False))
def test_uniform_map_scores_exactly_the_box_area_fraction(shape, box_list, value):
    assert energy_pointing_game(np.full(shape, value), box_list) == box_area_fraction(shape, box_list)


@FAST
@given(maps(MODERATE_FLOAT), boxes(), st.integers(-30, 30))
def test_scaling_by_a_power_of_two_changes_nothing(saliency, box_list, exponent):
    scaled = saliency * 2.0**exponent
    assert energy_pointing_game(scaled, box_list) == energy_pointing_game(saliency, box_list)
    assert pointing_game(scaled, box_list) == pointing_game(saliency, box_list)


@FAST
@given(maps(st.floats(-1e300, 1e300).filter(lambda v: v == 0.0 or abs(v) > 1e-290)), boxes(), st.floats(1e-3, 1e3))
def test_scaling_by_a_positive_constant_keeps_the_energy(saliency, box_list, factor):
    before = energy_pointing_game(saliency, box_list)
    after = energy_pointing_game(saliency * factor, box_list)
    assert (before is None) == (after is None)
    assert before is None or after == pytest.approx(before, rel=1e-9, abs=1e-12)


@FAST
@given(maps(st.floats(0.0, 1e6)), boxes(), st.floats(-1e6, 0.0))
def test_all_positive_mass_inside_the_boxes_scores_exactly_one(saliency, box_list, outside_value):
    inside = box_mask(saliency.shape, box_list)
    saliency = np.where(inside, saliency, outside_value)
    saliency[np.argwhere(inside)[0][0], np.argwhere(inside)[0][1]] += 1.0  # at least one positive pixel inside
    assert energy_pointing_game(saliency, box_list) == 1.0


@FAST
@given(maps(FINITE_FLOAT, shapes=st.tuples(st.integers(1, 12), st.integers(1, 12))), boxes())
def test_pointing_game_with_a_single_peak_checks_that_pixel(saliency, box_list):
    assume(not is_empty_map(saliency) and saliency.size > 1 and (saliency == saliency.max()).sum() == 1)
    row, col = np.unravel_index(saliency.argmax(), saliency.shape)
    assert pointing_game(saliency, box_list) == float(brute_force_mask(saliency.shape, box_list)[row, col])


@FAST
@given(maps(FINITE_FLOAT), boxes(), st.floats(0, 50), st.floats(0, 50))
def test_more_tolerance_never_turns_a_hit_into_a_miss(saliency, box_list, a, b):
    small, large = sorted((a, b))
    assert (pointing_game(saliency, box_list, small) or 0.0) <= (pointing_game(saliency, box_list, large) or 0.0)


@FAST
@given(st.lists(COMPLETIONS, min_size=1, max_size=4), st.data())
def test_text_rewards_never_raise_and_stay_in_range(completions, data):
    n = len(completions)
    solutions = data.draw(st.lists(TEXTS | st.integers().map(str), min_size=n, max_size=n))
    bbox = data.draw(st.lists(boxes(), min_size=n, max_size=n))
    assert all(r in (0.0, 1.0) for r in format_reward(["q"] * n, completions))
    assert all(r in (0.0, 1.0) for r in accuracy_reward(["q"] * n, completions, solution=solutions))
    assert all(0.0 <= r <= 1.0 for r in iou_reward(["q"] * n, completions, bbox=bbox))


@FAST
@given(st.lists(st.tuples(COMPLETIONS, st.none() | maps(), boxes()), min_size=1, max_size=4))
def test_saliency_reward_never_raises_and_stays_in_range(rows):
    completions, saliency_maps, bbox = (list(column) for column in zip(*rows))
    for metric in ("energy_pg", "pg"):
        reward = SaliencyReward(metric=metric)
        values = reward(["q"] * len(rows), completions, saliency_map=saliency_maps, bbox=bbox)
        assert len(values) == len(rows)
        assert all(0.0 <= v <= 1.0 and not math.isnan(v) for v in values)
        assert sum(reward.counts.values()) == len(rows)


@FAST
@given(st.lists(st.tuples(COMPLETIONS, st.none() | maps(), boxes(), TEXTS), min_size=1, max_size=3))
def test_default_rewards_stay_in_range(rows):
    completions, saliency_maps, bbox, solutions = (list(column) for column in zip(*rows))
    for func in get_reward_funcs():  # in [0, 1] each, so any non-negative reward_weights bound TRL's weighted sum
        values = func(["q"] * len(rows), completions, solution=solutions, saliency_map=saliency_maps, bbox=bbox)
        assert all(0.0 <= value <= 1.0 for value in values)


@FAST
@given(TEXTS, st.none() | st.tuples(st.integers(1, 4000), st.integers(1, 4000)), st.none() | st.floats(1, 1e4))
def test_find_answer_box_returns_ordered_boxes_inside_the_image(text, image_size, coordinate_range):
    box = find_answer_box(text, image_size, coordinate_range)
    if box is not None:
        x1, y1, x2, y2 = box
        assert 0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0


@FAST
@given(boxes(), boxes())
def test_iou_is_symmetric_bounded_and_one_on_itself(first, second):
    a, b = tuple(first[0]), tuple(second[0])
    assert box_iou(a, b) == box_iou(b, a)
    assert 0.0 <= box_iou(a, b) <= 1.0
    assert box_iou(a, a) == pytest.approx(1.0)


@FAST
@given(st.text(alphabet="abcdefgh ABC0123456789,.;", min_size=1).filter(lambda s: normalize_answer(s) != ""))
def test_every_answer_matches_itself(solution):
    assert answer_matches(solution, solution)


@pytest.mark.parametrize(
    "text",
    [
        " " * 100_000 + "x",
        "<think>" + "\n" * 100_000 + "</think>" + " " * 100_000 + "a",
        "<think>a</think>b" + "<|im_end|> " * 10_000,
        "(" + "1" * 100_000,
        "1," * 50_000,
    ],
    ids=["spaces", "blank-think", "end-markers", "digit-run", "comma-run"],
)
def test_degenerate_long_completions_are_scored_quickly(text):
    # Quadratic parsing takes minutes on these; linear parsing well under a second each.
    start = time.perf_counter()
    format_reward(["q"], [text])
    accuracy_reward(["q"] * 4, [text] * 4, solution=["3", "red, blue", "yes", "B"])
    iou_reward(["q"], [text], bbox=[[0.0, 0.0, 1.0, 1.0]])
    assert time.perf_counter() - start < 20.0
