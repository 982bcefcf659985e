"""Regenerate the committed samples from ../shared/corpora (deterministic).

    PYTHONPATH=. .venv/bin/python sample_data/make_samples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditors.ingest import load_raw
from benchmarks.corpora import ATTRIBUTION, CORPORA, backdoorllm_mix, tsv_poison_mask

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


def _truth(data: Path, poisoned_rows: np.ndarray, how: str) -> None:
    truth = {"data": data.name, "poisoned_row_indices": [int(i) for i in poisoned_rows],
             "ground_truth": how, "attribution": ATTRIBUTION}
    data.with_name(data.stem + ".truth.json").write_text(json.dumps(truth, indent=1) + "\n")


if __name__ == "__main__":
    sst2_badnets_sample()
    refusal_badnet_mix()
