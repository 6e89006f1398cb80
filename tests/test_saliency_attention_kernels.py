"""The tracer under every attention implementation a recipe can name: eager, SDPA, flex attention and flash attention 2.

flash-attn needs a GPU, so flash attention 2 runs here through a CPU stand-in, registered through transformers'
public ``AttentionInterface`` under the name ``flash_attention_2`` itself for the length of each test (the built-in
entry is put back after). The model's configs name ``flash_attention_2`` exactly as after ``from_pretrained(...,
attn_implementation="flash_attention_2")`` on a machine with flash-attn (set directly: transformers' own check would
look for the flash-attn package or download a Hub kernel here), so everything upstream of the kernel is transformers'
flash path unchanged: ``flash_attention_mask`` builds the masks (a 2-D padding mask, or None without padding), the
decoder passes position ids (packed sequences) and any ``cu_seq_lens_*``/``max_length_*`` kwargs, the Qwen vision
towers take their flash branch (``cu_seqlens``, ``is_causal=False``), and ``generate`` keeps the mask as it does for
flash attention.

What the stand-in replaces is ``transformers.integrations.flash_attention.flash_attention_forward`` with everything
under it (``_flash_attention_forward``, unpadding, the flash-attn kernels): it receives exactly that function's
arguments, takes the same branch the wrapper would (2-D mask: unpad, per-sample varlen with bottom-right causal
alignment, zeros at padded query rows; else ``cu_seq_lens`` kwargs; else packed position ids of one batch row; else
dense), and computes each sequence's softmax attention in plain torch at the inputs' dtype. Like transformers it
picks its kernel by ``module.config._attn_implementation`` and fails on a name that is not a flash-attention kernel.
Not reproduced: the cast of float32 inputs to fp16/bf16 and the kernel's own numerics.
"""

from __future__ import annotations

import itertools
import logging
from contextlib import contextmanager

import pytest
import torch
from saliency_reference import (
    END_THINK,
    IDS,
    IM_END,
    THINK,
    TOKENS,
    prompt_batch,
    right_pad,
    scripted_generate_kwargs,
    text_inputs,
    tiny_vlm,
    vision_inputs,
)
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from saliency import SaliencyTracer, find_spans
from saliency.capture import (
    TRACE_PREFIX,
    TRACEABLE_ATTENTION,
    Recorder,
    attention_convention,
    attention_rows,
    row_mask,
    traced_attention,
)
from saliency.reference import reference_scores

QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
FAMILIES = (*QWEN, "llava")
# Qwen2-VL, Qwen2.5-VL and Qwen3-VL refuse flex attention in transformers (no `_supports_flex_attn`); LLaVA takes it.
IMPLEMENTATIONS = [(f, i) for f in FAMILIES for i in ("eager", "sdpa", "flash_attention_2")] + [
    ("llava", "flex_attention")
]
# Sample 0 has one 2x3 image, sample 1 two images and a longer prompt, so sample 0 is left-padded.
SAMPLES = [([(2, 3)], [11, 12, 13]), ([(2, 2), (1, 2)], [14, 15, 16, 17, 18])]
COMPLETIONS = [[THINK, 20, 21, 22, END_THINK, 30, 31, IM_END, IDS.eos], [THINK, 23, 24, END_THINK, 32, IM_END]]


# --- the flash-attention-2 stand-in -----------------------------------------------------------------------------


def _attend(query, key, value, causal: bool, scaling: float) -> torch.Tensor:
    """One sequence: (q, H, d) x (k, KVH, d) -> (q, H, d), causal aligned bottom-right as flash attention does."""
    group = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
    scores = torch.einsum("qhd,khd->hqk", query, key) * scaling
    if causal:
        q_len, k_len = query.shape[0], key.shape[0]
        visible = torch.arange(k_len)[None, :] <= torch.arange(q_len)[:, None] + (k_len - q_len)
        scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), value)


def _varlen(query, key, value, cu_q, cu_k, causal, scaling) -> torch.Tensor:
    """flash_attn_varlen_func: (total, H, d) tokens, sequence i at cu[i]:cu[i + 1]."""
    out = torch.zeros_like(query)
    for i in range(len(cu_q) - 1):
        q, k = slice(int(cu_q[i]), int(cu_q[i + 1])), slice(int(cu_k[i]), int(cu_k[i + 1]))
        out[q] = _attend(query[q], key[k], value[k], causal, scaling)
    return out


class FlashAttention2StandIn:
    """``flash_attention_forward``'s calling convention, computed in plain torch; logs the branch of every call."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (module class, branch)

    def __call__(
        self,
        module,
        query,
        key,
        value,
        attention_mask,
        dropout=0.0,
        scaling=None,
        sliding_window=None,
        softcap=None,
        is_causal=None,
        s_aux=None,
        position_ids=None,
        cu_seq_lens_q=None,
        cu_seq_lens_k=None,
        max_length_q=None,
        max_length_k=None,
        **kwargs,
    ):
        implementation = module.config._attn_implementation  # what lazy_import_flash_attention loads the kernel by
        if implementation != "flash_attention_2":
            raise ValueError(
                f"Could not find the currently requested flash attention implementation at `{implementation}`."
            )
        assert attention_mask is None or attention_mask.dim() == 2, "flash attention gets a 2-D padding mask or None"
        if dropout or sliding_window is not None or softcap is not None or s_aux is not None:
            raise NotImplementedError("the stand-in runs dense attention without dropout, windows, softcap or sinks")
        causal = module.is_causal if is_causal is None else is_causal
        batch, _, q_len, dim = query.shape
        scaling = dim**-0.5 if scaling is None else scaling
        q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # (B, L, H, d), as flash attention takes them
        if attention_mask is not None:
            branch = "padding mask"
            mask = attention_mask.bool()
            k, v = k[:, : mask.shape[1]], v[:, : mask.shape[1]]  # a static cache's free slots are dropped
            rows = torch.ones(batch, 1, dtype=torch.bool) if q_len == 1 else mask[:, -q_len:]
            out = torch.zeros_like(q)
            for b in range(batch):
                out[b, rows[b]] = _attend(q[b, rows[b]], k[b, mask[b]], v[b, mask[b]], causal, scaling)
        elif all(x is not None for x in (cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k)):
            branch = "cu_seq_lens"
            flat = [t.reshape(-1, *t.shape[2:]) for t in (q, k, v)]
            out = _varlen(*flat, cu_seq_lens_q, cu_seq_lens_k, causal, scaling).view(q.shape)
        elif (
            position_ids is not None
            and batch == 1
            and position_ids.shape[-1] > 1
            and (torch.arange(position_ids.shape[1]) + position_ids.min() - position_ids).abs().sum() > 0
        ):
            branch = "packed position ids"
            positions = position_ids.reshape(-1)
            cu = torch.cat([(positions == positions.min()).nonzero().view(-1), torch.tensor([len(positions)])])
            flat = [t.reshape(-1, *t.shape[2:]) for t in (q, k, v)]
            out = _varlen(*flat, cu, cu, causal, scaling).view(q.shape)
        else:
            branch = "dense"
            out = torch.stack([_attend(q[b], k[b], v[b], causal, scaling) for b in range(batch)])
        self.calls.append((module.__class__.__name__, branch))
        return out, None


@pytest.fixture(autouse=True)
def _no_compile_trace(caplog):
    """Flex attention compiles; with pytest's log capture listening, torch would build every compile trace record."""
    caplog.set_level(logging.INFO, logger="torch.__trace")


def _registry() -> dict:
    """Every registered attention and mask function, by name, global and in the shared instances."""
    return {
        "attention": dict(AttentionInterface._global_mapping),
        "mask": dict(AttentionMaskInterface._global_mapping),
        "local": (dict(ALL_ATTENTION_FUNCTIONS._local_mapping), dict(ALL_MASK_ATTENTION_FUNCTIONS._local_mapping)),
    }


@contextmanager
def flash_attention_2_standin():
    """The stand-in registered as ``flash_attention_2`` inside the block; transformers' own entry is put back after."""
    built_in = AttentionInterface._global_mapping["flash_attention_2"]
    standin = FlashAttention2StandIn()
    AttentionInterface.register("flash_attention_2", standin)
    try:
        yield standin
    finally:
        AttentionInterface.register("flash_attention_2", built_in)


@pytest.fixture
def standin():
    before = _registry()
    with flash_attention_2_standin() as standin:
        yield standin
    assert _registry() == before


def _model(family: str, implementation: str, dtype=torch.float32):
    model = tiny_vlm(family, dtype, hidden_size=64, num_layers=2)
    if implementation == "flash_attention_2":
        model.config._attn_implementation = "flash_attention_2"  # every sub-config too, as from_pretrained sets it
    else:
        model.set_attn_implementation(implementation)
    configs = (model.config, model.config.text_config, model.config.vision_config)
    assert [c._attn_implementation for c in configs] == [implementation] * 3
    return model


def _state(model) -> dict:
    configs = (model.config, model.config.text_config, model.config.vision_config)
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return {"attn": [c._attn_implementation for c in configs], "hooks": hooks, **_registry()}


# --- inputs and the eager reference -------------------------------------------------------------------------------


def _inputs(model, family, samples=SAMPLES):
    samples = [([(0, 0)], text) for _, text in samples] if family == "llava" else samples
    prompt, prompt_mask = prompt_batch(model, family, samples)
    dtype = next(model.parameters()).dtype
    vision = {
        **vision_inputs(model, family, [g for grids, _ in samples for g in grids], dtype),
        **text_inputs(family, prompt),
    }
    return prompt, prompt_mask, vision


def _full_inputs(prompt, prompt_mask, vision, completions) -> dict:
    """prompt + right-padded completions, as the scoring forward and the reference see them."""
    completion_ids, completion_mask = right_pad(completions)
    full = dict(vision)
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1)
    return {
        "input_ids": torch.cat([prompt, completion_ids], 1),
        "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
        **full,
    }


def _reference(model, prompt, prompt_mask, vision, completions):
    full = _full_inputs(prompt, prompt_mask, vision, completions)
    ids, mask = full.pop("input_ids"), full.pop("attention_mask")
    spans = [find_spans(c, TOKENS) for c in completions]
    return reference_scores(model, ids, mask, full, prompt.shape[1], spans)


def _assert_maps_equal(maps, references):
    for sample, reference in zip(maps, references, strict=True):
        assert sample.has_map, sample.reason
        for kind in ("direct", "flow"):
            expected = reference[kind]
            scale = expected.abs().max()
            assert scale > 0
            got = sample.scores[kind][: len(expected)].to(expected.dtype)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)


@contextmanager
def _implementation_of(family, implementation):
    if implementation == "flash_attention_2":
        with flash_attention_2_standin() as standin:
            yield _model(family, implementation), standin
    else:
        yield _model(family, implementation), None


# --- the stand-in is flash attention's convention, and computes what eager attention computes ----------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_the_standin_takes_the_flash_path_and_agrees_with_eager_attention(family, standin):
    model = _model(family, "flash_attention_2")
    prompt, prompt_mask, vision = _inputs(model, family)
    inputs = _full_inputs(prompt, prompt_mask, vision, COMPLETIONS)
    with torch.no_grad():
        flash = model(**inputs).logits
    text = type(model.model.language_model.layers[0].self_attn).__name__
    assert {branch for module, branch in standin.calls if module == text} == {"padding mask"}
    if family in QWEN:  # the vision tower's flash branch: every image a sequence of its own, not causal
        assert {branch for module, branch in standin.calls if module != text} == {"cu_seq_lens"}
    eager = _model(family, "eager")
    eager.load_state_dict(model.state_dict())
    with torch.no_grad():
        expected = eager(**inputs).logits
    real = inputs["attention_mask"].bool()  # flash attention leaves padded query rows at 0, eager does not
    torch.testing.assert_close(flash[real], expected[real], rtol=0, atol=1e-5)


# --- maps equal the eager reference and the model's outputs are untouched, under every implementation --------------


@pytest.mark.parametrize("family, implementation", IMPLEMENTATIONS)
def test_scoring_maps_equal_the_reference_and_outputs_are_untouched(family, implementation):
    with _implementation_of(family, implementation) as (model, standin):
        prompt, prompt_mask, vision = _inputs(model, family)
        inputs = _full_inputs(prompt, prompt_mask, vision, COMPLETIONS)
        hidden = []
        text = model.model.language_model
        handle = text.register_forward_hook(lambda module, args, out: hidden.append(out.last_hidden_state))
        try:
            with torch.no_grad():
                model(**inputs, logits_to_keep=1)
            before = _state(model)
            tracer = SaliencyTracer(model, TOKENS)
            maps = tracer.score(prompt, *right_pad(COMPLETIONS)[:1], prompt_mask, right_pad(COMPLETIONS)[1], **vision)
            assert _state(model) == before
        finally:
            handle.remove()
        untraced, traced = hidden
        # Every position's final hidden state, hence every logit, is bit for bit the untraced one.
        torch.testing.assert_close(model.lm_head(traced), model.lm_head(untraced), rtol=0, atol=0)
        if standin is not None:
            assert {branch for _, branch in standin.calls} >= {"padding mask"}
        _assert_maps_equal(maps, _reference(model, prompt, prompt_mask, vision, COMPLETIONS))


# Not flex attention: its decode kernel on CPU (torch 2.13) fails to compile with a padding mask and, without one,
# gives other logits (at times NaN) from one untraced generate to the next. Its decode masks are checked below.
@pytest.mark.parametrize("family, implementation", [case for case in IMPLEMENTATIONS if case[1] != "flex_attention"])
def test_generation_maps_equal_the_reference_and_outputs_are_untouched(family, implementation):
    with _implementation_of(family, implementation) as (model, standin):
        prompt, prompt_mask, vision = _inputs(model, family)
        kwargs = {
            **vision,
            **scripted_generate_kwargs(COMPLETIONS, prompt.shape[1]),
            "attention_mask": prompt_mask,
            "output_logits": True,
            "return_dict_in_generate": True,
        }
        untraced = model.generate(prompt, **kwargs)
        before = _state(model)
        traced = SaliencyTracer(model, TOKENS).generate(prompt, **kwargs)
        assert _state(model) == before
        assert torch.equal(traced.sequences, untraced.sequences)
        for got, expected in zip(traced.output.logits, untraced.logits, strict=True):
            torch.testing.assert_close(got, expected, rtol=0, atol=0)
        if standin is not None:  # prefill and decode steps of the left-padded batch came with the 2-D mask
            assert {branch for _, branch in standin.calls} >= {"padding mask"}
        _assert_maps_equal(traced.maps, _reference(model, prompt, prompt_mask, vision, COMPLETIONS))


@pytest.mark.parametrize("family", FAMILIES)
def test_an_unpadded_sample_under_flash_attention_goes_without_a_mask(family, standin):
    """Without padding flash attention gets no mask at all (generate drops an all-ones one): plain causal rows."""
    model = _model(family, "flash_attention_2")
    prompt, prompt_mask, vision = _inputs(model, family, SAMPLES[1:])
    completions = COMPLETIONS[1:]
    tracer = SaliencyTracer(model, TOKENS)
    scored = tracer.score(prompt, torch.tensor(completions), prompt_mask, **vision)
    kwargs = scripted_generate_kwargs(completions, prompt.shape[1])
    generated = tracer.generate(prompt, attention_mask=prompt_mask, **vision, **kwargs).maps
    text = type(model.model.language_model.layers[0].self_attn).__name__
    assert {branch for module, branch in standin.calls if module == text} == {"dense"}
    reference = _reference(model, prompt, prompt_mask, vision, completions)
    _assert_maps_equal(scored, reference)
    _assert_maps_equal(generated, reference)


@pytest.mark.parametrize("q_length", [9, 1], ids=["prefill", "decode"])
def test_flex_attention_block_masks_give_the_rows_of_the_eager_mask(q_length):
    from transformers.masking_utils import causal_mask_function, eager_mask, flex_attention_mask

    kv_length = 9
    padding = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1], [1] * 9]).bool()  # sample 0 left-padded
    sizes = {
        "batch_size": 2,
        "q_length": q_length,
        "kv_length": kv_length,
        "q_offset": kv_length - q_length,
        "mask_function": causal_mask_function,
        "attention_mask": padding,
    }
    block = flex_attention_mask(**sizes)
    dense = eager_mask(**sizes, dtype=torch.float32) == 0  # (B, 1, q, kv), True = attend
    rows = torch.arange(q_length)
    for batch in (slice(None), slice(1, 2)):
        got = row_mask(block, batch, rows, q_length, kv_length, torch.float32)
        torch.testing.assert_close(got, dense[batch])


# --- packed sequences: flash attention's rows without a mask --------------------------------------------------------


class AllRows(Recorder):
    """Every row of every traced call, computed from the mask the tracer hands its recorders."""

    def __init__(self):
        self.rows: dict[int, torch.Tensor] = {}

    def on_attention(self, layer, query, key, value, mask, scaling):
        rows = torch.arange(query.shape[2])
        dtype = torch.promote_types(query.dtype, torch.float32)
        masked = row_mask(mask, slice(None), rows, query.shape[2], key.shape[2], dtype)
        self.rows[layer] = attention_rows(query, key, masked, scaling)

    def on_inverse_rms(self, inv_rms):
        pass


LENGTHS = (5, 7, 4)  # three text-only sequences packed into one batch row


def _packed(family: str, cu_seq_lens: bool) -> dict:
    ids = torch.tensor([[10 + (i * 7) % 50 for i in range(sum(LENGTHS))]])
    positions = torch.cat([torch.arange(n) for n in LENGTHS])[None]
    inputs = {"input_ids": ids, "use_cache": False}  # transformers reads packing only without a cache (training)
    # Qwen's M-RoPE takes (4, B, L) position ids when packed: the text positions first, then the three rope axes.
    inputs["position_ids"] = positions if family == "llava" else positions[None].expand(4, 1, -1)
    if cu_seq_lens:  # what a flattening collator adds
        cu = torch.cumsum(torch.tensor([0, *LENGTHS]), 0).to(torch.int32)
        inputs.update(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=max(LENGTHS), max_length_k=max(LENGTHS))
    return inputs


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("cu_seq_lens", [False, True], ids=["position-ids", "cu-seq-lens"])
@pytest.mark.parametrize("implementation", ["sdpa", "flash_attention_2"])
def test_packed_sequences_give_the_rows_of_each_sequence_alone(family, cu_seq_lens, implementation):
    eager = _model(family, "eager")
    inputs = _packed(family, cu_seq_lens)
    with torch.no_grad():
        expected = eager(**inputs, output_attentions=True)
    starts = torch.cumsum(torch.tensor([0, *LENGTHS]), 0)
    same = torch.zeros(sum(LENGTHS), sum(LENGTHS), dtype=torch.bool)
    for a, b in itertools.pairwise(starts.tolist()):
        same[a:b, a:b] = True
    assert all((weights[0][:, ~same] == 0).all() for weights in expected.attentions)  # transformers packed them
    with _implementation_of(family, implementation) as (model, standin):
        model.load_state_dict(eager.state_dict())
        with torch.no_grad():
            untraced = model(**inputs).logits
            recorder = AllRows()
            with traced_attention(SaliencyTracer(model, TOKENS).adapter, recorder):
                traced = model(**inputs).logits
        if standin is not None:
            text = type(model.model.language_model.layers[0].self_attn).__name__
            branch = "cu_seq_lens" if cu_seq_lens else "packed position ids"
            assert {b for module, b in standin.calls if module == text} == {branch}
    torch.testing.assert_close(traced, untraced, rtol=0, atol=0)
    torch.testing.assert_close(untraced, expected.logits, rtol=0, atol=1e-5)
    for layer, weights in enumerate(expected.attentions):
        torch.testing.assert_close(recorder.rows[layer], weights, rtol=0, atol=1e-6)


# --- implementations the tracer cannot serve are refused by name; nothing is left behind ---------------------------


def _refused(implementation):
    supported = ".*".join(repr(name) for name in TRACEABLE_ATTENTION)
    return pytest.raises(
        ValueError, match=rf"^the saliency tracer cannot trace attention implementation '{implementation}'.*{supported}"
    )


def _sparse_attention(module, query, key, value, attention_mask, **kwargs):
    raise AssertionError("never called")


@pytest.mark.parametrize("implementation", ["paged|eager", "my_sparse_attention"])
def test_an_implementation_the_tracer_cannot_serve_is_refused_by_name(implementation):
    model = tiny_vlm("qwen2_5_vl", torch.float32, hidden_size=64, num_layers=2)
    tracer = SaliencyTracer(model, TOKENS)  # built under SDPA
    before = _registry()
    AttentionInterface.register("my_sparse_attention", _sparse_attention)  # a custom kernel with SDPA's masks
    AttentionMaskInterface.register("my_sparse_attention", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    try:
        model.set_attn_implementation(implementation)
        with _refused(implementation):
            SaliencyTracer(model, TOKENS)
        with _refused(implementation), traced_attention(tracer.adapter, Recorder()):
            pass
        assert model.config.text_config._attn_implementation == implementation
    finally:
        AttentionInterface._global_mapping.pop("my_sparse_attention")
        AttentionMaskInterface._global_mapping.pop("my_sparse_attention")
    assert _registry() == before


def test_flash_attention_kernels_from_the_hub_are_traced_as_flash_attention():
    from transformers.integrations.flash_attention import flash_attention_forward

    before = _registry()
    name = "kernels-community/flash-attn2"  # what transformers runs for flash_attention_2 without flash-attn installed
    AttentionInterface.register(name, flash_attention_forward)
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["flash_attention_2"])
    try:
        assert attention_convention(name) == "flash"
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # a kernel with other masks
        with pytest.raises(ValueError, match="cannot trace attention implementation 'kernels-community/flash-attn2'"):
            attention_convention(name)
    finally:
        AttentionInterface._global_mapping.pop(name)
        AttentionMaskInterface._global_mapping.pop(name)
    assert _registry() == before
    assert [attention_convention(n) for n in TRACEABLE_ATTENTION] == ["mask"] * 3 + ["flash"] * 3
    assert attention_convention(None) == "mask"


def test_grpo_refuses_an_implementation_it_cannot_trace_before_training(tiny_model_dir, synthetic_data_dir, tmp_path):
    from trl import ModelConfig

    from rewards import get_reward_funcs
    from rl import SaliencyGRPOConfig, SaliencyGRPOTrainer, load_grpo_dataset
    from vlm import load_model_and_processor

    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32", attn_implementation="paged|eager"),
        for_training=True,
    )
    args = SaliencyGRPOConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    dataset = load_grpo_dataset(str(synthetic_data_dir), split="rl").select(range(2))
    with _refused("paged|eager"):
        SaliencyGRPOTrainer(
            model=model,
            reward_funcs=get_reward_funcs(("format", "saliency")),
            args=args,
            train_dataset=dataset,
            processing_class=processor,
        )


# --- hooks and registrations are always released ------------------------------------------------------------------


@pytest.mark.parametrize(
    "family, implementation", [("qwen2_5_vl", "sdpa"), ("qwen2_5_vl", "flash_attention_2"), ("llava", "flex_attention")]
)
def test_the_registry_and_the_model_are_unchanged_after_tracing_also_after_an_exception(family, implementation):
    with _implementation_of(family, implementation) as (model, _):
        prompt, prompt_mask, vision = _inputs(model, family)
        with torch.no_grad():  # the first forward may install transformers' own hooks (flex attention does)
            model(**_full_inputs(prompt, prompt_mask, vision, COMPLETIONS))
        before = _state(model)
        seen = {}

        def fail(module, args):
            seen["attn"] = model.config.text_config._attn_implementation
            seen["registered"] = [n for n in AttentionInterface._global_mapping if n.startswith(TRACE_PREFIX)]
            raise RuntimeError("boom in the last layer")

        tracer = SaliencyTracer(model, TOKENS)
        completion_ids, completion_mask = right_pad(COMPLETIONS)
        tracer.score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
        assert _state(model) == before
        handle = model.model.language_model.layers[-1].register_forward_pre_hook(fail)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                tracer.score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
            with pytest.raises(RuntimeError, match="boom"):
                tracer.generate(prompt, attention_mask=prompt_mask, max_new_tokens=2, **vision)
        finally:
            handle.remove()
        # The failure happened while tracing was on, under a name that is neither a flash nor a Hub kernel name.
        assert seen["registered"] == [seen["attn"]] and seen["attn"].startswith(TRACE_PREFIX)
        assert "flash" not in seen["attn"] and "/" not in seen["attn"]
        assert _state(model) == before
        with pytest.raises(RuntimeError, match="boom"), traced_attention(tracer.adapter, Recorder()):
            raise RuntimeError("boom inside the block")
        assert _state(model) == before
