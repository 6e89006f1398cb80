"""The brute-force maps of SPEC section 3 (the published approach), which the tracer is tested and benchmarked against.

The model runs with eager attention and ``output_attentions=True`` (every layer's full L x L weights); every
head's output at every image position is projected through W_O, the final RMSNorm's gain (at the row's real
scale) and the full lm_head to vocabulary-sized logits, out of which each token's logit is read. It restates the
rows of SPEC section 3 on its own rather than importing :mod:`saliency.rows`, so that it checks them too. Slow
and memory-hungry by design: for tests and benchmarks only.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
from torch import nn

from .attention_implementation import attention_implementation
from .rows import RowMode
from .spans import CompletionSpans


@torch.no_grad()
def reference_scores(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vision: dict,
    prompt_length: int,
    spans: Sequence[CompletionSpans | None],
    row: RowMode = "q",
    layers: Collection[int] | None = None,
    columns: Sequence[int] | None = None,
) -> list[dict[str, torch.Tensor] | None]:
    """Direct and flow scores (K, N) of each sample (None where ``spans`` is None), ``layers`` summed (all if None).

    ``input_ids`` (B, L) hold the left-padded prompts of length ``prompt_length`` followed by the completions;
    ``vision`` the model's other inputs for that sequence. Row k is completion token k, for k below the end of the
    answer; flow rows outside the answer are 0. Columns are the sample's image and video positions in order, or
    only those of indices ``columns`` among them (N = len(columns)): each column's score is computed on its own, so
    a few columns of a large image cost a few columns' projections through the lm_head.
    """
    text = model.model.language_model
    captured = {}
    hooks = [
        layer.self_attn.v_proj.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out))
        for i, layer in enumerate(text.layers)
    ]
    hooks.append(text.norm.register_forward_pre_hook(lambda m, a: captured.__setitem__("residual", a[0])))
    try:
        with attention_implementation(text, "eager"):
            out = model(input_ids=input_ids, attention_mask=attention_mask, output_attentions=True, **vision)
    finally:
        for hook in hooks:
            hook.remove()
    heads, kv_heads = text.config.num_attention_heads, text.config.num_key_value_heads
    head_dim = text.layers[0].self_attn.head_dim
    results = []
    for b, span in enumerate(spans):
        if span is None:
            results.append(None)
            continue
        visual = input_ids[b] == model.config.image_token_id
        if getattr(model.config, "video_token_id", None) is not None:
            visual |= input_ids[b] == model.config.video_token_id
        images = visual.nonzero().squeeze(-1)
        if columns is not None:
            if any(c < 0 or c >= len(images) for c in columns):
                raise ValueError(f"sample {b}: columns {list(columns)} outside its {len(images)} image positions")
            images = images[torch.as_tensor(columns, device=images.device)]
        residual = captured["residual"][b]
        device = residual.device
        inv_rms = torch.rsqrt(residual.pow(2).mean(-1) + text.norm.variance_epsilon)
        tokens = torch.arange(span.answer[1], device=device)
        answer = torch.arange(*span.answer, device=device)
        rows = prompt_length - 1 + tokens  # q(k): the position whose output predicts completion token k
        targets = input_ids[b, prompt_length + tokens]
        think = prompt_length + torch.arange(*span.thinking, device=device)
        think_rows = think - 1 if row == "q" else think
        direct = torch.zeros(len(tokens), len(images), dtype=residual.dtype, device=device)
        flow = torch.zeros_like(direct)
        for layer, attention in enumerate(out.attentions):
            if layers is not None and layer not in layers:
                continue
            weights = attention[b]  # (H, L, L)
            values = captured[layer][b].reshape(-1, kv_heads, head_dim)[images]
            values = values.repeat_interleave(heads // kv_heads, 1)  # (N, H, d)
            w_o = text.layers[layer].self_attn.o_proj.weight.reshape(-1, heads, head_dim)  # (D, H, d)
            head_outputs = torch.einsum("nhd,Dhd->hnD", values, w_o)  # (H, N, D): W_O[l,h] v[l,h][j]
            logits = (head_outputs * text.norm.weight) @ model.lm_head.weight.T  # (H, N, vocab)
            per_token = logits[:, :, targets].permute(2, 0, 1) * inv_rms[rows][:, None, None]  # (K, H, N)
            direct += torch.einsum("hkn,khn->kn", weights[:, rows][:, :, images], per_token)
            routed = weights[:, rows[answer]][:, :, think] @ weights[:, think_rows][:, :, images]  # (H, A, N)
            flow[answer] += torch.einsum("han,ahn->an", routed, per_token[answer])
            del logits
        results.append({"direct": direct, "flow": flow})
    return results
