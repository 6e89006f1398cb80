"""Running a model with another attention implementation for the length of a block, through transformers' API.

The tracer (its own implementation, wrapping the model's) and the attention baselines (eager attention, for the
weights) switch the text decoder this way, and so do the tests' eager references.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from transformers import AttentionInterface, AttentionMaskInterface, PretrainedConfig, PreTrainedModel


@contextmanager
def attention_implementation(
    model: PreTrainedModel, name: str, attention: Callable | None = None, mask: Callable | None = None
) -> Iterator[None]:
    """Run ``model`` with attention implementation ``name`` inside the block; its own one is restored on exit.

    With ``attention``, ``name`` is a new implementation registered for the block only: ``attention`` in
    ``AttentionInterface``, with ``mask`` (required then) building its masks in ``AttentionMaskInterface``. The
    switch goes through ``model.set_attn_implementation``, which reaches the sub-models sharing ``model``'s config.
    On exit every config the switch could reach gets back the implementation it had (written back as it was, not
    requested again: requesting ``flash_attention_2`` reruns transformers' kernel checks and loading, which fail
    where the model only runs a stand-in of it). Restoring and unregistering happen also when the block raises.
    """
    if (attention is None) != (mask is None):
        raise ValueError("a new attention implementation needs both its attention and its mask function")
    if attention is not None:
        if name in AttentionInterface() or name in AttentionMaskInterface():
            raise ValueError(f"attention implementation {name!r} is already registered")
        AttentionInterface.register(name, attention)
        AttentionMaskInterface.register(name, mask)
    # Read through the configs: transformers 5 has no public getter of a model's attention implementation.
    before = [(config, config._attn_implementation_internal) for config in _configs(model)]
    try:
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:  # the model only warned that it cannot switch
            raise RuntimeError(f"{type(model).__name__} cannot switch its attention implementation to {name!r}")
        yield
    finally:
        try:
            for config, implementation in before:
                config._attn_implementation_internal = implementation
        finally:
            if attention is not None:
                _unregister(name)


def _configs(model: PreTrainedModel) -> list[PretrainedConfig]:
    """Every config ``model.set_attn_implementation`` may write: the model's, its sub-models' and their sub-configs."""
    found: dict[int, PretrainedConfig] = {}
    queue = [module.config for module in model.modules() if isinstance(module, PreTrainedModel)]
    while queue:
        config = queue.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        queue.extend(
            sub for key in getattr(config, "sub_configs", {}) if (sub := getattr(config, key, None)) is not None
        )
    return list(found.values())


def _unregister(name: str) -> None:
    # transformers has no public way to unregister: `register` is a classmethod writing into the class-level
    # `_global_mapping` dict, and `del interface[name]` only removes an instance's local overrides. The mask must sit
    # in that global dict too: `masking_utils` builds no mask for an implementation missing from
    # `AttentionMaskInterface._global_mapping`.
    AttentionInterface._global_mapping.pop(name, None)
    AttentionMaskInterface._global_mapping.pop(name, None)
