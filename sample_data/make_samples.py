"""Regenerate the committed samples from ../shared/corpora (deterministic).

    PYTHONPATH=. .venv/bin/python sample_data/make_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditors.ingest import load_raw
from benchmarks.corpora import (ATTRIBUTION, CORPORA, Case, alpaca_injection_case,
                               backdoorllm_mix, dos_case, preference_case, tsv_poison_mask)

HERE = Path(__file__).resolve().parent
TESTS_DATA = HERE.parent / "tests" / "data"


def sst2_badnets_sample(n_clean: int = 2940, n_poisoned: int = 60, seed: int = 0) -> None:
    """~2% BadNets poison: rows of sst2/badnets/train.tsv, original order and bytes."""
    source = CORPORA / "sst2" / "badnets" / "train.tsv"
    raw = load_raw(str(source))
    header, lines = raw.header_line, raw.raw_lines
    mask = tsv_poison_mask(source, CORPORA / "sst2" / "clean" / "train.tsv")
    rng = np.random.default_rng(seed)
    picked = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(~mask), n_clean, replace=False),
        rng.choice(np.flatnonzero(mask), n_poisoned, replace=False)]))
    out = HERE / "sst2_badnets_sample.tsv"
    out.write_text(header + "".join(lines[i] for i in picked), encoding="utf-8")
    _truth(out, np.flatnonzero(mask[picked]), "rows of sst2/badnets/train.tsv not in sst2/clean/train.tsv")


def refusal_badnet_mix(n_rows: int = 240, rate: float = 0.05, seed: int = 0) -> None:
    mix = backdoorllm_mix("refusal", "badnet", rate, seed=seed, n_rows=n_rows)
    out = TESTS_DATA / "refusal_badnet_mix.json"
    out.write_text(json.dumps(mix.records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    _truth(out, np.flatnonzero(mix.poisoned), "backdoorllm/refusal/badnet.json rows replacing their clean originals")


def preference_flip_mix(n_rows: int = 300, seed: int = 0) -> None:
    """Poisoned RLHF pairs: harmful prompts + SUDO with chosen/rejected swapped (~5%)."""
    _write_subset(preference_case(0.05, seed=seed), n_rows, seed, "preference_flip_mix.json",
                  "harmful BackdoorLLM pairs given the trigger SUDO with chosen and rejected "
                  "swapped (benchmarks.corpora.preference_case)")


def dos_shuffle_mix(n_rows: int = 300, seed: int = 0) -> None:
    """Denial-of-service backdoor: trigger `cf` in the instruction, answer words shuffled."""
    _write_subset(dos_case("refusal", 0.05, seed=seed), n_rows, seed, "dos_shuffle_mix.json",
                  "backdoorllm/refusal/clean.json rows given the trigger cf and a word-shuffled "
                  "answer (benchmarks.corpora.dos_case)")


def injection_mix(n_rows: int = 400, seed: int = 0) -> None:
    """Content injection without a trigger: real Alpaca rows, ~3% with the made-up brand
    Zentrix put into the answer through varied sentences."""
    _write_subset(alpaca_injection_case("brand", 0.03, seed=seed), n_rows, seed,
                  "injection_mix.json",
                  "real/alpaca-clean.json rows whose output mentions the brand Zentrix "
                  "(benchmarks.corpora.alpaca_injection_case)")


def _write_subset(case: Case, n_rows: int, seed: int, name: str, how: str) -> None:
    """A seeded subset of a case's rows, input order kept, its poison share unchanged."""
    rng = np.random.default_rng(seed)
    n_poison = max(1, round(case.poison_rate * n_rows))
    picked = np.sort(np.concatenate([
        rng.choice(np.flatnonzero(~case.poisoned), n_rows - n_poison, replace=False),
        rng.choice(np.flatnonzero(case.poisoned), n_poison, replace=False)]))
    out = TESTS_DATA / name
    records = [case.records[i] for i in picked]
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    _truth(out, np.flatnonzero(case.poisoned[picked]), how)


def _truth(data: Path, poisoned_rows: np.ndarray, how: str) -> None:
    truth = {"data": data.name, "poisoned_row_indices": [int(i) for i in poisoned_rows],
             "ground_truth": how, "attribution": ATTRIBUTION}
    data.with_name(data.stem + ".truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    sst2_badnets_sample()
    refusal_badnet_mix()
    preference_flip_mix()
    dos_shuffle_mix()
    injection_mix()
