"""`trainguard audit` gives the same flags, triggers and scores whatever the cache state,
`--workers`, `--chunk-rows` and `--batch-size` (issue 17), with the default onnx-int8
backend: the single-process run, 1 and 2 Dask workers over different chunks, a fresh and a
warm cache. Real model, real LocalClusters, no mocks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from auditors.features.backends import built_model_dir
from auditors.features.embeddings import load_encoder, resolve_model_path
from flows.cli import app

# `make test-all` only: repeats CLI audits in every cache and worker mode
pytestmark = pytest.mark.slow

ROWS = 300


@pytest.fixture(autouse=True)
def _quiet_prefect(monkeypatch):
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


@pytest.fixture(scope="module")
def data(sample_path, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("determinism-cli") / "sample.tsv"
    lines = sample_path.read_text(encoding="utf-8").splitlines(keepends=True)
    path.write_text("".join(lines[:ROWS + 1]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    """An empty embedding cache holding the built onnx-int8 model (copied from the user
    cache directory, where `--no-cache` runs load it: no second export)."""
    load_encoder(backend="onnx-int8")  # built there once per machine
    model = resolve_model_path(None)
    directory = tmp_path_factory.mktemp("determinism-cache")
    shutil.copytree(built_model_dir(model, "onnx-int8"),
                    built_model_dir(model, "onnx-int8", directory))
    return directory


RUNS = {  # name: options, in the order they run (the warm runs after the fresh one)
    "single process, no cache": ["--no-cache"],
    "1 worker, chunks of 120, no cache": ["--no-cache", "--workers", "1", "--chunk-rows", "120"],
    "2 workers, chunks of 70, batch size 8, no cache": [
        "--no-cache", "--workers", "2", "--chunk-rows", "70", "--batch-size", "8"],
    "single process, fresh cache": ["--cache", "{cache}"],
    "single process, warm cache": ["--cache", "{cache}", "--batch-size", "16"],
    "2 workers, warm cache": ["--cache", "{cache}", "--workers", "2", "--chunk-rows", "70"],
}


@pytest.fixture(scope="module")
def outputs(prefect_harness, data, cache_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("determinism-runs")
    outs = {}
    for k, (name, options) in enumerate(RUNS.items()):
        out = root / f"run{k}"
        args = [str(data), "--out", str(out),
                *[o.format(cache=cache_dir) for o in options]]
        result = CliRunner().invoke(app, ["audit", *args])
        assert result.exit_code in (0, 1), f"{name}: {result.output}"
        outs[name] = out
    return outs


def test_flags_triggers_and_scores_are_the_same_in_every_run(outputs):
    reference_name, reference = next(iter(outputs.items()))
    expected = pd.read_parquet(reference / "rows.parquet")
    expected_triggers = json.loads((reference / "triggers.json").read_text())
    expected_summary = json.loads((reference / "summary.json").read_text())
    scores = [c for c in expected.columns if c.endswith("_score")]
    assert "poison_score" in scores and expected["poison_score"].max() > 0
    for name, out in outputs.items():
        rows = pd.read_parquet(out / "rows.parquet")
        other = [c for c in expected.columns if c not in scores]  # flags, reasons, ids
        pd.testing.assert_frame_equal(rows[other], expected[other], obj=name)
        np.testing.assert_allclose(rows[scores], expected[scores], rtol=0, atol=1e-6,
                                   err_msg=f"{name} vs {reference_name}")
        assert json.loads((out / "triggers.json").read_text()) == expected_triggers, name
        summary = json.loads((out / "summary.json").read_text())
        for key in ("rows", "flagged", "gate", "top_triggers"):
            assert summary[key] == expected_summary[key], f"{name}: {key}"


def test_the_cache_was_used(outputs, cache_dir):
    shards = list((cache_dir / "embeddings").rglob("prompt-*.npz"))
    assert len(shards) == 1  # written by the fresh run, read by the warm ones
    with np.load(shards[0]) as stored:
        assert stored["vectors"].dtype == np.float32 and len(stored["vectors"]) == ROWS
