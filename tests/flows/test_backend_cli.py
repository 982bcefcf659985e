"""`trainguard audit --backend onnx-int8 --cache DIR` end to end: the faster backend still
names the sample's triggers, and a re-audit of the same rows embeds nothing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

import pytest

# `make test-all` only: CLI audits on each backend
pytestmark = pytest.mark.slow

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))


def run_cli(*args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home)}
    return subprocess.run([TRAINGUARD, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def embedding_shards(cache: Path) -> set[Path]:
    return set((cache / "embeddings").rglob("*.npz"))


def test_onnx_backend_audit_and_cached_reaudit(sample_path, tmp_path):
    cache, home = tmp_path / "cache", tmp_path / "prefect"
    first = run_cli("audit", sample_path, "--out", tmp_path / "first", "--backend", "onnx-int8",
                    "--cache", cache, home=home)
    assert first.returncode == 1, first.stderr  # the sample is poisoned: the gate fails
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    assert summary["embedding_model"].endswith("[onnx-int8]")
    assert {t["pattern"] for t in summary["top_triggers"][:5]} & {"cf", "mn", "bb", "tq", "mb"}
    assert list((cache / "models").glob("*/onnx-int8/model.onnx"))
    shards = embedding_shards(cache)
    assert shards and all(p.parent.name == "onnx-int8-v2" for p in shards)

    again = run_cli("audit", sample_path, "--out", tmp_path / "again", "--backend", "onnx-int8",
                    "--cache", cache, home=home)
    assert again.returncode == 1, again.stderr
    assert embedding_shards(cache) == shards  # every row came from the cache
    rows = [pd.read_parquet(tmp_path / name / "rows.parquet") for name in ("first", "again")]
    pd.testing.assert_frame_equal(rows[0], rows[1])


def test_no_cache_writes_no_embeddings(sample_path, tmp_path):
    small = tmp_path / "small.tsv"
    small.write_text("".join(sample_path.read_text().splitlines(keepends=True)[:60]))
    cache = tmp_path / "cache"
    proc = run_cli("audit", small, "--out", tmp_path / "out", "--cache", cache, "--no-cache",
                   home=tmp_path / "prefect")
    assert proc.returncode in (0, 1), proc.stderr
    assert not (cache / "embeddings").exists()
