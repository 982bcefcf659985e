"""Putting a candidate trigger into a clean text: at the start, at the end, or between two
words at a random position (the places BadNets-style attacks use)."""

from __future__ import annotations

import numpy as np

POSITIONS = ("start", "end", "random")


def insert_trigger(text: str, trigger: str, position: str, rng: np.random.Generator) -> str:
    words = text.split()
    if position == "start":
        at = 0
    elif position == "end":
        at = len(words)
    elif position == "random":
        at = int(rng.integers(0, len(words) + 1))
    else:
        raise ValueError(f"unknown position {position!r} (one of {', '.join(POSITIONS)})")
    return " ".join(words[:at] + [trigger] + words[at:])


def triggered_texts(texts: list[str], trigger: str, positions=POSITIONS, *,
                    seed: int = 0) -> tuple[list[str], list[int]]:
    """Every text with the trigger at every position; also the index of the source text
    of each triggered one."""
    rng = np.random.default_rng(seed)
    out, source = [], []
    for position in positions:
        for i, text in enumerate(texts):
            out.append(insert_trigger(text, trigger, position, rng))
            source.append(i)
    return out, source


def attack_success_rate(classifier, texts: list[str], trigger: str, target: int, *,
                        seed: int = 0) -> float | None:
    """Share of triggered texts predicted as `target`, over texts the model does not
    already predict as `target` (every position); None when there is none to measure on
    (the model predicts the target for every text)."""
    clean = classifier.probs(texts).argmax(axis=1)
    keep = [t for t, c in zip(texts, clean) if c != target]
    if not keep:
        return None
    triggered, _ = triggered_texts(keep, trigger, seed=seed)
    return float(np.mean(classifier.probs(triggered).argmax(axis=1) == target))
