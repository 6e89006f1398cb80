"""The text rewards, chosen by name, plugged unchanged into a plain `trl.GRPOTrainer` on the tiny VLM and synthetic
data; TRL weighs them with `reward_weights`."""

import math

import pytest
from grpo_helpers import RecordInputs, short_grpo_args
from trl import GRPOConfig, GRPOTrainer

from data_tools import SYSTEM_PROMPT, generate_synthetic
from rewards import accuracy_reward, format_reward, get_reward_funcs, iou_reward
from vlm import build_tiny_vlm, load_processor

TOKENIZER_TEXTS = [
    SYSTEM_PROMPT,
    "<think>The red circle is at the top left.</think>red",
    "What colour is the square? Which shape is left of the circle? How many shapes are in the left half?",
]


def with_prompt(row):
    return {
        "prompt": [
            {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["problem"]}]},
        ]
    }


@pytest.mark.slow
def test_text_rewards_in_a_plain_grpo_trainer(tmp_path):
    model_dir = build_tiny_vlm(tmp_path / "model", family="qwen2_5_vl", texts=TOKENIZER_TEXTS)
    processor = load_processor(str(model_dir))
    dataset = generate_synthetic(num_sft=1, num_rl=4, num_eval=1, seed=0)["rl"].map(with_prompt)
    # Every completion will answer "red" (see steer_to): make that right for half of the rows.
    dataset = dataset.map(lambda row, index: {"solution": "red" if index % 2 else "blue"}, with_indices=True)
    recorder = RecordInputs()
    reward_funcs = [*get_reward_funcs(["format", "accuracy", "iou"]), recorder]
    args = short_grpo_args(
        tmp_path / "out",
        steer="<think>red</think>red",
        tokenizer=processor.tokenizer,
        config_class=GRPOConfig,  # TRL's own trainer and config: the rewards need nothing of ours
        max_steps=2,
        per_device_train_batch_size=4,  # 2 prompts x 2 generations per step: one pass over the 4 rows
        max_completion_length=8,
        reward_weights=[1.0, 1.0, 0.5, 0.0],
    )
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == len(recorder.calls) == 2  # one generation batch per step
    for entry, columns in zip(logs, recorder.calls):
        completions = columns["completions"]
        # TRL hands over conversational completions and the dataset columns the rewards read.
        assert all(message["role"] == "assistant" for completion in completions for message in completion)
        assert {"solution", "bbox", "image"} <= set(columns)
        # What TRL logged is what the functions return on those inputs.
        expected = {
            "format_reward": format_reward(None, completions),
            "accuracy_reward": accuracy_reward(None, completions, solution=columns["solution"]),
            "iou_reward": iou_reward(None, completions, bbox=columns["bbox"], image=columns["image"]),
        }
        for name, values in expected.items():
            assert entry[f"rewards/{name}/mean"] == pytest.approx(sum(values) / len(values))
        weighted = [f + a + 0.5 * i for f, a, i in zip(*expected.values())]
        assert entry["reward"] == pytest.approx(sum(weighted) / len(weighted))
        assert math.isfinite(entry["reward"])
        # <think> tags survive TRL's decoding (skip_special_tokens=True), so the format reward sees them.
        assert entry["rewards/format_reward/mean"] == 1.0
    assert sum(entry["rewards/accuracy_reward/mean"] for entry in logs) / len(logs) == 0.5
