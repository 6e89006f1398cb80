"""The cascading-randomisation sanity check of the maps on the tiny Qwen2.5-VL, and its rank correlation."""

import copy

import numpy as np
import pytest
import torch
from eval_helpers import traced_reference_rows
from torch import nn

from evaluation import cascading_randomisation, prompt_inputs, randomisation_steps, spearman
from evaluation.sanity import reinitialise
from saliency import Attribution, GradientTimesActivation, SaliencyTracer


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    model, processor, rows, tracer, traced = traced_reference_rows(tmp_path_factory.mktemp("sanity"))
    samples = [(prompt_inputs(processor, [rows[i]]), traced[i].completion_ids) for i in range(2)]
    return model, tracer, samples


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert not changed, f"weights changed: {changed[:5]}"


@pytest.fixture(scope="module")
def run(setup):
    model, tracer, samples = setup
    before = _state(model)
    gradient = GradientTimesActivation(model, tracer.tokens)
    result = cascading_randomisation(tracer, samples, kinds=("flow", "direct"), baselines=[gradient], seed=0)
    return result, before


def test_spearman_equals_scipy_with_and_without_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.normal(size=30), rng.normal(size=30)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
        tied_a, tied_b = np.round(a), np.maximum(b, 0)  # many ties, as in a relu'd map
        assert spearman(tied_a, tied_b) == pytest.approx(stats.spearmanr(tied_a, tied_b).statistic, abs=1e-12)


def test_spearman_by_hand_with_ties_and_constant_maps():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): centred products 4.5 over sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 30, 20, 40]) == pytest.approx(3 / np.sqrt(10))
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [0, 0, 0]) == 0.0 and spearman([5, 5], [1, 2]) == 0.0
    with pytest.raises(ValueError, match="one length"):
        spearman([1, 2], [1, 2, 3])


def test_the_cascade_goes_from_the_read_out_down_to_every_layer(setup):
    model, tracer, _ = setup
    steps = randomisation_steps(tracer.adapter)
    assert [label for label, _ in steps] == [
        "original",
        "lm_head+norm",
        "lm_head+norm, layer 3",
        "lm_head+norm, layers 2-3",
        "lm_head+norm, layers 1-3",
        "lm_head+norm, layers 0-3",
    ]
    layers = model.model.language_model.layers
    assert steps[0][1] == [] and steps[1][1] == [model.model.language_model.norm, model.lm_head]
    assert [modules for _, modules in steps[2:]] == [[layers[3]], [layers[2]], [layers[1]], [layers[0]]]


def test_quantized_weights_are_refused(setup):
    model = copy.deepcopy(setup[0])
    layer = model.model.language_model.layers[0]
    layer.mlp.down_proj.weight = nn.Parameter(layer.mlp.down_proj.weight.to(torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match=r"'mlp.down_proj.weight' is quantized \(torch.int8\).*--sanity_samples 0"):
        randomisation_steps(SaliencyTracer(model, setup[1].tokens).adapter)


def test_reinitialise_draws_the_transformers_init_from_the_seed(setup):
    layer = copy.deepcopy(setup[0].model.language_model.layers[0])
    original = _state(layer)
    reinitialise(layer, 0.02, seed=3)
    first = _state(layer)
    reinitialise(layer, 0.02, seed=3)
    _assert_same_state(layer, first)
    assert torch.equal(first["input_layernorm.weight"], torch.ones_like(first["input_layernorm.weight"]))
    assert torch.equal(first["self_attn.q_proj.bias"], torch.zeros_like(first["self_attn.q_proj.bias"]))
    weight = first["mlp.up_proj.weight"]
    assert not torch.equal(weight, original["mlp.up_proj.weight"])
    assert float(weight.std()) == pytest.approx(0.02, rel=0.05) and abs(float(weight.mean())) < 1e-3


def test_the_callers_weights_are_unchanged(setup, run):
    _assert_same_state(setup[0], run[1])


def test_correlations_start_at_one_and_stay_finite(run):
    result, _ = run
    assert len(result.steps) == 6 and set(result.correlations) == {"flow", "direct", "gradient"}
    for method, values in result.correlations.items():
        assert values.shape[0] == 6 and np.isfinite(values).all() and (np.abs(values) <= 1).all(), method
        np.testing.assert_allclose(values[0], 1.0, atol=1e-12)
    # the direct and gradient maps of this random model have a ranking on both rows (the flow map may be empty)
    assert result.correlations["direct"].shape[1] == 2 and result.correlations["gradient"].shape[1] == 2


def test_randomising_every_layer_changes_the_maps(run):
    result, _ = run
    for method in ("direct", "gradient"):
        last = result.correlations[method][-1]
        # Below 1 (the model was changed) and not 0 (the randomised map is not empty: a real ranking was compared).
        assert (last < 0.9).all() and (last != 0).any(), (method, last)


def test_a_map_that_reads_only_the_input_stays_correlated(setup):
    model, tracer, samples = setup

    class PositionOnly(Attribution):
        """A method blind to the weights: each image position scores its index in the sequence."""

        kind = "position"

        def answer_scores(self, batch):
            return batch.image_index[:, None, :].float().expand(-1, batch.answer_ids.shape[1], -1)

    result = cascading_randomisation(tracer, samples, kinds=(), baselines=[PositionOnly(model, tracer.tokens)])
    np.testing.assert_allclose(result.correlations["position"], 1.0, atol=1e-12)


def test_the_check_is_seeded_and_the_dictionary_summarises_it(setup, run):
    _, tracer, samples = setup
    result, _ = run
    again = cascading_randomisation(tracer, samples, kinds=("direct",), seed=0)
    np.testing.assert_array_equal(again.correlations["direct"], result.correlations["direct"])
    other_seed = cascading_randomisation(tracer, samples, kinds=("direct",), seed=1)
    assert not np.array_equal(other_seed.correlations["direct"][-1], result.correlations["direct"][-1])
    summary = result.to_dict()
    assert summary["steps"] == result.steps
    direct = summary["methods"]["direct"]
    assert direct["n_rows"] == 2 and direct["spearman"][0] == pytest.approx(1.0)
    assert direct["spearman"] == pytest.approx(result.correlations["direct"].mean(1).tolist())
    assert direct["abs_spearman"] == pytest.approx(np.abs(result.correlations["direct"]).mean(1).tolist())


def test_weights_are_restored_when_a_method_fails_midway(setup):
    model, tracer, samples = setup
    before = _state(model)

    class FailingGradient(GradientTimesActivation):
        calls = 0

        def answer_scores(self, batch):
            self.calls += 1
            if self.calls == 2 * 3 + 1:  # step 3: read-out and the last two layers are randomised
                raise RuntimeError("interrupted")
            return super().answer_scores(batch)

    with pytest.raises(RuntimeError, match="interrupted"):
        cascading_randomisation(tracer, samples, kinds=(), baselines=[FailingGradient(model, tracer.tokens)])
    _assert_same_state(model, before)


def test_a_baseline_over_another_model_is_refused(setup):
    model, tracer, samples = setup
    other = GradientTimesActivation(copy.deepcopy(model), tracer.tokens)
    with pytest.raises(ValueError, match=r"\['gradient'\] explain another model"):
        cascading_randomisation(tracer, samples, baselines=[other])
