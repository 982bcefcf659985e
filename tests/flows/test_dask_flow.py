"""The audit flow on Prefect's DaskTaskRunner: a real 2-worker LocalCluster (processes)
embeds and counts n-grams chunk by chunk, and the results equal the single-process run."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from auditors.config import AuditConfig
from flows.cli import app
from flows.dask import run_audit

# `make test-all` only: starts Dask clusters
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_sample(sample_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("dask") / "sample.tsv"
    path.write_text("".join(sample_path.read_text(encoding="utf-8")
                            .splitlines(keepends=True)[:501]), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def runs(prefect_harness, small_sample, tmp_path_factory):
    out = tmp_path_factory.mktemp("dask-runs")
    # torch: its vectors move with their batch by float32 noise only (onnx-int8's do not
    # move at all: tests/flows/test_determinism_cli.py)
    torch = AuditConfig(backend="torch")
    single = run_audit(str(small_sample), str(out / "single"), torch)
    distributed = run_audit(str(small_sample), str(out / "dask"),
                            torch.replace(cache_dir=str(out / "cache")), workers=2,
                            chunk_rows=200)
    return out, single, distributed


def test_dask_run_equals_the_single_process_run(runs):
    out, single, distributed = runs
    rows = {name: pd.read_parquet(out / name / "rows.parquet") for name in ("single", "dask")}
    scores = [c for c in rows["single"].columns if c.endswith("score")]
    assert "poison_score" in scores and "trigger_score" in scores
    # torch vectors of a chunk differ from the whole-file encode by float noise only
    np.testing.assert_allclose(rows["dask"][scores], rows["single"][scores], atol=1e-5)
    pd.testing.assert_series_equal(rows["dask"]["flagged"], rows["single"]["flagged"])
    pd.testing.assert_series_equal(rows["dask"]["row_id"], rows["single"]["row_id"])
    triggers = {name: json.loads((out / name / "triggers.json").read_text())
                for name in ("single", "dask")}
    assert [t["pattern"] for t in triggers["dask"]] == [t["pattern"] for t in triggers["single"]]
    assert [t["support"] for t in triggers["dask"]] == [t["support"] for t in triggers["single"]]
    assert distributed["flagged"] == single["flagged"] > 0
    assert {t["pattern"] for t in distributed["top_triggers"][:5]} & {"cf", "mn", "bb", "tq", "mb"}


def test_dask_run_fills_the_embedding_cache(runs):
    out, _, _ = runs
    shards = list((out / "cache" / "embeddings").rglob("prompt-*.npz"))
    assert len(shards) == 1  # written once, by the flow, from all the workers' chunks
    with np.load(shards[0]) as stored:
        assert stored["vectors"].shape == (500, 384)


@pytest.mark.parametrize("options, message", [
    (["--dask-address", "localhost:8786"], "not a Dask scheduler address"),
    (["--workers", "2", "--dask-address", "tcp://127.0.0.1:8786"], "not both"),
])
def test_bad_dask_options_are_one_line_errors(small_sample, tmp_path, options, message):
    result = CliRunner().invoke(app, ["audit", str(small_sample), "--out", str(tmp_path / "out"),
                                      *options])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (tmp_path / "out" / "summary.json").exists()


def test_existing_cluster_by_address(prefect_harness, small_sample, tmp_path, runs):
    """--dask-address: the flow connects to a running scheduler (here an in-process
    LocalCluster with one threaded worker) instead of starting one."""
    from distributed import LocalCluster

    out, single, _ = runs
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        summary = run_audit(str(small_sample), str(tmp_path / "remote"),
                            AuditConfig(backend="torch"), address=cluster.scheduler_address,
                            chunk_rows=250)
    assert summary["flagged"] == single["flagged"]
    rows = pd.read_parquet(tmp_path / "remote" / "rows.parquet")
    np.testing.assert_allclose(rows["poison_score"],
                               pd.read_parquet(out / "single" / "rows.parquet")["poison_score"],
                               atol=1e-5)
