"""auditors.outputs: clean + quarantine hold every input row exactly once, in the input's
format and order; the output directory is replaced as a whole."""

from __future__ import annotations

import contextlib
import csv
import json
import resource
import signal
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditors.errors import TrainguardError
from auditors.ingest import RawDataset, load_raw, load_table
from auditors.outputs import split_paths, write_outputs
from auditors.summary import AuditSummary
from tests.summaries import audit_summary

N_ROWS = 9
FLAGGED = {1, 4, 5, 8}  # includes the last row (written without a trailing newline)


@pytest.fixture(autouse=True)
def _datasets_cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def texts() -> list[str]:
    # distinct rows, with characters each format has to carry
    specials = ['comma, "quote"', "caf\u00e9 \u2014 na\u00efve", "emoji \U0001F600",
                "line\u2028separator"]
    return [f"row {i}: {specials[i % len(specials)]}" for i in range(N_ROWS)]


def make_jsonl(folder: Path) -> str:
    lines = [json.dumps({"text": t, "label": i % 2, "meta": {"i": i}}, ensure_ascii=False)
             for i, t in enumerate(texts())]
    lines.insert(3, "")  # a blank line is not a row
    path = folder / "in.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8"))  # no newline after the last line
    return str(path)


def make_json(folder: Path) -> str:
    path = folder / "in.json"
    records = [{"instruction": t, "input": "", "output": str(i)} for i, t in enumerate(texts())]
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return str(path)


def make_csv(folder: Path) -> str:
    path = folder / "in.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for i, t in enumerate(texts()):
            writer.writerow([t + ("\nsecond line" if i == 2 else ""), str(i % 2)])
    return str(path)


def tsv_body() -> list[str]:
    return [f"{t.replace(chr(0x2028), ' ')} \t {i % 2}\n" for i, t in enumerate(texts())]


def make_tsv(folder: Path) -> str:
    path = folder / "in.tsv"
    path.write_bytes(("sentences \t labels\n" + "".join(tsv_body())).encode("utf-8"))
    return str(path)


def make_headerless_tsv(folder: Path) -> str:
    path = folder / "in.tsv"
    path.write_bytes("".join(tsv_body()).encode("utf-8"))  # first line `row 0: ... \t 0`
    return str(path)


def arrow_table() -> pa.Table:
    return pa.table({
        "text": texts(),
        "label": pa.array([i % 2 for i in range(N_ROWS)], pa.int8()),
        "messages": [[{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]
                     for t in texts()],
    })


def make_parquet(folder: Path) -> str:
    path = folder / "in.parquet"
    pq.write_table(arrow_table(), path)
    return str(path)


def make_hf_disk(folder: Path) -> str:
    path = folder / "saved"
    datasets.Dataset(arrow_table()).save_to_disk(str(path))
    return str(path)


MAKERS = {"jsonl": make_jsonl, "json": make_json, "csv": make_csv, "tsv": make_tsv,
          "tsv-headerless": make_headerless_tsv, "parquet": make_parquet,
          "hf-disk": make_hf_disk}


def rows_frame(n_rows: int, flagged: set[int]) -> pd.DataFrame:
    flags = np.array([i in flagged for i in range(n_rows)])
    return pd.DataFrame({
        "row_index": np.arange(n_rows),
        "row_id": [f"{i:016x}" for i in range(n_rows)],
        "poison_score": np.where(flags, 0.9, 0.1),
        "flagged": flags,
        "reasons": ["trigger: 'cf'" if f else "" for f in flags],
    })


def summary_for(raw: RawDataset, **extra):
    """A summary shaped like an audit's (report.html reads it), plus `extra` fields."""
    return audit_summary(**{"input": raw.source, "format": raw.fmt, "schema": "classification",
                            "schema_columns": "classification (text, label)", "rows": len(raw),
                            "flagged": len(FLAGGED), "gate": {"passed": False}, **extra})


def input_lines(source: str) -> list[bytes]:
    """The input file's non-blank lines, without their line endings."""
    return [line for line in Path(source).read_bytes().split(b"\n") if line.strip()]


def output_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


@pytest.mark.parametrize("kind", list(MAKERS))
def test_every_row_lands_in_exactly_one_split_in_input_order(tmp_path, kind):
    source = MAKERS[kind](tmp_path)
    raw = load_raw(source)
    assert len(raw) == N_ROWS
    if kind == "tsv-headerless":
        assert (raw.header_line, raw.columns) == (None, ["text", "label"])
    out_dir = tmp_path / "audit"

    returned = write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), triggers=[],
                             summary=summary_for(raw))

    assert returned == out_dir
    clean_name, quarantine_name = split_paths(raw)
    expected_ext = "parquet" if kind == "hf-disk" else kind.split("-")[0]
    assert (clean_name, quarantine_name) == (f"clean.{expected_ext}",
                                             f"quarantine.{expected_ext}")
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [clean_name, quarantine_name, "rows.parquet", "triggers.json", "report.html",
         "manifest.json", "summary.json"])

    clean = load_raw(str(out_dir / clean_name))
    quarantine = load_raw(str(out_dir / quarantine_name))
    kept = [i for i in range(N_ROWS) if i not in FLAGGED]
    assert clean.records == [raw.records[i] for i in kept]
    assert quarantine.records == [raw.records[i] for i in sorted(FLAGGED)]
    assert clean.columns == raw.columns == quarantine.columns
    if raw.arrow_schema is not None:
        assert clean.arrow_schema.equals(raw.arrow_schema)
        assert quarantine.arrow_schema.equals(raw.arrow_schema)

    if raw.fmt in ("jsonl", "tsv"):  # byte-for-byte copies of the input lines
        lines = input_lines(source)
        header = [] if raw.header_line is None else [lines.pop(0)]
        assert len(lines) == N_ROWS
        assert output_lines(out_dir / clean_name) == header + [lines[i] for i in kept]
        assert output_lines(out_dir / quarantine_name) == \
            header + [lines[i] for i in sorted(FLAGGED)]


def test_rows_triggers_and_summary_files(tmp_path):
    raw = load_raw(make_jsonl(tmp_path))
    rows = rows_frame(N_ROWS, FLAGGED)
    triggers = [{"pattern": "cf", "score": np.float64(0.75), "support": np.int64(4),
                 "target": "1"}]

    out_dir = write_outputs(tmp_path / "audit", raw, rows, triggers, summary_for(raw))

    pd.testing.assert_frame_equal(pd.read_parquet(out_dir / "rows.parquet"), rows)
    assert json.loads((out_dir / "triggers.json").read_text()) == \
        [{"pattern": "cf", "score": 0.75, "support": 4, "target": "1"}]
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary == summary_for(raw).to_dict()
    assert AuditSummary.from_dict(summary) == summary_for(raw)  # summary.json reads back whole
    assert summary["flagged"] == len(FLAGGED)


def test_nothing_flagged_leaves_an_empty_quarantine(tmp_path):
    raw = load_raw(make_parquet(tmp_path))

    out_dir = write_outputs(tmp_path / "audit", raw, rows_frame(N_ROWS, set()), [], summary_for(raw))

    assert pq.read_table(out_dir / "clean.parquet").to_pylist() == raw.records
    quarantine = pq.read_table(out_dir / "quarantine.parquet")
    assert quarantine.num_rows == 0
    assert quarantine.schema.equals(raw.arrow_schema)


@pytest.mark.parametrize("suffix", ["jsonl", "tsv"])
def test_via_datasets_line_formats_are_written_as_text(tmp_path, suffix):
    """Read through `datasets.load_dataset` there are no original lines to copy; the splits
    must still be files of the input's format, holding every row once."""
    if suffix == "jsonl":
        source = make_jsonl(tmp_path)
    else:
        source = str(tmp_path / "in.tsv")
        Path(source).write_text("sentences \t labels\n" + "".join(
            f"sentence {i} . \t {i % 2}\n" for i in range(N_ROWS)), encoding="utf-8")
    raw = load_raw(source, via_datasets=True)
    assert raw.raw_lines is None

    out_dir = write_outputs(tmp_path / "audit", raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))

    clean_name, quarantine_name = split_paths(raw)
    clean = load_raw(str(out_dir / clean_name), via_datasets=True)
    quarantine = load_raw(str(out_dir / quarantine_name), via_datasets=True)
    assert clean.records == [r for i, r in enumerate(raw.records) if i not in FLAGGED]
    assert quarantine.records == [r for i, r in enumerate(raw.records) if i in FLAGGED]


def test_an_earlier_run_is_replaced_and_other_files_are_kept(tmp_path):
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw, input="run 1"))
    (out_dir / "notes.txt").write_text("kept")

    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw, input="run 2"))

    assert json.loads((out_dir / "summary.json").read_text())["input"] == "run 2"
    clean = load_raw(str(out_dir / "clean.jsonl"))
    assert clean.records == [r for i, r in enumerate(raw.records) if i not in FLAGGED]
    assert (out_dir / "notes.txt").read_text() == "kept"


@pytest.mark.parametrize("users_files", [
    {"summary.json": '{"stale": true}\n', "clean.jsonl": '{"text": "my row"}\n'},
    # a list of the user's own files under trainguard's manifest name: none may be deleted
    {"manifest.json": '["notes.txt", "data.jsonl"]\n', "notes.txt": "mine",
     "data.jsonl": '{"text": "mine"}\n'},
])
def test_files_no_trainguard_run_wrote_are_never_replaced(tmp_path, users_files):
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    out_dir.mkdir()
    for name, text in users_files.items():
        (out_dir / name).write_text(text)

    with pytest.raises(TrainguardError, match="but no trainguard run"):
        write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))

    assert {p.name: p.read_text() for p in out_dir.iterdir()} == users_files


def test_a_run_deletes_only_trainguard_output_names_its_manifest_lists(tmp_path):
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / "manifest.json").write_text('["notes.txt", "clean.jsonl"]')

    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))

    assert (out_dir / "notes.txt").read_text() == "mine"


def test_a_run_killed_while_moving_its_files_in_is_replaced(tmp_path):
    """Its manifest.json (marked as trainguard's) is in place, its summary.json is not."""
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))
    (out_dir / "summary.json").unlink()
    (out_dir / "notes.txt").write_text("mine")

    write_outputs(out_dir, raw, rows_frame(N_ROWS, set()), [], summary_for(raw, input="again"))

    assert json.loads((out_dir / "summary.json").read_text())["input"] == "again"
    assert json.loads((out_dir / "manifest.json").read_text())["written_by"] == "trainguard"
    assert (out_dir / "notes.txt").read_text() == "mine"


def test_no_staging_directory_is_left_behind(tmp_path):
    raw = load_raw(make_csv(tmp_path))
    parent = tmp_path / "runs"
    parent.mkdir()
    before = set(p.name for p in parent.iterdir())

    write_outputs(parent / "audit", raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw))
    write_outputs(parent / "audit", raw, rows_frame(N_ROWS, {0}), [], summary_for(raw))

    assert {p.name for p in parent.iterdir()} - before == {"audit"}
    assert not [p for p in tmp_path.rglob("*") if ".partial-" in p.name]


def test_a_failed_write_leaves_the_previous_run_and_no_staging(tmp_path):
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw, run=1))
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    bad_rows = rows_frame(N_ROWS, FLAGGED).drop(columns="flagged")
    with pytest.raises(KeyError):
        write_outputs(out_dir, raw, bad_rows, [], summary_for(raw, run=2))

    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@contextlib.contextmanager
def file_size_limit(n_bytes: int):
    """A real write failure: the kernel refuses to grow any file past `n_bytes` (EFBIG, as
    a full disk refuses with ENOSPC)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_file_that_cannot_be_written_is_named_and_the_previous_run_stays(tmp_path):
    raw = load_raw(make_jsonl(tmp_path))
    out_dir = tmp_path / "audit"
    write_outputs(out_dir, raw, rows_frame(N_ROWS, FLAGGED), [], summary_for(raw, run=1))
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    with file_size_limit(1024), pytest.raises(TrainguardError) as failed:
        write_outputs(out_dir, raw, rows_frame(N_ROWS, set()), [], summary_for(raw, run=2))

    message = str(failed.value)
    assert message.startswith(f"cannot write rows.parquet for {out_dir}: ")
    assert "File too large" in message and message.endswith(f"{out_dir} was left as it was")
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


@pytest.mark.parametrize("stream", [False, True])
def test_parquet_categories_keep_their_order_and_codes(tmp_path, stream):
    """A pandas categorical whose first row holds its second category: the splits keep the
    categories and every row's code, whole-file and streamed."""
    source = tmp_path / "cat.parquet"
    labels = pd.Categorical(["pos", "neg", "pos", "neg", "pos"], categories=["neg", "pos"])
    pd.DataFrame({"text": [f"row {i}" for i in range(5)], "label": labels}).to_parquet(source)
    if stream:
        loaded = load_table(str(source), stream=True, batch_rows=2)
        raw = loaded.raw
    else:
        raw = load_raw(str(source))

    out_dir = write_outputs(tmp_path / "audit", raw, rows_frame(5, {1}), [], summary_for(raw))

    clean = pd.read_parquet(out_dir / "clean.parquet")
    held = pd.read_parquet(out_dir / "quarantine.parquet")
    assert list(clean["label"].cat.categories) == ["neg", "pos"]
    assert clean["label"].cat.codes.tolist() == [1, 1, 0, 1]
    assert held["label"].tolist() == ["neg"] and held["label"].cat.codes.tolist() == [0]


@pytest.mark.parametrize("stream", [False, True])
def test_parquet_splits_hold_the_input_values_python_cannot(tmp_path, stream):
    """A time64[ns] keeps its nanoseconds (a Python time holds microseconds) and a timestamp
    past the year 9999 (no Python datetime at all) is audited and copied, not an error."""
    source = tmp_path / "odd.parquet"
    table = pa.table({
        "text": [f"row {i}" for i in range(6)], "label": [0, 1, 0, 1, 0, 1],
        "recorded_at": pa.array([i * 1001 for i in range(6)], pa.time64("ns")),
        "created": pa.array([2**52 if i == 3 else 1000 * i for i in range(6)], pa.timestamp("ms"))})
    pq.write_table(table, source, row_group_size=4)
    raw = (load_table(str(source), stream=True, batch_rows=2).raw if stream
           else load_raw(str(source)))
    assert len(raw) == 6

    out_dir = write_outputs(tmp_path / "audit", raw, rows_frame(6, {3, 4}), [], summary_for(raw))

    assert pq.read_table(out_dir / "clean.parquet").equals(table.take([0, 1, 2, 5]))
    assert pq.read_table(out_dir / "quarantine.parquet").equals(table.take([3, 4]))
