"""Which decoder layers, heads and weightings of the tracer's maps point at the evidence: a brute-force study.

    python bench/map_variants.py --model outputs/sft-seed1 --metrics outputs/eval-seed1/metrics.json \
        --data outputs/data --rows 200

Re-reads the completions an evaluation wrote (``metrics.json`` rows), runs one eager forward per row with
``output_attentions=True`` and computes, for every layer l and head h, these maps over the image tokens (SPEC
section 3's notation; q(t) the row that predicted token t, T the thinking span, K the answer span):

==========  ==============================================================  ================================
kind        map(j), summed over the tokens named                            what it reads
==========  ==============================================================  ================================
direct_raw  sum_k A[q(k), j]                                                answer rows' attention to the image
direct      sum_k A[q(k), j] <u_k, v_j> / rms                               SPEC's direct map
flow_raw    sum_k sum_t A[q(k), pos(t)] A[q(t), j]                          SPEC's flow without values
flow        sum_k sum_t A[q(k), pos(t)] A[q(t), j] <u_k, v_j> / rms         SPEC's flow map
think_raw   sum_t A[q(t), j]                                                thinking rows' attention
think       sum_t A[q(t), j] <u_t, v_j> / rms                               direct maps of the thinking tokens
direct_norm, flow_norm, think_norm: the raw kinds with each A[i, j] times |W_O v_j| (Kobayashi et al., 2020)
xflow_raw   sum_t (sum_{l,h,k} A[q(k), pos(t)]) (sum_{l,h} A[q(t), j])      across layers, not within one
top_think_raw  sum_{l,h} A[q(t*), j], t* the thinking token the answer rows attend to most
==========  ==============================================================  ================================

Each map is relu'd after summing and scored like the evaluation (bilinear upsampling to the image, the pointing
game and energy-PG of ``rewards.pointing``), for all layers and heads together, per layer and per (layer, head),
on every row and on the correctly answered rows. The all-layer ``flow`` and ``direct`` maps are checked against
the tracer's own maps on the first rows. Writes a JSON table (``--output``) and prints the best variants.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from trl import ModelConfig

from evaluation.generation import prompt_inputs
from rewards.pointing import box_area_fraction, centre_point_game, energy_pointing_game, pointing_game
from saliency import SpecialTokens
from saliency.adapters import adapter_for
from saliency.spans import find_spans
from vlm import load_model_and_processor

KINDS = ("direct_raw", "direct", "flow_raw", "flow", "think_raw", "think", "direct_norm", "flow_norm", "think_norm")


@torch.no_grad()
def row_maps(model, adapter, processor, tokens: SpecialTokens, row: dict, completion: str):
    """Per-kind (layers, heads, rows, cols) maps of one row's completion, or None without a valid format."""
    inputs = prompt_inputs(processor, [row])
    tokenizer = processor.tokenizer
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    spans = find_spans(completion_ids, tokens)
    if isinstance(spans, str):
        return None
    prompt_length = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], torch.tensor([completion_ids])], dim=1)
    values, final_inputs = [], []
    hooks = [a.v_proj.register_forward_hook(lambda m, i, o: values.append(o[0])) for a in adapter.attentions]
    hooks.append(adapter.final_norm.register_forward_hook(lambda m, i, o: final_inputs.append(i[0][0])))
    try:
        vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        if "mm_token_type_ids" in vision:  # per-token, so it grows with the completion (text tokens are type 0)
            types = vision["mm_token_type_ids"]
            vision["mm_token_type_ids"] = torch.cat([types, types.new_zeros(1, len(completion_ids))], dim=1)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True, **vision)
    finally:
        for hook in hooks:
            hook.remove()
    image = (ids[0] == adapter.image_token_id).nonzero().flatten()
    _, grid_h, grid_w = (int(x) for x in inputs["image_grid_thw"][0])
    rows_, cols_ = grid_h // 2, grid_w // 2
    residual = final_inputs[-1]
    inv_rms = torch.rsqrt(residual.pow(2).mean(-1) + adapter.norm_eps)
    think = torch.arange(*spans.thinking) + prompt_length
    answer = torch.arange(*spans.answer) + prompt_length
    q_think, q_answer = think - 1, answer - 1
    readout = adapter.lm_head.weight * adapter.norm_gain()
    maps = {}
    for kind in KINDS:
        maps[kind] = []
    for layer, (attn, attention) in enumerate(zip(out.attentions, adapter.attentions)):
        a = attn[0].double()  # (H, L, L)
        heads = a.shape[0]
        head_dim = attention.o_proj.weight.shape[1] // heads
        v = values[layer].double().reshape(ids.shape[1], -1, head_dim)  # (L, KVH, d)
        v = v.repeat_interleave(heads // v.shape[1], dim=1)[image]  # (N, H, d)
        w_o = attention.o_proj.weight.double().reshape(-1, heads, head_dim)  # (D, H, d)

        def products(token_positions, rows, w_o=w_o, v=v):
            u = torch.einsum("kD,Dhd->khd", readout[ids[0, token_positions]].double(), w_o)
            return torch.einsum("khd,nhd->hkn", u, v) * inv_rms[rows].double()[None, :, None]

        to_image = a[:, :, image]  # (H, L, N)
        ans_img, think_img = to_image[:, q_answer], to_image[:, q_think]
        through = a[:, q_answer][:, :, think] @ think_img  # (H, K, N)
        p_answer, p_think = products(answer, q_answer), products(think, q_think)
        norms = torch.einsum("Dhd,nhd->hnD", w_o, v).norm(dim=-1)[:, None]  # (H, 1, N): |W_O v_j|, Kobayashi et al.
        per_head = {
            "direct_raw": ans_img.sum(1),
            "direct": (ans_img * p_answer).sum(1),
            "flow_raw": through.sum(1),
            "flow": (through * p_answer).sum(1),
            "think_raw": think_img.sum(1),
            "think": (think_img * p_think).sum(1),
            "direct_norm": (ans_img * norms).sum(1),
            "flow_norm": (through * norms).sum(1),
            "think_norm": (think_img * norms).sum(1),
        }
        for kind, value in per_head.items():
            maps[kind].append(value.reshape(heads, rows_, cols_))
    stacked = {kind: torch.stack(v) for kind, v in maps.items()}
    # Across layers: how much the answer rows attend to each thinking token (all layers and heads), times where
    # that token's row reads the image (all layers and heads); and the one thinking token the answer reads most.
    attn = torch.stack([a[0].double() for a in out.attentions])  # (layers, H, L, L)
    weight = attn[:, :, q_answer][:, :, :, think].sum((0, 1, 2))  # (T,)
    reads = attn[:, :, q_think][:, :, :, image].sum((0, 1))  # (T, N)
    stacked["xflow_raw"] = (weight @ reads).reshape(1, 1, rows_, cols_)
    stacked["top_think_raw"] = reads[weight.argmax()].reshape(1, 1, rows_, cols_)
    return stacked


def scores(grid: torch.Tensor, size: tuple[int, int], boxes) -> tuple[float, float] | None:
    """(PG, energy-PG) of a relu'd grid upsampled as the tracer does; None for an empty map."""
    grid = grid.clamp(min=0)
    if not bool((grid > 0).any()):
        return None
    array = F.interpolate(grid[None, None].float(), size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return pointing_game(array, boxes), energy_pointing_game(array, boxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--metrics", required=True, help="metrics.json of launch/eval.py on the same checkpoint")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="eval")
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--pixels", type=int, default=168 * 168)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    with open(args.metrics) as f:
        metrics = json.load(f)
    data = datasets.load_from_disk(args.data)[args.split]
    by_id = {qid: i for i, qid in enumerate(data["question_id"])}
    model_args = ModelConfig(model_name_or_path=args.model, dtype="float32", attn_implementation="eager")
    model, processor = load_model_and_processor(model_args, min_pixels=args.pixels, max_pixels=args.pixels)
    adapter = adapter_for(model)
    tokens = SpecialTokens.from_tokenizer(processor)
    results: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    mismatches = checked = unformatted = 0
    for record in metrics["rows"][: args.rows]:
        row = data[by_id[record["question_id"]]] if record["question_id"] in by_id else None
        if row is None or (row["problem"], row["solution"]) != (record["problem"], record["solution"]):
            raise SystemExit(
                f"--metrics row {record['question_id']!r} is not in --data {args.data} [{args.split}] with the same "
                "question and answer: pass the data set and split the evaluation ran on"
            )
        maps = row_maps(model, adapter, processor, tokens, row, record["completion"])
        if maps is None:  # no valid <think>...</think>answer format, so no map (counted below)
            unformatted += 1
            continue
        size = (row["image"].height, row["image"].width)
        boxes = row["bbox"]
        correct = record["scores"].get("accuracy") == 1.0
        qtype = row["dataset"].split("/")[-1]
        base = {"area": box_area_fraction(size, boxes), "centre": centre_point_game(size, boxes)}
        for kind, m in maps.items():
            variants = {f"{kind}/all": m.sum((0, 1))}
            if m.shape[:2] != (1, 1):  # the cross-layer kinds are already summed over layers and heads
                variants.update({f"{kind}/L{layer}": m[layer].sum(0) for layer in range(m.shape[0])})
                variants.update({f"{kind}/L{l}H{h}": m[l, h] for l in range(m.shape[0]) for h in range(m.shape[1])})
            for name, grid in variants.items():
                s = scores(grid, size, boxes)
                if name in ("flow/all", "direct/all") and s is not None and f"{kind}/pg" in record["scores"]:
                    checked += 1
                    expected = (record["scores"][f"{kind}/pg"], record["scores"][f"{kind}/energy_pg"])
                    mismatches += not np.allclose(s, expected, atol=1e-4)
                results[name]["rows"].append((s, correct, qtype, base))
    print(f"SPEC's all-layer maps against the tracer's scores in metrics.json: {mismatches} of {checked} differ")
    print(f"rows without a valid format (no map, left out of every variant): {unformatted}")
    table = {}
    for name, r in results.items():
        for subset, keep in (("all", lambda c: True), ("correct", lambda c: c)):
            chosen = [(s, b) for s, c, _, b in r["rows"] if keep(c)]
            scored = [(s, b) for s, b in chosen if s is not None]
            if not scored:
                continue
            table.setdefault(name, {})[subset] = {
                "pg": float(np.mean([s[0] for s, _ in scored])),
                "energy_pg": float(np.mean([s[1] for s, _ in scored])),
                "area": float(np.mean([b["area"] for _, b in scored])),
                "centre": float(np.mean([b["centre"] for _, b in scored])),
                "empty": len(chosen) - len(scored),
                "n": len(chosen),
            }
        by_type = defaultdict(list)
        for s, _, qtype, _ in r["rows"]:
            if s is not None:
                by_type[qtype].append(s[0])
        table[name]["pg_by_type"] = {t: float(np.mean(v)) for t, v in sorted(by_type.items())}
    if args.output:
        with open(args.output, "w") as f:
            json.dump(table, f, indent=1)
    print(
        f"{'variant':14s} {'PG':>6s} {'ePG':>6s} {'area':>6s} {'centre':>6s} {'empty':>5s} | correct rows PG ePG | PG by type"
    )
    ranked = sorted(table.items(), key=lambda kv: -kv[1]["all"]["pg"])
    for name, t in ranked:
        if "H" in name.split("/")[-1] and name not in dict(ranked[:12]):
            continue
        a, c = t["all"], t.get("correct", {"pg": float("nan"), "energy_pg": float("nan")})
        types = " ".join(f"{k[:5]} {v:.2f}" for k, v in t["pg_by_type"].items())
        print(
            f"{name:14s} {a['pg']:6.3f} {a['energy_pg']:6.3f} {a['area']:6.3f} {a['centre']:6.3f} {a['empty']:5d} |"
            f" {c['pg']:.3f} {c['energy_pg']:.3f} | {types}"
        )


if __name__ == "__main__":
    main()
