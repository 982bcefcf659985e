"""Read a dataset in any supported format into records, keeping what is needed to write
the clean and quarantine splits back in the same format.

Line-based formats (JSONL, TSV) keep each row's original line so that the split outputs
are byte-for-byte copies of the input rows.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from auditors.errors import AuditInputError

HUB_PREFIX = "hf://"
FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf-disk", "hf-hub")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv",
               ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}
# `datasets.load_dataset` builder name for each local file format.
HEADERLESS_COLUMNS = ["text", "label"]
_DATASETS_BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "tsv": "csv",
                      "parquet": "parquet"}


@dataclass
class RawDataset:
    """Input rows as Python dicts, in input order, plus how to write them back."""

    records: list[dict]
    fmt: str
    source: str
    raw_lines: list[str] | None = None  # original line per record (jsonl, tsv)
    header_line: str | None = None  # tsv header, written back unchanged
    columns: list[str] = field(default_factory=list)
    arrow_schema: pa.Schema | None = None  # parquet and datasets inputs

    def __len__(self) -> int:
        return len(self.records)


def detect_format(source: str) -> str:
    """Name the input format from the path: extension, or a `save_to_disk` directory."""
    if source.startswith(HUB_PREFIX):
        return "hf-hub"
    path = Path(source)
    if not path.exists():
        raise AuditInputError("no such file or directory", path=source)
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


def load_raw(source: str, *, split: str | None = None, via_datasets: bool = False) -> RawDataset:
    """Read `source` (a path or `hf://org/name`) into a RawDataset.

    `via_datasets=True` reads local files through `datasets.load_dataset` instead of the
    built-in readers (row-exact error messages are only available from the built-in ones).
    """
    fmt = detect_format(source)
    if fmt == "hf-hub":
        return _read_hub(source, split)
    if fmt == "hf-disk":
        return _read_saved_dataset(source, split)
    if via_datasets:
        return _read_with_load_dataset(source, fmt)
    readers = {"jsonl": _read_jsonl, "json": _read_json, "csv": _read_csv, "tsv": _read_tsv,
               "parquet": _read_parquet}
    raw = readers[fmt](source)
    if not raw.records:
        raise AuditInputError("dataset has no rows", path=source)
    return raw


def _decode(path: str) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise AuditInputError(f"invalid UTF-8 at byte {exc.start}", path=path, row=line) from None


def _split_lines(text: str) -> list[str]:
    """Lines ending in '\\n' (kept). Not str.splitlines: it also breaks at U+2028, U+0085,
    form feeds etc., which may appear inside JSON strings and text fields."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _read_jsonl(path: str) -> RawDataset:
    records, lines = [], []
    for line_no, line in enumerate(_split_lines(_decode(path)), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise AuditInputError(f"malformed JSON ({exc.msg})", path=path, row=line_no) from None
        if not isinstance(record, dict):
            raise AuditInputError("each line must be a JSON object", path=path, row=line_no)
        records.append(record)
        lines.append(line if line.endswith("\n") else line + "\n")
    return RawDataset(records, "jsonl", path, raw_lines=lines, columns=_union_keys(records))


def _read_json(path: str) -> RawDataset:
    text = _decode(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AuditInputError(f"malformed JSON ({exc.msg})", path=path, row=exc.lineno) from None
    if not isinstance(data, list):
        raise AuditInputError("a .json dataset must be a list of objects "
                              "(use .jsonl for one object per line)", path=path)
    for index, record in enumerate(data):
        if not isinstance(record, dict):
            raise AuditInputError("list item is not an object", path=path, row=index + 1)
    return RawDataset(data, "json", path, columns=_union_keys(data))


def _read_csv(path: str) -> RawDataset:
    reader = csv.DictReader(io.StringIO(_decode(path), newline=""))
    columns = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = columns
    records = []
    for record in reader:
        if None in record or None in record.values():
            raise AuditInputError(f"expected {len(columns)} fields", path=path,
                                  row=reader.line_num)
        records.append(record)
    return RawDataset(records, "csv", path, columns=columns)


def _read_tsv(path: str) -> RawDataset:
    """TSV without quoting, one row per line; fields are stripped of stray spaces
    (the published SST-2/OffensEval files write `text \\t label`)."""
    lines = _split_lines(_decode(path))
    if not lines:
        return RawDataset([], "tsv", path)
    first = [name.strip() for name in lines[0].rstrip("\r\n").split("\t")]
    if _looks_like_header(first):
        header, body, columns, first_line = lines[0], lines[1:], first, 2
    else:  # headerless `text \t label` files (the published OffensEval clean splits)
        header, body, first_line = None, lines, 1
        columns = HEADERLESS_COLUMNS if len(first) == 2 else [f"column_{i}" for i in range(len(first))]
    records, raw_lines = [], []
    for line_no, line in enumerate(body, start=first_line):
        if not line.strip():
            continue
        values = line.rstrip("\r\n").split("\t")
        if len(values) != len(columns):
            raise AuditInputError(f"expected {len(columns)} tab-separated fields, found "
                                  f"{len(values)}", path=path, row=line_no)
        records.append({name: value.strip() for name, value in zip(columns, values)})
        raw_lines.append(line if line.endswith("\n") else line + "\n")
    return RawDataset(records, "tsv", path, raw_lines=raw_lines, header_line=header,
                      columns=columns)


def _looks_like_header(fields: list[str]) -> bool:
    """A header names columns: short, no spaces, not numbers (labels are)."""
    return all(f and len(f) <= 64 and " " not in f and not _is_number(f) for f in fields)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_parquet(path: str) -> RawDataset:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise AuditInputError(f"cannot read Parquet ({exc})", path=path) from None
    return _from_arrow(table, "parquet", path)


def _read_saved_dataset(path: str, split: str | None) -> RawDataset:
    import datasets

    loaded = datasets.load_from_disk(path)
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[_pick_split(loaded, split, path)]
    return _from_arrow(loaded.data.table, "hf-disk", path)


def _read_with_load_dataset(path: str, fmt: str) -> RawDataset:
    import datasets

    kwargs = {"delimiter": "\t"} if fmt == "tsv" else {}
    loaded = datasets.load_dataset(_DATASETS_BUILDERS[fmt], data_files=path, split="train",
                                   **kwargs)
    raw = _from_arrow(loaded.data.table, fmt, path)
    raw.records = [{k.strip(): _strip(v) for k, v in r.items()} for r in raw.records]
    raw.columns = [c.strip() for c in raw.columns]
    return raw


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

    name = hub_dataset_name(source)
    try:
        loaded = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # network, auth and missing-split errors all end the audit
        raise AuditInputError(f"cannot load hub dataset '{name}' ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''})",
                              path=source) from None
    return _from_arrow(loaded.data.table, "hf-hub", source)


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
    return RawDataset(table.to_pylist(), fmt, source, columns=table.column_names,
                      arrow_schema=table.schema)


def _union_keys(records: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for record in records for key in record))


def _strip(value):
    return value.strip() if isinstance(value, str) else value
