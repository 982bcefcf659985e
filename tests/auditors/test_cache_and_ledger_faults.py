"""Faults in what trainguard keeps between runs (issue 18): the cache stays bounded, compact
and optional (damaged entries are recomputed, a full disk is skipped); the ledger is
versioned, waits for a lock, and is written before the outputs land; a run's outputs
replace the previous run's as a set; policy values keep their meaning."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest

from auditors import cache
from auditors.errors import TrainguardError
from auditors.features import chunks
from auditors.features.embeddings import EmbeddingCache
from auditors.features.ngrams import count_ngrams
from auditors.features.unicode import MAX_TOKEN_CHARS, OVERLONG_TOKEN, unicode_tokens
from auditors.ingest import load_raw
from auditors.ledger import LEDGER_FILE, Ledger
from auditors.outputs import MANIFEST, write_outputs
from auditors.policy import IntakePolicy, evaluate
from tests.auditors.test_outputs import rows_frame, summary_for
from tests.summaries import audit_summary

ROW_IDS = [f"{i:016x}" for i in range(40)]
TEXTS = [f"review {i} of a fine film cf" for i in range(40)]


class FakeEncoder:
    """Unit vectors from a hash of the text; counts what it embeds."""

    def __init__(self):
        self.embedded = 0

    def encode(self, texts, **_):
        self.embedded += len(texts)
        rows = [np.random.default_rng(zlib.crc32(t.encode())).normal(size=8) for t in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 8)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def get_embedding_dimension(self):
        return 8


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def only(folder: Path, pattern: str = "*.npz") -> Path:
    [path] = list(folder.rglob(pattern))
    return path


# --- defect 3: compact, bounded n-gram counts ----------------------------------------------

def test_cached_ngram_terms_are_stored_compactly(tmp_path):
    """One long term used to pad every stored term to its length (4 bytes a character)."""
    texts = [f"w{i} " * 3 for i in range(1500)] + ["x" * MAX_TOKEN_CHARS]
    counts = chunks.NgramCountCache(tmp_path).counts(list(map(str, range(len(texts)))), texts)
    stored = only(tmp_path)
    assert stored.stat().st_size < 1_000_000  # padded to the longest term: 4.4 MB
    again = chunks.NgramCountCache(tmp_path)
    assert again.counts(list(map(str, range(len(texts)))), texts).families[0].terms == \
        counts.families[0].terms
    assert again.hits == 1


def test_overlong_words_are_marked_not_counted():
    long_word = "z" * 100_000
    texts = [f"row {i} {long_word} end" for i in range(3)] + ["plain row", "another row"]
    stats = count_ngrams(texts)
    assert max(map(len, stats.vocabulary)) <= 3 * (MAX_TOKEN_CHARS + 1) + 1
    assert OVERLONG_TOKEN in set(stats.vocabulary)
    assert OVERLONG_TOKEN in unicode_tokens("x" * (MAX_TOKEN_CHARS + 1))
    assert OVERLONG_TOKEN not in unicode_tokens("x" * MAX_TOKEN_CHARS)
    emoji_run = unicode_tokens("\U0001F600" * 10_000)  # runs were one token per length
    assert max(map(len, emoji_run)) <= MAX_TOKEN_CHARS and len(emoji_run) <= MAX_TOKEN_CHARS


NEW, USED, OLD = (f"{n:032x}.npz" for n in (1, 2, 3))  # n-gram count entries' names


def test_prune_removes_least_recently_used_entries_first(tmp_path):
    folder = tmp_path / "ngram-counts" / ("f" * 16)
    folder.mkdir(parents=True)
    for age, name in enumerate([NEW, USED, OLD]):
        cache.save_npz(folder / name, data=np.zeros(25_000, np.uint8))
        os.utime(folder / name, (time.time() - 100 * age,) * 2)
    model = tmp_path / "models" / f"m-{'1' * 12}" / "static"
    model.mkdir(parents=True)
    (model / "weights").write_bytes(b"0" * 25_000)
    os.utime(model, (time.time() - 1000,) * 2)  # the oldest entry
    assert cache.load_npz(folder / USED, lambda a: a["data"].size) == 25_000  # touched
    (folder / f".dead.npz.{2**22 + 7}.tmp.npz").write_bytes(b"half")  # a killed writer's

    pruned = cache.prune(tmp_path, max_bytes=60_000)

    assert sorted(p.name for p in folder.iterdir()) == sorted([NEW, USED])
    assert not model.exists()
    assert pruned.removed == 2 and pruned.kept <= 60_000


def test_files_trainguard_did_not_write_are_never_entries(tmp_path):
    """`--cache` naming a project folder: its checkpoints and arrays are not the cache's
    to count or delete, however old and large."""
    own = [tmp_path / "models" / "my-bert" / "checkpoint-500" / "model.safetensors",
           tmp_path / "models" / "my-bert" / "static" / "weights",
           tmp_path / "embeddings" / "mine.npz",
           tmp_path / "embeddings" / "run1" / "torch" / "prompt-final.npz",
           tmp_path / "ngram-counts" / "notes" / "table.npz"]
    for path in own:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"0" * 50_000)
        os.utime(path, (time.time() - 10**6,) * 2)
    entry = tmp_path / "embeddings" / f"m-{'2' * 12}" / "torch" / f"prompt-{'3' * 32}.npz"
    cache.save_npz(entry, vectors=np.zeros(10, np.float32))

    assert [e.path for e in cache.entries(tmp_path)] == [entry]
    cache.prune(tmp_path, max_bytes=0)

    assert all(path.exists() for path in own) and not entry.exists()


def test_parse_size():
    assert cache.parse_size("10G") == 10 * 2**30
    assert cache.parse_size("500MiB") == 500 * 2**20
    assert cache.parse_size("0") == 0
    with pytest.raises(TrainguardError, match="cannot read the size"):
        cache.parse_size("lots")


# --- defect 11: damaged entries are discarded and recomputed --------------------------------

def test_truncated_embedding_shard_is_recomputed(tmp_path, capsys):
    encoder = FakeEncoder()
    expected = EmbeddingCache(tmp_path, "m", "torch").embed(encoder, "prompt", ROW_IDS, TEXTS)
    truncate(only(tmp_path / "embeddings"))

    again = EmbeddingCache(tmp_path, "m", "torch").embed(encoder, "prompt", ROW_IDS, TEXTS)

    np.testing.assert_array_equal(again, expected)
    assert encoder.embedded == 2 * len(TEXTS)
    assert "warning: cache: discarded damaged entry" in capsys.readouterr().err
    assert len(list((tmp_path / "embeddings").rglob("*.npz"))) == 1  # a sound one again


def test_truncated_ngram_counts_are_counted_again(tmp_path, capsys):
    expected = chunks.NgramCountCache(tmp_path).counts(ROW_IDS, TEXTS)
    truncate(only(tmp_path))
    again = chunks.NgramCountCache(tmp_path)
    counts = again.counts(ROW_IDS, TEXTS)
    assert (again.hits, again.misses) == (0, 1)
    assert counts.families[0].terms == expected.families[0].terms
    assert "discarded damaged entry" in capsys.readouterr().err


def test_truncated_knn_graph_is_rebuilt_not_a_failed_detector(tmp_path, capsys):
    from auditors.features.knn import cosine_knn

    features = FakeEncoder().encode(TEXTS)
    graph_file = tmp_path / "knn-graphs" / "g-k5.npz"
    expected = cosine_knn(features, 5, row_ids=ROW_IDS, graph_file=graph_file)
    truncate(graph_file)

    distances, indices = cosine_knn(features, 5, row_ids=ROW_IDS, graph_file=graph_file)

    np.testing.assert_allclose(distances, expected[0], atol=1e-6)
    assert "discarded damaged entry" in capsys.readouterr().err
    assert cache.load_npz(graph_file, lambda a: a["distances"].shape) == (len(TEXTS), 5)


def test_a_built_backend_that_does_not_load_is_built_again(tmp_path, monkeypatch, capsys):
    from auditors.features import backends

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    built = backends.built_model_dir(str(model), backends.STATIC, tmp_path / "cache")
    built.mkdir(parents=True)
    (built / "model.safetensors").write_bytes(b"trunc")  # a half-deleted or damaged build

    class Encoder:
        def __init__(self, directory):
            if (directory / "model.safetensors").read_bytes() != b"sound":
                raise ValueError("cannot read model.safetensors")

    monkeypatch.setattr(backends, "StaticEncoder", Encoder)
    monkeypatch.setattr(backends, "distill_static", lambda model_path, out_dir: (
        out_dir / "model.safetensors").write_bytes(b"sound"))
    assert isinstance(backends.load_backend(str(model), backends.STATIC, tmp_path / "cache"),
                      Encoder)
    assert "discarded damaged entry" in capsys.readouterr().err

    def full_disk(model_path, out_dir):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(backends, "distill_static", full_disk)
    with pytest.raises(TrainguardError, match="cannot build the model .*No space left on "
                                              "device\\); free space there"):
        backends.load_backend(str(model), backends.STATIC, tmp_path / "other")
    (tmp_path / "afile").write_text("")  # `--cache afile`: a wrong path, not a full disk
    with pytest.raises(TrainguardError, match="Not a directory\\); check that path"):
        backends.load_backend(str(model), backends.STATIC, tmp_path / "afile")


# --- defect 12: a full cache disk is not fatal ----------------------------------------------

@pytest.fixture
def full_disk(monkeypatch):
    """np.savez writes part of the file, then the disk is full."""
    def savez(path, **_):
        Path(path).write_bytes(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(cache.np, "savez", savez)


def test_a_full_cache_disk_is_skipped_with_a_warning(tmp_path, full_disk, capsys):
    from auditors.features.knn import cosine_knn

    encoder = FakeEncoder()
    vectors = EmbeddingCache(tmp_path, "m", "torch").embed(encoder, "prompt", ROW_IDS, TEXTS)
    counts = chunks.NgramCountCache(tmp_path).counts(ROW_IDS, TEXTS)
    cosine_knn(vectors, 5, row_ids=ROW_IDS, graph_file=tmp_path / "knn-graphs" / "g-k5.npz")

    assert vectors.shape == (len(TEXTS), 8) and counts.n_rows == len(TEXTS)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no *.tmp.npz left
    warnings = capsys.readouterr().err.strip().splitlines()
    assert len(warnings) == 3  # one line per cache folder
    assert all(w.startswith("warning: cache: cannot write ") and
               w.endswith("(No space left on device); continuing without caching")
               for w in warnings)


# --- defect 8: the ledger --------------------------------------------------------------------

def test_a_ledger_of_a_newer_schema_is_refused(tmp_path):
    Ledger(tmp_path)
    with duckdb.connect(str(tmp_path / LEDGER_FILE)) as con:
        con.execute("UPDATE trainguard_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(TrainguardError, match="ledger schema version 99, this trainguard reads"):
        Ledger.check(tmp_path)


def test_a_foreign_database_is_refused_and_an_unversioned_ledger_is_adopted(tmp_path):
    foreign, old = tmp_path / "foreign", tmp_path / "old"
    tables = {foreign: "invoices (id INTEGER)",
              old: "triggers (pattern VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, "
                   "decided_by VARCHAR, decided_at TIMESTAMPTZ)"}
    for folder, table in tables.items():
        folder.mkdir()
        with duckdb.connect(str(folder / LEDGER_FILE)) as con:
            con.execute(f"CREATE TABLE {table}")
    with pytest.raises(TrainguardError, match="not a trainguard ledger"):
        Ledger(foreign)
    assert Ledger(old).trigger_decisions().empty  # a ledger from before versioning


HOLD_LOCK = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def hold_lock(path: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_busy_ledger_is_waited_for_then_given_up_on(tmp_path):
    Ledger(tmp_path)
    holder = hold_lock(tmp_path / LEDGER_FILE, 2)
    started = time.monotonic()
    assert Ledger(tmp_path, lock_wait=60).runs().empty  # waits for the holder to finish
    assert time.monotonic() - started > 1
    holder.wait(timeout=30)

    holder = hold_lock(tmp_path / LEDGER_FILE, 30)
    try:
        with pytest.raises(TrainguardError, match="locked by another process; gave up after 0.5 s"):
            Ledger(tmp_path, lock_wait=0.5)
    finally:
        holder.kill()
        holder.wait(timeout=30)


# --- defect 15: a run's outputs replace the previous run's as a set -------------------------

def write(source: Path, out: Path, before_commit=None) -> None:
    raw = load_raw(str(source))
    write_outputs(out, raw, rows_frame(len(raw), {0}), [], summary_for(raw),
                  before_commit=before_commit)


@pytest.fixture
def two_formats(tmp_path):
    csv_file, jsonl_file = tmp_path / "d.csv", tmp_path / "d.jsonl"
    csv_file.write_text("text,label\na,1\nb,0\n", encoding="utf-8")
    jsonl_file.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n',
                          encoding="utf-8")
    return csv_file, jsonl_file


def test_a_new_run_replaces_the_previous_runs_files_and_keeps_the_users(tmp_path, two_formats):
    out = tmp_path / "out"
    write(two_formats[0], out)
    (out / "notes.txt").write_text("mine")
    write(two_formats[1], out)
    names = {p.name for p in out.iterdir()}
    assert {"clean.jsonl", "quarantine.jsonl", "summary.json", MANIFEST, "notes.txt"} <= names
    assert not names & {"clean.csv", "quarantine.csv"}


def test_outputs_without_a_manifest(tmp_path, two_formats):
    """A run from before manifests is replaced by name; a folder without a trainguard
    summary.json holds the user's files, whatever their names."""
    old_run, users = tmp_path / "old", tmp_path / "users"
    for folder in (old_run, users):
        folder.mkdir()
        (folder / "clean.csv").write_text("text\n")
    (old_run / "summary.json").write_text(
        json.dumps({"trainguard_version": "0.1.0", "gate": {"passed": True}, "outputs": {}}))
    for folder in (old_run, users):
        write(two_formats[1], folder)
    assert not (old_run / "clean.csv").exists()
    assert (users / "clean.csv").exists()


def test_outputs_stay_as_they_were_when_the_run_cannot_be_recorded(tmp_path, two_formats):
    out = tmp_path / "out"
    write(two_formats[0], out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def ledger_locked():
        raise TrainguardError("ledger.duckdb: the ledger is locked by another process")

    with pytest.raises(TrainguardError, match="locked"):
        write(two_formats[1], out, before_commit=ledger_locked)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# --- defect 18: a string is one column -------------------------------------------------------

def test_expected_columns_given_as_one_string_is_one_column():
    policy = IntakePolicy.from_dict({"expected_columns": "text"})
    assert policy.expected_columns == ("text",)
    summary = audit_summary(flagged=0, rows=1, schema="classification")
    [*_, drift] = evaluate(policy, summary=summary, columns=["text"], previous=None,
                           controls={})
    assert drift["check"] == "schema drift" and drift["passed"], drift
    for bad in ([1, 2], [], [""]):  # an empty list pinned nothing and read as unpinned
        with pytest.raises(TrainguardError, match="expected_columns must be a non-empty list"):
            IntakePolicy.from_dict({"expected_columns": bad})
