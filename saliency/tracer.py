"""The saliency tracer: maps captured during ``generate`` or during one scoring forward over prompt + completion."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .adapters import ModelAdapter, adapter_for, whole_parameters
from .batch import CompletionBatch, padded_positions, teacher_forced_batch
from .capture import Recorder, SampleRows, attention_convention, attention_rows, row_mask, traced_attention
from .decomposition import token_scores
from .output import SaliencyMaps
from .rows import ROW_MODES, RowMode, completion_rows, thinking_row
from .spans import CompletionSpans, SpecialTokens, prompt_opens_thinking


def _gather_columns(probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, H, r, L) probabilities at the (B, N) columns ``index`` -> (B, H, r, N)."""
    batch, heads, rows, _ = probs.shape
    return probs.gather(-1, index[:, None, None, :].expand(batch, heads, rows, -1))


@dataclass
class _Plan:
    """Rows of one sample to capture in a scoring forward (absolute positions, half-open ranges)."""

    first_row: int
    end_row: int
    answer_rows: tuple[int, int]
    think_columns: tuple[int, int]


def _plan(spans: CompletionSpans, prompt_length: int, row: RowMode) -> _Plan:
    think_columns = (prompt_length + spans.thinking[0], prompt_length + spans.thinking[1])
    answer_rows = (completion_rows(prompt_length, spans.answer[0]), completion_rows(prompt_length, spans.answer[1]))
    return _Plan(
        first_row=min(completion_rows(prompt_length, 0), thinking_row(think_columns[0], row)),
        end_row=answer_rows[1],
        answer_rows=answer_rows,
        think_columns=think_columns,
    )


class _ScoringRecorder(Recorder):
    """Keeps, per sample, its planned rows of one forward over prompt + completion, in chunks of rows."""

    def __init__(
        self, plans: list[_Plan | None], image_index: torch.Tensor, image_counts: list[int], chunk_elements: int
    ):
        self.plans, self.image_index, self.image_counts = plans, image_index, image_counts
        self.chunk_elements = chunk_elements
        self.rows: list[SampleRows | None] = [
            None if plan is None else SampleRows(plan.first_row, [], [], [], torch.empty(0)) for plan in plans
        ]

    def on_attention(self, layer, query, key, value, mask, scaling):
        heads, q_len, kv_len = query.shape[1], query.shape[2], key.shape[2]
        chunk = max(1, self.chunk_elements // (heads * kv_len))
        for b, (plan, rows) in enumerate(zip(self.plans, self.rows)):
            if plan is None:
                continue
            columns = self.image_index[b : b + 1, : self.image_counts[b]]
            image_parts, think_parts = [], []
            for start in range(plan.first_row, plan.end_row, chunk):
                row_index = torch.arange(start, min(start + chunk, plan.end_row), device=query.device)
                rows_mask = row_mask(
                    mask, slice(b, b + 1), row_index, q_len, kv_len, torch.promote_types(query.dtype, torch.float32)
                )
                probs = attention_rows(query[b : b + 1, :, row_index], key[b : b + 1], rows_mask, scaling)
                image_parts.append(_gather_columns(probs, columns)[0].to(query.dtype))
                lo, hi = max(start, plan.answer_rows[0]), min(start + chunk, plan.answer_rows[1])
                if lo < hi:
                    think_parts.append(probs[0, :, lo - start : hi - start, slice(*plan.think_columns)].to(query.dtype))
            rows.image_rows.append(torch.cat(image_parts, 1))
            rows.think_rows.append(torch.cat(think_parts, 1))
            rows.values.append(value[b, :, columns[0]])

    def on_inverse_rms(self, inv_rms):
        for b, rows in enumerate(self.rows):
            if rows is not None:
                rows.inv_rms = inv_rms[b]


class _GenerationRecorder(Recorder):
    """Keeps the prefill's needed rows and each decode step's query, key and mask; tracks ``<think>``/``</think>``.

    A decode step only stores references (the key is the cache's own tensor). The decode rows' attention is computed
    after generation, batched over steps and chunked, against the last step's keys with each step's own mask: the
    same numbers as computing each row at its step, at a fraction of the per-step cost on small models.
    """

    def __init__(
        self, adapter: ModelAdapter, tokens: SpecialTokens, row: RowMode, chunk_elements: int, captured: Sequence[int]
    ):
        self.adapter, self.tokens, self.row = adapter, tokens, row
        self.chunk_elements = chunk_elements
        self.slot = {layer: i for i, layer in enumerate(captured)}  # per-layer lists hold the captured layers only
        layers = len(captured)
        self.prompt_ids: torch.Tensor | None = None
        self.position = 0  # absolute position of the first query row of the current forward
        self.prefill_rows: list[torch.Tensor | None] = [None] * layers
        self.steps: list[list[tuple[torch.Tensor, torch.Tensor | None]]] = [[] for _ in range(layers)]
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.scaling: list[float] = [1.0] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.inv_rms: list[torch.Tensor] = []
        self._rows: tuple[list[torch.Tensor], list[torch.Tensor | None]] | None = None

    def on_model_inputs(self, kwargs):
        input_ids = kwargs.get("input_ids")
        if input_ids is None:
            raise ValueError("tracing generate needs input_ids in every forward (inputs_embeds-only is not supported)")
        if self.prompt_ids is None:
            self._start(input_ids, kwargs)
            return
        if input_ids.shape[1] != 1:
            raise ValueError("tracing generate needs one new token per step: use_cache=True, no assisted decoding")
        self.position += 1 if self.position else self.prompt_ids.shape[1]
        for b, token in enumerate(input_ids[:, 0].tolist()):
            if token == self.tokens.think_open and self.think_open[b] is None:
                self.think_open[b] = self.position
            elif token == self.tokens.think_close and self.think_open[b] is not None and self.think_columns[b] is None:
                self.think_columns[b] = (self.think_open[b] + 1, self.position)

    def _start(self, input_ids: torch.Tensor, kwargs: dict) -> None:
        self.prompt_ids = input_ids
        self.image_index, self.image_counts = padded_positions(self.adapter.visual_mask(input_ids))
        prompt_length = input_ids.shape[1]
        self.think_open = [prompt_opens_thinking(ids, self.tokens) for ids in input_ids.tolist()]
        self.think_columns: list[tuple[int, int] | None] = [None] * len(self.think_open)
        first_rows = [completion_rows(prompt_length, 0)] + [
            thinking_row(opened + 1, self.row) for opened in self.think_open if opened is not None
        ]
        self.first_row = min(first_rows)

    def on_attention(self, layer, query, key, value, mask, scaling):
        layer = self.slot[layer]
        if self.values[layer] is not None:  # a decode step: computed later, batched
            self.steps[layer].append((query, mask))
            self.keys[layer] = key
            return
        q_len, kv_len = query.shape[2], key.shape[2]
        index = self.image_index[:, None, :, None].expand(-1, value.shape[1], -1, value.shape[-1])
        self.values[layer] = value.gather(2, index)
        self.scaling[layer] = scaling
        row_index = torch.arange(self.first_row, q_len, device=query.device)
        rows_mask = row_mask(
            mask, slice(None), row_index, q_len, kv_len, torch.promote_types(query.dtype, torch.float32)
        )
        probs = attention_rows(query[:, :, row_index], key, rows_mask, scaling)
        self.prefill_rows[layer] = _gather_columns(probs, self.image_index).to(query.dtype)

    def on_inverse_rms(self, inv_rms):
        self.inv_rms.append(inv_rms)

    def _step_masks(self, steps: list[tuple[torch.Tensor, torch.Tensor | None]], first: int, kv_len: int, dtype):
        """Additive (B or 1, heads or 1, r, kv_len) mask of decode steps ``first ..``: each step's mask, its causality."""
        prompt_length = self.prompt_ids.shape[1]
        step_kv = torch.arange(len(steps), device=steps[0][0].device) + prompt_length + first + 1
        allowed = torch.arange(kv_len, device=step_kv.device)[None, :] < step_kv[:, None]
        additive = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        additive.masked_fill_(~allowed, torch.finfo(dtype).min)
        additive = additive[None, None]
        zero = torch.zeros(1, dtype=torch.long, device=step_kv.device)
        for r, (_, mask) in enumerate(steps):
            if mask is None:
                continue
            kv = int(step_kv[r])
            own = row_mask(mask, slice(None), zero, 1, kv, dtype)
            if own.dtype == torch.bool:
                own = torch.zeros(own.shape, dtype=dtype, device=own.device).masked_fill_(~own, torch.finfo(dtype).min)
            if own.shape[:2] != additive.shape[:2]:
                additive = additive.expand(torch.broadcast_shapes(own.shape[:2], additive.shape[:2]) + (-1, -1)).clone()
            additive[:, :, r, :kv] += own[:, :, 0]
        return additive.clamp_min(torch.finfo(dtype).min)

    def _finalised_rows(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Per layer: image rows (B, H, R, N_max) of the prefill and decode rows; decode rows' thinking columns."""
        if self._rows is not None:
            return self._rows
        widths = [0 if c is None else c[1] - c[0] for c in self.think_columns]
        device = self.prompt_ids.device
        think_index = torch.zeros(len(widths), max(widths, default=0), dtype=torch.long, device=device)
        for b, columns in enumerate(self.think_columns):
            if columns is not None:
                think_index[b, : widths[b]] = torch.arange(*columns, device=device)
        image_rows, think_rows = [], []
        for layer, steps in enumerate(self.steps):
            parts, think_parts = [self.prefill_rows[layer]], []
            if steps:
                key = self.keys[layer]
                batch, heads, _, _ = steps[0][0].shape
                dtype = torch.promote_types(steps[0][0].dtype, torch.float32)
                chunk = max(1, self.chunk_elements // (batch * heads * key.shape[2]))
                for first in range(0, len(steps), chunk):
                    part = steps[first : first + chunk]
                    query = torch.cat([q for q, _ in part], 2)
                    probs = attention_rows(
                        query, key, self._step_masks(part, first, key.shape[2], dtype), self.scaling[layer]
                    )
                    parts.append(_gather_columns(probs, self.image_index).to(query.dtype))
                    if think_index.shape[1]:
                        think_parts.append(_gather_columns(probs, think_index).to(query.dtype))
            image_rows.append(torch.cat(parts, 2))
            think_rows.append(torch.cat(think_parts, 2) if think_parts else None)
        self.steps = [[] for _ in self.steps]  # the stored queries, masks and keys are no longer needed
        self.keys = [None] * len(self.keys)
        self._rows = (image_rows, think_rows)
        return self._rows

    def sample_rows(self, b: int, spans: CompletionSpans) -> SampleRows:
        """The captured rows of sample ``b`` (whose spans agree with the tracked ones)."""
        count = self.image_counts[b]
        prompt_length = self.prompt_ids.shape[1]
        tracked = self.think_columns[b]
        if tracked != (prompt_length + spans.thinking[0], prompt_length + spans.thinking[1]):
            raise RuntimeError(f"sample {b}: the tracked thinking span disagrees with the completion's spans")
        image_rows, think_rows = self._finalised_rows()
        # Decode step i holds row prompt_length + i.
        answer_steps = completion_rows(prompt_length, torch.arange(*spans.answer)) - prompt_length
        width = spans.thinking[1] - spans.thinking[0]
        return SampleRows(
            first_row=self.first_row,
            image_rows=[layer[b, :, :, :count] for layer in image_rows],
            think_rows=[layer[b][:, answer_steps, :width] for layer in think_rows],
            values=[value[b, :, :count] for value in self.values],
            inv_rms=torch.cat([s[b] for s in self.inv_rms]),
        )


@dataclass
class TracedGeneration:
    """What :meth:`SaliencyTracer.generate` returns: ``generate``'s own output and one map set per sequence."""

    output: object
    sequences: torch.Tensor
    maps: list[SaliencyMaps]


class GenerationRecording:
    """The capture of one ``generate`` call made inside :meth:`SaliencyTracer.recording`."""

    def __init__(self, tracer: SaliencyTracer, recorder: _GenerationRecorder):
        self._tracer, self._recorder = tracer, recorder

    @property
    def seconds(self) -> float:
        """Wall time the tracer itself spent inside the recorded passes."""
        return self._recorder.seconds

    def maps(
        self,
        completions: Sequence[Sequence[int] | torch.Tensor],
        vision_inputs: dict,
        image_sizes: Sequence[Sequence[tuple[int, int]]] | None = None,
        num_return_sequences: int = 1,
    ) -> list[SaliencyMaps]:
        """One map set per generated sequence.

        ``completions[i]`` holds the new tokens of sequence i (padding or tokens after the end of turn may be cut
        off or kept); ``vision_inputs`` are the processor outputs given to ``generate`` (``image_grid_thw``, ...);
        ``image_sizes`` as in :meth:`SaliencyTracer.generate`, one entry per prompt.
        """
        recorder = self._recorder
        if recorder.prompt_ids is None:
            raise RuntimeError("no generate call ran inside the recording")
        if len(completions) != len(recorder.prompt_ids):
            raise ValueError(f"{len(completions)} completions for {len(recorder.prompt_ids)} generated sequences")
        copies = num_return_sequences
        prompts = recorder.prompt_ids[::copies].cpu()
        visual = [ids[self._tracer.adapter.visual_mask(ids)] for ids in prompts]
        grids = [g for g in self._tracer.adapter.visual_grids(vision_inputs, visual) for _ in range(copies)]
        sizes = None if image_sizes is None else [s for s in image_sizes for _ in range(copies)]
        start = time.perf_counter()
        samples = CompletionBatch.build(
            self._tracer.tokens,
            recorder.prompt_ids,
            [torch.as_tensor(c, dtype=torch.long).cpu() for c in completions],
            recorder.image_counts,
            grids,
            sizes,
        )
        maps = self._tracer._maps(samples, recorder.prompt_ids.shape[1], recorder.sample_rows)
        recorder.seconds += time.perf_counter() - start
        return maps


class SaliencyTracer:
    """Direct and reasoning-flow saliency maps of a VLM's completions, captured inside its own forward pass.

    Args:
        model: a supported transformers VLM (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA), PEFT-wrapped or not.
        tokens: ids of ``<think>``, ``</think>`` and the stop tokens (``SpecialTokens.from_tokenizer``).
        row: which row carries a thinking token's view of the image in the flow map: ``"q"`` (the position that
            generated it, default) or ``"pos"`` (its own position).
        layers: decoder layers whose heads are summed into the maps (``sum_l`` of SPEC section 3), as indices
            (negative ones count from the end); all layers when None. Only these layers are captured.
        adapter: overrides the family adapter found from the model's config.
        chunk_elements: at most this many attention scores are held at once (per sample in a scoring forward, per
            layer after a traced generate).
    """

    def __init__(
        self,
        model: nn.Module,
        tokens: SpecialTokens,
        row: RowMode = "q",
        adapter: ModelAdapter | None = None,
        chunk_elements: int = 1 << 24,
        layers: Sequence[int] | None = None,
    ):
        if row not in ROW_MODES:
            raise ValueError(f"row must be 'q' or 'pos', got {row!r}")
        self.model = model
        self.tokens = tokens
        self.row = row
        self.adapter = adapter or adapter_for(model)
        attention_convention(self.adapter.text_config._attn_implementation)  # one it cannot trace is refused by name
        self.chunk_elements = chunk_elements
        self.layers = layer_indices(layers, len(self.adapter.attentions))

    def generate(
        self, input_ids: torch.Tensor, image_sizes: Sequence[Sequence[tuple[int, int]]] | None = None, **generate_kwargs
    ) -> TracedGeneration:
        """Run ``model.generate`` and capture the maps of every returned sequence on the way (no extra forward).

        ``image_sizes[b]`` lists the (height, width) of sample b's images and videos in prompt order (one entry per
        video, shared by its frames), the size maps are upsampled to
        (default: the size the vision tower saw). Greedy or sampled decoding with the KV cache; no beam search.
        """
        if generate_kwargs.get("num_beams", 1) != 1:
            raise ValueError("tracing generate does not support beam search (num_beams > 1)")
        with self.recording() as recording:
            output = self.model.generate(input_ids=input_ids, **generate_kwargs)
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        maps = recording.maps(
            list(sequences[:, input_ids.shape[1] :].cpu()),
            vision_inputs=generate_kwargs,
            image_sizes=image_sizes,
            num_return_sequences=len(sequences) // len(input_ids),
        )
        return TracedGeneration(output=output, sequences=sequences, maps=maps)

    @contextmanager
    def recording(self) -> Iterator[GenerationRecording]:
        """Capture whatever ``generate`` call runs inside the block (e.g. a trainer's); maps come from the result.

        with tracer.recording() as recording:
            sequences = model.generate(**inputs)
        maps = recording.maps(completions, vision_inputs=inputs)
        """
        recorder = _GenerationRecorder(self.adapter, self.tokens, self.row, self.chunk_elements, self.layers)
        with traced_attention(self.adapter, recorder, self.layers):
            yield GenerationRecording(self, recorder)

    def score(
        self,
        prompt_ids: torch.Tensor,
        completion_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
        image_sizes: Sequence[Sequence[tuple[int, int]]] | None = None,
        **vision_inputs,
    ) -> list[SaliencyMaps]:
        """Maps of completions produced anywhere, from one forward over (left-padded) prompt + completion.

        The layout is TRL's: ``prompt_ids`` (B, P) left-padded, ``completion_ids`` (B, C) right-padded;
        ``vision_inputs`` are the processor's (``pixel_values``, ``image_grid_thw``, ...).
        """
        batch = teacher_forced_batch(
            self, prompt_ids, completion_ids, prompt_mask, completion_mask, image_sizes, vision_inputs
        )
        plans = [
            _plan(spans, batch.prompt_length, self.row) if batch.mapped(b) else None
            for b, spans in enumerate(batch.spans)
        ]
        recorder = _ScoringRecorder(plans, batch.image_index, batch.image_counts, self.chunk_elements)
        with traced_attention(self.adapter, recorder, self.layers), torch.no_grad():
            # Only the final-norm inputs are read; logits over the vocabulary for every position are not needed.
            self.model(**batch.model_inputs, logits_to_keep=1)
        return self._maps(batch, batch.prompt_length, lambda b, spans: recorder.rows[b])

    @torch.no_grad()
    def _maps(
        self, samples: CompletionBatch, prompt_length: int, rows_of: Callable[[int, CompletionSpans], SampleRows]
    ) -> list[SaliencyMaps]:
        # Under DeepSpeed ZeRO-3 the read-out weights are gathered once here, on every rank, whatever its samples.
        with whole_parameters(self.adapter.readout_modules()):
            o_proj = [self.adapter.o_proj_weight(layer) for layer in self.layers]

            def scores_of(b: int, spans: CompletionSpans) -> tuple[dict, dict]:
                completion = samples.completions[b]
                scores = token_scores(
                    self.adapter, o_proj, rows_of(b, spans), completion, spans, prompt_length, self.row
                )
                num_tokens = len(completion)
                pad = {kind: torch.cat([s, s.new_zeros(num_tokens - len(s), s.shape[1])]) for kind, s in scores.items()}
                direct = torch.arange(num_tokens) < spans.answer[1]
                flow = (torch.arange(num_tokens) >= spans.answer[0]) & direct
                return pad, {"direct": direct, "flow": flow}

            return samples.maps(scores_of)


def layer_indices(layers: Sequence[int] | None, count: int) -> list[int]:
    if layers is None:
        return list(range(count))
    if not layers:
        raise ValueError("layers must name at least one decoder layer (None: all of them)")
    bad = [layer for layer in layers if not -count <= layer < count]
    if bad:
        raise ValueError(f"layers {bad} out of range: the model has {count} decoder layers (0..{count - 1})")
    indices = sorted({layer % count for layer in layers})
    if len(indices) != len(layers):
        raise ValueError(f"layers {list(layers)} name a layer twice")
    return indices
