"""Deepen a tiny base's decoder without changing what it computes (depth up-scaling), for the decoder-depth study.

    python bench/deepen_base.py --model two-stage/vlm/tiny_base --output_dir outputs/two-stage-d6 --after 1 --copy 2 3

Inserts, after decoder layer ``--after``, one new layer per ``--copy`` index: a copy of that layer whose attention
output projection (``o_proj``) and MLP down projection (``down_proj``) are zero. A zero output makes the new layer an
identity on the residual stream, so the deepened model's logits equal the original's; the copies start from trained
query/key/value and gate/up weights, so training moves them from a working attention pattern rather than from noise.
The layers after the insertion keep their weights, so the last layers (the tiny recipes' maps) stay the trained
read-out. The base's ``perception_eval.json`` and model card are copied along, so that
``launch/make_tiny_base.py --second_stage_model <output_dir>`` (or ``--third_stage_model``) continues the recipe
from it and records the earlier stages. BENCHMARKS.md, "A deeper decoder", measures it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

LAYERS = "model.language_model.layers."
ZEROED = ("self_attn.o_proj.weight", "mlp.down_proj.weight")
REWRITTEN = ("config.json", "model.safetensors")


def deepen(model_dir: Path, output_dir: Path, after: int, copies: list[int]) -> list[int | str]:
    """Write ``model_dir`` with ``copies`` inserted after layer ``after`` to ``output_dir``; returns the new order of
    layers (old indices, ``"copy of i"`` for the inserted ones)."""
    missing = [name for name in REWRITTEN if not (model_dir / name).is_file()]
    if missing:
        raise SystemExit(f"--model {model_dir}: no {' or '.join(missing)} (a saved base with unsharded safetensors)")
    if output_dir.resolve() == model_dir.resolve():
        raise SystemExit(f"--output_dir {output_dir}: is --model; write the deepened base to a new folder")
    config = json.loads((model_dir / "config.json").read_text())
    text = config.get("text_config", config)
    num_layers = text["num_hidden_layers"]
    if not 0 <= after < num_layers:
        raise SystemExit(f"--after {after}: the decoder has layers 0-{num_layers - 1}")
    if not copies or any(not 0 <= c < num_layers for c in copies):
        raise SystemExit(f"--copy {copies}: give one or more layer indices within 0-{num_layers - 1}")
    if len(set(text.get("layer_types") or ["full_attention"])) > 1:
        raise SystemExit(f"{model_dir}: mixed layer_types; inserting layers would need a choice of type per layer")
    order: list[tuple[int, bool]] = (
        [(i, False) for i in range(after + 1)]
        + [(c, True) for c in copies]
        + [(i, False) for i in range(after + 1, num_layers)]
    )
    weights = load_file(str(model_dir / "model.safetensors"))
    if not any(name.startswith(f"{LAYERS}{num_layers - 1}.") for name in weights):
        raise SystemExit(f"--model {model_dir}: its weights have no '{LAYERS}N.' decoder layers (a Qwen-VL layout)")
    deepened = {k: v for k, v in weights.items() if not k.startswith(LAYERS)}
    for new, (old, inserted) in enumerate(order):
        prefix = f"{LAYERS}{old}."
        for name, tensor in weights.items():
            if name.startswith(prefix):
                part = name[len(prefix) :]
                deepened[f"{LAYERS}{new}.{part}"] = (
                    tensor.clone().zero_() if inserted and part in ZEROED else tensor.clone()
                )
    text["num_hidden_layers"] = len(order)
    if text.get("layer_types"):
        text["layer_types"] = [text["layer_types"][0]] * len(order)

    output_dir.mkdir(parents=True, exist_ok=True)
    for path in model_dir.iterdir():
        if path.is_file() and path.name not in REWRITTEN:
            shutil.copy2(path, output_dir / path.name)
    (output_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file(deepened, str(output_dir / "model.safetensors"), metadata={"format": "pt"})
    return [f"copy of {old}" if inserted else old for old, inserted in order]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="Folder of the base to deepen (safetensors).")
    parser.add_argument("--output_dir", type=Path, required=True, help="Where the deepened base goes.")
    parser.add_argument("--after", type=int, required=True, help="Decoder layer after which the new layers go.")
    parser.add_argument("--copy", type=int, nargs="+", required=True, help="Layers to copy, one new layer each.")
    args = parser.parse_args(argv)
    order = deepen(args.model, args.output_dir, args.after, args.copy)
    print(f"wrote {args.output_dir}: decoder layers {order}")


if __name__ == "__main__":
    main()
