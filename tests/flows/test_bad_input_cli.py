"""Every kind of bad input, through the `trainguard audit` command: exit code 2, one line on
stderr naming the file, row and field, no traceback, and no output that looks complete.
`--on-bad-row skip` instead sets bad rows aside and lists them."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from flows.cli import app

GOOD = '{"text": "a fine film", "label": 1}\n'


@dataclass
class Case:
    """`files`: name -> bytes, or ("symlink", target), or ("dataset",) for a saved dataset
    directory, or ("dir",). `{tmp}` in `args` is the test's folder; `source` is audited."""

    id: str
    source: str
    expected: str
    files: dict = field(default_factory=dict)
    args: tuple = ()
    out: str = "out"


def utf8(text: str) -> bytes:
    return text.encode("utf-8")


def parquet_bytes() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{"text": "a", "label": 1}] * 50), sink)
    return sink.getvalue().to_pybytes()


CASES = [
    # structure
    Case("jsonl-malformed-line", "d.jsonl", "d.jsonl: row 2: malformed JSON (Expecting value)",
         {"d.jsonl": utf8(GOOD + '{"text": oops}\n' + GOOD)}),
    Case("jsonl-line-not-object", "d.jsonl", "row 2: each line must be a JSON object, found a list",
         {"d.jsonl": utf8(GOOD + "[1, 2]\n")}),
    Case("jsonl-truncated", "d.jsonl", "row 2: malformed JSON (Unterminated string",
         {"d.jsonl": utf8(GOOD + '{"text": "cut off')}),
    Case("json-truncated", "d.json", "d.json: row 1: malformed JSON",
         {"d.json": utf8('[{"text": "a", "label": 1}, {"text": "b"')}),
    Case("json-not-a-list", "d.json", "must be a list of objects, found an object with keys ['data']",
         {"d.json": utf8('{"data": [{"text": "a", "label": 1}]}')}),
    Case("json-item-not-object", "d.json", "row 2: list item is not an object, found a number",
         {"d.json": utf8('[{"text": "a", "label": 1}, 7]')}),
    Case("csv-ragged-row", "d.csv", "d.csv: row 3: expected 2 fields, found 3",
         {"d.csv": utf8("text,label\na,1\nb,0,extra\n")}),
    Case("csv-unterminated-quote", "d.csv", "row 3: a quoted field opened here is never closed",
         {"d.csv": utf8('text,label\na,1\n"newline\ninside, never closed,0\n')}),
    Case("csv-stray-quote", "d.csv", "row 2: malformed CSV (',' expected after '\"')",
         {"d.csv": utf8('text,label\n"quoted"tail,1\n')}),
    Case("csv-duplicate-header", "d.csv", "row 1: duplicate column name(s) ['text']",
         {"d.csv": utf8("text,text,label\na,b,1\n")}),
    Case("tsv-wrong-field-count", "d.tsv", "d.tsv: row 3: expected 2 tab-separated fields, found 1",
         {"d.tsv": utf8("text\tlabel\na\t1\nno tab here\n")}),
    Case("tsv-headerless-three-columns", "d.tsv",
         "cannot detect the schema from columns ['column_0', 'column_1', 'column_2']",
         {"d.tsv": utf8("a b\t1\t2\nc d\t0\t3\n")}),
    Case("parquet-truncated", "d.parquet", "d.parquet: cannot read Parquet",
         {"d.parquet": parquet_bytes()[:-64]}),
    # encodings
    Case("invalid-utf8", "d.jsonl", "row 2: invalid UTF-8 at byte 50",
         {"d.jsonl": utf8(GOOD) + b'{"text": "bad \xff", "label": 1}\n'}),
    Case("latin1", "d.csv", "row 2: invalid UTF-8 at byte 14; convert the file to UTF-8 (for "
         "Latin-1: iconv -f latin1 -t utf-8)", {"d.csv": "text,label\ncaf\u00e9,1\n".encode("latin-1")}),
    Case("utf16-without-bom", "d.jsonl", "row 1: NUL character: a binary file, or UTF-16 without "
         "a byte-order mark", {"d.jsonl": GOOD.encode("utf-16-le")}),
    Case("utf16-truncated", "d.jsonl", "row 1: invalid UTF-16 at byte",
         {"d.jsonl": codecs.BOM_UTF16_LE + GOOD.encode("utf-16-le")[:-1]}),
    # empty
    Case("empty-file", "d.jsonl", "d.jsonl: dataset has no rows", {"d.jsonl": b""}),
    Case("blank-lines-only", "d.jsonl", "d.jsonl: dataset has no rows", {"d.jsonl": b"\n  \n\n"}),
    Case("csv-header-only", "d.csv", "d.csv: dataset has no rows", {"d.csv": b"text,label\n"}),
    Case("json-empty-list", "d.json", "d.json: dataset has no rows", {"d.json": b"[]"}),
    # values
    Case("nan-label", "d.jsonl", "row 2: field 'label': missing value",
         {"d.jsonl": utf8(GOOD + '{"text": "b", "label": NaN}\n')}),
    Case("null-label", "d.jsonl", "row 3: field 'label': missing value",
         {"d.jsonl": utf8(GOOD + "\n" + '{"text": "b", "label": null}\n')}),
    Case("empty-label", "d.tsv", "d.tsv: row 3: field 'label': empty label",
         {"d.tsv": utf8("text\tlabel\na\t1\nb\t \n")}),
    Case("missing-text", "d.jsonl", "row 2: field 'text': missing value",
         {"d.jsonl": utf8(GOOD + '{"label": 0, "text": null}\n')}),
    Case("nested-field", "d.jsonl", "row 2: field 'text': expected text, found dict",
         {"d.jsonl": utf8(GOOD + '{"text": {"en": "hi"}, "label": 0}\n')}),
    Case("chat-message-without-role", "d.jsonl", "row 1: field 'messages': each message needs "
         "'role' and 'content'", {"d.jsonl": utf8('{"messages": [{"content": "hi"}]}\n')}),
    # columns and schemas
    Case("unknown-columns", "d.jsonl", "cannot detect the schema from columns ['foo', 'bar']",
         {"d.jsonl": utf8('{"foo": "a", "bar": 1}\n')}),
    Case("misnamed-columns", "d.csv", "(did you mean 'Text' for 'text', 'lable' for 'label'?)",
         {"d.csv": utf8("Text,lable\na,1\n")}),
    Case("text-col-not-found", "d.csv", "field 'sentense': column 'sentense' given by --text-col "
         "not found (did you mean 'sentence'?)", {"d.csv": utf8("sentence,label\na,1\n")},
         ("--text-col", "sentense")),
    Case("unknown-schema-name", "d.jsonl", "unknown schema 'sft'", {"d.jsonl": utf8(GOOD)},
         ("--schema", "sft")),
    Case("forced-schema-missing-column", "d.jsonl", "field 'output': schema 'instruction' needs a "
         "column 'output' (did you mean 'outputs'?)",
         {"d.jsonl": utf8('{"instruction": "a", "outputs": "b"}\n')}, ("--schema", "instruction")),
    # paths
    Case("missing-file", "nope.jsonl", "nope.jsonl: no such file or directory"),
    Case("directory-without-data", "folder", "folder: directory is not a dataset saved with "
         "datasets.save_to_disk", {"folder": ("dir",), "folder/d.jsonl": utf8(GOOD)}),
    Case("unknown-extension", "d.xlsx", "unknown file extension '.xlsx'", {"d.xlsx": b"PK"}),
    Case("symlink-loop", "loop.jsonl", "loop.jsonl: symlink loop",
         {"loop.jsonl": ("symlink", "loop.jsonl")}),
    Case("broken-symlink", "d.jsonl", "d.jsonl: broken symbolic link to",
         {"d.jsonl": ("symlink", "gone.jsonl")}),
    Case("unreadable-file", "d.jsonl", "d.jsonl: cannot read file (Input/output error)",
         {"d.jsonl": ("symlink", "/proc/self/mem")}),
    Case("malformed-hub-id", "hf://a/b/c", "hf://a/b/c: expected hf://org/name"),
    # output locations
    Case("out-inside-input-dataset", "saved", "is inside the input dataset directory",
         {"saved": ("dataset",)}, out="saved/audit"),
    Case("out-would-overwrite-input", "data/clean.jsonl", "would overwrite the input file",
         {"data": ("dir",), "data/clean.jsonl": utf8(GOOD)}, out="data"),
    Case("out-is-a-file", "d.jsonl", "exists and is not a directory",
         {"d.jsonl": utf8(GOOD), "taken": b"x"}, out="taken"),
    # recovery that leaves nothing to audit
    Case("skip-leaves-no-rows", "d.jsonl", "no rows left after skipping 2 bad row(s) (first: "
         "row 1: malformed JSON", {"d.jsonl": b"{\n[]\n"}, ("--on-bad-row", "skip")),
]


def make_files(folder: Path, files: dict) -> None:
    for name, content in files.items():
        path = folder / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content[0] == "symlink":
            path.symlink_to(content[1])
        elif content[0] == "dir":
            path.mkdir()
        else:  # a save_to_disk dataset
            import datasets

            datasets.Dataset.from_list([{"text": "a", "label": 1}]).save_to_disk(str(path))


@pytest.fixture(autouse=True)
def _quiet_prefect(monkeypatch):
    """The command sets this default for itself; keep it from leaking into other tests."""
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def test_the_table_covers_every_case_once():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) == 43


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_exits_2_with_one_located_line(case, tmp_path, monkeypatch, prefect_harness):
    monkeypatch.chdir(tmp_path)  # messages name the paths as given
    make_files(tmp_path, case.files)
    before = {p for p in tmp_path.rglob("*")}

    result = CliRunner().invoke(app, ["audit", case.source, "--out", case.out, *case.args])

    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ")
    assert case.expected in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("summary.json"))
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, nothing removed


def test_an_unknown_bad_row_policy_is_a_usage_error(tmp_path):
    (tmp_path / "d.jsonl").write_text(GOOD)
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "d.jsonl"), "--out",
                                      str(tmp_path / "out"), "--on-bad-row", "ignore"])
    assert result.exit_code == 2
    assert "Invalid value for '--on-bad-row'" in result.stderr
    assert "'ignore' is not one of" in " ".join(result.stderr.split())  # wrapped in a box


def test_skip_audits_the_good_rows_and_lists_the_bad_ones(tmp_path, monkeypatch, prefect_harness):
    monkeypatch.chdir(tmp_path)
    good = [json.dumps({"text": f"review number {i} of a film", "label": i % 2}) + "\n"
            for i in range(24)]
    bad = {3: '{"text": "cut\n', 9: '{"text": "no label", "label": null}\n', 15: "[1]\n"}
    lines = good[:]
    for line_no, line in sorted(bad.items()):
        lines.insert(line_no - 1, line)
    Path("d.jsonl").write_text("".join(lines), encoding="utf-8")

    result = CliRunner().invoke(app, ["audit", "d.jsonl", "--out", "out", "--on-bad-row",
                                      "skip", "--detectors", "outlier",
                                      "--max-flagged-fraction", "1"])

    assert result.exit_code == 0, result.output
    assert "warning: 3 bad row(s) skipped, listed in out/skipped.jsonl" in result.stderr
    summary = json.loads(Path("out/summary.json").read_text())
    assert (summary["rows"], summary["skipped_rows"]) == (24, 3)
    assert summary["outputs"]["skipped"] == "skipped.jsonl"
    assert "quarantine.jsonl, skipped.jsonl, report.html" in " ".join(result.stdout.split())
    skipped = [json.loads(line) for line in Path("out/skipped.jsonl").read_text().splitlines()]
    assert [(s["row"], s["field"], s["content"]) for s in skipped] == \
        [(3, None, bad[3]), (9, "label", bad[9]), (15, None, bad[15])]
    assert [s["reason"] for s in skipped] == [
        "malformed JSON (Invalid control character at)",
        "missing value", "each line must be a JSON object, found a list"]
    # every input line is in exactly one of clean, quarantine and skipped, in order
    rows = pd.read_parquet("out/rows.parquet")
    clean = Path("out/clean.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    held = Path("out/quarantine.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    flagged = rows["flagged"].to_numpy()
    assert clean == [line for line, f in zip(good, flagged) if not f]
    assert held == [line for line, f in zip(good, flagged) if f]
