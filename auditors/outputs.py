"""Write an audit's outputs so that a directory either holds a complete run or visibly
does not: everything is written to a staging directory next to DIR and moved in at the
end, `summary.json` last (its presence marks a complete run)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditors.ingest import RawDataset

SUMMARY = "summary.json"
_SPLIT_EXTENSIONS = {"jsonl": "jsonl", "json": "json", "csv": "csv", "tsv": "tsv",
                     "parquet": "parquet", "hf-disk": "parquet", "hf-hub": "parquet"}


def split_paths(raw: RawDataset) -> tuple[str, str]:
    ext = _SPLIT_EXTENSIONS[raw.fmt]
    return f"clean.{ext}", f"quarantine.{ext}"


def write_outputs(out_dir: str | Path, raw: RawDataset, rows: pd.DataFrame,
                  triggers: list[dict], summary: dict) -> Path:
    """rows.parquet, triggers.json, clean/quarantine splits, summary.json."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), staging / "rows.parquet")
        _write_json(staging / "triggers.json", triggers)
        clean_name, quarantine_name = split_paths(raw)
        flagged = rows["flagged"].to_numpy(dtype=bool)
        write_records(raw, np.flatnonzero(~flagged), staging / clean_name)
        write_records(raw, np.flatnonzero(flagged), staging / quarantine_name)
        _write_json(staging / SUMMARY, summary)
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _move_into_place(staging: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)  # an old summary must not vouch for new files
    for path in sorted(staging.iterdir(), key=lambda p: p.name == SUMMARY):
        os.replace(path, out_dir / path.name)


def write_records(raw: RawDataset, indices: np.ndarray, path: Path) -> None:
    """The selected input rows, in input order, in the input's own format."""
    records = [raw.records[i] for i in indices]
    if raw.fmt in ("jsonl", "tsv") and raw.raw_lines is not None:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            if raw.header_line is not None:
                handle.write(raw.header_line)
            handle.writelines(raw.raw_lines[i] for i in indices)
    elif raw.fmt == "jsonl":  # read with via_datasets: no original lines to copy
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.writelines(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n"
                              for r in records)
    elif raw.fmt == "tsv":  # read with via_datasets: no original lines to copy
        with open(path, "w", encoding="utf-8", newline="") as handle:
            handle.write("\t".join(raw.columns) + "\n")
            handle.writelines("\t".join("" if r[c] is None else str(r[c]) for c in raw.columns)
                              + "\n" for r in records)
    elif raw.fmt == "json":
        _write_json(path, records)
    elif raw.fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=raw.columns)
            writer.writeheader()
            writer.writerows(records)
    else:  # parquet, datasets directories, hub datasets: keep the Arrow schema
        table = pa.Table.from_pylist(records, schema=raw.arrow_schema)
        pq.write_table(table, path)


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, ensure_ascii=False, indent=2, default=_json_default)
        handle.write("\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
