"""Interrupted audits: a run stopped by SIGTERM (handled as SIGINT) or SIGKILL leaves no output that
looks complete (no summary.json vouching for missing or mixed files), and a rerun works."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

# `make test-all` only: interrupts and reruns real audits
pytestmark = pytest.mark.slow

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))


def start(args: list, home: Path) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def wait_for_line(proc: subprocess.Popen, fragment: str) -> None:
    for line in proc.stdout:
        if fragment in line:
            return
    raise AssertionError(f"process ended before printing {fragment!r}: {proc.stderr.read()}")


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, as a container runtime sends it. Python drops an exception raised by a signal
    handler while a finalizer (__del__) runs, so resend until the process is gone."""
    for _ in range(10):
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue
    raise AssertionError("the audit ignored SIGTERM")


def line_count(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def test_interrupted_audits_leave_no_complete_looking_output_and_a_rerun_works(
        sample_path, tmp_path):
    source = tmp_path / "sample.tsv"  # 600 rows: long enough to interrupt, quick to rerun
    source.write_text("".join(sample_path.read_text(encoding="utf-8")
                              .splitlines(keepends=True)[:601]), encoding="utf-8")
    out = tmp_path / "audit"
    command = [TRAINGUARD, "audit", source, "--out", out, "--detectors", "outlier",
               "--max-flagged-fraction", "1"]
    proc = start(command, tmp_path / "prefect")
    wait_for_line(proc, "schema detected")  # ingest done: the audit is under way
    time.sleep(0.5)
    terminate(proc)
    # the pipes close too: no orphaned child (Prefect's temporary server) holds them open
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr  # ended as an interrupt, not killed mid-cleanup
    assert not (out / "summary.json").exists()

    rerun = start(command, tmp_path / "prefect")
    _, stderr = rerun.communicate(timeout=600)

    assert rerun.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 600
    assert line_count(out / "clean.tsv") + line_count(out / "quarantine.tsv") - 2 == 600
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_ctrl_c_to_the_process_group_is_an_interrupt_not_a_connection_error(sample_path,
                                                                           tmp_path):
    """A terminal's Ctrl-C signals the whole group, Prefect's temporary server too; the
    connection errors that follow are the interrupt's, and end as one (exit 130)."""
    out = tmp_path / "audit"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([TRAINGUARD, "audit", str(sample_path), "--out", str(out),
                             "--no-cache"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    wait_for_line(proc, "schema detected")
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "ConnectError" not in stderr
    assert not (out / "summary.json").exists()


WRITER = textwrap.dedent("""
    import sys
    import numpy as np, pandas as pd
    from auditors.ingest import load_raw
    from auditors.outputs import write_outputs
    from auditors.summary import AuditSummary, audit_gate

    source, out_dir = sys.argv[1], sys.argv[2]
    raw = load_raw(source)
    n_rows = len(raw)
    rng = np.random.default_rng(0)
    print("writing", flush=True)
    while True:  # rewrite the same directory with ever different flags until killed
        mask = rng.random(n_rows) < rng.random()
        rows = pd.DataFrame({"row_index": np.arange(n_rows),
                             "row_id": [f"{i:016x}" for i in range(n_rows)],
                             "poison_score": mask * 0.9, "flagged": mask,
                             "reasons": np.where(mask, "trigger", "")})
        summary = AuditSummary(input=source, format=raw.fmt, schema="classification",
                               schema_columns="classification (text, label)", rows=n_rows,
                               flagged=int(mask.sum()), gate=audit_gate(rows=n_rows, flagged=int(mask.sum()),
                                                         max_flagged_fraction=0.005))
        write_outputs(out_dir, raw, rows, [], summary)
""")


@pytest.mark.parametrize("delay", [0.2, 0.7, 1.3, 2.1])
def test_a_writer_killed_at_any_moment_never_leaves_a_summary_for_other_files(tmp_path, delay):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"row {i} " + "x" * 200, "label": i % 2}) + "\n"
                              for i in range(20_000)), encoding="utf-8")
    out = tmp_path / "audit"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(source), str(out)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2])
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=30)
    proc.stdout.close()

    if (out / "summary.json").exists():  # complete: every file belongs to that summary
        summary = json.loads((out / "summary.json").read_text())
        assert line_count(out / "quarantine.jsonl") == summary["flagged"]
        assert line_count(out / "clean.jsonl") == 20_000 - summary["flagged"]
    # the next run clears the dead writer's staging directory and completes
    subprocess.run([sys.executable, "-c", WRITER.replace("while True", "for _ in range(1)"),
                    str(source), str(out)], check=True, capture_output=True,
                   cwd=Path(__file__).parents[2])
    assert (out / "summary.json").exists()
    assert [p.name for p in tmp_path.iterdir() if ".partial-" in p.name] == []


def test_a_rerun_after_an_interrupt_resumes_from_cached_embeddings(sample_path, tmp_path):
    """Stopped once its embeddings are cached, the rerun embeds nothing again: the cache
    gains no new file."""
    source = tmp_path / "sample.tsv"
    source.write_text("".join(sample_path.read_text(encoding="utf-8")
                              .splitlines(keepends=True)[:601]), encoding="utf-8")
    cache, out = tmp_path / "cache", tmp_path / "audit"
    # the gate passes (exit 0): a lenient share, no detector whose significant trigger fails it
    command = [TRAINGUARD, "audit", source, "--out", out, "--cache", cache,
               "--max-flagged-fraction", "1", "--detectors", "label_issue,outlier"]
    proc = start(command, tmp_path / "prefect")
    deadline = time.monotonic() + 300
    while not list(cache.rglob("prompt-*.npz")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no embeddings were cached"
        time.sleep(0.2)
    terminate(proc)
    proc.communicate(timeout=120)
    assert not (out / "summary.json").exists() or proc.returncode == 0  # it may just finish
    shards = sorted((cache / "embeddings").rglob("*.npz"))  # not n-gram counts, kNN graphs

    rerun = start(command, tmp_path / "prefect")
    _, stderr = rerun.communicate(timeout=600)

    assert rerun.returncode == 0, stderr
    assert sorted((cache / "embeddings").rglob("*.npz")) == shards  # every vector cached
    assert json.loads((out / "summary.json").read_text())["rows"] == 600
