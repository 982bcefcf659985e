"""Faults through the `trainguard` command (issue 18): a killed audit takes Prefect's
temporary server with it; bad output paths, unusable ledgers and checkpoints without a
tokenizer stop the command before any work with one line and exit 2; the ledger records a
run before its outputs land; a full cache disk is only a warning; `cache --prune`."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from typer.testing import CliRunner

from auditors import cache, ledger
from auditors.errors import TrainguardError
from flows.cli import app
from tests.auditors.test_cache_and_ledger_faults import full_disk  # noqa: F401 (fixture)
from tests.flows.test_interrupt import TRAINGUARD, start, wait_for_line

FAST = ["--backend", "torch", "--detectors", "outlier", "--max-flagged-fraction", "1"]


@pytest.fixture(autouse=True)
def _quiet_prefect(monkeypatch):
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def words(output: str) -> str:
    return " ".join(output.split())  # rich wraps long lines


def assert_one_line_error(result, expected: str, *, alone: bool = True) -> None:
    """Exit 2 and one `error:` line holding `expected`; `alone`: nothing else on stderr
    (an audit that got under way has shown progress bars there)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert [line for line in lines if "error:" in line] == [lines[-1]], result.stderr
    assert lines[-1].startswith("error: ") and expected in lines[-1], result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i} of a film", "label": i % 2}) + "\n"
                            for i in range(30)), encoding="utf-8")
    return path


# --- defect 14: kill -9 ---------------------------------------------------------------------

def children(pid: int) -> dict[int, str]:
    """Child processes of `pid`: their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found[int(stat.parent.name)] = stat.with_name("cmdline").read_bytes() \
                    .replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_a_killed_audit_takes_prefects_temporary_server_with_it(data, tmp_path, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)  # the temporary server, as for users
    proc = start([TRAINGUARD, "audit", data, "--out", tmp_path / "out", "--no-cache", *FAST],
                 tmp_path / "prefect")
    wait_for_line(proc, "schema detected")  # the flow runs: the server is up
    servers = [pid for pid, command in children(proc.pid).items() if "uvicorn" in command]
    assert servers, children(proc.pid)
    try:
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(map(alive, servers)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(alive, servers)), "the temporary server outlived the command"
    finally:
        for pid in filter(alive, servers):
            os.kill(pid, signal.SIGKILL)
        proc.stdout.close()
        proc.stderr.close()


# --- defects 16, 17: bad output paths, stopped before any work ------------------------------

@pytest.mark.parametrize("out, expected", [
    ("dangling", "output path dangling is a broken symbolic link to gone"),
    ("afile/out", "cannot write outputs to afile/out: "),
    ("/proc/trainguard-out", "cannot write outputs to /proc/trainguard-out: /proc is not "
                             "writable"),
    ("taken\nerror: forged", "output path taken\\nerror: forged exists and is not a directory"),
])
def test_bad_output_paths_fail_before_any_work(out, expected, data, tmp_path, monkeypatch,
                                               prefect_harness):
    monkeypatch.chdir(tmp_path)
    Path("dangling").symlink_to("gone")
    Path("afile").write_text("x")
    Path("taken\nerror: forged").write_text("x")
    before = set(tmp_path.rglob("*"))

    result = invoke("audit", data, "--out", out, "--no-cache", *FAST)

    assert_one_line_error(result, expected)
    assert "schema detected" not in result.output  # refused before ingest
    assert set(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes whatever the mode")
def test_an_unwritable_output_folder_fails_before_any_work(data, tmp_path, prefect_harness):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = invoke("audit", data, "--out", locked / "out", "--no-cache", *FAST)
    assert_one_line_error(result, "is not writable (Permission denied)")


# --- defects 8, 13: the ledger --------------------------------------------------------------

def test_a_ledger_of_a_newer_trainguard_stops_the_audit_before_any_work(data, tmp_path):
    store = tmp_path / "store"
    ledger.Ledger(store)
    with duckdb.connect(str(store / ledger.LEDGER_FILE)) as con:
        con.execute("UPDATE trainguard_meta SET value = ? WHERE key = 'schema_version'",
                    [str(ledger.SCHEMA_VERSION + 1)])
    result = invoke("audit", data, "--out", tmp_path / "out", "--store", store, *FAST)
    assert_one_line_error(result, f"ledger schema version {ledger.SCHEMA_VERSION + 1}, this "
                                  f"trainguard reads version {ledger.SCHEMA_VERSION}")
    assert "schema detected" not in result.output
    assert not (tmp_path / "out").exists()


def test_the_run_is_recorded_before_its_outputs_land(data, tmp_path, monkeypatch,
                                                     prefect_harness):
    out, store = tmp_path / "out", tmp_path / "store"
    seen = []
    record_run = ledger.Ledger.record_run

    def locked(self, **kwargs):
        raise TrainguardError(f"{self.path}: the ledger is locked by another process")

    monkeypatch.setattr(ledger.Ledger, "record_run", locked)
    failed = invoke("audit", data, "--out", out, "--store", store, "--no-cache", *FAST)
    assert_one_line_error(failed, "the ledger is locked by another process", alone=False)
    assert not (out / "summary.json").exists()  # no complete outputs without a ledger record

    def watched(self, **kwargs):
        seen.append((out / "summary.json").exists())
        record_run(self, **kwargs)

    monkeypatch.setattr(ledger.Ledger, "record_run", watched)
    result = invoke("audit", data, "--out", out, "--store", store, "--no-cache", *FAST)
    assert result.exit_code == 0, result.output
    assert seen == [False]
    summary = json.loads((out / "summary.json").read_text())
    assert ledger.Ledger(store).runs()["run_id"].tolist() == [summary["ledger"]["run_id"]]


def test_review_of_a_truncated_ledger_is_one_line_and_exit_2(tmp_path):
    store = tmp_path / "store"
    ledger.Ledger(store).decide("confirmed", trigger="cf", by="ana", force=True)
    path = store / ledger.LEDGER_FILE
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_one_line_error(invoke("review", store), "ledger unreadable or damaged")


# --- defects 11, 12: the cache is optional; defect 3: cache --prune -------------------------

def test_an_audit_on_a_full_cache_disk_warns_and_completes(data, tmp_path, full_disk,
                                                           prefect_harness):
    result = invoke("audit", data, "--out", tmp_path / "out", "--cache", tmp_path / "cache",
                    *FAST)
    assert result.exit_code == 0, result.output
    assert "(No space left on device); continuing without caching" in result.stderr
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_cache_prune_shrinks_the_cache_to_its_bound(tmp_path):
    folder = tmp_path / "embeddings" / f"m-{'0' * 12}" / "torch"
    names = [f"prompt-{age:032x}.npz" for age in range(4)]  # as the embedding cache names them
    for age, name in enumerate(names):
        cache.save_npz(folder / name, vectors=np.zeros(2**18, np.uint8))
        os.utime(folder / name, (time.time() - 10 * age,) * 2)

    shown = invoke("cache", "--cache", tmp_path)
    assert shown.exit_code == 0 and "4 entries, 1.0 MiB; within --max-size 10G" in \
        words(shown.output), shown.output
    over = invoke("cache", "--cache", tmp_path, "--max-size", "600K")  # no --prune: says so
    assert "over --max-size 600K by 0.4 MiB" in words(over.output), over.output
    assert len(list(folder.iterdir())) == 4
    inner = invoke("cache", "--cache", tmp_path / "embeddings")  # a folder inside the cache
    assert "0 entries" in words(inner.output) and "holds no trainguard cache folder" in \
        words(inner.stderr), inner.output
    pruned = invoke("cache", "--prune", "--cache", tmp_path, "--max-size", "600K")
    assert pruned.exit_code == 0, pruned.output
    assert "2 entries removed, 0.5 MiB freed" in words(pruned.output), pruned.output
    assert sorted(p.name for p in folder.iterdir()) == names[:2]
    assert_one_line_error(invoke("cache", "--prune", "--cache", tmp_path, "--max-size", "big"),
                          "cannot read the size 'big'")


# --- defects 5, 17: checkpoints -------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny BERT classifier with its tokenizer, one without, and one whose config.json
    claims a vocabulary of 10^12 tokens."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    root = tmp_path_factory.mktemp("checkpoints")
    good = root / "good"
    good.mkdir()
    (good / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                               "a", "good", "film", "cf"]) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=9, hidden_size=8, num_hidden_layers=1,
                        num_attention_heads=1, intermediate_size=8,
                        max_position_embeddings=32, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(good)
    BertTokenizerFast(vocab_file=str(good / "vocab.txt")).save_pretrained(good)
    weights_only = root / "no-tokenizer"
    weights_only.mkdir()
    for name in ("config.json", "model.safetensors"):
        (weights_only / name).write_bytes((good / name).read_bytes())
    forged = root / "huge-vocab"
    forged.mkdir()
    for path in good.iterdir():
        (forged / path.name).write_bytes(path.read_bytes())
    settings = json.loads((good / "config.json").read_text())
    (forged / "config.json").write_text(json.dumps({**settings, "vocab_size": 10**12}))
    probes = root / "probes.txt"
    probes.write_text("a good film\ngood film\n")
    return good, weights_only, forged, probes


def test_a_checkpoint_without_its_tokenizer_is_refused(checkpoints):
    good, weights_only, _, probes = checkpoints
    assert invoke("strip", "--model", good, "--probes", probes).exit_code in (0, 1)
    for command in (["strip"], ["sweep", "--no-vocab", "--no-unicode", "--trigger", "cf"]):
        result = invoke(*command, "--model", weights_only, "--probes", probes)
        assert_one_line_error(result, "no tokenizer files")


def test_a_forged_vocab_size_is_a_one_line_error(checkpoints):
    _, _, forged, probes = checkpoints
    result = invoke("strip", "--model", forged, "--probes", probes)
    assert_one_line_error(result, "the weights' shapes do not match config.json")
    assert "above report" not in result.output
