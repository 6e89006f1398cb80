"""Deletion/insertion curves on the tiny Qwen2.5-VL: endpoints and symmetries known without any reference run."""

import numpy as np
import pytest
import torch
from eval_helpers import traced_reference_rows

from evaluation import answer_log_prob_curves, faithfulness_curves, patch_order, prompt_inputs
from evaluation.faithfulness import FaithfulnessResult, auc, random_orders
from saliency import CompletionSpans, ImageLayout, SaliencyMaps
from saliency.baselines import BASELINES


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return traced_reference_rows(tmp_path_factory.mktemp("faith"))


def _curves(setup, index, orders, steps):
    model, processor, rows, tracer, traced = setup
    inputs = prompt_inputs(processor, [rows[index]])
    item = traced[index]
    return answer_log_prob_curves(
        model, tracer.adapter, inputs, item.completion_ids, item.maps.spans.answer, orders, steps=steps
    )


def _answer_log_prob(setup, index, image=None):
    """Teacher-forced answer log-prob of row ``index`` (optionally with another image), with a plain forward."""
    model, processor, rows, _, traced = setup
    row = dict(rows[index])
    if image is not None:
        row["image"] = image
    inputs = prompt_inputs(processor, [row])
    completion = traced[index].completion_ids
    ids = torch.cat([inputs["input_ids"], completion[None]], 1)
    extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    extra["mm_token_type_ids"] = torch.cat([extra["mm_token_type_ids"], torch.zeros_like(completion)[None]], 1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits[0].float()
    start, end = traced[index].maps.spans.answer
    prompt_length = inputs["input_ids"].shape[1]
    log_probs = logits.log_softmax(-1)[prompt_length - 1 + start : prompt_length - 1 + end]
    return float(log_probs.gather(-1, completion[start:end, None]).sum())


def test_the_reference_completions_have_maps(setup):
    assert all(t.maps.has_map for t in setup[4])


def test_endpoints_are_the_unperturbed_and_the_imageless_scores(setup):
    orders = [patch_order(setup[4][0].maps, "flow")]
    curves = _curves(setup, 0, orders, steps=4)
    full = _answer_log_prob(setup, 0)
    assert curves["deletion"][0, 0] == pytest.approx(full, abs=1e-4)
    assert curves["insertion"][0, -1] == pytest.approx(full, abs=1e-4)
    assert curves["deletion"][0, -1] == pytest.approx(curves["insertion"][0, 0], abs=1e-4)
    assert curves["deletion"][0, -1] != pytest.approx(full, abs=1e-3)


def test_with_every_patch_removed_the_image_no_longer_matters(setup):
    rows = setup[2]
    other_image = rows[1]["image"]
    model, processor, _, tracer, traced = setup
    row = dict(rows[0])
    row["image"] = other_image
    inputs = prompt_inputs(processor, [row])
    columns = torch.cat([image.positions for image in traced[0].maps.images])
    swapped = answer_log_prob_curves(
        model, tracer.adapter, inputs, traced[0].completion_ids, traced[0].maps.spans.answer, [columns], steps=2
    )
    original = _curves(setup, 0, [columns], steps=2)
    assert swapped["deletion"][0, -1] == pytest.approx(original["deletion"][0, -1], abs=1e-4)
    assert swapped["deletion"][0, 0] != pytest.approx(original["deletion"][0, 0], abs=1e-4)


def test_deletion_in_one_order_is_insertion_in_the_reverse_order(setup):
    order = patch_order(setup[4][0].maps, "direct")
    assert len(order) % 4 == 0  # every step removes a whole number of patches
    curves = _curves(setup, 0, [order, order.flip(0)], steps=4)
    np.testing.assert_allclose(curves["deletion"][0], curves["insertion"][1][::-1], atol=1e-4)


def test_patch_order_ranks_by_the_answer_summed_score():
    scores = torch.tensor([[9.0, 9.0, 9.0, 9.0], [0.0, 3.0, -1.0, 2.0], [0.0, 1.0, -1.0, -5.0]])
    layout = ImageLayout(positions=torch.tensor([0, 1, 2, 3]), grid=(2, 2), size=(4, 4))
    maps = SaliencyMaps(
        torch.tensor([1, 2, 3]),
        CompletionSpans(thinking=(0, 1), answer=(1, 3)),
        [layout],
        {"direct": scores},
        {"direct": torch.ones(3, dtype=torch.bool)},
    )
    assert patch_order(maps, "direct").tolist() == [1, 0, 2, 3]  # sums 4, 0, -2, -3: row 0 is not in the answer
    with pytest.raises(ValueError, match="no saliency map"):
        patch_order(SaliencyMaps(torch.tensor([1]), None, [layout], reason="bad format"), "direct")


def test_random_orders_are_seeded_permutations():
    columns = torch.arange(10)
    first, second = random_orders(columns, 2, seed=4)
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(random_orders(columns, 2, seed=4), [first, second]))


def test_auc_of_known_curves():
    fractions = np.linspace(0, 1, 5)
    assert auc(fractions, np.full(5, -2.0)) == pytest.approx(-2.0)
    assert auc(fractions, fractions) == pytest.approx(0.5)


def test_faithfulness_curves_average_methods_and_the_random_baseline(setup):
    model, processor, rows, tracer, traced = setup
    samples = [
        (prompt_inputs(processor, [rows[i]]), traced[i].completion_ids, {"flow": traced[i].maps}) for i in range(2)
    ]
    result = faithfulness_curves(model, tracer.adapter, samples, steps=2, random_orders_per_row=2, seed=0)
    assert set(result.curves) == {"flow", "random"} and result.n_rows == 2
    assert all(len(c) == 3 for curves in result.curves.values() for c in curves.values())
    one = _curves(setup, 0, [patch_order(traced[0].maps, "flow")], steps=2)
    two = _curves(setup, 1, [patch_order(traced[1].maps, "flow")], steps=2)
    np.testing.assert_allclose(
        result.curves["flow"]["deletion"], (one["deletion"][0] + two["deletion"][0]) / 2, atol=1e-4
    )
    assert result.row_curves["flow"]["deletion"].shape == (2, 3)
    np.testing.assert_allclose(result.row_curves["flow"]["deletion"][1], two["deletion"][0], atol=1e-4)
    areas = result.aucs()
    assert areas["flow"]["insertion_minus_deletion"] == pytest.approx(
        areas["flow"]["insertion"] - areas["flow"]["deletion"]
    )
    assert all(np.isfinite(v) for method in areas.values() for v in method.values())
    with pytest.raises(ValueError, match="at least one row"):
        faithfulness_curves(model, tracer.adapter, [])


def test_a_baseline_method_is_scored_beside_the_tracer(setup):
    model, processor, rows, tracer, traced = setup
    gradient = BASELINES["gradient"](model, tracer.tokens)
    inputs = prompt_inputs(processor, [rows[0]])
    vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    maps = gradient.attribute(inputs["input_ids"], traced[0].completion_ids[None], **vision)[0]
    samples = [(inputs, traced[0].completion_ids, {"flow": traced[0].maps, "gradient": maps})]
    result = faithfulness_curves(model, tracer.adapter, samples, steps=2, random_orders_per_row=1)
    assert set(result.aucs()) == {"flow", "gradient", "random"}
    # Every method starts its deletion curve from the same unperturbed score.
    starts = {m: c["deletion"][0] for m, c in result.curves.items()}
    assert max(starts.values()) - min(starts.values()) < 1e-4


def test_per_row_areas_give_bootstrap_intervals_against_the_random_order():
    flat = np.ones((3, 3))
    result = FaithfulnessResult(
        fractions=np.linspace(0, 1, 3),
        row_curves={
            "flow": {"deletion": flat * [[0.0], [1.0], [-1.0]], "insertion": flat * [[2.0], [1.0], [3.0]]},
            "random": {"deletion": flat, "insertion": flat},
        },
    )
    assert result.n_rows == 3
    np.testing.assert_allclose(result.curves["flow"]["deletion"], [0.0, 0.0, 0.0])
    np.testing.assert_allclose(result.row_aucs()["flow"]["insertion"], [2.0, 1.0, 3.0])
    intervals = result.auc_vs_random(bootstrap_samples=500, confidence=0.9, seed=0)
    assert set(intervals["random"]) == {"deletion", "insertion"}
    assert set(intervals["flow"]) == {"deletion", "insertion", "deletion_minus_random", "insertion_minus_random"}
    for key, mean in (("deletion_minus_random", -1.0), ("insertion_minus_random", 1.0), ("deletion", 0.0)):
        entry = intervals["flow"][key]  # row differences: deletion -1, 0, -2; insertion 1, 0, 2
        assert entry["mean"] == pytest.approx(mean) and entry["n"] == 3
        assert entry["low"] < entry["mean"] < entry["high"]
    assert intervals == result.auc_vs_random(bootstrap_samples=500, confidence=0.9, seed=0)
    summary = result.to_dict(bootstrap_samples=500, confidence=0.9, seed=0)
    assert summary["auc_vs_random"] == intervals and summary["auc"]["flow"]["insertion"] == pytest.approx(2.0)
