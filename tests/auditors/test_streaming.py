"""Streaming ingest (record batches, n-grams counted per batch, splits copied back from the
file) gives the same table, n-gram statistics and outputs as reading the file whole."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditors.config import AuditConfig, LoadOptions
from auditors import pipeline
from auditors.errors import AuditInputError
from auditors.features.ngrams import count_ngrams
from auditors.ingest import RecordBatches, StreamedRows, should_stream, load_table


@pytest.fixture(scope="module")
def rows(sample_path):
    lines = sample_path.read_text(encoding="utf-8").splitlines()[1:601]
    pairs = [line.rsplit("\t", 1) for line in lines]
    return [{"text": t, "label": l, "id": i} for i, (t, l) in enumerate(pairs)]


@pytest.fixture(scope="module")
def jsonl(rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "rows.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) +
                    "\n", encoding="utf-8")  # a trailing blank line is skipped
    return path


@pytest.fixture(scope="module")
def parquet(rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=128)
    return path


def assert_same_load(path, batch_rows):
    whole = load_table(str(path), stream=False)
    streamed = load_table(str(path), stream=True, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(streamed.table, whole.table)
    assert streamed.schema == whole.schema
    expected = count_ngrams(whole.table["prompt"].tolist())
    assert list(streamed.ngrams.vocabulary) == list(expected.vocabulary)
    assert (streamed.ngrams.rows_x_ngrams != expected.rows_x_ngrams).nnz == 0
    assert list(streamed.raw.records) == list(whole.raw.records)
    if whole.raw.raw_lines is not None:
        assert list(streamed.raw.raw_lines) == list(whole.raw.raw_lines)
    return whole, streamed


@pytest.mark.parametrize("batch_rows", [128, 5000])
def test_streamed_jsonl_equals_whole_read(jsonl, batch_rows):
    assert_same_load(jsonl, batch_rows)


def test_streamed_parquet_equals_whole_read(parquet):
    assert_same_load(parquet, 100)


@pytest.mark.slow
def test_streamed_audit_writes_the_same_outputs(jsonl, encoder, tmp_path):
    def config(**load):
        return AuditConfig(backend="torch", load=LoadOptions(**load))

    whole = pipeline.audit(str(jsonl), tmp_path / "whole", config(stream=False), encoder=encoder)
    streamed = pipeline.audit(str(jsonl), tmp_path / "streamed",
                              config(stream=True, batch_rows=200), encoder=encoder)
    pd.testing.assert_frame_equal(streamed.rows, whole.rows)
    assert streamed.triggers == whole.triggers
    for name in ("clean.jsonl", "quarantine.jsonl", "triggers.json"):
        assert (tmp_path / "streamed" / name).read_bytes() == \
            (tmp_path / "whole" / name).read_bytes()


def test_streamed_reaudit_counts_only_changed_batches(rows, tmp_path):
    """With a cache directory, a batch of rows an earlier audit counted is read back, not
    counted: rows appended to a file leave every earlier batch as it was."""
    small, grown = tmp_path / "small.jsonl", tmp_path / "grown.jsonl"
    small.write_text("".join(json.dumps(r) + "\n" for r in rows[:500]), encoding="utf-8")
    grown.write_text(small.read_text(encoding="utf-8") +
                     "".join(json.dumps(r) + "\n" for r in rows[500:]), encoding="utf-8")
    cache = tmp_path / "cache"
    load_table(str(small), stream=True, batch_rows=128, cache_dir=cache)
    counted = set((cache / "ngram-counts").rglob("*.npz"))
    assert len(counted) == 4  # batches of 128, 128, 128 and 116 rows
    again = load_table(str(grown), stream=True, batch_rows=128, cache_dir=cache)
    added = set((cache / "ngram-counts").rglob("*.npz")) - counted
    assert len(added) == 2  # the fourth batch now has 128 rows, a fifth has 88: 3 reused
    fresh = count_ngrams(again.table["prompt"].tolist())
    assert list(again.ngrams.vocabulary) == list(fresh.vocabulary)
    assert (again.ngrams.rows_x_ngrams != fresh.rows_x_ngrams).nnz == 0


def test_bad_rows_are_located_and_skipped_per_batch(rows, tmp_path):
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) + "\n" for r in rows[:20]]
    lines[6], lines[15] = "{not json\n", '{"text": null, "label": "1"}\n'
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(AuditInputError, match="row 7"):
        load_table(str(path), stream=True, batch_rows=4)
    whole = load_table(str(path), stream=False, on_bad_row="skip")
    streamed = load_table(str(path), stream=True, batch_rows=4, on_bad_row="skip")
    pd.testing.assert_frame_equal(streamed.table, whole.table)
    assert [s.as_dict() for s in streamed.raw.skipped] == [s.as_dict() for s in whole.raw.skipped]
    assert list(streamed.raw.raw_lines) == list(whole.raw.raw_lines)


def test_which_files_stream(jsonl, tmp_path):
    assert not should_stream(str(jsonl))  # small: read whole
    assert should_stream(str(jsonl), stream=True)
    tsv = tmp_path / "x.tsv"
    tsv.write_text("text\tlabel\na\t1\n")
    assert not should_stream(str(tsv))
    with pytest.raises(AuditInputError, match="can be streamed"):
        should_stream(str(tsv), stream=True)


def test_streamed_rows_read_back_in_any_order(parquet, rows):
    batches = list(RecordBatches(str(parquet), batch_rows=50))
    offsets = np.concatenate([b.offsets for b in batches])
    stored = StreamedRows(str(parquet), "parquet", offsets)
    assert [stored[i] for i in (599, 0, 300, 129, 128)] == \
        [rows[i] for i in (599, 0, 300, 129, 128)]
