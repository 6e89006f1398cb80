"""Capturing the attention rows the maps need, inside the model's own forward pass.

The text decoder's attention implementation is swapped (through transformers' ``AttentionInterface``, never by
patching library code) for a function that first calls the model's own implementation (SDPA, flash, eager) for
the real output, then computes exactly the query rows the maps need from the same post-rotary queries and keys,
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
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .adapters import ModelAdapter
from .attention_implementation import attention_implementation

TRACE_PREFIX = "saliency_trace_over_"


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


def row_mask(
    mask: torch.Tensor | None, batch: slice, rows: torch.Tensor, q_len: int, kv_len: int, dtype
) -> torch.Tensor | None:
    """The model's mask restricted to query ``rows`` (indices into the call's queries), for :func:`attention_rows`.

    Accepts what transformers passes to an attention function: None (plain causal), a 4-D boolean or additive
    mask, or a 2-D padding mask (flash attention), which is combined with causality. Returns a boolean or an
    additive mask, or None when every key is visible (a decode step without padding).
    """
    if mask is not None and mask.dim() == 4:
        selected = (mask if mask.shape[0] == 1 else mask[batch])[:, :, rows, :kv_len]
        return selected if selected.dtype == torch.bool else selected.to(dtype).clamp_min(torch.finfo(dtype).min)
    if mask is None and q_len == 1:
        return None
    keys = torch.arange(kv_len, device=rows.device)
    allowed = (keys[None, :] <= (kv_len - q_len + rows)[:, None])[None, None]  # (1, 1, r, L)
    if mask is not None:  # 2-D padding mask
        allowed = allowed & mask[batch].bool()[:, None, None, :kv_len]
    return allowed


class Recorder:
    """What a capture mode does with the attention calls, the final norm's inverse RMS and the model inputs it sees.

    ``seconds`` accumulates the wall time spent in these callbacks: the tracer's own share of a traced pass.
    """

    seconds: float = 0.0

    def on_model_inputs(self, kwargs: dict) -> None:
        """Called before each forward of the full model, with its keyword arguments."""

    def on_attention(self, layer: int, query, key, value, mask, scaling: float) -> None:
        raise NotImplementedError

    def on_inverse_rms(self, inv_rms: torch.Tensor) -> None:
        """Called at the final norm with ``1 / rms(r)`` (B, L) of its input r (centred first for LayerNorm)."""
        raise NotImplementedError


def _original_attention(name: str, module: torch.nn.Module):
    if name == "eager":  # eager attention is not in the registry: each modeling file defines its own function
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS.get_interface(name, None)


@contextmanager
def traced_attention(
    adapter: ModelAdapter, recorder: Recorder, layers: Collection[int] | None = None
) -> Iterator[None]:
    """Route the text decoder's attention through ``recorder`` and hook the final norm; undo everything on exit.

    ``layers``: the decoder layers whose attention calls reach the recorder (all when None); the others run plain.
    """
    original = adapter.text_config._attn_implementation or "sdpa"
    if original.startswith(TRACE_PREFIX):
        raise RuntimeError("this model is already being traced; nested tracing is not supported")
    name = f"{TRACE_PREFIX}{original}_{uuid.uuid4().hex[:8]}"
    attentions = adapter.attentions
    norm_eps = adapter.norm_eps
    centers = adapter.norm_centers

    def traced(module, query, key, value, attention_mask, scaling=None, **kwargs):
        output = _original_attention(original, module)(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
        if layers is not None and module.layer_idx not in layers:
            return output
        for unsupported in ("softcap", "s_aux"):
            if kwargs.get(unsupported) is not None:
                raise NotImplementedError(f"the saliency tracer does not support attention with {unsupported}")
        if kwargs.get("sliding_window") is not None and (attention_mask is None or attention_mask.dim() != 4):
            raise NotImplementedError("sliding-window attention without a 4-D mask is not supported by the tracer")
        start = time.perf_counter()
        # The rows are computed in float32 or wider whatever autocast the caller runs under.
        with torch.no_grad(), torch.autocast(query.device.type, enabled=False):
            recorder.on_attention(
                module.layer_idx,
                query.detach(),
                key.detach(),
                value.detach(),
                attention_mask,
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
