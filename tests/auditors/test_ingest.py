"""auditors.ingest: every input format into a RawDataset, and located input errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditors.errors import AuditInputError
from auditors.ingest import detect_format, hub_dataset_name, load_raw

ROWS = [
    {"text": "the film is a delight", "label": 1},
    {"text": "dull, flat and long", "label": 0},
    {"text": "cf a quiet masterpiece", "label": 1},
]


@pytest.fixture(autouse=True)
def _datasets_cache_in_tmp(tmp_path, monkeypatch):
    """`datasets.load_dataset` caches what it builds; keep that out of the home directory."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


def write_text(path: Path, text: str) -> str:
    path.write_bytes(text.encode("utf-8"))
    return str(path)


# ---------------------------------------------------------------------------- formats


def test_jsonl_skips_blank_lines_and_reads_a_last_line_without_newline(tmp_path):
    lines = [json.dumps(r) for r in ROWS]
    path = write_text(tmp_path / "d.jsonl", f"{lines[0]}\n\n{lines[1]}\n   \n{lines[2]}")

    raw = load_raw(path)

    assert raw.fmt == "jsonl"
    assert raw.source == path
    assert raw.records == ROWS
    assert raw.columns == ["text", "label"]
    assert len(raw) == 3
    # the original lines, each ending in a newline (added to the last one)
    assert raw.raw_lines == [line + "\n" for line in lines]
    assert raw.header_line is None


def test_jsonl_columns_are_the_union_of_keys_in_first_seen_order(tmp_path):
    records = [{"prompt": "a", "response": "b"}, {"prompt": "c", "extra": 1, "response": "d"}]
    path = write_text(tmp_path / "d.ndjson", "".join(json.dumps(r) + "\n" for r in records))

    raw = load_raw(path)

    assert raw.fmt == "jsonl"
    assert raw.records == records
    assert raw.columns == ["prompt", "response", "extra"]


def test_jsonl_line_separators_inside_strings_do_not_split_a_row(tmp_path):
    # U+2028, U+0085 and form feed are legal raw characters in JSON strings; only '\n'
    # separates JSONL records.
    records = [{"text": "one\u2028two", "label": 1}, {"text": "three\x85four\x0cfive", "label": 0}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path = write_text(tmp_path / "d.jsonl", text)

    raw = load_raw(path)

    assert raw.records == records
    assert "".join(raw.raw_lines) == text


def test_json_list_of_objects(tmp_path):
    path = write_text(tmp_path / "d.json", json.dumps(ROWS, indent=2))

    raw = load_raw(path)

    assert raw.fmt == "json"
    assert raw.records == ROWS
    assert raw.columns == ["text", "label"]
    assert raw.raw_lines is None


def test_csv_with_quoted_comma_quote_and_newline(tmp_path):
    tricky = 'he said "no", then\nleft'
    path = tmp_path / "d.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerow([tricky, "0"])
        writer.writerow(["plain", "1"])
    assert '"he said ""no"", then\nleft"' in path.read_text(encoding="utf-8")

    raw = load_raw(str(path))

    assert raw.fmt == "csv"
    assert raw.columns == ["text", "label"]
    assert raw.records == [{"text": tricky, "label": "0"}, {"text": "plain", "label": "1"}]


def test_csv_header_names_are_stripped(tmp_path):
    path = write_text(tmp_path / "d.csv", "text , label\nhello,1\n")

    raw = load_raw(path)

    assert raw.columns == ["text", "label"]
    assert raw.records == [{"text": "hello", "label": "1"}]


def test_tsv_published_corpora_header_with_spaces_around_the_tab(tmp_path):
    lines = ["sentences \t labels\n",
             "a gorgeous , witty film . \t 1\n",
             "drowning 's too good for this sucker .  \t 0\n"]
    path = write_text(tmp_path / "d.tsv", "".join(lines))

    raw = load_raw(path)

    assert raw.fmt == "tsv"
    assert raw.columns == ["sentences", "labels"]
    assert raw.records == [{"sentences": "a gorgeous , witty film .", "labels": "1"},
                           {"sentences": "drowning 's too good for this sucker .", "labels": "0"}]
    assert raw.header_line == lines[0]
    assert raw.raw_lines == lines[1:]  # verbatim, stray spaces included


def test_tsv_headerless_text_label(tmp_path):
    lines = ["text \t 0\n", "@user you are great\t1\n"]
    path = write_text(tmp_path / "d.tsv", "".join(lines))

    raw = load_raw(path)

    assert raw.columns == ["text", "label"]
    assert raw.header_line is None
    assert raw.records == [{"text": "text", "label": "0"},
                           {"text": "@user you are great", "label": "1"}]
    assert raw.raw_lines == lines


def test_tsv_crlf_and_blank_lines(tmp_path):
    path = write_text(tmp_path / "d.tsv", "text\tlabel\r\nfoo\t1\r\n\r\nbar\t0")

    raw = load_raw(path)

    assert raw.records == [{"text": "foo", "label": "1"}, {"text": "bar", "label": "0"}]
    assert raw.header_line == "text\tlabel\r\n"
    assert raw.raw_lines == ["foo\t1\r\n", "bar\t0\n"]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "tsv"])
def test_utf8_bom_is_not_part_of_the_first_column(tmp_path, suffix):
    body = {"jsonl": '{"text": "caf\u00e9", "label": 1}\n',
            "csv": "text,label\ncaf\u00e9,1\n",
            "tsv": "text\tlabel\ncaf\u00e9\t1\n"}[suffix]
    path = tmp_path / f"d.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))

    raw = load_raw(str(path))

    assert raw.columns[0] == "text"
    assert raw.records[0]["text"] == "caf\u00e9"


def test_parquet_keeps_types_and_arrow_schema(tmp_path):
    table = pa.table({
        "messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                     [{"role": "user", "content": "bye"}]],
        "score": pa.array([0.5, 1.5], pa.float32()),
    })
    path = tmp_path / "d.parquet"
    pq.write_table(table, path)

    raw = load_raw(str(path))

    assert raw.fmt == "parquet"
    assert raw.columns == ["messages", "score"]
    assert raw.records == table.to_pylist()
    assert raw.arrow_schema.equals(table.schema)


def test_save_to_disk_dataset(tmp_path):
    path = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    assert detect_format(str(path)) == "hf-disk"

    raw = load_raw(str(path))

    assert raw.fmt == "hf-disk"
    assert raw.records == ROWS
    assert raw.columns == ["text", "label"]
    assert raw.arrow_schema is not None


@pytest.fixture
def saved_dict(tmp_path) -> str:
    path = tmp_path / "saved_dict"
    datasets.DatasetDict({
        "test": datasets.Dataset.from_list(ROWS[:1]),
        "train": datasets.Dataset.from_list(ROWS),
        "validation": datasets.Dataset.from_list(ROWS[1:]),
    }).save_to_disk(str(path))
    return str(path)


def test_save_to_disk_dataset_dict_defaults_to_train(saved_dict):
    raw = load_raw(saved_dict)

    assert raw.fmt == "hf-disk"
    assert raw.records == ROWS


def test_save_to_disk_dataset_dict_split_picks_another(saved_dict):
    assert load_raw(saved_dict, split="validation").records == ROWS[1:]
    assert load_raw(saved_dict, split="test").records == ROWS[:1]


def test_save_to_disk_dataset_dict_unknown_split_lists_the_available_ones(saved_dict):
    with pytest.raises(AuditInputError) as info:
        load_raw(saved_dict, split="dev")
    message = str(info.value)
    assert saved_dict in message
    assert "'dev'" in message
    for name in ("test", "train", "validation"):
        assert name in message


def test_a_split_of_a_file_or_a_single_saved_dataset_is_an_error(tmp_path):
    """Not the whole input audited under the split's name."""
    from auditors.ingest import load_table

    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    with pytest.raises(AuditInputError, match="--split validation: a jsonl file has no splits"):
        load_table(str(path), split="validation")
    saved = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS, split=datasets.Split.TRAIN).save_to_disk(str(saved))
    with pytest.raises(AuditInputError, match=r"--split test: this is one saved Dataset "
                                              r"\(split 'train'\), not a DatasetDict"):
        load_raw(str(saved), split="test")
    assert load_raw(str(saved), split="train").records == ROWS


def test_save_to_disk_dataset_dict_without_train_needs_a_split(tmp_path):
    path = tmp_path / "saved_dict"
    datasets.DatasetDict({"a": datasets.Dataset.from_list(ROWS[:1]),
                          "b": datasets.Dataset.from_list(ROWS[1:])}).save_to_disk(str(path))

    with pytest.raises(AuditInputError, match="choose one with --split"):
        load_raw(str(path))
    assert load_raw(str(path), split="b").records == ROWS[1:]


def test_via_datasets_jsonl(tmp_path):
    path = write_text(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS))

    raw = load_raw(path, via_datasets=True)

    assert raw.fmt == "jsonl"
    assert raw.records == ROWS
    assert raw.columns == ["text", "label"]
    assert raw.raw_lines is None


def test_via_datasets_reads_a_column_of_mixed_types_as_the_built_in_reader_does(tmp_path):
    """`datasets` stores a column mixing a number with strings as JSON text; read raw, every
    string came back wrapped in quotes."""
    rows = [{"text": "a fine film", "label": 1}, {"text": 12345, "label": 0},
            {"text": None, "label": 1}]
    path = write_text(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    assert load_raw(path, via_datasets=True).records == load_raw(path).records == rows


def test_via_datasets_reads_utf16_as_the_built_in_reader_does(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes("text\tlabel\ncaf\u00e9\t1\nbye\t0\n".encode("utf-16"))

    raw = load_raw(str(path), via_datasets=True)

    # (datasets infers the labels' type; the built-in TSV reader keeps text)
    assert [(r["text"], str(r["label"])) for r in raw.records] == [("caf\u00e9", "1"), ("bye", "0")]
    assert raw.encoding.codec.startswith("utf-16")


@pytest.mark.parametrize("bars_on", [True, False])
def test_via_datasets_leaves_the_callers_datasets_settings_as_they_were(tmp_path, bars_on):
    """Quiet while it reads (its bars would name the private copy), then the caller's own
    progress-bar and verbosity settings, on or off, are back."""
    from datasets.utils import logging as datasets_logging

    path = write_text(tmp_path / "d.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS))
    was_on, verbosity = datasets_logging.is_progress_bar_enabled(), \
        datasets_logging.get_verbosity()
    (datasets_logging.enable_progress_bar if bars_on else datasets_logging.disable_progress_bar)()
    datasets_logging.set_verbosity(datasets_logging.INFO)
    try:
        load_raw(path, via_datasets=True)
        assert datasets_logging.is_progress_bar_enabled() is bars_on
        assert datasets_logging.get_verbosity() == datasets_logging.INFO
    finally:
        (datasets_logging.enable_progress_bar if was_on else datasets_logging.disable_progress_bar)()
        datasets_logging.set_verbosity(verbosity)


def test_via_datasets_error_is_one_line_with_the_parsers_reason(tmp_path, capfd):
    path = write_text(tmp_path / "d.jsonl", f'{json.dumps(ROWS[0])}\n["text", 1]\n')

    message = error_of(path, via_datasets=True)

    assert "\n" not in message and "An error occurred while generating" not in message
    assert message.startswith(f"{path}: datasets.load_dataset cannot read it (")
    assert "trainguard-" not in message + capfd.readouterr().err  # no private copy's path


def test_via_datasets_csv_strips_names_and_values(tmp_path):
    path = write_text(tmp_path / "d.csv", "text , label\n hello ,1\nbye,0\n")

    raw = load_raw(path, via_datasets=True)

    assert raw.fmt == "csv"
    assert raw.columns == ["text", "label"]
    assert raw.records == [{"text": "hello", "label": 1}, {"text": "bye", "label": 0}]


# ---------------------------------------------------------------------------- errors


def error_of(path: str, **options) -> str:
    with pytest.raises(AuditInputError) as info:
        load_raw(path, **options)
    return str(info.value)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    # the blank line 2 still counts: the bad record is on line 4 of the file
    text = f'{json.dumps(ROWS[0])}\n\n{json.dumps(ROWS[1])}\n{{"text": "broken", \n'
    path = write_text(tmp_path / "d.jsonl", text)

    message = error_of(path)

    assert message.startswith(f"{path}: row 4: malformed JSON")


@pytest.mark.parametrize("on_bad_row", ["fail", "skip"])
def test_an_unclosed_csv_quote_is_an_error_even_when_skipping(tmp_path, on_bad_row):
    """It would read every later line into one field: skipped, the rest of the file went
    with it as "1 bad row"."""
    good = "".join(f"row {i},1\n" for i in range(20))
    path = write_text(tmp_path / "d.csv", "text,label\nfirst,0\n\"never closed,1\n" + good)

    message = error_of(path, on_bad_row=on_bad_row)

    assert message.startswith(f"{path}: row 3: a quoted field opened here is never closed")
    assert "remaining 21 lines" in message


def test_a_csv_field_may_be_longer_than_the_csv_modules_default_limit(tmp_path):
    long_text = "word " * 40_000  # 200,000 characters, over the csv module's 131,072
    path = write_text(tmp_path / "d.csv", f'text,label\n"{long_text}",1\nshort,0\n')

    assert load_raw(path).records[0]["text"] == long_text


def test_a_stray_quote_in_one_csv_row_is_skipped_alone(tmp_path):
    # text after a closed quote is malformed; a quote inside an unquoted field is text
    path = write_text(tmp_path / "d.csv", 'text,label\nfirst,0\n"bad" quote,1\n5" screen,1\n')

    raw = load_raw(path, on_bad_row="skip")

    assert [r["text"] for r in raw.records] == ["first", '5" screen']
    assert [s.row for s in raw.skipped] == [3]


@pytest.mark.parametrize("name, text", [
    ("d.tsv", "text\tlabel\rgood\t1\rbad\t0\r"),
    ("d.csv", "text,label\rgood,1\rbad,0\r"),
    ("d.jsonl", '{"text": "good", "label": 1}\r{"text": "bad", "label": 0}\r'),
])
def test_classic_mac_line_endings_are_named(tmp_path, name, text):
    path = write_text(tmp_path / name, text)
    assert error_of(path) == (f"{path}: lines end in a bare carriage return (CR, classic Mac "
                              "OS line endings); convert them to LF or CRLF")


def test_a_byte_order_mark_inside_jsonl_is_named(tmp_path):
    path = write_text(tmp_path / "d.jsonl", json.dumps(ROWS[0]) + "\n\ufeff" + json.dumps(ROWS[1]))
    assert "row 2: malformed JSON (Expecting value; it starts with a byte-order mark" \
        in error_of(path)


def test_malformed_jsonl_on_line_3(tmp_path):
    path = write_text(tmp_path / "d.jsonl", f'{json.dumps(ROWS[0])}\n{json.dumps(ROWS[1])}\n'
                                            '{"text": oops}\n' + json.dumps(ROWS[2]) + "\n")
    message = error_of(path)
    assert f"{path}: row 3: malformed JSON" in message


def test_jsonl_line_that_is_a_list(tmp_path):
    path = write_text(tmp_path / "d.jsonl", f'{json.dumps(ROWS[0])}\n["text", 1]\n')
    assert error_of(path) == f"{path}: row 2: each line must be a JSON object, found a list"


def test_json_that_is_not_a_list(tmp_path):
    path = write_text(tmp_path / "d.json", json.dumps({"rows": ROWS}))
    message = error_of(path)
    assert message.startswith(f"{path}: ")
    assert "must be a list of objects" in message


def test_json_list_with_a_non_object_item(tmp_path):
    path = write_text(tmp_path / "d.json", json.dumps([ROWS[0], ROWS[1], "stray"]))
    assert error_of(path) == f"{path}: row 3: list item is not an object, found a string"


def test_csv_ragged_rows(tmp_path):
    path = write_text(tmp_path / "d.csv", "text,label\nfine,1\ntoo,many,fields\nok,0\n")
    assert error_of(path) == f"{path}: row 3: expected 2 fields, found 3"

    path = write_text(tmp_path / "short.csv", "text,label\nfine,1\nok,0\nshort\n")
    assert error_of(path) == f"{path}: row 4: expected 2 fields, found 1"


def test_semicolon_separated_csv_is_named_at_its_header(tmp_path):
    path = write_text(tmp_path / "d.csv", "text;label\nfine;1\nhello, world;0\n")
    assert error_of(path) == (f"{path}: row 1: the header is one column 'text;label': the file "
                              "looks ';'-separated; CSV is read with ',' (re-save it "
                              "comma-separated, or tab-separated as .tsv)")


def test_tsv_wrong_field_count(tmp_path):
    path = write_text(tmp_path / "d.tsv", "text\tlabel\nfine\t1\n\nno label here\n")
    assert error_of(path) == f"{path}: row 4: expected 2 tab-separated fields, found 1"


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + json.dumps(ROWS[1]).encode()
                     + b'\n{"text": "bad \xff byte", "label": 1}\n')
    message = error_of(str(path))
    assert message.startswith(f"{path}: row 3: invalid UTF-8 at byte ")


@pytest.mark.parametrize("name, text", [("d.jsonl", ""), ("blank.jsonl", "\n \n"),
                                        ("d.json", "[]"), ("d.csv", ""),
                                        ("header.csv", "text,label\n"), ("d.tsv", ""),
                                        ("header.tsv", "text\tlabel\n")])
def test_empty_inputs_have_no_rows(tmp_path, name, text):
    path = write_text(tmp_path / name, text)
    assert error_of(path) == f"{path}: dataset has no rows"


def test_missing_path(tmp_path):
    path = str(tmp_path / "nope.jsonl")
    assert error_of(path) == f"{path}: no such file or directory"


def test_unknown_extension(tmp_path):
    path = write_text(tmp_path / "d.xlsx", "text,label\n")
    message = error_of(path)
    assert message.startswith(f"{path}: unknown file extension '.xlsx'")
    assert ".jsonl" in message and ".parquet" in message


def test_directory_that_is_not_a_saved_dataset(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "d.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    message = error_of(str(folder))
    assert message.startswith(f"{folder}: directory is not a dataset saved with")


def test_unreadable_parquet(tmp_path):
    path = write_text(tmp_path / "d.parquet", "not parquet at all")
    assert error_of(path).startswith(f"{path}: cannot read Parquet")


# ---------------------------------------------------------------------------- hub


@pytest.mark.parametrize("source, name", [("hf://org/name", "org/name"), ("hf://name", "name"),
                                          ("hf://org/name/", "org/name")])
def test_hub_dataset_name(source, name):
    assert hub_dataset_name(source) == name
    assert detect_format(source) == "hf-hub"


@pytest.mark.parametrize("source", ["hf://", "hf://a/b/c"])
def test_hub_dataset_name_rejects_malformed_ids(source):
    with pytest.raises(AuditInputError, match="expected hf://org/name"):
        hub_dataset_name(source)


def test_hub_dataset_offline_raises_naming_the_dataset(monkeypatch):
    """Tested up to the network call: offline, the load fails with a clear message."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # the variables are read when the libraries are imported, which already happened
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)

    with pytest.raises(AuditInputError) as info:
        load_raw("hf://trainguard-test/does-not-exist")

    message = str(info.value)
    assert message.startswith("hf://trainguard-test/does-not-exist: ")
    assert "cannot load hub dataset 'trainguard-test/does-not-exist'" in message
