"""Input integrity (issue 18): the fingerprint is of the bytes audited, non-regular files are
refused, streamed splits are copied only from an unchanged file, saved datasets cannot reach
outside their directory, `hf://NAME` never reads local files, and JSON that readers disagree
on (repeated keys) or that cannot be audited (deep nesting, lone surrogates) is a bad row."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from auditors import policy
from auditors.errors import AuditInputError
from auditors.ingest import MAX_JSON_DEPTH, load_raw
from auditors.ingest import load_table
from tests.auditors.test_hostile_inputs import ROWS, error_of, write
from tests.summaries import audit_summary

LINES = [json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS]
DEEP = "[" * 100_000 + "]" * 100_000


def sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------- 1. fingerprint = audited bytes


@pytest.mark.parametrize("name, options", [("d.jsonl", {}), ("d.json", {}), ("d.csv", {}),
                                           ("d.tsv", {}), ("d.parquet", {}),
                                           ("d.jsonl", {"stream": True}),
                                           ("d.parquet", {"stream": True}),
                                           ("d.csv", {"via_datasets": True})])
def test_the_fingerprint_is_the_sha256_of_the_bytes_read(tmp_path, name, options):
    path = tmp_path / name
    if name.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif name.endswith(".json"):
        path.write_text(json.dumps(ROWS, ensure_ascii=False), encoding="utf-8")
    elif name.endswith(".jsonl"):
        path.write_text("".join(LINES), encoding="utf-8")
    else:
        sep = "\t" if name.endswith(".tsv") else ","
        path.write_text(f"text{sep}label\n" + "".join(f"row {i}{sep}{i % 2}\n" for i in range(3)),
                        encoding="utf-8")
    expected = sha256(path)
    loaded = load_table(str(path), **options)
    path.write_bytes(b"replaced after the read")  # later reads must not change the record
    assert loaded.raw.fingerprint == expected


def test_the_intake_records_the_audited_fingerprint_not_the_file_now(tmp_path):
    """The intake record takes the fingerprint from the audit's summary: a file replaced
    after the audit read it cannot lend the record its hash."""
    path = tmp_path / "d.jsonl"
    path.write_text("".join(LINES), encoding="utf-8")
    loaded = load_table(str(path))
    audited = loaded.raw.fingerprint
    path.write_text("".join(LINES[:1]), encoding="utf-8")  # swapped after the read
    summary = audit_summary(fingerprint=audited, schema="classification", flagged=0, rows=3)
    record, _ = policy.intake_decision(tmp_path / "store", str(path), loaded.table,
                                       loaded.raw.columns, summary, policy.IntakePolicy(),
                                       policy.Provenance("vendor"))
    assert record["fingerprint"] == audited != sha256(path)


def test_a_saved_dataset_fingerprint_covers_the_files_read(tmp_path):
    path = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    before = load_raw(str(path)).fingerprint
    (path / "notes.txt").write_text("not part of the dataset")
    assert load_raw(str(path)).fingerprint == before  # only what is read counts
    arrow = next(path.glob("*.arrow"))
    datasets.Dataset.from_list(ROWS[:2]).save_to_disk(str(tmp_path / "other"))
    arrow.write_bytes(next((tmp_path / "other").glob("*.arrow")).read_bytes())
    assert load_raw(str(path)).fingerprint != before


@pytest.fixture
def fifo(tmp_path):
    """A FIFO with a writer waiting to send valid rows (as a `cat file |` would); the writer
    is released at the end whether or not anything read the FIFO."""
    path = tmp_path / "pipe.jsonl"
    os.mkfifo(path)

    def send():
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("".join(LINES))

    writer = threading.Thread(target=send, daemon=True)
    writer.start()
    yield path
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets a blocked writer finish
    writer.join(timeout=5)
    os.close(reader)


def test_a_fifo_is_refused_not_read(fifo):
    assert error_of(fifo) == f"{fifo}: not a regular file (a FIFO, device or socket): its " \
        "bytes cannot be fingerprinted and audited as one; copy it to a file first"


# ----------------------------------------------------- 2. streamed splits: copied from what?


def _streamed(tmp_path) -> tuple[Path, object]:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(LINES), encoding="utf-8")
    return path, load_table(str(path), stream=True).raw


def test_streamed_splits_are_copied_from_an_unchanged_file(tmp_path):
    path, raw = _streamed(tmp_path)
    out = write(tmp_path / "out", raw, flagged={1})
    assert (out / "clean.jsonl").read_text(encoding="utf-8") == LINES[0] + LINES[2]


def test_a_streamed_file_edited_in_place_after_the_read_is_an_error(tmp_path):
    path, raw = _streamed(tmp_path)
    data = path.read_bytes()
    with open(path, "r+b") as handle:  # same length, same place: offsets still line up
        handle.write(data.replace(b"delight", b"DELIGHT"))
    with pytest.raises(AuditInputError, match="d.jsonl: the file changed after it was read"):
        write(tmp_path / "out", raw, flagged=set())
    assert not (tmp_path / "out").exists()  # nothing that looks complete


# ----------------------------------------------------- 4. saved datasets stay inside


def _saved(tmp_path) -> Path:
    path = tmp_path / "saved"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    return path


def test_a_saved_dataset_reads_like_load_from_disk(tmp_path):
    path = _saved(tmp_path)
    raw = load_raw(str(path))
    table = datasets.load_from_disk(str(path)).data.table
    assert raw.records == table.to_pylist()
    assert raw.arrow_schema.equals(table.schema, check_metadata=True)


def test_a_data_file_outside_the_saved_dataset_is_refused(tmp_path):
    path = _saved(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    arrow = next(path.glob("*.arrow"))
    arrow.rename(elsewhere / arrow.name)
    state = json.loads((path / "state.json").read_text())
    state["_data_files"] = [{"filename": f"../elsewhere/{arrow.name}"}]
    (path / "state.json").write_text(json.dumps(state))
    message = error_of(path)
    assert f"'../elsewhere/{arrow.name}' resolves outside the dataset directory" in message


def test_a_data_file_symlinked_out_of_the_saved_dataset_is_refused(tmp_path):
    path = _saved(tmp_path)
    arrow = next(path.glob("*.arrow"))
    outside = tmp_path / "outside.arrow"
    arrow.rename(outside)
    arrow.symlink_to(outside)
    assert "resolves outside the dataset directory" in error_of(path)


def test_a_split_outside_the_saved_dataset_dict_is_refused(tmp_path):
    path = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(path))
    shutil.copytree(path / "train", tmp_path / "train")  # a split next to the dataset
    (path / "dataset_dict.json").write_text(json.dumps({"splits": ["../train"]}))
    assert "'../train/state.json' resolves outside" in error_of(path, split="../train")


# ----------------------------------------------------- 6. hf://NAME is a hub id only


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub access (the libraries read these when imported, so they are patched too), and
    an empty datasets cache: offline, datasets falls back to a cached dataset of the same
    name, which a local load by that name (the bug) would have left there."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)


def test_a_hub_id_never_loads_a_local_directory_of_that_name(tmp_path, monkeypatch, offline):
    monkeypatch.chdir(tmp_path)
    Path("vendor").mkdir()
    Path("vendor/d.jsonl").write_text("".join(LINES), encoding="utf-8")
    message = error_of("hf://vendor")
    assert message.startswith("hf://vendor: cannot load hub dataset 'vendor'")


def test_a_hub_id_that_names_a_local_file_builder_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("d.jsonl").write_text("".join(LINES), encoding="utf-8")
    assert error_of("hf://json") == "hf://json: 'json' is a datasets builder, not a hub dataset"


# ------------------------------------------- 7, 10. JSON that cannot be audited as one row


BAD_JSON_VALUES = [  # (record text, field, reason)
    ('{"text": "a", "label": 1, "label": 0}', "label", "duplicate key 'label'"),
    ('{"messages": [{"role": "user", "role": "assistant", "content": "hi"}]}', "messages",
     "duplicate key 'role'"),
    ('{"text": "\\ud800 alone", "label": 1}', "text", "lone surrogate \\ud800 (not valid Unicode)"),
    ('{"text": "a", "label": ' + DEEP + '}', None, f"JSON nested more than {MAX_JSON_DEPTH} "
     "levels deep"),
    ('{"text": "a", "label": ' + "[" * 150 + "]" * 150 + '}', "label",
     f"JSON nested more than {MAX_JSON_DEPTH} levels deep"),
]


@pytest.mark.parametrize("bad, field, reason", BAD_JSON_VALUES)
def test_bad_json_values_in_jsonl_are_bad_rows(tmp_path, bad, field, reason):
    path = tmp_path / "d.jsonl"
    path.write_text(LINES[0] + bad + "\n" + LINES[1], encoding="utf-8")
    where = f"field '{field}': " if field else ""
    assert error_of(path) == f"{path}: row 2: {where}{reason}"

    loaded = load_table(str(path), on_bad_row="skip")
    assert [(s.row, s.field, s.reason, s.content) for s in loaded.raw.skipped] == \
        [(2, field, reason, bad + "\n")]
    assert len(loaded.table) == 2
    out = write(tmp_path / "out", loaded.raw, flagged=set())  # skipped.jsonl is writable
    assert json.loads((out / "skipped.jsonl").read_text(encoding="utf-8"))["content"] == bad + "\n"


@pytest.mark.parametrize("bad, field, reason", BAD_JSON_VALUES)
def test_bad_json_values_in_a_json_list_are_bad_rows(tmp_path, bad, field, reason):
    path = tmp_path / "d.json"
    path.write_text(f"[{json.dumps(ROWS[0])},\n {bad},\n {json.dumps(ROWS[1])}]",
                    encoding="utf-8")
    where = f"field '{field}': " if field else ""
    assert error_of(path) == f"{path}: row 2: {where}{reason}"

    loaded = load_table(str(path), on_bad_row="skip")
    assert [(s.row, s.field, s.reason, s.content) for s in loaded.raw.skipped] == \
        [(2, field, reason, bad)]  # as written: the value may not be writable as UTF-8
    assert [r["text"] for r in loaded.raw.records] == [ROWS[0]["text"], ROWS[1]["text"]]
    write(tmp_path / "out", loaded.raw, flagged=set())


def test_a_json_file_that_is_one_deep_value_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_text("{" + '"a": {' * 50_000 + "}" * 50_001)
    assert error_of(path) == f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep"
    path.write_text(DEEP)  # a list whose one item is too deep: a bad row
    assert error_of(path) == f"{path}: row 1: JSON nested more than {MAX_JSON_DEPTH} levels deep"


def test_escaped_surrogate_pairs_and_repeated_keys_in_other_objects_are_fine(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "smile \\ud83d\\ude00", "label": 1}\n'
                    '{"text": "a", "label": 0, "meta": [{"k": 1}, {"k": 2}]}\n')
    raw = load_raw(str(path))
    assert [r["text"] for r in raw.records] == ["smile \U0001F600", "a"]


# ------------------------------------------------------ 9. --via-datasets TSV has no quoting


def test_via_datasets_tsv_reads_quotes_as_text_one_row_per_line(tmp_path):
    lines = [f"review {i}\t{i % 2}\n" for i in range(200)]
    lines[10] = '"an opening quote\t1\n'
    lines[20] = 'and a closing one"\t0\n'
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\n" + "".join(lines), encoding="utf-8")
    via = load_raw(str(path), via_datasets=True)
    assert len(via) == len(load_raw(str(path))) == 200
    assert via.records[10]["text"] == '"an opening quote'
