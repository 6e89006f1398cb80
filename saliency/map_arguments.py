"""The command-line fields that choose how the tracer builds its maps, shared by GRPO and the evaluation launchers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from torch import nn

from .adapters import adapter_for
from .rows import ROW_MODES
from .spans import SpecialTokens
from .tracer import SaliencyTracer, layer_indices

MapKind = Literal["flow", "direct"]  # SPEC's reasoning-flow and direct (logit-decomposition) maps
MAP_KINDS: tuple[str, ...] = get_args(MapKind)


@dataclass
class SaliencyMapArguments:
    """`--saliency_row` and `--saliency_layers`; a config dataclass inherits them and calls `check_map_flags`."""

    saliency_row: str = field(
        default="q",
        metadata={
            "help": "Row of a thinking token t in the flow map: 'q' (q(t), the position that generated t; "
            "published) or 'pos' (pos(t), the token's own position).",
            "choices": list(ROW_MODES),
        },
    )
    saliency_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Decoder layers summed into the maps (negative indices count from the end); all layers when "
            "unset (SPEC). E.g. `--saliency_layers 0 -1`. Evaluate with the layers a GRPO run's reward read to "
            "score what it was trained on."
        },
    )

    def check_map_flags(self) -> None:
        """Reject the choices that need no model to be wrong (the layer range is checked by `make_tracer`)."""
        if self.saliency_row not in ROW_MODES:
            raise ValueError(f"--saliency_row must be 'q' or 'pos', got {self.saliency_row!r}")
        if self.saliency_layers is not None and not self.saliency_layers:
            raise ValueError("--saliency_layers needs at least one layer index (leave it unset for all layers)")

    def make_tracer(self, model: nn.Module, tokens: SpecialTokens) -> SaliencyTracer:
        """The tracer of ``model`` with these choices; layers the model lacks are reported by flag name, anything else
        the tracer refuses (an attention implementation it cannot trace) in its own words."""
        try:
            layer_indices(self.saliency_layers, len(adapter_for(model).attentions))
        except ValueError as error:
            raise ValueError(f"--saliency_layers {self.saliency_layers}: {error}") from error
        return SaliencyTracer(model, tokens, row=self.saliency_row, layers=self.saliency_layers)
