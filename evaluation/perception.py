"""Short-answer evaluation of a base model (before the cold start): does it read the synthetic scenes?

A pretrained VLM answers questions directly, without ``<think>``; so does the tiny base model (``vlm/tiny_base/``).
Each held-out row is asked as its own question and, for the grounding tasks, as a pointing question ("Where is the
red circle?") and a reading question ("What is at the top left?"), the tasks of the base's pre-training
(``data_tools.synthetic.perception_texts``), on scenes it never saw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedModel, ProcessorMixin

from data_tools.synthetic import QUESTION_TYPES, SyntheticConfig, make_example, perception_texts
from rewards.accuracy import answer_matches
from vlm.chat_templates import QWEN_DEFAULT_SYSTEM_PROMPT

from .generation import generate_completions
from .metrics import mean_interval

GROUNDING_TASKS = ("point", "read")
CHANCE = {"color": 1 / 6, "shape": 1 / 4, "left_of": 1 / 4, "count": 1 / 4, "point": 1 / 9, "read": 1 / 24}


def perception_rows(num_rows: int, seed: int = 0, split: str = "eval") -> list[dict[str, Any]]:
    """Held-out short-answer rows of ``split``: each scene's own question, then its pointing and reading questions.

    ``task`` is the question type (``color``, ``shape``, ``left_of``, ``count``) or ``point`` / ``read``; a scene
    without a unique object (resp. a cell with one object) gives no row of that task.
    """
    rows = []
    for index in range(num_rows):
        example = make_example(seed, split, index)
        base = {"image": example.image, "question_id": example.question_id}
        rows.append(base | {"task": example.question_type, "problem": example.problem, "solution": example.solution})
        for task in GROUNDING_TASKS:
            problem, solution, _ = perception_texts(example, task, SyntheticConfig())
            if problem != example.problem:
                rows.append(base | {"task": task, "problem": problem, "solution": solution})
    return rows


def evaluate_short_answers(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 32,
    max_new_tokens: int = 8,
    bootstrap_samples: int = 1000,
) -> dict[str, Any]:
    """Greedy short answers to ``rows`` (from :func:`perception_rows`), scored by exact match after normalisation.

    Returns ``{"accuracy": {...}, "per_task": {task: {...}}, "chance": {task: p}, "examples": [...]}`` where each
    ``{...}`` is a mean with its bootstrap interval (:func:`evaluation.metrics.mean_interval`); ``accuracy`` is over
    the scene questions only (the four question types), as in the evaluation of the tuned model.
    """
    answers = generate_completions(
        model,
        processor,
        rows,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        system_prompt=QWEN_DEFAULT_SYSTEM_PROMPT,
        desc="short answers",
    )
    by_task: dict[str, list[float]] = defaultdict(list)
    for row, answer in zip(rows, answers):
        by_task[row["task"]].append(float(answer_matches(answer, row["solution"])))
    scene = [v for task in QUESTION_TYPES for v in by_task.get(task, [])]
    interval = {"bootstrap_samples": bootstrap_samples}
    return {
        "accuracy": mean_interval(scene, **interval),
        "per_task": {task: mean_interval(values, **interval) for task, values in sorted(by_task.items())},
        "chance": CHANCE,
        "examples": [
            {"task": row["task"], "problem": row["problem"], "solution": row["solution"], "answer": answer}
            for row, answer in zip(rows[:12], answers[:12])
        ],
    }
