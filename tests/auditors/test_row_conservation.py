"""Property: for every format, whatever the text and whichever rows are flagged, the clean
and quarantine splits hold every input row exactly once, in input order; line formats
(JSONL, CSV, TSV) byte-for-byte in the input's encoding, JSON and Parquet value for value.

Runs the real ingest and split writer on generated files; no model is involved."""

from __future__ import annotations

import codecs
import csv
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditors.ingest import load_raw
from auditors.outputs import split_paths, write_records

# Characters that break naive readers: line and paragraph separators, NEL, form feed,
# carriage return, BOM and zero-width characters inside text, bidi override, combining
# marks, astral emoji, quotes, delimiters.
EDGE_CHARACTERS = ["\u2028", "\u2029", "\x85", "\x0c", "\x0b", "\r", "\n", "\ufeff", "\u200b",
                   "\u202e", "\u0301", "\U0001F600", "\U0001F469\u200d\U0001F4BB", '"', "'",
                   ",", "\t", "\\", " ", "\u00e9", "\u4e2d"]
ENCODINGS = [("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
             ("utf-16-be", codecs.BOM_UTF16_BE)]
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def texts(exclude: str = "") -> st.SearchStrategy[str]:
    """Any text without NUL (refused as binary) or surrogates (not encodable)."""
    pieces = st.one_of(
        st.characters(exclude_categories=("Cs",), exclude_characters="\x00" + exclude),
        st.sampled_from([c for c in EDGE_CHARACTERS if not set(c) & set(exclude)]))
    return st.lists(pieces, max_size=40).map("".join)


labels = st.one_of(st.integers(-3, 3), st.sampled_from(["pos", "neg", " 1 ", ""]))


@st.composite
def dataset(draw, text_strategy, min_size: int = 1):
    rows = draw(st.lists(st.tuples(text_strategy, labels), min_size=min_size, max_size=12))
    mask = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
    encoding = draw(st.sampled_from(ENCODINGS))
    return rows, np.array(mask, dtype=bool), encoding


def split_and_read(path: Path, mask: np.ndarray):
    """Load `path`, write both splits next to it; return the dataset and the split files."""
    raw = load_raw(str(path))
    clean_name, quarantine_name = split_paths(raw)
    clean, quarantine = path.parent / clean_name, path.parent / quarantine_name
    write_records(raw, np.flatnonzero(~mask), clean)
    write_records(raw, np.flatnonzero(mask), quarantine)
    return raw, clean, quarantine


def assert_line_splits(encoding, header: str, rows: list[str], mask, clean: Path,
                       quarantine: Path) -> None:
    """Each split is the header plus its rows' original text, in order, in the input's
    encoding; the last row gains the newline it may have lacked."""
    codec, bom = encoding
    rows = [r if r.endswith("\n") else r + "\n" for r in rows]
    kept = [r for r, flagged in zip(rows, mask) if not flagged]
    held = [r for r, flagged in zip(rows, mask) if flagged]
    assert clean.read_bytes() == bom + (header + "".join(kept)).encode(codec)
    assert quarantine.read_bytes() == bom + (header + "".join(held)).encode(codec)


def write_encoded(path: Path, text: str, encoding) -> Path:
    codec, bom = encoding
    path.write_bytes(bom + text.encode(codec))
    return path


@PROPERTY
@given(dataset(texts()), st.booleans(), st.sampled_from(["\n", "\r\n"]), st.booleans())
def test_jsonl_rows_are_conserved(data, ascii_only, newline, final_newline):
    rows, mask, encoding = data
    records = [{"text": t, "label": lab} for t, lab in rows]
    lines = [json.dumps(r, ensure_ascii=ascii_only) + newline for r in records]
    if not final_newline:
        lines[-1] = lines[-1].removesuffix(newline)
    with tempfile.TemporaryDirectory() as folder:
        path = write_encoded(Path(folder) / "in.jsonl", "".join(lines), encoding)
        raw, clean, quarantine = split_and_read(path, mask)
        assert raw.records == records
        assert_line_splits(encoding, "", lines, mask, clean, quarantine)


@PROPERTY
@given(dataset(texts()), st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
       st.booleans())
def test_csv_rows_are_conserved(data, quoting, final_newline):
    rows, mask, encoding = data
    header, records = _csv_line(["text", "label"], quoting), [_csv_line(r, quoting) for r in rows]
    if not final_newline:
        records[-1] = records[-1].removesuffix("\r\n")
    with tempfile.TemporaryDirectory() as folder:
        path = write_encoded(Path(folder) / "in.csv", header + "".join(records), encoding)
        raw, clean, quarantine = split_and_read(path, mask)
        assert raw.records == [{"text": t, "label": str(lab)} for t, lab in rows]
        assert_line_splits(encoding, header, records, mask, clean, quarantine)


def _csv_line(values, quoting) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, quoting=quoting).writerow(values)
    return buffer.getvalue()


@PROPERTY
@given(dataset(texts(exclude="\t\n\r")), st.sampled_from(["\t", " \t "]),
       st.sampled_from(["\n", "\r\n"]))
def test_tsv_rows_are_conserved(data, separator, newline):
    rows, mask, encoding = data
    header = f"text{separator}label{newline}"
    lines = [f"{t}{separator}{lab}{newline}" for t, lab in rows]
    with tempfile.TemporaryDirectory() as folder:
        path = write_encoded(Path(folder) / "in.tsv", header + "".join(lines), encoding)
        raw, clean, quarantine = split_and_read(path, mask)
        # TSV values are stripped of spaces; a row whose fields are all blank is no row
        expected = [(t, str(lab)) for t, lab in rows]
        assert [(r["text"], r["label"]) for r in raw.records] == \
            [(t.strip(), lab.strip()) for t, lab in expected]
        assert_line_splits(encoding, header, lines, mask, clean, quarantine)


@PROPERTY
@given(dataset(texts()), st.booleans())
def test_json_rows_are_conserved(data, indent):
    rows, mask, encoding = data
    records = [{"text": t, "label": lab, "meta": {"n": i, "tags": [t]}}
               for i, (t, lab) in enumerate(rows)]
    with tempfile.TemporaryDirectory() as folder:
        text = json.dumps(records, indent=2 if indent else None, ensure_ascii=False)
        path = write_encoded(Path(folder) / "in.json", text, encoding)
        raw, clean, quarantine = split_and_read(path, mask)
        assert raw.records == records
        codec, bom = encoding
        for split, selected in ((clean, ~mask), (quarantine, mask)):
            data_bytes = split.read_bytes()
            assert data_bytes.startswith(bom)
            assert json.loads(data_bytes[len(bom):].decode(codec)) == \
                [r for r, keep in zip(records, selected) if keep]


@PROPERTY
@given(dataset(st.one_of(st.none(), texts())))
def test_parquet_rows_are_conserved(data):
    rows, mask, _ = data
    table = pa.table({"text": pa.array([t for t, _ in rows], pa.string()),
                      "label": pa.array([str(lab) for _, lab in rows], pa.large_string()),
                      "position": pa.array(range(len(rows)), pa.int16())})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.parquet"
        pq.write_table(table, path)
        raw, clean, quarantine = split_and_read(path, mask)
        assert raw.records == table.to_pylist()
        for split, selected in ((clean, ~mask), (quarantine, mask)):
            written = pq.read_table(split)
            assert written.schema.equals(table.schema)
            assert written.to_pylist() == [r for r, keep in zip(table.to_pylist(), selected) if keep]
