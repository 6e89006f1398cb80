"""Logit-lens patch features: equal to a direct computation, captured in the maps' own pass, hooks released."""

import json

import numpy as np
import pytest
import torch
from eval_helpers import build_assets, forced_generate_kwargs, reference_completions
from trl import ModelConfig

import evaluation.export as export_module
from data_tools import generate_split
from evaluation import ExportArguments, run_export
from evaluation.export import completion_phrases
from evaluation.generation import prompt_inputs, trace_completions
from evaluation.logit_lens import LogitLensCapture
from saliency import SaliencyTracer, SpecialTokens
from vlm import load_model_and_processor

SHAPES = ["circle", "square", "triangle", "diamond"]
LAYERS = [0, -1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lens")
    found = build_assets(root, num_rows=3)
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(found["model"]), dtype="float32"))
    return {**found, "root": root, "loaded": model, "processor": processor, "rows": generate_split("eval", 3, seed=0)}


def _direct_probs(model, processor, row) -> tuple[torch.Tensor, torch.Tensor]:
    """(layers, N, vocab) lens probabilities of one unbatched row's image tokens from ``output_hidden_states``, read
    through the model's own final norm and lm_head, and (N, vocab) the model's own output distribution there."""
    inputs = prompt_inputs(processor, [row])
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    image = inputs["input_ids"][0] == model.config.image_token_id
    count = len(model.model.language_model.layers)
    # hidden_states[l + 1] is the output of decoder layer l, except the last entry (after the final norm here)
    states = [out.hidden_states[layer % count + 1][0, image] for layer in LAYERS[:-1]]
    with torch.no_grad():
        probs = [model.lm_head(model.model.language_model.norm(h)).softmax(-1) for h in states]
    own = out.logits[0, image].softmax(-1)
    return torch.stack(probs + [own]), own  # LAYERS ends with the last layer: the model's own read-out


def test_capture_equals_direct_computation_in_the_tracers_batched_pass(assets):
    model, processor, rows = assets["loaded"], assets["processor"], assets["rows"]
    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))
    with LogitLensCapture(model, LAYERS).capturing() as lens:  # a left-padded batch of 3 in one scoring forward
        traced = list(
            trace_completions(tracer, processor, rows, completions=reference_completions(rows), progress=False)
        )
    assert lens.forwards == 1 and lens.layers == [0, len(model.model.language_model.layers) - 1]
    for b, row in enumerate(rows):
        probs, own = _direct_probs(model, processor, row)
        top = lens.topk_probabilities(b, 4)
        assert top.shape == (4, 2, probs.shape[1])
        torch.testing.assert_close(top, probs.topk(4, -1).values.permute(2, 0, 1), atol=1e-5, rtol=1e-4)
        phrases = completion_phrases(processor.tokenizer, traced[b].maps, SHAPES)
        ids = [traced[b].completion_ids[tokens].tolist() for _, tokens in phrases]
        assert ids
        expected = torch.stack([probs[..., sorted(set(group))].sum(-1) for group in ids])
        torch.testing.assert_close(lens.phrase_probabilities(b, ids), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(lens.topk_probabilities(b, 1)[0, -1], own.max(-1).values, atol=1e-5, rtol=1e-4)


def _counting_loader(counts: list[int]):
    """``load_model_and_processor`` whose model counts its forwards into ``counts``."""

    def load(*args, **kwargs):
        model, processor = load_model_and_processor(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: counts.append(1))
        return model, processor

    return load


@pytest.mark.parametrize("features", ["phrases", "topk"])
def test_export_writes_features_equal_to_direct_computation(assets, features, monkeypatch):
    forwards: list[int] = []
    monkeypatch.setattr(export_module, "load_model_and_processor", _counting_loader(forwards))
    out = assets["root"] / f"export-{features}"
    args = ExportArguments(
        dataset_name=str(assets["data"]),
        completions_file=str(assets["completions"]),
        batch_size=3,
        object_nouns=SHAPES,
        output_dir=str(out),
        logit_lens_layers=LAYERS,
        logit_lens_features=features,
        logit_lens_topk=3,
    )
    jsonl = run_export(args, ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32"))
    assert len(forwards) == 1  # the batch's one scoring forward made the maps and the features
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    tokenizer = assets["processor"].tokenizer
    tracer = SaliencyTracer(assets["loaded"], SpecialTokens.from_tokenizer(assets["processor"]))
    rows = assets["rows"]
    traced = trace_completions(
        tracer, assets["processor"], rows, completions=reference_completions(rows), progress=False
    )
    proposals = 0
    for line, row, sample in zip(lines, rows, traced):
        lens = line["logit_lens"]
        grid = np.load(out / lens["path"])
        last = len(assets["loaded"].model.language_model.layers) - 1
        assert lens["features"] == features and lens["layers"] == [0, last]
        assert lens["grid"] == list(sample.maps.images[0].grid) and grid.shape[1:] == (2, *lens["grid"])
        probs, _ = _direct_probs(assets["loaded"], assets["processor"], row)
        if features == "topk":
            expected = probs.topk(3, -1).values.permute(2, 0, 1)
        else:
            by_text = {p.text: tokens for p, tokens in completion_phrases(tokenizer, sample.maps, SHAPES)}
            ids = [sorted(set(sample.completion_ids[by_text[p["phrase"]]].tolist())) for p in line["proposals"]]
            expected = torch.stack([probs[..., group].sum(-1) for group in ids] + [probs[..., :0].sum(-1)])[:-1]
            proposals += len(ids)
        positions = sample.maps.images[0].positions
        expected = expected[..., positions].reshape(*expected.shape[:2], *lens["grid"])
        np.testing.assert_allclose(grid, expected.numpy(), atol=1e-5, rtol=1e-4)
    assert features == "topk" or proposals > 0  # one channel per proposal, in the proposals' order


def test_no_second_forward_and_hooks_released(assets):
    model, processor, rows = assets["loaded"], assets["processor"], assets["rows"].select(range(2))
    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))
    modules = [model, *model.modules()]
    before = [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in modules]
    forwards: list[int] = []
    counter = model.register_forward_pre_hook(lambda module, inputs: forwards.append(1))

    prompt_length = prompt_inputs(processor, rows)["input_ids"].shape[1]
    forced = forced_generate_kwargs(processor, reference_completions(rows), prompt_length)  # completions with maps

    def traced_generation(capture: bool):
        forwards.clear()
        lens = None
        if capture:
            with LogitLensCapture(model, [1]).capturing() as lens:
                traced = list(trace_completions(tracer, processor, rows, generate_kwargs=forced, progress=False))
        else:
            traced = list(trace_completions(tracer, processor, rows, generate_kwargs=forced, progress=False))
        return traced, len(forwards), lens

    plain, plain_forwards, _ = traced_generation(False)
    captured, captured_forwards, lens = traced_generation(True)
    assert captured_forwards == plain_forwards == lens.forwards > 1  # prefill + decode steps, nothing added
    for a, b in zip(plain, captured):  # the maps and completions are untouched by the capture
        assert torch.equal(a.completion_ids, b.completion_ids) and a.maps.has_map and b.maps.has_map
        for kind, scores in a.maps.scores.items():
            torch.testing.assert_close(scores, b.maps.scores[kind], atol=0, rtol=0)
    # the prefill's image tokens (not a decode step's): the same features as a scoring forward's capture
    assert lens.hidden_states(1).shape[:2] == (1, len(captured[1].maps.images[0].positions))
    with LogitLensCapture(model, [1]).capturing() as scored:
        list(trace_completions(tracer, processor, rows, completions=reference_completions(rows), progress=False))
    for b in range(len(rows)):
        torch.testing.assert_close(lens.topk_probabilities(b, 3), scored.topk_probabilities(b, 3), atol=1e-5, rtol=1e-4)
    counter.remove()
    with pytest.raises(RuntimeError, match="boom"), LogitLensCapture(model, LAYERS).capturing():
        raise RuntimeError("boom")
    assert [(dict(m._forward_hooks), dict(m._forward_pre_hooks)) for m in modules] == before


def test_bad_flags_are_named(assets):
    with pytest.raises(ValueError, match="--logit_lens_layers"):
        ExportArguments(logit_lens_layers=[])
    with pytest.raises(ValueError, match="--logit_lens_features"):
        ExportArguments(logit_lens_features="all")
    with pytest.raises(ValueError, match="--logit_lens_topk"):
        ExportArguments(logit_lens_topk=0)
    args = ExportArguments(
        dataset_name=str(assets["data"]),
        completions_file=str(assets["completions"]),
        logit_lens_layers=[7],
        output_dir=str(assets["root"] / "bad"),
    )
    with pytest.raises(ValueError, match=r"--logit_lens_layers \[7\]: .*out of range"):
        run_export(args, ModelConfig(model_name_or_path=str(assets["model"]), dtype="float32"))
    lens = LogitLensCapture(assets["loaded"], [0])
    with pytest.raises(RuntimeError, match="no forward"):
        lens.topk_probabilities(0, 2)
