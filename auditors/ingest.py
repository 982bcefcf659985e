"""Read a dataset in any supported format into records, keeping what is needed to write
the clean and quarantine splits back in the same format.

Line-based formats (JSONL, TSV, CSV) keep each row's original text so that the split
outputs are byte-for-byte copies of the input rows, in the input's encoding.

A bad row (malformed line, wrong field count, an item that is not an object, a duplicate
key, a lone surrogate, nesting too deep) stops the audit with a located error, or with
`on_bad_row="skip"` is set aside in `RawDataset.skipped` with its row number, reason and
content.

Each file is read once, and `RawDataset.fingerprint` is the sha256 of the bytes read: the
fingerprint is of what was audited. Only regular files are read (a FIFO or device could not
be read twice or fingerprinted).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import hashlib
import json
import os
import re
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from auditors.config import BAD_ROW_POLICIES, DEFAULT_BATCH_ROWS
from auditors.errors import AuditInputError

if TYPE_CHECKING:
    import pandas as pd

    from auditors.features.ngrams import NgramStats
    from auditors.schema import SchemaChoice

HUB_PREFIX = "hf://"
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf-disk", "hf-hub")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
               ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
HEADERLESS_COLUMNS = ["text", "label"]
# `datasets.load_dataset` builder name for each local file format.
_DATASETS_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv",
                      "parquet": "parquet"}
MAX_JSON_DEPTH = 100  # deeper JSON values are bad rows (json itself fails near 1,000)
# Byte-order marks, UTF-32 first: its little-endian mark starts with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


@dataclass(frozen=True)
class TextEncoding:
    """How a text file was encoded, so the splits can be written the same way."""

    codec: str = "utf-8"
    bom: bytes = b""


@dataclass(frozen=True)
class FileSnapshot:
    """A file as it was read: size and mtime when it was opened, sha256 of the bytes read."""

    size: int
    mtime_ns: int
    sha256: str

    @property
    def fingerprint(self) -> str:
        return f"sha256:{self.sha256}"

    def check_unchanged(self, path: str) -> None:
        """Raise unless `path` still holds exactly the bytes that were read."""
        with _open_regular(path) as handle:
            now = os.fstat(handle.fileno())
            same = ((now.st_size, now.st_mtime_ns) == (self.size, self.mtime_ns)
                    and _hash_blocks(handle).hexdigest() == self.sha256)
        if not same:
            raise AuditInputError("the file changed after it was read and audited; audit a "
                                  "private copy that nothing else writes to", path=path)


@dataclass
class SkippedRow:
    """A row left out with `on_bad_row="skip"`: where it was, why, and what it held."""

    row: int  # 1-based line (jsonl, tsv, csv) or record
    reason: str
    content: object  # the row's original text (line formats) or its value
    field: str | None = None

    def as_dict(self) -> dict:
        return {"row": self.row, "field": self.field, "reason": self.reason,
                "content": self.content}


@dataclass
class RawDataset:
    """Input rows as Python dicts, in input order, plus how to write them back. A whole-file
    read holds lists; a streamed read holds `StreamedRows`, sequences that read each row back
    from the file when asked (the splits are written from them), so a million rows are
    never all in memory."""

    records: Sequence[dict]
    fmt: str
    source: str
    raw_lines: Sequence[str] | None = None  # original text per record (jsonl, tsv, csv)
    header_line: str | None = None  # tsv/csv header, written back unchanged
    columns: list[str] = field(default_factory=list)
    arrow_schema: pa.Schema | None = None  # parquet and datasets inputs
    # a whole-file Arrow read: the splits are taken from it, value for value (Python values
    # lose a time64's nanoseconds, and some cannot be Python values at all)
    arrow_table: pa.Table | None = None
    row_numbers: list[int] | None = None  # 1-based line or record of each record
    encoding: TextEncoding = field(default_factory=TextEncoding)
    skipped: list[SkippedRow] = field(default_factory=list)
    offsets: list[int] | None = None  # streamed batches: where each record is in the file
    fingerprint: str = ""  # `sha256:` of the bytes read (a directory: of its files read)
    snapshot: FileSnapshot | None = None  # streamed: the file the splits are copied from

    def check_unchanged(self) -> None:
        """Streamed splits are copied from the file again: it must hold what was audited."""
        if self.snapshot is not None:
            self.snapshot.check_unchanged(self.source)

    def __len__(self) -> int:
        return len(self.records)

    def row_number(self, index: int) -> int:
        """The 1-based line (line formats) or record number of record `index`."""
        return self.row_numbers[index] if self.row_numbers is not None else index + 1

    def skip(self, reasons: dict[int, AuditInputError]) -> None:
        """Move the records at these indices to `skipped`, keeping everything aligned."""
        if not reasons:
            return
        for index, error in sorted(reasons.items()):
            content = self.raw_lines[index] if self.raw_lines is not None else self.records[index]
            self.skipped.append(SkippedRow(self.row_number(index), error.message, content,
                                           error.field))
        self.skipped.sort(key=lambda s: s.row)
        keep = [i for i in range(len(self.records)) if i not in reasons]
        self.records = [self.records[i] for i in keep]
        if self.raw_lines is not None:
            self.raw_lines = [self.raw_lines[i] for i in keep]
        self.row_numbers = [self.row_number(i) for i in keep]


class BadRows:
    """Applies the `on_bad_row` policy: raise the row's error, or set the row aside."""

    def __init__(self, path: str, policy: str = "fail"):
        if policy not in BAD_ROW_POLICIES:
            raise AuditInputError(f"unknown --on-bad-row '{policy}' (one of "
                                  f"{', '.join(BAD_ROW_POLICIES)})", path=path)
        self.path = path
        self.policy = policy
        self.skipped: list[SkippedRow] = []

    def __call__(self, message: str, row: int, content: object, field: str | None = None) -> None:
        if self.policy == "fail":
            raise AuditInputError(message, path=self.path, row=row, field=field)
        self.skipped.append(SkippedRow(row, message, content, field))


def detect_format(source: str) -> str:
    """Name the input format from the path: extension, or a `save_to_disk` directory."""
    if source.startswith(HUB_PREFIX):
        return "hf-hub"
    path = Path(source)
    _check_readable(path, source)
    if not path.is_dir() and not path.is_file():
        raise AuditInputError(NOT_REGULAR, path=source)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return "hf-disk"
        raise AuditInputError("directory is not a dataset saved with datasets.save_to_disk "
                              "(no dataset_info.json or dataset_dict.json)", path=source)
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(_EXTENSIONS))
        raise AuditInputError(f"unknown file extension '{path.suffix}' (expected one of {known})",
                              path=source)
    return fmt


NOT_REGULAR = ("not a regular file (a FIFO, device or socket): its bytes cannot be "
               "fingerprinted and audited as one; copy it to a file first")


def _check_readable(path: Path, source: str) -> None:
    """Missing paths, dangling links and symlink loops, each named for what it is."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AuditInputError("symlink loop (too many levels of symbolic links)",
                                  path=source) from None
        if path.is_symlink():
            raise AuditInputError(f"broken symbolic link to '{os.readlink(path)}'",
                                  path=source) from None
        if exc.errno == errno.ENOENT:
            raise AuditInputError("no such file or directory", path=source) from None
        raise AuditInputError(f"cannot access ({exc.strerror})", path=source) from None


def check_source(source: str, *, via_datasets: bool = False,
                 stream: bool | None = None) -> str:
    """What can be known of `source` without reading its rows, for commands to refuse a
    mistake at once: the path exists and is a dataset this reads (`detect_format`), a file
    can be opened for reading, and `stream` suits it. Returns the format; a hub name is
    not looked up here."""
    fmt = detect_format(source)
    if fmt not in ("hf-hub", "hf-disk"):
        _open_regular(source).close()
    should_stream(source, via_datasets=via_datasets, stream=stream)
    return fmt


def load_raw(source: str, *, split: str | None = None, via_datasets: bool = False,
             on_bad_row: str = "fail") -> RawDataset:
    """Read `source` (a path or `hf://org/name`) into a RawDataset.

    `via_datasets=True` reads local files through `datasets.load_dataset` instead of the
    built-in readers (row-exact error messages and `on_bad_row="skip"` are only available
    from the built-in ones).
    """
    fmt = detect_format(source)
    bad_rows = BadRows(source, on_bad_row)
    if fmt == "hf-hub":
        raw = _read_hub(source, split)
        raw.fingerprint = f"name:{source}"  # no local bytes
    elif fmt == "hf-disk":
        raw = _read_saved_dataset(source, split)
    else:
        data, snapshot = _read_file(source)  # the only read: what is parsed is what is hashed
        if via_datasets:
            raw = _read_with_load_dataset(source, data, fmt)
        else:
            readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv,
                       "tsv": _read_tsv, "parquet": _read_parquet}
            raw = readers[fmt](source, data, bad_rows)
        raw.fingerprint = snapshot.fingerprint
    raw.skipped = bad_rows.skipped
    if not raw.records:
        raise AuditInputError(no_rows_message(raw.skipped), path=source)
    return raw


def check_split_applies(source: str, split: str | None) -> None:
    """`--split` names a split of a hub dataset or a saved DatasetDict; a file has none, and
    auditing the whole file under a split's name would mislead."""
    fmt = detect_format(source)
    if split is not None and fmt not in ("hf-hub", "hf-disk"):
        raise AuditInputError(f"--split {split}: a {fmt} file has no splits (--split applies "
                              "to a hub dataset or a save_to_disk DatasetDict)", path=source)


def no_rows_message(skipped: list[SkippedRow]) -> str:
    if not skipped:
        return "dataset has no rows"
    first = skipped[0]
    return (f"no rows left after skipping {len(skipped)} bad row(s) (first: row {first.row}: "
            f"{first.reason})")


def _open_regular(path: str | Path):
    """The file open for reading in binary; anything but a regular file is refused (opened
    non-blocking, so a FIFO is refused instead of waiting for a writer)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise AuditInputError(NOT_REGULAR, path=path)
        return os.fdopen(fd, "rb")
    except OSError as exc:  # permissions, I/O errors
        raise AuditInputError(f"cannot read file ({exc.strerror or exc})", path=path) from None


def _read_file(path: str | Path) -> tuple[bytes, FileSnapshot]:
    """The bytes of a regular file, read once, and their snapshot."""
    with _open_regular(path) as handle:
        opened = os.fstat(handle.fileno())
        try:
            data = handle.read()
        except OSError as exc:
            raise AuditInputError(f"cannot read file ({exc.strerror or exc})",
                                  path=path) from None
    return data, FileSnapshot(opened.st_size, opened.st_mtime_ns,
                              hashlib.sha256(data).hexdigest())


def _hash_blocks(handle, digest=None):
    """`digest` (a new sha256 by default) updated with the rest of the file, by blocks."""
    digest = digest or hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest


def _decode(path: str, data: bytes) -> tuple[str, TextEncoding]:
    """Text of a file's bytes: UTF-8, or UTF-8/16/32 with a byte-order mark."""
    codec, bom = next(((c, b) for b, c in _BOMS if data.startswith(b)), ("utf-8", b""))
    try:
        text = data[len(bom):].decode(codec)
    except UnicodeDecodeError as exc:
        start = len(bom) + exc.start
        line = data[len(bom):start].decode(codec, errors="replace").count("\n") + 1
        hint = "" if bom else "; convert the file to UTF-8 (for Latin-1: iconv -f latin1 -t utf-8)"
        raise AuditInputError(f"invalid {codec.upper().removesuffix('-LE').removesuffix('-BE')}"
                              f" at byte {start}{hint}", path=path, row=line) from None
    nul = text.find("\x00")
    if nul >= 0:
        raise AuditInputError("NUL character: a binary file, or UTF-16 without a byte-order "
                              "mark", path=path, row=text.count("\n", 0, nul) + 1)
    return text, TextEncoding(codec, bom)


def _split_lines(text: str) -> list[str]:
    """Lines ending in '\\n' (kept). Not str.splitlines: it also breaks at U+2028, U+0085,
    form feeds etc., which may appear inside JSON strings and text fields."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _lines(path: str, text: str) -> list[str]:
    """The lines of a line-based file (JSONL, CSV, TSV). A file whose lines end in a bare
    CR (classic Mac OS) would read as one line: refused with the reason, not as one
    enormous malformed row."""
    if "\r" in text and "\n" not in text:
        raise AuditInputError("lines end in a bare carriage return (CR, classic Mac OS line "
                              "endings); convert them to LF or CRLF", path=path)
    return _split_lines(text)


def _terminated(line: str) -> str:
    """The last line may lack its newline; a copy in the middle of a split must not."""
    return line if line.endswith("\n") else line + "\n"


class _JsonlRows:
    """The objects of JSONL lines, with each one's line as read (newline-terminated), line
    number and byte offset: what the whole-file and the streamed readers both keep."""

    def __init__(self):
        self.records, self.lines, self.numbers, self.offsets = [], [], [], []

    def add(self, line: str, line_no: int, bad_rows: BadRows, offset: int | None = None):
        record = _jsonl_record(line, line_no, bad_rows)
        if record is not None:
            self.records.append(record)
            self.lines.append(_terminated(line))
            self.numbers.append(line_no)
            self.offsets.append(offset)

    def raw(self, path: str, **extra) -> RawDataset:
        return RawDataset(self.records, "jsonl", path, raw_lines=self.lines,
                          columns=_union_keys(self.records), row_numbers=self.numbers, **extra)


def _read_jsonl(path: str, data: bytes, bad_rows: BadRows) -> RawDataset:
    text, encoding = _decode(path, data)
    rows = _JsonlRows()
    for line_no, line in enumerate(_lines(path, text), start=1):
        rows.add(line, line_no, bad_rows)
    return rows.raw(path, encoding=encoding)


def _jsonl_record(line: str, line_no: int, bad_rows: BadRows) -> dict | None:
    """The object on one JSONL line; None for a blank line or a bad one (reported)."""
    if not line.strip():
        return None
    try:
        record = _loads(line)
    except json.JSONDecodeError as exc:
        # a byte-order mark mid-file: files joined with `cat`, each with its own BOM
        hint = "; it starts with a byte-order mark (files joined?)" \
            if line.startswith("\ufeff") else ""
        bad_rows(f"malformed JSON ({exc.msg}{hint})", line_no, line)
        return None
    except RecursionError:
        bad_rows(TOO_DEEP, line_no, line)
        return None
    if not isinstance(record, dict):
        bad_rows(f"each line must be a JSON object, found {_json_type(record)}", line_no, line)
        return None
    problem = _json_problem(record)
    if problem:
        bad_rows(problem[1], line_no, line, field=problem[0])
        return None
    return record


# Other JSON readers keep the first or refuse a repeated key; json keeps the last. A row that
# readers see differently must not pass an audit, so a repeated key makes a bad row.
class _RepeatedKey(dict):
    """A JSON object with a repeated key (`key`), its last value kept."""

    key: str = ""


def _json_object(pairs: list) -> dict:
    record = dict(pairs)
    if len(record) < len(pairs):
        seen: set = set()
        record = _RepeatedKey(record)
        record.key = next(k for k, _ in pairs if k in seen or seen.add(k))
    return record


class _LongNumber(str):
    """A JSON integer with more digits than Python converts to int (its digits kept)."""


def _json_int(digits: str) -> int | _LongNumber:
    limit = sys.get_int_max_str_digits()
    if limit and len(digits.lstrip("-")) > limit:  # int() would raise a bare ValueError
        return _LongNumber(digits)
    return int(digits)


_DECODER = json.JSONDecoder(object_pairs_hook=_json_object, parse_int=_json_int)
_SURROGATE = re.compile("[\ud800-\udfff]")  # json decodes an escaped pair to one character
TOO_DEEP = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"


_loads = _DECODER.decode


def _json_problem(value, field: str | None = None, depth: int = 0) -> tuple | None:
    """(field, reason) for the first repeated key, lone surrogate (`"\\ud800"`: not text,
    cannot be written as UTF-8) or over-deep nesting in a parsed JSON record; `field` is the
    record's top-level key that holds it."""
    if depth > MAX_JSON_DEPTH:
        return field, TOO_DEEP
    if isinstance(value, _LongNumber):
        return field, (f"an integer of {len(value.lstrip('-'))} digits (more than "
                       f"{sys.get_int_max_str_digits()}, Python's limit)")
    if isinstance(value, str):
        found = _SURROGATE.search(value)
        if found:
            return field, f"lone surrogate \\u{ord(found.group()):04x} (not valid Unicode)"
    elif isinstance(value, dict):
        if isinstance(value, _RepeatedKey):
            return field or value.key, f"duplicate key '{value.key}'"
        for key, item in value.items():
            where = field or key
            problem = _json_problem(key, where, depth + 1) or _json_problem(item, where, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        return next(filter(None, (_json_problem(item, field, depth + 1) for item in value)), None)
    return None


def _read_json(path: str, data: bytes, bad_rows: BadRows) -> RawDataset:
    text, encoding = _decode(path, data)
    try:
        items = _loads(text)
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"malformed JSON ({exc.msg})", path=path, row=exc.lineno) from None
    except RecursionError:  # an item nested too deeply for json: parse the items one by one
        items = [_loads_item(item, path, number)
                 for number, item in enumerate(_list_items(text, path), start=1)]
    if not isinstance(items, list):
        found = (f"an object with keys {list(items)[:5]}" if isinstance(items, dict)
                 else _json_type(items))
        raise AuditInputError(f"a .json dataset must be a list of objects, found {found} "
                              "(use .jsonl for one object per line)", path=path)
    records, numbers, item_texts = [], [], None
    for number, record in enumerate(items, start=1):
        if record is not _UNPARSED and not isinstance(record, dict):
            bad_rows(f"list item is not an object, found {_json_type(record)}", number, record)
            continue
        problem = (None, TOO_DEEP) if record is _UNPARSED else _json_problem(record)
        if problem:  # listed as written: the value may not be writable as UTF-8, or too deep
            item_texts = item_texts or _list_items(text, path)
            bad_rows(problem[1], number, item_texts[number - 1].strip(), field=problem[0])
            continue
        records.append(record)
        numbers.append(number)
    return RawDataset(records, "json", path, columns=_union_keys(records), row_numbers=numbers,
                      encoding=encoding)


_UNPARSED = object()  # a list item nested too deeply for json to parse
_JSON_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.S)


def _loads_item(text: str, path: str, number: int):
    try:
        return _loads(text)
    except RecursionError:
        return _UNPARSED
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"malformed JSON ({exc.msg})", path=path, row=number) from None


def _list_items(text: str, path: str) -> list[str]:
    """The text of each item of a JSON list, split at its top-level commas (for lists whose
    items json cannot parse, or whose skipped items are listed as written)."""
    items, depth, start = [], 0, 0
    for token in _JSON_TOKENS.finditer(text):
        mark = token.group()[0]
        if mark in "[{":
            if depth == 0:
                if mark == "{":
                    break  # an object, not a list
                start = token.end()
            depth += 1
        elif mark in "]}":
            depth -= 1
            if depth == 0:
                items.append(text[start:token.start()])
                return items if "".join(items).strip() else []
        elif depth == 1 and mark == ",":
            items.append(text[start:token.start()])
            start = token.end()
    raise AuditInputError(TOO_DEEP, path=path)  # not a list, or unbalanced


def _check_delimiter(columns: list[str], path: str, line_no: int) -> None:
    """A header of one column holding semicolons is a ';'-separated file (Excel's CSV in
    locales with a decimal comma): read with commas, its rows would split at random."""
    if len(columns) == 1 and ";" in columns[0]:
        raise AuditInputError(
            f"the header is one column '{columns[0]}': the file looks ';'-separated; CSV is "
            "read with ',' (re-save it comma-separated, or tab-separated as .tsv)",
            path=path, row=line_no)


def _json_type(value) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _read_csv(path: str, data: bytes, bad_rows: BadRows) -> RawDataset:
    """RFC 4180 CSV (quoted fields may hold commas, quotes and newlines), read strictly:
    a stray quote or an unterminated field is an error, not a silently merged row."""
    text, encoding = _decode(path, data)
    header, columns = None, []
    records, raw_lines, numbers = [], [], []
    lines = _lines(path, text)
    for line_no, raw_text, fields in _csv_rows(lines):
        if isinstance(fields, csv.Error):
            if header is None:
                raise AuditInputError(f"malformed CSV header ({fields})", path=path, row=line_no)
            _check_not_unterminated(raw_text, line_no, len(lines), path)
            bad_rows(f"malformed CSV ({fields})", line_no, raw_text)
        elif header is None:
            header, columns = raw_text, _header_names(fields, path, line_no)
            _check_delimiter(columns, path, line_no)
        elif len(fields) != len(columns):
            bad_rows(f"expected {len(columns)} fields, found {len(fields)}", line_no, raw_text)
        else:
            records.append(dict(zip(columns, fields)))
            raw_lines.append(_terminated(raw_text))
            numbers.append(line_no)
    return RawDataset(records, "csv", path, raw_lines=raw_lines, header_line=header,
                      columns=columns, row_numbers=numbers, encoding=encoding)


def _check_not_unterminated(raw_text: str, line_no: int, n_lines: int, path: str) -> None:
    """A quote never closed reads every line after it into one field: skipping that "row"
    would silently drop the rest of the file, so it is an error whatever `--on-bad-row`."""
    spans = len(_split_lines(raw_text))
    if spans > 1 and line_no + spans - 1 == n_lines:
        raise AuditInputError(f"a quoted field opened here is never closed, so the remaining "
                              f"{spans} lines would read as one field (cannot be skipped: "
                              "close or remove the quote)", path=path, row=line_no)


def _csv_rows(lines: list[str]):
    """(first line number, original text, fields or csv.Error) per CSV record; blank (or
    whitespace-only) lines are not records."""
    consumed: list[str] = []

    def feed():
        for line in lines:
            consumed.append(line)
            yield line

    # the csv module refuses fields over 128 KiB by default; the file's size is bounded
    # (--max-size) and other formats take long fields, so a long text is not malformed
    csv.field_size_limit(2**31 - 1)
    reader = csv.reader(feed(), strict=True)
    line_no = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            fields = exc
        raw_text = "".join(consumed)
        if fields != [] and raw_text.strip():  # a whitespace-only line is blank, as in TSV
            yield line_no, raw_text, fields
        line_no += len(consumed)
        consumed.clear()


def _header_names(fields: list[str], path: str, line_no: int) -> list[str]:
    names = [name.strip() for name in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AuditInputError(f"duplicate column name(s) {duplicates} in the header",
                              path=path, row=line_no)
    return names


def _read_tsv(path: str, data: bytes, bad_rows: BadRows) -> RawDataset:
    """TSV without quoting, one row per line; fields are stripped of stray spaces
    (the published SST-2/OffensEval files write `text \\t label`)."""
    text, encoding = _decode(path, data)
    lines = _lines(path, text)
    if not lines:
        return RawDataset([], "tsv", path, encoding=encoding)
    first = [name.strip() for name in lines[0].rstrip("\r\n").split("\t")]
    if _looks_like_header(first):
        header, body, first_line = lines[0], lines[1:], 2
        columns = _header_names(first, path, 1)
    else:  # headerless `text \t label` files (the published OffensEval clean splits)
        header, body, first_line = None, lines, 1
        columns = HEADERLESS_COLUMNS if len(first) == 2 else [f"column_{i}" for i in range(len(first))]
    records, raw_lines, numbers = [], [], []
    for line_no, line in enumerate(body, start=first_line):
        if not line.strip() and "\t" not in line:  # a line of tabs is a row of empty fields
            continue
        values = line.rstrip("\r\n").split("\t")
        if len(values) != len(columns):
            bad_rows(f"expected {len(columns)} tab-separated fields, found {len(values)}",
                     line_no, line)
            continue
        records.append({name: value.strip() for name, value in zip(columns, values)})
        raw_lines.append(_terminated(line))
        numbers.append(line_no)
    return RawDataset(records, "tsv", path, raw_lines=raw_lines, header_line=header,
                      columns=columns, row_numbers=numbers, encoding=encoding)


def _looks_like_header(fields: list[str]) -> bool:
    """A header names columns: short, no spaces, not numbers (labels are)."""
    return all(f and len(f) <= 64 and " " not in f and not _is_number(f) for f in fields)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: str, data: bytes, bad_rows: BadRows) -> RawDataset:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise AuditInputError(f"cannot read Parquet ({exc})", path=path) from None
    return _from_arrow(table, "parquet", path)


def _read_saved_dataset(path: str, split: str | None) -> RawDataset:
    """A `save_to_disk` directory, read without `datasets`: `state.json` names the Arrow
    files of the dataset (or of the split in `dataset_dict.json`). Every file is read once
    and its name and bytes hashed for the fingerprint; a file that resolves outside the
    directory (`../elsewhere.arrow`, a symlink out) is refused: it is not part of the input."""
    root = Path(path).resolve()
    digest = hashlib.sha256()

    def read(name: str) -> bytes:
        file = (root / name).resolve()
        if not file.is_relative_to(root):
            raise AuditInputError(f"'{name}' resolves outside the dataset directory",
                                  path=path)
        data, _ = _read_file(file)
        digest.update(f"{name}\0{len(data)}\0".encode("utf-8") + data)
        return data

    try:
        prefix = ""
        if not (root / "state.json").exists() and (root / "dataset_dict.json").exists():
            splits = json.loads(read("dataset_dict.json"))["splits"]
            prefix = f"{_pick_split(splits, split, path)}/"
        state = json.loads(read(prefix + "state.json"))
        if not prefix and split is not None and split != state.get("_split"):
            raise AuditInputError(f"--split {split}: this is one saved Dataset"
                                  f"{_split_name(state)}, not a DatasetDict of splits",
                                  path=path)
        table = pa.concat_tables([pa.ipc.open_stream(read(prefix + entry["filename"])).read_all()
                                  for entry in state["_data_files"]])
    except (ValueError, KeyError, TypeError, pa.ArrowException) as exc:  # corrupt or incomplete
        raise AuditInputError(f"cannot load saved dataset ({_first_line(exc)})",
                              path=path) from None
    raw = _from_arrow(table, "hf-disk", path)
    raw.fingerprint = f"sha256:{digest.hexdigest()}"
    return raw


def _read_with_load_dataset(path: str, data: bytes, fmt: str) -> RawDataset:
    """Through `datasets.load_dataset`, from a private copy of the bytes already read (and
    fingerprinted). TSV is read without quoting, as the built-in reader does: a `"` is text,
    never the start of a field that runs over several lines and merges rows."""
    import datasets

    kwargs = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    encoding = TextEncoding()
    if fmt != "parquet":  # datasets reads UTF-8 only: a UTF-16/32 file is handed over as such
        text, encoding = _decode(path, data)
        data = text.encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="trainguard-") as spool:
        copy = Path(spool) / Path(path).name
        copy.write_bytes(data)
        try:
            with _datasets_quiet():
                loaded = datasets.load_dataset(_DATASETS_BUILDERS[fmt], data_files=str(copy),
                                               split="train", keep_in_memory=True,
                                               cache_dir=str(Path(spool) / "cache"), **kwargs)
        except Exception as exc:  # the builders raise many types; all mean unreadable input
            reason = _first_line(_root_cause(exc)).replace(str(copy), path)
            raise AuditInputError(f"datasets.load_dataset cannot read it ({reason}; without "
                                  "--via-datasets the built-in reader names the row)",
                                  path=path) from None
        raw = _from_arrow(loaded.data.table, fmt, path)
    raw.encoding = encoding  # the splits are written as the input was
    json_columns = _json_encoded_columns(raw.arrow_schema)
    raw.records = [{k.strip(): _strip(json.loads(v) if k in json_columns and v is not None
                                      else v) for k, v in r.items()} for r in raw.records]
    raw.columns = [c.strip() for c in raw.columns]
    return raw


@contextlib.contextmanager
def _datasets_quiet():
    """No progress bars or log lines from `datasets` (they name the private copy's path
    and precede the one-line error)."""
    from datasets.utils import logging as datasets_logging

    bars_were_on = datasets_logging.is_progress_bar_enabled()
    verbosity = datasets_logging.get_verbosity()
    datasets_logging.disable_progress_bar()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    try:
        yield
    finally:
        datasets_logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets_logging.enable_progress_bar()


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause: `datasets` wraps the parser's error in a generic one."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    return exc


def _json_encoded_columns(schema: pa.Schema) -> set[str]:
    """Columns `datasets` stored as JSON text (its `Json` feature, for a JSON column whose
    values mix types: a number among strings): their values must be decoded, or every
    string would be audited and written with literal quotes around it."""
    return {f.name for f in schema
            if isinstance(f.type, pa.BaseExtensionType) and f.type.extension_name == "arrow.json"}


def hub_dataset_name(source: str) -> str:
    """`hf://org/name` -> `org/name`."""
    name = source[len(HUB_PREFIX):].strip("/")
    if name.count("/") > 1 or not name:
        raise AuditInputError("expected hf://org/name or hf://name", path=source)
    return name


def _read_hub(source: str, split: str | None) -> RawDataset:
    """Hub datasets go straight through `datasets.load_dataset`; this needs network access
    (or a populated HF cache) and never runs dataset code (`trust_remote_code` is off)."""
    import datasets
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES

    name = hub_dataset_name(source)
    if name in _PACKAGED_DATASETS_MODULES:  # `json`, `csv`...: would read local files
        raise AuditInputError(f"'{name}' is a datasets builder, not a hub dataset",
                              path=source)
    try:  # `hf://datasets/` looks on the hub only; a bare NAME would load a local ./NAME first
        loaded = datasets.load_dataset(f"hf://datasets/{name}", split=split or "train")
    except Exception as exc:  # network, auth and missing-split errors all end the audit
        raise AuditInputError(f"cannot load hub dataset '{name}' ({_first_line(exc)})",
                              path=source) from None
    return _from_arrow(loaded.data.table, "hf-hub", source)


def _split_name(state: dict) -> str:
    return f" (split '{state['_split']}')" if state.get("_split") else ""


def _pick_split(splits, split: str | None, path: str) -> str:
    names = list(splits)
    if split is not None:
        if split not in names:
            raise AuditInputError(f"no split '{split}' (available: {', '.join(names)})", path=path)
        return split
    if len(names) == 1:
        return names[0]
    if "train" in names:
        return "train"
    raise AuditInputError(f"several splits, choose one with --split ({', '.join(names)})",
                          path=path)


def _from_arrow(table: pa.Table, fmt: str, source: str) -> RawDataset:
    table = table.combine_chunks()
    return RawDataset(python_rows(table, source), fmt, source, columns=table.column_names,
                      arrow_schema=table.schema, arrow_table=table)


def python_rows(table: pa.Table | pa.RecordBatch, source: str) -> list[dict]:
    """The rows as Python dicts. A column whose values Python cannot hold (a timestamp past
    the year 9999) is read as Arrow prints it, as text: the audit reads text anyway, and
    the splits are written from the Arrow data, not from these values."""
    try:
        return table.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException):
        columns = [_python_values(column, name, source)
                   for name, column in zip(table.column_names, table.columns)]
        return [dict(zip(table.column_names, values)) for values in zip(*columns)]


def _python_values(column, name: str, source: str) -> list:
    import pyarrow.compute as pc

    try:
        return column.to_pylist()
    except (OverflowError, ValueError, pa.ArrowException) as exc:
        try:
            return pc.cast(column, pa.string()).to_pylist()
        except pa.ArrowException:
            raise AuditInputError(f"column '{name}' holds values Python cannot read "
                                  f"({_first_line(exc)})", path=source) from None


def _union_keys(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record))


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _first_line(exc: Exception) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


# ---------------------------------------------------------------------------------------
# Streaming: large JSONL and Parquet files read in record batches. Nothing of the file is
# kept but, per row, where it is (a byte offset or a record number): the clean and
# quarantine splits are copied from the file again when they are written.

STREAMABLE = ("jsonl", "parquet")
STREAM_MIN_BYTES = 64 * 2**20  # `stream=None`: files at least this large are streamed


def should_stream(source: str, *, via_datasets: bool = False, stream: bool | None = None) -> bool:
    """Stream `source`? `stream=None` decides by size; only local UTF-8 JSONL (no byte-order
    mark) and Parquet files can be streamed."""
    if stream is False or via_datasets or source.startswith(HUB_PREFIX):
        return False
    path = Path(source)
    if not path.is_file() or detect_format(source) not in STREAMABLE:
        if stream:
            raise AuditInputError("only local .jsonl and .parquet files can be streamed",
                                  path=source)
        return False
    try:
        size = path.stat().st_size
        if detect_format(source) == "jsonl":
            with path.open("rb") as handle:
                head = handle.read(4)
    except OSError:  # unreadable: the whole-file reader reports it, located
        return False
    if detect_format(source) == "jsonl" and any(head.startswith(bom) for bom, _ in _BOMS):
        if stream:
            raise AuditInputError("streaming reads UTF-8 without a byte-order mark only",
                                  path=source)
        return False
    return bool(stream) or size >= STREAM_MIN_BYTES


class RecordBatches:
    """RawDatasets of at most `batch_rows` records each, in file order (their `row_numbers`
    count from the start of the file, and a batch's bad rows are in its `skipped`). Each
    batch carries `offsets` (JSONL: byte offset of every record's line; Parquet: its record
    number from 0) for `StreamedRows`. Once every batch is read, `snapshot` is the file as it
    was read: the fingerprint, and what the splits' copy from the file is checked against."""

    def __init__(self, source: str, *, batch_rows: int = DEFAULT_BATCH_ROWS,
                 on_bad_row: str = "fail"):
        self.source, self.batch_rows, self.on_bad_row = source, batch_rows, on_bad_row
        self.snapshot: FileSnapshot | None = None

    def __iter__(self):
        fmt = detect_format(self.source)
        reader = _jsonl_batches if fmt == "jsonl" else _parquet_batches
        with _open_regular(self.source) as handle:
            opened, digest = os.fstat(handle.fileno()), hashlib.sha256()
            yield from reader(self.source, handle, digest, self.batch_rows, self.on_bad_row)
            now = os.fstat(handle.fileno())
        if (now.st_size, now.st_mtime_ns) != (opened.st_size, opened.st_mtime_ns):
            raise AuditInputError("the file changed while it was read; audit a private copy "
                                  "that nothing else writes to", path=self.source)
        self.snapshot = FileSnapshot(opened.st_size, opened.st_mtime_ns, digest.hexdigest())


def _jsonl_batches(path: str, handle, digest, batch_rows: int, on_bad_row: str):
    def batch():
        raw = rows.raw(path)
        raw.skipped, raw.offsets = bad_rows.skipped, rows.offsets
        return raw

    bad_rows, rows = BadRows(path, on_bad_row), _JsonlRows()
    offset = 0
    for line_no, data in enumerate(handle, start=1):
        digest.update(data)  # every byte parsed is hashed, once
        start, offset = offset, offset + len(data)
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AuditInputError(f"invalid UTF-8 at byte {start + exc.start}; convert the "
                                  "file to UTF-8", path=path, row=line_no) from None
        if "\x00" in line:
            raise AuditInputError("NUL character: a binary file, or UTF-16 without a "
                                  "byte-order mark", path=path, row=line_no)
        rows.add(line, line_no, bad_rows, offset=start)
        if len(rows.records) >= batch_rows:
            yield batch()
            bad_rows, rows = BadRows(path, on_bad_row), _JsonlRows()
    if rows.records or bad_rows.skipped:
        yield batch()


def _parquet_batches(path: str, handle, digest, batch_rows: int, on_bad_row: str):
    """Parquet is read out of order (footer first), so its bytes are hashed in one pass
    first; `RecordBatches` then checks that size and mtime did not change while reading."""
    import pyarrow.parquet as pq

    _hash_blocks(handle, digest)
    handle.seek(0)
    try:
        parquet = pq.ParquetFile(handle)
        first = 0
        for arrow_batch in parquet.iter_batches(batch_size=batch_rows):
            records = python_rows(arrow_batch, path)
            numbers = list(range(first + 1, first + len(records) + 1))
            raw = RawDataset(records, "parquet", path, columns=arrow_batch.schema.names,
                             arrow_schema=parquet.schema_arrow, row_numbers=numbers)
            raw.offsets = [n - 1 for n in numbers]
            first += len(records)
            yield raw
    except (pa.ArrowInvalid, OSError) as exc:
        raise AuditInputError(f"cannot read Parquet ({exc})", path=path) from None


class StreamedRows:
    """The records (or, for JSONL, the original lines) of a streamed file, read back from
    the file on demand in the order asked: a sequence for writing the splits. Holds one
    offset per row, and for Parquet one decoded row group at a time."""

    def __init__(self, path: str, fmt: str, offsets, *, lines: bool = False):
        import numpy as np

        self.path, self.fmt, self.lines = path, fmt, lines
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self._handle = None  # the open file (JSONL) or ParquetFile
        self._group: tuple[int, list] | None = None
        self._group_starts: list[int] = []

    def __len__(self) -> int:
        return len(self.offsets)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, index: int):
        offset = int(self.offsets[index])
        if self.fmt == "jsonl":
            if self._handle is None:
                self._handle = open(self.path, "rb")  # noqa: SIM115 (closed in close())
            self._handle.seek(offset)
            line = _terminated(self._handle.readline().decode("utf-8"))
            return line if self.lines else json.loads(line)
        return self._parquet_record(offset)

    def close(self) -> None:
        if self.fmt == "jsonl" and self._handle is not None:
            self._handle.close()
        self._handle, self._group = None, None

    def __del__(self):
        self.close()

    def arrow_rows(self, indices) -> Iterator[pa.Table]:
        """The Parquet rows at these (ascending) indices as Arrow tables, one per row group
        they fall in: the file's values as they are, for the splits."""
        import numpy as np

        numbers = self.offsets[np.asarray(indices, dtype=np.int64)]
        self._open_parquet()
        groups = np.searchsorted(self._group_starts, numbers, side="right") - 1
        for group in np.unique(groups):
            local = numbers[groups == group] - self._group_starts[group]
            yield self._handle.read_row_group(int(group)).take(pa.array(local))

    def _open_parquet(self) -> None:
        import pyarrow.parquet as pq

        if self._handle is None:
            self._handle = pq.ParquetFile(self.path)
            sizes = [self._handle.metadata.row_group(g).num_rows
                     for g in range(self._handle.metadata.num_row_groups)]
            self._group_starts = [sum(sizes[:g]) for g in range(len(sizes))]

    def _parquet_record(self, number: int) -> dict:
        import bisect

        self._open_parquet()
        group = bisect.bisect_right(self._group_starts, number) - 1
        if self._group is None or self._group[0] != group:
            self._group = (group, python_rows(self._handle.read_row_group(group), self.path))
        return self._group[1][number - self._group_starts[group]]


# --- the normalised table: whole-file and streamed reads ------------------------------------
# (schema and n-gram counting are imported where used: auditors.schema imports this module)

@dataclass
class LoadedDataset:
    raw: RawDataset
    schema: SchemaChoice
    table: pd.DataFrame
    ngrams: NgramStats | None = None  # counted while streaming, batch by batch


def load_table(source: str, *, split: str | None = None, text_col: str | None = None,
               label_col: str | None = None, schema: str | None = None,
               prompt_cols: tuple[str, ...] = (), response_col: str | None = None,
               chosen_col: str | None = None, rejected_col: str | None = None,
               via_datasets: bool = False, on_bad_row: str = "fail",
               stream: bool | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
               cache_dir: str | Path | None = None) -> LoadedDataset:
    """`on_bad_row="skip"` sets bad rows aside (`raw.skipped`, written to skipped.jsonl)
    instead of stopping at the first one. Large JSONL and Parquet files (`stream=None`: from
    `STREAM_MIN_BYTES`; `stream=True`: always) are streamed: see `stream_table`
    (`cache_dir` is its n-gram count cache). The column options are `detect_schema`'s."""
    columns = {"text_col": text_col, "label_col": label_col, "schema": schema,
               "prompt_cols": tuple(prompt_cols), "response_col": response_col,
               "chosen_col": chosen_col, "rejected_col": rejected_col}
    check_split_applies(source, split)
    if should_stream(source, via_datasets=via_datasets, stream=stream):
        return stream_table(source, **columns, on_bad_row=on_bad_row, batch_rows=batch_rows,
                            cache_dir=cache_dir)
    from auditors.schema import detect_schema, normalise, with_variant

    raw = load_raw(source, split=split, via_datasets=via_datasets, on_bad_row=on_bad_row)
    choice = detect_schema(raw.columns, **columns, source=source, records=raw.records)
    choice = with_variant(choice, raw.records)
    return LoadedDataset(raw, choice, normalise(raw, choice, on_bad_row=on_bad_row))


def stream_table(source: str, *, text_col: str | None = None, label_col: str | None = None,
                 schema: str | None = None, prompt_cols: tuple[str, ...] = (),
                 response_col: str | None = None, chosen_col: str | None = None,
                 rejected_col: str | None = None, on_bad_row: str = "fail",
                 batch_rows: int = DEFAULT_BATCH_ROWS,
                 cache_dir: str | Path | None = None) -> LoadedDataset:
    """Read a JSONL or Parquet file in record batches: each batch is normalised and its
    n-grams counted (`chunks.NgramReducer`, bounded tables), then dropped. What stays is the
    normalised table, one file offset per row (the splits are copied from the file when
    written, once it is checked to hold the bytes read: `raw.snapshot`) and the n-gram
    statistics. The schema is detected from the first batch's columns. With `cache_dir`,
    a batch whose rows an earlier audit counted is not counted again
    (`chunks.NgramCountCache`: batches are fixed row ranges of the file, so rows appended
    at the end leave the earlier batches as they were)."""
    from itertools import chain

    import numpy as np
    import pandas as pd

    from auditors.features import chunks
    from auditors.schema import detect_schema, normalise, with_variant

    reading = RecordBatches(source, batch_rows=batch_rows, on_bad_row=on_bad_row)
    batches = iter(reading)
    first = next(batches, None)
    while first is not None and not first.records:  # leading batches of bad rows only
        skipped = first.skipped
        first = next(batches, None)
        if first is not None:
            first.skipped = skipped + first.skipped
    if first is None:
        raise AuditInputError("dataset has no rows", path=source)
    choice = detect_schema(first.columns, text_col=text_col, label_col=label_col,
                           schema=schema, prompt_cols=prompt_cols, response_col=response_col,
                           chosen_col=chosen_col, rejected_col=rejected_col,
                           source=source, records=first.records)
    choice = with_variant(choice, first.records)
    reducer = chunks.NgramReducer()
    count_cache = chunks.NgramCountCache(cache_dir) if cache_dir is not None else None
    frames, offsets, numbers, skipped = [], [], [], []
    for batch in chain([first], batches):
        where = dict(zip(batch.row_numbers, batch.offsets))
        if batch.records:
            try:
                frame = normalise(batch, choice, on_bad_row=on_bad_row)
            except AuditInputError:
                if on_bad_row == "fail" or batch.records:
                    raise
                frame = None  # every row of this batch was bad and set aside
            if frame is not None:
                texts = frame["prompt"].tolist()
                reducer.add(count_cache.counts(frame["row_id"].tolist(), texts)
                            if count_cache is not None else chunks.count_chunk(texts))
                frames.append(frame)
                kept = [batch.row_number(i) for i in range(len(batch.records))]
                numbers += kept
                offsets += [where[n] for n in kept]
        skipped += batch.skipped
    if not frames:
        raise AuditInputError(no_rows_message(skipped), path=source)
    table = pd.concat(frames, ignore_index=True)
    table["row_index"] = np.arange(len(table))
    fmt = detect_format(source)
    raw = RawDataset(StreamedRows(source, fmt, offsets), fmt, source,
                     raw_lines=StreamedRows(source, fmt, offsets, lines=True)
                     if fmt == "jsonl" else None,
                     columns=first.columns, arrow_schema=first.arrow_schema,
                     row_numbers=numbers,
                     skipped=sorted(skipped, key=lambda s: s.row),
                     fingerprint=reading.snapshot.fingerprint, snapshot=reading.snapshot)
    return LoadedDataset(raw, choice, table, ngrams=reducer.finish())
