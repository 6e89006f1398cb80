"""GRPO with vLLM rollouts (`use_vllm`, colocate and server mode) end to end on a CPU, with a stand-in engine.

vLLM is not installed here (it needs a GPU), so the test replaces exactly the vLLM objects TRL 1.16's
`trl.generation.vllm_generation` touches, and nothing of TRL or of this toolkit:

- colocate: `vllm.LLM` (built by TRL with `model=model.name_or_path`; its `generate(prompts, sampling_params,
  use_tqdm)` with `{"prompt_token_ids", "multi_modal_data"}` prompts returns `RequestOutput`-like objects; the
  weight sync's `llm_engine.model_executor.driver_worker.model_runner.model.load_weights` and `reset_prefix_cache`),
  `vllm.SamplingParams`, and TRL's `is_vllm_available` check in that module;
- server: `VLLMClient` (`init_communicator`, `get_server_info`, `image_features`, `generate` from token ids plus
  image features, `update_named_params`, `reset_prefix_cache`): no HTTP server, no NCCL group.

The engine behind both is an HF copy of the model loaded from the model folder, as vLLM loads it, and kept in sync
by TRL's own weight sync. It processes the images itself with the processor saved in that folder (as vLLM does)
and refuses a prompt whose run of image tokens does not match the image it embedded (vLLM's "Attempted to assign
N multimodal tokens to P placeholders"), then returns the token ids and processed log-probabilities of HF
`generate` (sampling, temperature, top-k/top-p, max_tokens). What it does not reproduce: vLLM's kernels, batching
and sampler (its numbers are HF's), CUDA, the HTTP and NCCL transport, tensor parallelism and sleep mode. Its
generation is steered to a known completion by a `sequence_bias` set on the engine (vLLM's `SamplingParams` has no
such field), the same bias the HF-generate run gets through `generation_kwargs`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from grpo_helpers import RecordInputs, short_grpo_args
from steering import steer_to
from test_rl import REASONED
from trl import ModelConfig, TrlParser
from trl.generation import vllm_generation

from rewards import get_reward_funcs
from rl import GRPOScriptArguments, SaliencyGRPOConfig, SaliencyGRPOTrainer, load_grpo_dataset, run_grpo
from vlm import load_model_and_processor, load_processor

REPO = Path(__file__).resolve().parents[1]

# Non-square sizes (width, height) that the tiny processor (14-px patches, 2 x 2 merge, 3136..28224 pixels) resizes:
# to multiples of 28, and the last two down to its pixel budget.
IMAGE_SIZES = [(200, 90), (64, 150), (300, 120), (130, 260)]


@dataclass
class Logprob:
    """vLLM's `Logprob`: what TRL's `extract_logprobs` reads."""

    logprob: float
    rank: int


@dataclass
class Engine:
    """The HF model behind the stand-in engine, loaded from the model folder with that folder's processor."""

    model_path: str
    steer: dict = field(default_factory=dict)
    requests: list[list[int]] = field(default_factory=list)
    loaded: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.model, _ = load_model_and_processor(ModelConfig(model_name_or_path=self.model_path, dtype="float32"))
        self.processor = load_processor(self.model_path)
        self.image_token_id = self.model.config.image_token_id

    def load_weights(self, weights) -> None:
        """vLLM's `model.load_weights`: copy named weights in (an unknown name is an error, as in vLLM)."""
        params = dict(self.model.named_parameters())
        for name, tensor in weights:
            params[name].data.copy_(tensor)
            self.loaded.add(name)

    def embed(self, images: list) -> dict:
        """Process images with the engine's own processor, as vLLM does."""
        return dict(self.processor.image_processor(images=images, return_tensors="pt"))

    def tokens_per_image(self, features: dict) -> list[int]:
        merge = self.processor.image_processor.merge_size
        return [int(n) // merge**2 for n in features["image_grid_thw"].prod(-1)]

    def check_placeholders(self, prompt_ids: list[int], features: dict) -> None:
        runs = image_token_runs(prompt_ids, self.image_token_id)
        embedded = self.tokens_per_image(features)
        if runs != embedded:
            raise ValueError(f"Attempted to assign {embedded} multimodal tokens to {runs} placeholders")

    def generate(self, prompt_ids: list[int], features: dict | None, params: dict, n: int) -> list[dict]:
        """`n` completions of one prompt: token ids and the sampled tokens' processed log-probabilities."""
        self.requests.append(list(prompt_ids))
        inputs = {"input_ids": torch.tensor([prompt_ids] * n)}
        if features:
            self.check_placeholders(prompt_ids, features)
            inputs |= {k: torch.cat([v] * n) for k, v in features.items()}
        sampling = {"temperature": params.get("temperature", 1.0), "top_k": params.get("top_k") or None}
        if params.get("top_p", 1.0) < 1.0:
            sampling["top_p"] = params["top_p"]
        output = self.model.generate(
            **inputs,
            max_new_tokens=params["max_tokens"],
            do_sample=sampling["temperature"] > 0,
            **(sampling if sampling["temperature"] > 0 else {}),
            repetition_penalty=params.get("repetition_penalty", 1.0),
            sequence_bias=self.steer or None,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=self.processor.tokenizer.pad_token_id,
        )
        new = output.sequences[:, len(prompt_ids) :]
        logps = torch.stack([s.log_softmax(-1) for s in output.scores], 1).gather(-1, new[..., None])[..., 0]
        eos = self.model.generation_config.eos_token_id
        eos = {eos} if isinstance(eos, int) else set(eos)
        results = []
        for ids, lps in zip(new.tolist(), logps.tolist()):
            end = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
            results.append({"token_ids": ids[:end], "logprobs": lps[:end]})
        return results


def image_token_runs(prompt_ids: list[int], image_token_id: int) -> list[int]:
    """Lengths of the runs of image tokens in a prompt, in order."""
    runs, previous = [], None
    for token in prompt_ids:
        if token == image_token_id:
            runs[-1:] = [runs[-1] + 1] if previous == image_token_id else [*runs[-1:], 1]
        previous = token
    return runs


class StandInLLM:
    """`vllm.LLM` (colocate mode) over an `Engine`."""

    engine: Engine  # set by the test before TRL builds it

    def __init__(self, model: str, **kwargs: Any):
        self.kwargs = {"model": model, **kwargs}
        runner = SimpleNamespace(model=self.engine)
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner)),
            model_config=SimpleNamespace(max_model_len=kwargs.get("max_model_len")),
        )

    def generate(self, prompts: list[dict], sampling_params: StandInSamplingParams, use_tqdm: bool = False):
        outputs = []
        for prompt in prompts:
            images = prompt.get("multi_modal_data", {}).get("image")
            images = None if images is None else images if isinstance(images, list) else [images]
            features = self.engine.embed(images) if images else None
            params = vars(sampling_params)
            completions = self.engine.generate(prompt["prompt_token_ids"], features, params, params["n"])
            outputs.append(
                SimpleNamespace(
                    prompt_token_ids=prompt["prompt_token_ids"],
                    outputs=[
                        SimpleNamespace(
                            token_ids=c["token_ids"], logprobs=[{t: Logprob(lp, 1)} for t, lp in zip(*c.values())]
                        )
                        for c in completions
                    ],
                )
            )
        return outputs

    def reset_prefix_cache(self) -> None:
        pass


class StandInSamplingParams:
    """`vllm.SamplingParams`: keeps the fields TRL sets; an unknown field is a TypeError, as in vLLM."""

    FIELDS = ("n", "repetition_penalty", "temperature", "top_p", "top_k", "min_p", "max_tokens", "logprobs", "seed")

    def __init__(self, **kwargs: Any):
        unknown = set(kwargs) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"SamplingParams got unexpected fields {sorted(unknown)}")
        self.__dict__.update(kwargs)


class StandInClient:
    """TRL's `VLLMClient` (server mode) over an `Engine`: the server's endpoints as method calls."""

    engine: Engine  # set by the test before TRL builds it

    def __init__(self, base_url: str, group_port: int, connection_timeout: float):
        self.base_url = base_url

    def init_communicator(self, device) -> None:
        pass

    def get_server_info(self) -> dict:
        return {"model_config": {"logprobs_mode": "processed_logprobs"}}

    def image_features(self, images: list[list | None]) -> list[dict | None]:
        """The server's render endpoint: images processed alone; placeholders where they sat in that conversation."""
        features = []
        for prompt_images in images:
            if not prompt_images:
                features.append(None)
                continue
            data = self.engine.embed(prompt_images)
            lengths = self.engine.tokens_per_image(data)
            offsets = np.cumsum([3, *[n + 2 for n in lengths[:-1]]]).tolist()
            placeholders = [{"offset": o, "length": n} for o, n in zip(offsets, lengths)]
            features.append({"data": data, "mm_placeholders": {"image": placeholders}})
        return features

    def generate(self, prompts, features=None, n=1, max_tokens=16, **params: Any) -> dict:
        completions = []
        for index, prompt in enumerate(prompts):
            feature = None if features is None else features[index]
            if feature is not None:  # the server embeds the images at the placeholders it was given
                runs = [p["length"] for p in feature["mm_placeholders"]["image"]]
                assert runs == image_token_runs(prompt, self.engine.image_token_id)
            data = None if feature is None else feature["data"]
            completions += self.engine.generate(prompt, data, {**params, "max_tokens": max_tokens}, n)
        return {
            "prompt_ids": [list(p) for p in prompts],
            "completion_ids": [c["token_ids"] for c in completions],
            "logprobs": [[[lp] for lp in c["logprobs"]] for c in completions],
            "logprob_token_ids": [[[t] for t in c["token_ids"]] for c in completions],
        }

    def update_named_params(self, metadata, named_params) -> None:
        self.engine.load_weights(named_params)

    def reset_prefix_cache(self) -> None:
        pass


@pytest.fixture
def engine(tiny_model_dir, monkeypatch) -> Engine:
    """The stand-in engine, installed where TRL looks for vLLM."""
    # TRL's colocate mode writes the rendezvous variables vLLM reads into os.environ; keep them from leaking into later
    # tests, whose launched subprocesses would otherwise take themselves for ranks of a distributed run.
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, os.environ.get(name, ""))  # recorded, so undone after the test
        if not os.environ[name]:
            monkeypatch.delenv(name)
    engine = Engine(str(tiny_model_dir))
    monkeypatch.setattr(vllm_generation, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vllm_generation, "LLM", StandInLLM, raising=False)
    monkeypatch.setattr(vllm_generation, "SamplingParams", StandInSamplingParams, raising=False)
    monkeypatch.setattr(vllm_generation, "VLLMClient", StandInClient)
    monkeypatch.setattr(StandInLLM, "engine", engine, raising=False)
    monkeypatch.setattr(StandInClient, "engine", engine, raising=False)
    return engine


@pytest.fixture(scope="module")
def non_square_rows(synthetic_data_dir) -> Dataset:
    """Four RL rows whose images are non-square and resized by the processor (boxes are normalised: unchanged)."""
    rows = load_grpo_dataset(str(synthetic_data_dir), split="rl").select(range(4))
    return rows.map(lambda row, i: {"image": row["image"].resize(IMAGE_SIZES[i])}, with_indices=True)


def make_trainer(model_dir, rows, out, *, vllm_mode: str | None) -> tuple[SaliencyGRPOTrainer, RecordInputs]:
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(model_dir), dtype="float32"), for_training=True
    )
    funcs = get_reward_funcs(("format", "accuracy", "saliency"))
    recorder = RecordInputs()
    vllm = {"use_vllm": True, "vllm_mode": vllm_mode} if vllm_mode else {}
    args = short_grpo_args(
        out,
        steer=None if vllm_mode else REASONED,
        tokenizer=processor.tokenizer,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        reward_weights=[1.0, 1.0, 1.0, 0.0],
        **vllm,
    )
    trainer = SaliencyGRPOTrainer(
        model=model, reward_funcs=[*funcs, recorder], args=args, train_dataset=rows, processing_class=processor
    )
    return trainer, recorder


def spy_on_scoring(trainer: SaliencyGRPOTrainer) -> list[list[int]]:
    """Record the unpadded prompt ids of every scoring forward the tracer runs."""
    seen: list[list[int]] = []
    score = trainer.tracer.score

    def recording_score(prompt_ids, completion_ids, prompt_mask=None, *args, **kwargs):
        mask = torch.ones_like(prompt_ids) if prompt_mask is None else prompt_mask
        seen.extend(ids[m.bool()].tolist() for ids, m in zip(prompt_ids.cpu(), mask.cpu()))
        return score(prompt_ids, completion_ids, prompt_mask, *args, **kwargs)

    trainer.tracer.score = recording_score
    return seen


@pytest.fixture(scope="module")
def traced_in_generate(tiny_model_dir, non_square_rows, tmp_path_factory) -> dict:
    """What the rewards got from the same GRPO step with HF generate, traced during generation."""
    trainer, recorder = make_trainer(tiny_model_dir, non_square_rows, tmp_path_factory.mktemp("hf"), vllm_mode=None)
    assert trainer._capture == "generate"
    trainer.train()
    return recorder.calls[0]


@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_vllm_rollouts_get_the_maps_of_the_same_completions_traced_in_generate(
    mode, engine, tiny_model_dir, non_square_rows, traced_in_generate, tmp_path
):
    engine.steer = steer_to(engine.processor.tokenizer, REASONED)
    trainer, rolled_out = make_trainer(tiny_model_dir, non_square_rows, tmp_path / mode, vllm_mode=mode)
    assert trainer._capture == "score"
    scored_prompts = spy_on_scoring(trainer)
    trainer.train()

    assert engine.loaded == {name for name, _ in trainer.model.named_parameters()}  # TRL pushed every weight
    g, v = traced_in_generate, rolled_out.calls[0]
    assert [c[0]["content"] for c in v["completions"]] == [c[0]["content"] for c in g["completions"]]
    assert [c[0]["content"] for c in v["completions"]] == [REASONED] * 4
    # The scoring forward saw exactly the prompt tokens the engine generated from (server: one request per prompt).
    sent = engine.requests if mode == "colocate" else [p for p in engine.requests for _ in range(2)]
    assert scored_prompts == sent
    processor = trainer.processing_class
    for image, prompt in zip(v["image"], scored_prompts):
        inputs = processor.image_processor(images=[image], return_tensors="pt")
        assert image_token_runs(prompt, engine.image_token_id) == [int(inputs["image_grid_thw"].prod()) // 4]
    for column in ("saliency_map", "saliency_map_direct"):
        for image, from_generate, from_vllm in zip(g["image"], g[column], v[column]):
            assert from_vllm.shape == (image.height, image.width) != (from_vllm.shape[0], from_vllm.shape[0])
            assert np.isfinite(from_vllm).all() and from_vllm.max() > 0
            np.testing.assert_allclose(from_vllm, from_generate, rtol=1e-4, atol=1e-6 * from_generate.max())
    log = next(entry for entry in trainer.state.log_history if "reward" in entry)
    assert log["rewards/format_reward/mean"] == 1.0 and "saliency/energy_pg" in log


def test_the_7b_vllm_recipe_runs_on_a_local_tiny_copy(engine, tiny_model_dir, synthetic_data_dir, tmp_path):
    """The recipe through the real parsers and `run_grpo`, one LoRA step with the stand-in colocated engine; only
    what this machine lacks is replaced (hub weights, flash-attention, bf16, ZeRO-3, as in test_grpo_recipes.py)."""
    engine.steer = steer_to(engine.processor.tokenizer, REASONED)
    argv = ["--config", str(REPO / "configs/grpo/qwen2_5_vl_7b_vllm.yaml"), "--model_name_or_path",
            str(tiny_model_dir), "--dataset_name", str(synthetic_data_dir), "--dataset_train_split", "rl",
            "--max_train_samples", "2", "--output_dir", str(tmp_path), "--attn_implementation", "sdpa",
            "--dtype", "float32", "--bf16", "false", "--deepspeed", "", "--use_cpu", "true", "--report_to", "none",
            "--max_steps", "1", "--per_device_train_batch_size", "2", "--num_generations", "2",
            "--max_completion_length", "24",
            "--max_pixels", "28224"]  # fmt: skip  # the tiny folder's processor, which vLLM reads (the 7B's: 262144)
    script_args, training_args, model_args = TrlParser(
        (GRPOScriptArguments, SaliencyGRPOConfig, ModelConfig)
    ).parse_args_and_config(argv)
    assert (training_args.use_vllm, training_args.vllm_mode, training_args.saliency_capture) == (
        True,
        "colocate",
        "score",
    )
    run_grpo(script_args, training_args, model_args)
    assert len(engine.requests) == 2 and any(name.endswith("q_proj.weight") for name in engine.loaded)
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_a_colocated_engine_that_would_resize_images_otherwise_is_refused(engine, tiny_model_dir, tmp_path):
    """vLLM (colocate) processes images with the model folder's processor; a trainer resizing them otherwise is
    refused by name before training instead of handing vLLM prompts whose image tokens do not match."""
    model, processor = load_model_and_processor(
        ModelConfig(model_name_or_path=str(tiny_model_dir), dtype="float32"), max_pixels=56 * 56 * 4
    )
    args = SaliencyGRPOConfig(
        output_dir=str(tmp_path), use_vllm=True, report_to="none", use_cpu=True, bf16=False, num_generations=2
    )
    rows = Dataset.from_dict({"prompt": [[{"role": "user", "content": "?"}]]})
    with pytest.raises(ValueError, match=r"vLLM \(the processor in .*longest_edge': 28224.*longest_edge': 12544"):
        SaliencyGRPOTrainer(model=model, reward_funcs=[lambda **k: [0.0]], args=args, train_dataset=rows,
                            processing_class=processor)  # fmt: skip
