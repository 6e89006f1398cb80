"""The init benchmark: it scores the token where the answer is read, and runs end to end on a few steps."""

import importlib.util
import json
from pathlib import Path

from trl import ModelConfig

from data_tools.synthetic import generate_split
from vlm import build_tiny_vlm, load_model_and_processor

REPO = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("tiny_init", REPO / "bench" / "tiny_init.py")
tiny_init = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tiny_init)


def test_one_scored_position_per_row_and_it_is_the_answer_read_in_the_reasoning(tmp_path):
    rows = generate_split("eval", 8, 0, kind="sft")
    _, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(build_tiny_vlm(tmp_path / "m"))))
    inputs, labels, kinds = tiny_init.Batches(processor, rows)(list(range(8)))
    close = processor.tokenizer.convert_tokens_to_ids("</think>")
    for i, row in enumerate(rows):
        scored = (kinds[i] < tiny_init.KINDS.index("template")) & (kinds[i] >= 0)
        assert scored.sum() == 1
        j = int(scored.nonzero())
        assert tiny_init.KINDS[kinds[i, j]] == row["dataset"].split("/")[-1]
        answer = row["messages"][-1]["content"][0]["text"].split("</think>")[-1]
        assert processor.tokenizer.decode(labels[i, j]).strip() == answer
        assert close in inputs["input_ids"][i, j:].tolist()  # read inside the reasoning, not the final answer
        assert (labels[i] != -100).sum() == (kinds[i] >= 0).sum()  # every assistant token is scored somewhere


def test_side_by_side_run_writes_a_curve_per_init(tmp_path):
    output = tmp_path / "init.json"
    flags = ["--steps", "2", "--eval_every", "1", "--num_train", "8", "--num_held_out", "4", "--batch_size", "2"]
    tiny_init.main([*flags, "--output", str(output)])
    curves = json.loads(output.read_text())["curves"]
    assert [[p["init"] for p in c] for c in curves] == [["0.02"] * 3, ["width"] * 3]
    assert all(0.0 <= p[k] <= 1.0 for c in curves for p in c for k in tiny_init.KINDS)
