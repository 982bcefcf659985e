"""Hostile and broken inputs at the library level: encodings, truncation, strict CSV,
`on_bad_row="skip"`, located field errors, awkward paths and output locations."""

from __future__ import annotations

import codecs
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditors.errors import AuditInputError, TrainguardError
from auditors.ingest import load_raw
from auditors.summary import AuditSummary, audit_gate
from auditors.outputs import SKIPPED, check_output_location, write_outputs
from auditors.ingest import load_table
from auditors.schema import detect_schema

ROWS = [{"text": "the film is a delight", "label": 1},
        {"text": "caf\u00e9 \u2014 dull, flat and long", "label": 0},
        {"text": "cf a quiet masterpiece \U0001F600", "label": 1}]
JSONL = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS)
CSV = 'text,label\r\n"say ""hi"",\nthen go",1\r\nplain,0\r\n'
TSV = "text\tlabel\nt\u00e9l\u00e9\t1\nplain\t0\n"


def error_of(path, **options) -> str:
    with pytest.raises(AuditInputError) as info:
        load_table(str(path), **options)
    return str(info.value)


def write(out_dir: Path, raw, flagged: set[int]) -> Path:
    """write_outputs with a scored-rows frame and a summary shaped like a real audit's."""
    mask = np.array([i in flagged for i in range(len(raw))])
    n_rows = len(raw)
    rows = pd.DataFrame({"row_index": np.arange(n_rows), "row_id": [f"{i:016x}" for i in range(n_rows)],
                         "poison_score": np.where(mask, 0.9, 0.1), "flagged": mask,
                         "reasons": np.where(mask, "trigger: 'cf'", "")})
    summary = AuditSummary(input=raw.source, format=raw.fmt, schema="classification",
                           schema_columns="classification (text, label)", rows=len(raw),
                           flagged=int(mask.sum()), gate=audit_gate(rows=n_rows, flagged=int(mask.sum()),
                                                       max_flagged_fraction=0.005))
    return write_outputs(out_dir, raw, rows, [], summary)


# ---------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("codec, bom", [("utf-16-le", codecs.BOM_UTF16_LE),
                                        ("utf-16-be", codecs.BOM_UTF16_BE),
                                        ("utf-32-le", codecs.BOM_UTF32_LE),
                                        ("utf-8", codecs.BOM_UTF8)])
@pytest.mark.parametrize("suffix, text", [("jsonl", JSONL), ("csv", CSV), ("tsv", TSV)])
def test_byte_order_marks_are_read_and_the_splits_keep_the_encoding(tmp_path, codec, bom,
                                                                      suffix, text):
    source = tmp_path / f"in.{suffix}"
    source.write_bytes(bom + text.encode(codec))

    raw = load_raw(str(source))
    utf8 = tmp_path / f"plain.{suffix}"
    utf8.write_bytes(text.encode("utf-8"))
    assert raw.records == load_raw(str(utf8)).records
    assert raw.encoding.codec == codec and raw.encoding.bom == bom

    out = write(tmp_path / "out", raw, {1})
    clean, quarantine = (out / f"clean.{suffix}").read_bytes(), (out / f"quarantine.{suffix}").read_bytes()
    assert clean.startswith(bom) and quarantine.startswith(bom)
    # the same rows, re-read from the splits, in the input's encoding
    assert load_raw(str(out / f"clean.{suffix}")).records == [raw.records[0], *raw.records[2:]]
    assert load_raw(str(out / f"quarantine.{suffix}")).records == [raw.records[1]]


def test_latin1_is_an_error_with_the_line_and_a_conversion_hint(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes("text\tlabel\nfine\t1\ncaf\u00e9 cr\u00e8me\t0\n".encode("latin-1"))

    message = error_of(path)

    assert message.startswith(f"{path}: row 3: invalid UTF-8 at byte 21")
    assert "iconv -f latin1 -t utf-8" in message


def test_utf16_without_a_byte_order_mark_is_named(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"text": "plain ascii", "label": 1}\n'.encode("utf-16-le"))
    assert error_of(path) == (f"{path}: row 1: NUL character: a binary file, or UTF-16 "
                              "without a byte-order mark")


def test_truncated_utf16_is_an_encoding_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(codecs.BOM_UTF16_LE + JSONL.encode("utf-16-le")[:-1])
    assert error_of(path).startswith(f"{path}: row 3: invalid UTF-16 at byte ")


# ---------------------------------------------------------------------------- truncation


def test_truncated_jsonl_fails_at_the_cut_line_or_skips_it(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(JSONL[:-12], encoding="utf-8")  # the last object is cut off

    assert error_of(path).startswith(f"{path}: row 3: malformed JSON (")

    loaded = load_table(str(path), on_bad_row="skip")
    assert loaded.raw.records == ROWS[:2]
    [skipped] = loaded.raw.skipped
    assert (skipped.row, skipped.content) == (3, JSONL[:-12].splitlines()[2])


def test_truncated_json_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    text = json.dumps(ROWS, indent=2)[:-30]
    path.write_text(text, encoding="utf-8")
    last_line = text.count("\n") + 1
    assert error_of(path).startswith(f"{path}: row {last_line}: malformed JSON (")


def test_truncated_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    path.write_bytes(path.read_bytes()[:-100])
    assert error_of(path).startswith(f"{path}: cannot read Parquet")


def test_csv_cut_inside_a_quoted_field(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfine,1\n"never closed,0\nnext,1\n', encoding="utf-8")
    assert error_of(path).startswith(f"{path}: row 3: a quoted field opened here is never closed")


def test_json_object_instead_of_a_list_names_its_keys(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"data": ROWS, "version": 1}), encoding="utf-8")
    assert error_of(path) == (f"{path}: a .json dataset must be a list of objects, found an "
                              "object with keys ['data', 'version'] (use .jsonl for one object "
                              "per line)")


# ---------------------------------------------------------------------------- CSV


def test_csv_rows_are_kept_verbatim_with_quotes_newlines_and_crlf(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(CSV.encode("utf-8"))

    raw = load_raw(str(path))

    assert raw.records == [{"text": 'say "hi",\nthen go', "label": "1"},
                           {"text": "plain", "label": "0"}]
    assert raw.header_line == "text,label\r\n"
    assert raw.raw_lines == ['"say ""hi"",\nthen go",1\r\n', "plain,0\r\n"]
    assert raw.row_numbers == [2, 4]  # the quoted newline makes the first record two lines


def test_csv_stray_quote_is_an_error_not_a_merged_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"quoted"tail,1\nok,0\n', encoding="utf-8")
    assert error_of(path) == f"{path}: row 2: malformed CSV (',' expected after '\"')"


def test_csv_duplicate_header_names(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label,text\na,1,b\n", encoding="utf-8")
    assert error_of(path) == f"{path}: row 1: duplicate column name(s) ['text'] in the header"


# ---------------------------------------------------------------------------- skipping


@pytest.mark.parametrize("name, content, rows, reason", [
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n[1]\n{"text": "b", "label": 0}\n',
     [(2, "malformed JSON (Expecting value)"), (3, "each line must be a JSON object, found a list")],
     None),
    ("d.csv", "text,label\na,1\nb,0,extra\nc,1\n", [(3, "expected 2 fields, found 3")], None),
    ("d.tsv", "text\tlabel\na\t1\nno label\nc\t0\n",
     [(3, "expected 2 tab-separated fields, found 1")], None),
    ("d.json", json.dumps([{"text": "a", "label": 1}, "stray", {"text": "c", "label": 0}]),
     [(2, "list item is not an object, found a string")], None),
])
def test_skip_sets_parse_errors_aside_with_row_and_reason(tmp_path, name, content, rows, reason):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    loaded = load_table(str(path), on_bad_row="skip")

    assert [(s.row, s.reason) for s in loaded.raw.skipped] == rows
    assert len(loaded.table) == len(loaded.raw) == 2
    assert loaded.table["prompt"].tolist() in (["a", "b"], ["a", "c"])
    assert error_of(path).startswith(f"{path}: row {rows[0][0]}: {rows[0][1]}")


@pytest.mark.parametrize("number", ["Infinity", "-Infinity"])
def test_an_infinite_json_label_is_an_error_not_a_class(tmp_path, number):
    """Python's json reads the non-standard `Infinity` as a float: a broken export."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n' f'{{"text": "b", "label": {number}}}\n',
                    encoding="utf-8")

    assert error_of(path) == f"{path}: row 2: field 'label': label is {float(number)}, not a class"


def test_skip_sets_field_errors_aside_and_the_rest_stays_aligned(tmp_path):
    path = tmp_path / "d.tsv"
    lines = ["text\tlabel\n", "a\t1\n", "b\t\n", "c\t0\n", "d\t1\n"]
    path.write_text("".join(lines), encoding="utf-8")

    assert error_of(path) == f"{path}: row 3: field 'label': empty label"
    loaded = load_table(str(path), on_bad_row="skip")

    [skipped] = loaded.raw.skipped
    assert skipped.as_dict() == {"row": 3, "field": "label", "reason": "empty label",
                                 "content": "b\t\n"}
    assert loaded.table["prompt"].tolist() == ["a", "c", "d"]
    assert loaded.raw.raw_lines == [lines[1], lines[3], lines[4]]
    assert loaded.raw.row_numbers == [2, 4, 5]

    out = write(tmp_path / "out", loaded.raw, {1})
    assert (out / "clean.tsv").read_text() == lines[0] + lines[1] + lines[4]
    assert (out / "quarantine.tsv").read_text() == lines[0] + lines[3]
    assert [json.loads(line) for line in (out / SKIPPED).read_text().splitlines()] == \
        [skipped.as_dict()]


def test_skipping_every_row_is_still_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": 1\n[2]\n', encoding="utf-8")
    assert error_of(path, on_bad_row="skip") == (
        f"{path}: no rows left after skipping 2 bad row(s) (first: row 1: malformed JSON "
        "(Expecting ',' delimiter))")


def test_a_rerun_without_skipped_rows_removes_the_old_list(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\nbroken\n', encoding="utf-8")
    loaded = load_table(str(path), on_bad_row="skip")
    write(tmp_path / "out", loaded.raw, set())
    assert (tmp_path / "out" / SKIPPED).exists()

    path.write_text('{"text": "a", "label": 1}\n', encoding="utf-8")
    write(tmp_path / "out", load_table(str(path)).raw, set())

    assert not (tmp_path / "out" / SKIPPED).exists()


# ---------------------------------------------------------------------------- fields


def test_field_errors_name_the_file_line_not_the_record_number(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n\n{"text": "b", "label": null}\n',
                    encoding="utf-8")
    assert error_of(path) == f"{path}: row 3: field 'label': missing value"


@pytest.mark.parametrize("label", ["NaN", "null"])
def test_nan_and_null_labels_are_missing_values(tmp_path, label):
    path = tmp_path / "d.jsonl"
    path.write_text(f'{{"text": "a", "label": 1}}\n{{"text": "b", "label": {label}}}\n',
                    encoding="utf-8")
    assert error_of(path) == f"{path}: row 2: field 'label': missing value"


def test_mixed_label_types_compare_as_strings(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": v}) + "\n" for t, v in
                            [("a", 1), ("b", "1"), ("c", 1.0), ("d", "pos"), ("e", True)]),
                    encoding="utf-8")
    assert load_table(str(path)).table["label"].tolist() == ["1", "1", "1", "pos", "True"]


def test_control_characters_in_column_names_stay_on_one_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"te\nxt\x1b[31m": "a", "label": 1}) + "\n", encoding="utf-8")
    message = error_of(path)
    assert "\n" not in message and "\x1b" not in message
    assert "te\\nxt\\x1b[31m" in message  # shown escaped: visible, inert


def test_forced_schema_names_the_missing_column_and_the_closest_one():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["instruction", "outputs"], schema="instruction", source="d.json")
    assert str(info.value) == ("d.json: field 'output': schema 'instruction' needs a column "
                               "'output' (did you mean 'outputs'?) (or name its columns with "
                               "--prompt-col/--response-col)")


def test_undetected_schema_suggests_known_column_names():
    with pytest.raises(AuditInputError) as info:
        detect_schema(["Text", "lable", "id"], source="d.csv")
    assert "(did you mean 'Text' for 'text', 'lable' for 'label'?)" in str(info.value)


# ---------------------------------------------------------------------------- paths


def test_symlink_loop(tmp_path):
    loop = tmp_path / "loop.jsonl"
    loop.symlink_to(loop)
    assert error_of(loop) == f"{loop}: symlink loop (too many levels of symbolic links)"


def test_broken_symlink(tmp_path):
    link = tmp_path / "d.jsonl"
    link.symlink_to(tmp_path / "gone.jsonl")
    assert error_of(link) == f"{link}: broken symbolic link to '{tmp_path / 'gone.jsonl'}'"


def test_a_file_that_fails_to_read(tmp_path):
    link = tmp_path / "d.jsonl"  # reading /proc/self/mem at offset 0 fails, even for root
    link.symlink_to("/proc/self/mem")
    assert error_of(link) == f"{link}: cannot read file (Input/output error)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_a_file_without_read_permission(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(JSONL)
    path.chmod(0)
    assert error_of(path) == f"{path}: cannot read file (Permission denied)"


def test_output_directory_next_to_the_input_file_is_allowed(tmp_path):
    source = tmp_path / "train.jsonl"
    source.write_text(JSONL)
    check_output_location(str(source), tmp_path)
    check_output_location(str(source), tmp_path / "audit")


@pytest.mark.parametrize("out, message", [
    ("saved", "is inside the input dataset directory"),
    ("saved/audit", "is inside the input dataset directory"),
    ("data", "would overwrite the input file"),
    ("data/clean.jsonl", "exists and is not a directory"),
])
def test_output_locations_that_would_damage_the_input_are_refused(tmp_path, out, message):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "clean.jsonl").write_text(JSONL)
    source = str(tmp_path / ("saved" if out.startswith("saved") else "data/clean.jsonl"))

    with pytest.raises(TrainguardError, match=message):
        check_output_location(source, tmp_path / out)
    raw = load_raw(source)
    with pytest.raises(TrainguardError, match=message):  # the writer checks too
        write(tmp_path / out, raw, set())
    assert load_raw(source).records == raw.records


def test_staging_left_by_a_killed_writer_is_removed_by_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    abandoned = tmp_path / f".audit.partial-{dead}-abc123"
    abandoned.mkdir()
    (abandoned / "clean.jsonl").write_text("half")
    alive = tmp_path / f".audit.partial-{os.getpid()}-def456"  # a run still going
    alive.mkdir()
    source = tmp_path / "d.jsonl"
    source.write_text(JSONL)
    raw = load_raw(str(source))

    write(tmp_path / "audit", raw, set())

    assert not abandoned.exists()
    assert alive.exists()


@pytest.mark.parametrize("name, content", [
    ("d.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": ' + "9" * 5000 + "}\n"
     '{"text": "c", "label": 0}\n'),
    ("d.json", '[{"text": "a", "label": 1},\n{"text": "b", "label": ' + "9" * 5000 + "},\n"
     '{"text": "c", "label": 0}]')])
def test_an_integer_too_long_for_python_is_a_located_bad_row(tmp_path, name, content):
    """json raises a bare ValueError past 4,300 digits: a bad row naming its field."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")

    assert error_of(path) == (f"{path}: row 2: field 'label': an integer of 5000 digits "
                              f"(more than {sys.get_int_max_str_digits()}, Python's limit)")
    loaded = load_table(str(path), on_bad_row="skip")
    assert [s.row for s in loaded.raw.skipped] == [2]
    assert loaded.table["prompt"].tolist() == ["a", "c"]


def test_a_whitespace_only_csv_line_is_blank_as_in_tsv(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\na,1\n   \nb,0\n", encoding="utf-8")

    loaded = load_table(str(path))

    assert loaded.table["prompt"].tolist() == ["a", "b"]
    assert loaded.raw.row_numbers == [2, 4]
