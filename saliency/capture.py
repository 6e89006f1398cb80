"""Capturing the attention rows the maps need, inside the model's own forward pass.

The text decoder's attention implementation is swapped (through transformers' ``AttentionInterface``, never by
patching library code) for a function that first calls the model's own implementation (SDPA, flash, flex, eager)
for the real output, then computes exactly the query rows the maps need from the same post-rotary queries and keys,
mask and scaling, sharing grouped KV heads like the model. Rows are softmaxed over all keys but only their image
(and thinking) columns are kept, so nothing of size L x L is ever held.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask
from transformers import AttentionInterface
from transformers.integrations.flash_attention import flash_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .adapters import ModelAdapter, adapter_for
from .attention_implementation import attention_implementation

TRACE_PREFIX = "saliency_trace_over_"
# The attention implementations the tracer reads rows under, by how their masks reach the attention function (what
# `row_mask` reads): eager and SDPA a 4-D tensor or None, flex attention a BlockMask, flash attention a 2-D padding
# mask or None, with packed sequences in position ids or cu_seq_lens. Hub kernels that transformers runs through its
# flash-attention wrapper (e.g. "kernels-community/flash-attn2", what "flash_attention_2" becomes without the
# flash-attn package) are traced as flash attention.
TRACEABLE_ATTENTION = ("eager", "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3", "flash_attention_4")
_FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def attention_convention(implementation: str | None) -> str:
    """``"flash"`` for a flash-attention implementation, ``"mask"`` for the others the tracer serves.

    An implementation it cannot serve (paged attention, a sparse kernel, a custom registered function whose masking
    it does not know) is a ValueError naming it and the supported ones.
    """
    name = implementation or "sdpa"  # what transformers runs when none is set
    hub_flash_kernel = (
        AttentionInterface._global_mapping.get(name) is flash_attention_forward
        and ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(name) is flash_attention_mask
    )
    if name in _FLASH_ATTENTION or hub_flash_kernel:
        return "flash"
    if name in TRACEABLE_ATTENTION:
        return "mask"
    supported = ", ".join(repr(n) for n in TRACEABLE_ATTENTION)
    raise ValueError(
        f"the saliency tracer cannot trace attention implementation {name!r}; it supports {supported} and the "
        "flash-attention kernels from the Hub that transformers runs as flash attention (such as "
        "'kernels-community/flash-attn2'). Load the model with one of these (--attn_implementation)."
    )


def check_attention_implementation(model: nn.Module) -> str:
    """The attention implementation of ``model``'s text decoder, or a ValueError if the tracer cannot trace it."""
    implementation = adapter_for(model).text_config._attn_implementation or "sdpa"
    attention_convention(implementation)
    return implementation


@dataclass(frozen=True)
class PackedSequences:
    """Flash attention's packed sequences, which it reads without any mask: ``ids`` (B, L), the sequence of each
    position. A query row sees the keys of its own sequence, causally."""

    ids: torch.Tensor


def attention_rows(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
    """Softmax attention weights of the given query rows: (B, H, r, d) x (B, KVH, L, d) -> (B, H, r, L).

    ``mask`` is boolean (True = attend) or additive, broadcastable to (B, H, r, L). Query head h reads key head
    ``h // (H // KVH)``, as in ``repeat_kv``, without copying the keys. Computed in float32 (or the inputs' dtype when wider).
    """
    dtype = torch.promote_types(query.dtype, torch.float32)
    batch, heads, rows, dim = query.shape
    kv_heads = key.shape[1]
    # The query heads of one KV group share a (group * rows, d) matrix, so the matmul never broadcasts (copies) keys.
    grouped = query.to(dtype).reshape(batch, kv_heads, heads // kv_heads * rows, dim)
    scores = torch.matmul(grouped, key.to(dtype).transpose(-1, -2)) * scaling
    scores = scores.reshape(batch, heads, rows, -1)
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, torch.finfo(dtype).min)
    elif mask is not None:
        scores = scores + mask
    return scores.softmax(-1)


def row_mask(mask, batch: slice, rows: torch.Tensor, q_len: int, kv_len: int, dtype) -> torch.Tensor | None:
    """The model's mask restricted to query ``rows`` (indices into the call's queries), for :func:`attention_rows`.

    Accepts what the traced attention hands the recorder: None (plain causal), a 4-D boolean or additive mask (eager,
    SDPA), a flex-attention ``BlockMask``, a 2-D padding mask (flash attention; keys past its end, a static cache's
    free slots, are unused as flash attention drops them) or :class:`PackedSequences`. Returns a boolean or an
    additive mask, or None when every key is visible (a decode step without padding).
    """
    if isinstance(mask, BlockMask):
        return _block_mask_rows(mask, batch, rows, kv_len)
    if isinstance(mask, torch.Tensor) and mask.dim() == 4:
        selected = (mask if mask.shape[0] == 1 else mask[batch])[:, :, rows, :kv_len]
        return selected if selected.dtype == torch.bool else selected.to(dtype).clamp_min(torch.finfo(dtype).min)
    if mask is None and q_len == 1:
        return None
    keys = torch.arange(kv_len, device=rows.device)
    allowed = (keys[None, :] <= (kv_len - q_len + rows)[:, None])[None, None]  # (1, 1, r, L)
    if isinstance(mask, PackedSequences):
        ids = mask.ids[batch]
        return allowed & (ids[:, rows][:, None, :, None] == ids[:, None, None, :kv_len])
    if mask is not None:  # 2-D padding mask
        padding = mask[batch].bool()[:, :kv_len]
        padding = torch.nn.functional.pad(padding, (0, kv_len - padding.shape[1]), value=False)
        allowed = allowed & padding[:, None, None, :]
    return allowed


def _block_mask_rows(mask: BlockMask, batch: slice, rows: torch.Tensor, kv_len: int) -> torch.Tensor:
    """A flex-attention BlockMask at ``rows``, evaluated from its mask_mod (offsets included), never densified whole."""
    device = rows.device
    samples = torch.arange(mask.shape[0], device=device)
    samples = samples if mask.shape[0] == 1 else samples[batch]
    allowed = mask.mask_mod(
        samples[:, None, None, None],
        torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device),
        rows[None, None, :, None],
        torch.arange(kv_len, device=device)[None, None, None, :],
    )
    return allowed.to(torch.bool).expand(len(samples), 1, len(rows), kv_len)


class Recorder:
    """What a capture mode does with the attention calls, the final norm's inverse RMS and the model inputs it sees.

    ``seconds`` accumulates the wall time spent in these callbacks: the tracer's own share of a traced pass.
    """

    seconds: float = 0.0

    def on_model_inputs(self, kwargs: dict) -> None:
        """Called before each forward of the full model, with its keyword arguments."""

    def on_attention(self, layer: int, query, key, value, mask, scaling: float) -> None:
        """Called at each traced attention call with its post-rotary (B, H, q, d) queries, (B, KVH, L, d) keys and
        values, its mask in a form :func:`row_mask` reads, and its scaling."""
        raise NotImplementedError

    def on_inverse_rms(self, inv_rms: torch.Tensor) -> None:
        """Called at the final norm with ``1 / rms(r)`` (B, L) of its input r (centred first for LayerNorm)."""
        raise NotImplementedError


def _original_attention(name: str, module: torch.nn.Module):
    if name == "eager":  # eager attention is not in the registry: each modeling file defines its own function
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, None)


class _ConfigView:
    """A config that names ``implementation`` as its attention implementation and is ``config`` otherwise."""

    __slots__ = ("_attn_implementation", "_config")

    def __init__(self, config, implementation: str):
        self._config, self._attn_implementation = config, implementation

    def __getattr__(self, name: str):
        return getattr(self._config, name)


class _ModuleView:
    """An attention module as its flash-attention function must see it while the decoder runs the traced one.

    transformers' ``flash_attention_forward`` loads its kernel by ``module.config._attn_implementation``; while
    tracing, the shared text config names the traced implementation, which is no kernel. The view answers the
    model's own implementation there and is the module for everything else.
    """

    __slots__ = ("_module", "config")

    def __init__(self, module: nn.Module, implementation: str):
        self._module, self.config = module, _ConfigView(module.config, implementation)

    @property
    def __class__(self):  # isinstance(view, nn.Module) and the module's own class hold, as for the module
        return type(self._module)

    def __getattr__(self, name: str):
        return getattr(self._module, name)


def _flash_sequences(query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> PackedSequences | None:
    """The packed sequences flash attention finds when it gets no mask (None: each batch row is one sequence).

    As transformers' flash-attention wrapper: ``cu_seq_lens_q``/``_k`` with ``max_length_q``/``_k`` first, else
    position ids of one batch row that restart (the start of each sequence is where they take their minimum).
    """
    batch, _, q_len, _ = query.shape
    if all(kwargs.get(k) is not None for k in ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")):
        starts = kwargs["cu_seq_lens_k"].to(device=query.device, dtype=torch.long)
        if q_len != key.shape[2] or not torch.equal(kwargs["cu_seq_lens_q"].to(starts), starts):
            raise NotImplementedError(
                "the tracer does not support packed sequences with different query and key lengths"
            )
    else:
        positions = kwargs.get("position_ids")
        if positions is None or batch != 1 or positions.shape[-1] == 1:
            return None
        positions = positions.reshape(-1).to(query.device)
        if not (positions - positions.min() - torch.arange(len(positions), device=query.device)).any():
            return None  # one sequence
        first = (positions == positions.min()).nonzero().view(-1)
        starts = torch.cat([first, first.new_tensor([len(positions)])])
    total = batch * q_len
    ends = starts[1:]
    rows_start = torch.arange(0, total + 1, q_len, device=starts.device)
    if int(starts[0]) != 0 or int(starts[-1]) != total or not torch.isin(rows_start, starts).all():
        raise NotImplementedError("the tracer needs packed sequences that tile the batch rows (none across rows)")
    ids = torch.searchsorted(ends, torch.arange(total, device=starts.device), right=True)
    return PackedSequences(ids.view(batch, q_len))


@contextmanager
def traced_attention(
    adapter: ModelAdapter, recorder: Recorder, layers: Collection[int] | None = None
) -> Iterator[None]:
    """Route the text decoder's attention through ``recorder`` and hook the final norm; undo everything on exit.

    ``layers``: the decoder layers whose attention calls reach the recorder (all when None); the others run plain.
    The model's implementation must be one the tracer serves (:data:`TRACEABLE_ATTENTION`, or a ValueError naming
    it). The traced implementation is registered under a fresh name that is neither a flash-attention nor a Hub
    kernel name (transformers would try to load a kernel of that name); it builds the model's own masks, and calls
    the model's own implementation, which sees the module as it would untraced.
    """
    original = adapter.text_config._attn_implementation or "sdpa"
    if original.startswith(TRACE_PREFIX):
        raise RuntimeError("this model is already being traced; nested tracing is not supported")
    flash = attention_convention(original) == "flash"
    name = f"{TRACE_PREFIX}{uuid.uuid4().hex[:12]}"
    attentions = adapter.attentions
    norm_eps = adapter.norm_eps
    centers = adapter.norm_centers

    def traced(module, query, key, value, attention_mask, scaling=None, **kwargs):
        own = _ModuleView(module, original) if flash else module
        output = _original_attention(original, module)(
            own, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
        if layers is not None and module.layer_idx not in layers:
            return output
        for unsupported in ("softcap", "s_aux"):
            if kwargs.get(unsupported) is not None:
                raise NotImplementedError(f"the saliency tracer does not support attention with {unsupported}")
        full_mask = isinstance(attention_mask, BlockMask) or (
            isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4
        )
        if kwargs.get("sliding_window") is not None and not full_mask:
            raise NotImplementedError(
                "sliding-window attention without a 4-D or block mask is not supported by the tracer"
            )
        causal = kwargs.get("is_causal")
        if not full_mask and not (getattr(module, "is_causal", True) if causal is None else causal):
            raise NotImplementedError("the saliency tracer supports causal attention only")
        mask = attention_mask
        if flash and attention_mask is None:
            mask = _flash_sequences(query, key, kwargs)
        start = time.perf_counter()
        # The rows are computed in float32 or wider whatever autocast the caller runs under.
        with torch.no_grad(), torch.autocast(query.device.type, enabled=False):
            recorder.on_attention(
                module.layer_idx,
                query.detach(),
                key.detach(),
                value.detach(),
                mask,
                scaling if scaling is not None else query.shape[-1] ** -0.5,
            )
        recorder.seconds += time.perf_counter() - start
        return output

    def norm_hook(module, args):
        start = time.perf_counter()
        hidden = args[0].detach()
        with torch.no_grad():
            wide = hidden.to(torch.promote_types(hidden.dtype, torch.float32))
            if centers:
                wide = wide - wide.mean(-1, keepdim=True)
            recorder.on_inverse_rms(torch.rsqrt(wide.pow(2).mean(-1) + norm_eps))
        recorder.seconds += time.perf_counter() - start

    def input_hook(module, args, kwargs):
        start = time.perf_counter()
        recorder.on_model_inputs(kwargs)
        recorder.seconds += time.perf_counter() - start

    if any(getattr(a, "layer_idx", None) != i for i, a in enumerate(attentions)):
        raise ValueError("the text decoder's attention modules must carry layer_idx = their index")
    handles = []
    with attention_implementation(adapter.text_model, name, traced, ALL_MASK_ATTENTION_FUNCTIONS[original]):
        try:
            handles.append(adapter.final_norm.register_forward_pre_hook(norm_hook))
            handles.append(adapter.model.register_forward_pre_hook(input_hook, with_kwargs=True))
            yield
        finally:
            for handle in handles:
                handle.remove()


@dataclass
class SampleRows:
    """What one sample's maps are computed from (per captured layer, in layer order; float32 or wider, on the model's device).

    ``image_rows[l]``: (H, R, N) attention of rows ``first_row .. first_row + R - 1`` to the N image positions;
    ``think_rows[l]``: (H, A, T) attention of the answer tokens' rows to the thinking positions;
    ``values[l]``: (KVH, N, d) values of the image positions; ``inv_rms``: 1 / rms(final-norm input) by row.
    """

    first_row: int
    image_rows: list[torch.Tensor]
    think_rows: list[torch.Tensor]
    values: list[torch.Tensor]
    inv_rms: torch.Tensor
