"""Valid but awkward datasets run to the end with the real model: detectors that cannot run
are skipped with a reason, the rest run, and every row reaches the outputs."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from auditors.config import AuditConfig
from auditors import pipeline
from auditors.features.embeddings import CachingEncoder
from auditors.features.ngrams import count_ngrams

WORDS = "the a film movie good bad plot actor scene story slow bright".split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(n)]


def write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def audit(path: str, encoder, out_dir: Path | None = None):
    config = AuditConfig(backend="torch", max_flagged_fraction=1.0)
    return pipeline.audit(path, out_dir, config, encoder=encoder).summary.to_dict()


def assert_every_row_written(source: str, out_dir: Path) -> None:
    rows = pd.read_parquet(out_dir / "rows.parquet")
    lines = Path(source).read_text(encoding="utf-8").splitlines(keepends=True)
    clean = (out_dir / "clean.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    held = (out_dir / "quarantine.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    flagged = rows["flagged"].to_numpy()
    assert clean == [line for line, f in zip(lines, flagged) if not f]
    assert held == [line for line, f in zip(lines, flagged) if f]


def test_a_single_label_class_skips_the_label_detectors_and_runs_the_rest(tmp_path, encoder):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "label": "pos"} for t in sentences(40)])

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["label_model_note"] == "only one label class: Cleanlab needs two or more"
    assert summary["detectors_skipped"]["label_issue"] == {"kind": "missing_input",
                                                           "reason": "needs pred_probs"}
    assert summary["detectors_skipped"]["trigger"]["reason"] == "needs pred_probs"
    assert "outlier" in summary["detectors_run"] and not summary["detectors_failed"]
    assert summary["flagged"] == 0  # the outliers only rank: no strong detector ran
    assert_every_row_written(path, tmp_path / "out")


@pytest.mark.parametrize("labels, note", [
    ([0, 1, 0, 1], "fewer than 10 rows: too few for cross-validation"),
    ([0] * 20 + [1], "fewer than two label classes have two or more rows"),
])
def test_too_few_rows_for_cross_validation(tmp_path, encoder, labels, note):
    records = [{"text": t, "label": lab} for t, lab in zip(sentences(len(labels)), labels)]
    path = write_jsonl(tmp_path / "d.jsonl", records)

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["label_model_note"].startswith(note)
    assert summary["rows"] == len(labels)
    assert "trigger" in summary["detectors_skipped"]
    assert_every_row_written(path, tmp_path / "out")


def test_a_single_row_is_audited_with_each_detector_accounted_for(tmp_path, encoder):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": "just one row", "label": 1}])

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["rows"] == 1
    accounted = set(summary["detectors_run"]) | set(summary["detectors_skipped"]) | \
        set(summary["detectors_failed"])
    assert {"label_issue", "outlier", "trigger"} <= accounted
    assert_every_row_written(path, tmp_path / "out")


def test_empty_and_whitespace_only_texts_are_kept_and_audited(tmp_path, encoder):
    texts = sentences(30)
    texts[::3] = [""] * 10
    texts[1::3] = [" \t "] * 10
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": t, "label": i % 2}
                                              for i, t in enumerate(texts)])

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["rows"] == 30
    assert {"label_issue", "outlier", "trigger"} <= set(summary["detectors_run"])
    assert_every_row_written(path, tmp_path / "out")


def test_ten_thousand_identical_rows(tmp_path, encoder):
    path = write_jsonl(tmp_path / "d.jsonl",
                       [{"text": "the very same row", "label": i % 2} for i in range(10_000)])

    summary = audit(path, CachingEncoder(encoder), tmp_path / "out")  # embeds the text once

    assert summary["rows"] == 10_000
    assert summary["flagged"] == 0  # identical content: no trigger can explain a label
    assert not summary["detectors_failed"]
    assert_every_row_written(path, tmp_path / "out")


@pytest.mark.slow
def test_a_five_megabyte_row(tmp_path, encoder):
    rng = random.Random(0)
    huge = " ".join(f"w{rng.randrange(5000)}" for _ in range(1_000_000))[:5_000_000]
    records = [{"text": huge, "label": 1}] + [{"text": t, "label": i % 2}
                                             for i, t in enumerate(sentences(30))]
    path = write_jsonl(tmp_path / "d.jsonl", records)

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["rows"] == 31
    assert not summary["detectors_failed"]
    assert_every_row_written(path, tmp_path / "out")


def test_a_hundred_thousand_unique_tokens_stay_within_the_ngram_cap():
    """An adversarial file of unique tokens: each appears in two rows (so the support
    threshold keeps them) and the tables are still capped."""
    n_rows, cap = 20_000, 2_000
    tokens = [f"tok{i}" for i in range(n_rows * 10)]
    texts = [" ".join(tokens[(i // 2) * 10:(i // 2) * 10 + 10]) for i in range(n_rows)]
    assert len({t for text in texts for t in text.split()}) == 100_000

    started = time.perf_counter()
    stats = count_ngrams(texts, max_ngrams=cap)
    elapsed = time.perf_counter() - started

    # word n-grams, position tokens and Unicode tokens are each capped
    assert len(stats.vocabulary) <= 3 * cap
    assert stats.rows_x_ngrams.shape == (n_rows, len(stats.vocabulary))
    assert (stats.doc_freq >= 2).all()
    assert elapsed < 60


def test_generation_data_whose_responses_are_all_empty(tmp_path, encoder):
    """Identical responses leave k-means clusters empty: one target, the label detectors
    skipped, every row written (this used to end in an IndexError)."""
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": t, "completion": ""}
                                              for t in sentences(60)])

    summary = audit(path, encoder, tmp_path / "out")

    assert summary["detectors_skipped"]["trigger"]["reason"] == "needs pred_probs"
    assert not summary["detectors_failed"]
    assert_every_row_written(path, tmp_path / "out")
