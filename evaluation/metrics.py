"""Answer-level metrics of a set of completions: format rate and accuracy, overall and per source."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from rewards import accuracy_reward, format_reward


def answer_metrics(completions: Sequence[str], solutions: Sequence[str], sources: Sequence[str]) -> dict:
    """Format rate and accuracy (fractions in [0, 1]) overall and per `dataset` source, with row counts."""
    fmt = format_reward(None, list(completions))
    acc = accuracy_reward(None, list(completions), solution=list(solutions))
    groups: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        groups[source].append(i)

    def summary(indices: Sequence[int]) -> dict:
        n = len(indices)
        return {
            "n": n,
            "format_rate": sum(fmt[i] for i in indices) / n if n else 0.0,
            "accuracy": sum(acc[i] for i in indices) / n if n else 0.0,
        }

    return {**summary(range(len(completions))), "per_source": {s: summary(ix) for s, ix in sorted(groups.items())}}
