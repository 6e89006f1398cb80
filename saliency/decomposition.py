"""The maps of SPEC section 3, from captured attention rows: direct (logit decomposition) and reasoning flow.

For completion token y_k predicted at row q(k) (rows as in :mod:`saliency.rows`), layer l, head h and image position j::

    u[l,h,k] = W_O[l,h]^T (g * w_{y_k})                 (centred first for LayerNorm)
    s_k(j)   = inv_rms(q(k)) * sum_{l,h} A[l,h][q(k), j] <u[l,h,k], v[l,h][j]>
    f_k(j)   = inv_rms(q(k)) * sum_{l,h} (sum_{t in T} A[l,h][q(k), pos(t)] A[l,h][row(t), j]) <u[l,h,k], v[l,h][j]>
"""

from __future__ import annotations

import torch

from .adapters import ModelAdapter, effective_weight
from .capture import SampleRows
from .rows import RowMode, completion_rows, thinking_row
from .spans import CompletionSpans


def head_value_products(
    adapter: ModelAdapter, o_proj: list[torch.Tensor], token_ids: torch.Tensor, values: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per layer, ``<u[l,h,k], v[l,h][j]>`` as a (K, H, N) tensor, without any vocabulary-sized tensor."""
    dtype = values[0].dtype if values[0].dtype == torch.float64 else torch.float32
    readout = effective_weight(adapter.lm_head, rows=token_ids).to(dtype) * adapter.norm_gain().to(dtype)
    if adapter.norm_centers:
        readout = readout - readout.mean(-1, keepdim=True)
    products = []
    for weight, value in zip(o_proj, values):
        kv_heads, _, head_dim = value.shape
        u = (readout @ weight.to(dtype)).reshape(len(token_ids), kv_heads, -1, head_dim)  # (K, KVH, rep, d)
        products.append(torch.einsum("kgrd,gnd->kgrn", u, value.to(dtype)).flatten(1, 2))
    return products


def token_scores(
    adapter: ModelAdapter,
    o_proj: list[torch.Tensor],
    rows: SampleRows,
    completion_ids: torch.Tensor,
    spans: CompletionSpans,
    prompt_length: int,
    row: RowMode = "q",
) -> dict[str, torch.Tensor]:
    """Direct maps of completion tokens ``0 .. answer end - 1`` and flow maps of the answer tokens, (K, N) each.

    Rows of ``"flow"`` outside the answer are zero. Positions are absolute columns of the sequence; the
    completion starts at ``prompt_length``.
    """
    num_tokens = spans.answer[1]
    device = rows.values[0].device
    token_ids = completion_ids[:num_tokens].to(device)
    products = head_value_products(adapter, o_proj, token_ids, rows.values)
    dtype = products[0].dtype
    q_rows = completion_rows(prompt_length, torch.arange(num_tokens, device=device))
    think_rows = thinking_row(prompt_length + torch.arange(*spans.thinking, device=device), row)
    answer = torch.arange(*spans.answer, device=device)
    if (think_rows < rows.first_row).any():
        raise RuntimeError("the capture did not keep the rows of every thinking token")

    direct = torch.zeros(num_tokens, products[0].shape[-1], dtype=dtype, device=device)
    flow = torch.zeros_like(direct)
    for product, image_rows, answer_think in zip(products, rows.image_rows, rows.think_rows):
        image_rows = image_rows.to(dtype)
        direct += torch.einsum("hkn,khn->kn", image_rows[:, q_rows - rows.first_row], product)
        through = answer_think.to(dtype) @ image_rows[:, think_rows - rows.first_row]  # (H, A, N)
        flow[answer] += torch.einsum("han,ahn->an", through, product[answer])
    scale = rows.inv_rms[q_rows].to(dtype)[:, None]
    return {"direct": (direct * scale).cpu(), "flow": (flow * scale).cpu()}
