"""Write an audit's outputs so that a directory either holds a complete run or visibly
does not: everything is written to a staging directory next to DIR and moved in at the
end, `summary.json` last (its presence marks a complete run)."""

from __future__ import annotations

import contextlib
import csv
import glob
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from auditors.errors import TrainguardError
from auditors.html_report import REPORT, write_html_report
from auditors.ingest import HUB_PREFIX, RawDataset, detect_format
from auditors.summary import AuditSummary

SUMMARY = "summary.json"
SKIPPED = "skipped.jsonl"
MANIFEST = "manifest.json"  # the names of the files the last run wrote (see _move_into_place)
INTAKE = "intake.json"  # written by the intake gate after the audit (`add_output`)
_SPLIT_EXTENSIONS = {"jsonl": "jsonl", "json": "json", "csv": "csv", "tsv": "tsv",
                     "parquet": "parquet", "hf-disk": "parquet", "hf-hub": "parquet"}
_STAGING_MARK = ".partial-"
# every run's files but the splits (named by the input's format) and intake.json
_RUN_FILES = ("rows.parquet", "triggers.json", SKIPPED, SUMMARY, REPORT, MANIFEST)


def split_paths(raw: RawDataset) -> tuple[str, str]:
    return _splits(_SPLIT_EXTENSIONS[raw.fmt])


def _splits(ext: str) -> tuple[str, str]:
    return f"clean.{ext}", f"quarantine.{ext}"


def check_output_location(source: str, out_dir: str | Path) -> None:
    """Refuse an output directory that would overwrite or mix into the input.

    Allowed: DIR next to the input file or anywhere else. Refused: DIR is an existing
    file or a broken symbolic link, DIR or the folder it would be made in cannot be
    written, DIR is (inside) an input directory (a `save_to_disk` dataset), DIR holds files
    this run would write over but no trainguard run, or one of the output files would
    replace the input file (`data/clean.jsonl --out data`)."""
    out = Path(out_dir).resolve()
    if Path(out_dir).is_symlink() and not Path(out_dir).exists():
        raise TrainguardError(f"output path {out_dir} is a broken symbolic link to "
                              f"{os.readlink(out_dir)}")
    if out.exists() and not out.is_dir():
        raise TrainguardError(f"output path {out_dir} exists and is not a directory")
    _check_writable(out, out_dir)
    if not source.startswith(HUB_PREFIX) and Path(source).exists():
        _check_not_input(Path(source).resolve(), out, source, out_dir)
    _check_not_users_files(out, out_dir, source)


def _check_not_input(src: Path, out: Path, source: str, given) -> None:
    if src.is_dir() and (out == src or src in out.parents):
        raise TrainguardError(f"output directory {given} is inside the input dataset "
                              f"directory {source}; choose an --out outside it")
    if src.is_file() and src.parent == out and src.name in _all_output_names():
        raise TrainguardError(f"writing outputs to {given} would overwrite the input file "
                              f"{source}; choose another --out")


def _check_not_users_files(out: Path, given, source: str) -> None:
    """A run replaces the files of the trainguard run DIR holds; in a folder that holds no
    trainguard run (`_is_trainguard_run`), files this run would write over are someone
    else's and are not overwritten."""
    if not out.is_dir() or _is_trainguard_run(out):
        return
    taken = sorted(n for n in _names_written(source) if (out / n).exists())
    if taken:
        raise TrainguardError(f"output directory {given} holds {', '.join(taken)} but no "
                              "trainguard run (no trainguard summary.json or manifest.json); "
                              "choose another --out or remove them")


def _names_written(source: str) -> set[str]:
    """The names an audit of `source` may write (every output name if its format is not
    known yet)."""
    try:
        ext = _SPLIT_EXTENSIONS[detect_format(source)]
    except TrainguardError:
        return _all_output_names()
    return {*_RUN_FILES, *_splits(ext)}


def _check_writable(out: Path, given) -> None:
    """DIR, when it exists, and the nearest existing folder above it (where the staging
    directory and DIR are made) take a new directory: tried, not guessed from permission
    bits (root, read-only mounts). Nothing is left behind."""
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    for folder in ([out] if out.is_dir() else []) + [parent]:
        if not folder.is_dir():
            raise TrainguardError(f"cannot write outputs to {given}: {folder} is not a "
                                  "directory")
        try:
            os.rmdir(tempfile.mkdtemp(prefix=".trainguard-probe-", dir=folder))
        except OSError as exc:
            raise TrainguardError(f"cannot write outputs to {given}: {folder} is not "
                                  f"writable ({exc.strerror or exc})") from None


def _all_output_names() -> set[str]:
    return {*_RUN_FILES, INTAKE}.union(*(_splits(ext) for ext in _SPLIT_EXTENSIONS.values()))


def write_outputs(out_dir: str | Path, raw: RawDataset, rows: pd.DataFrame,
                  triggers: list[dict], summary: AuditSummary, report_inputs: dict | None = None,
                  before_commit=None) -> Path:
    """rows.parquet, triggers.json, clean/quarantine splits, skipped.jsonl (when rows were
    skipped), report.html, manifest.json, summary.json. `before_commit()`, when given, runs
    once every file is staged and before any is moved into DIR (the ledger records the run
    there: if it fails, DIR is left as it was)."""
    out_dir = Path(out_dir)
    check_output_location(raw.source, out_dir)
    staging = _make_staging(out_dir)
    try:
        _write_staged(staging, out_dir, raw, rows, triggers, summary, report_inputs)
        if before_commit is not None:
            before_commit()
        _move_into_place(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_staged(staging: Path, out_dir: Path, raw: RawDataset, rows: pd.DataFrame,
                  triggers: list[dict], summary: AuditSummary,
                  report_inputs: dict | None) -> None:
    """Every output file, into the staging directory. A write that fails (a full disk, a
    file-size limit) is reported naming the file; DIR itself has not been touched yet."""
    clean_name, quarantine_name = split_paths(raw)
    flagged = rows["flagged"].to_numpy(dtype=bool)
    if len(flagged) != len(raw):
        raise TrainguardError(f"{len(flagged)} scored rows for {len(raw)} input rows")

    def splits(_):
        raw.check_unchanged()  # streamed splits are copied from the file: still what was read?
        write_records(raw, np.flatnonzero(~flagged), staging / clean_name)
        write_records(raw, np.flatnonzero(flagged), staging / quarantine_name)
        raw.check_unchanged()  # and it did not change while they were copied

    steps = [
        ("rows.parquet", lambda path: pq.write_table(
            pa.Table.from_pandas(rows, preserve_index=False), path)),
        ("triggers.json", lambda path: _write_json(path, triggers)),
        (f"{clean_name} and {quarantine_name}", splits),
        *([(SKIPPED, lambda path: _write_skipped(raw, path))] if raw.skipped else []),
        # report.html: summary and rows, plus the normalised table and embeddings when given
        (REPORT, lambda path: write_html_report(path, summary=summary, rows=rows,
                                                triggers=triggers, **(report_inputs or {}))),
        (SUMMARY, lambda path: _write_json(path, summary.to_dict())),
        (MANIFEST, lambda path: _write_json(path, _manifest(p.name for p in staging.iterdir()))),
    ]
    for name, write in steps:
        try:
            write(staging / name)
        except OSError as exc:
            raise TrainguardError(f"cannot write {name} for {out_dir}: {exc.strerror or exc}; "
                                  f"{out_dir} was left as it was") from None


def _make_staging(out_dir: Path) -> Path:
    """A fresh staging directory next to DIR, named after this process so that one left by
    a killed run can be recognised and removed."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_staging(out_dir)
        prefix = f".{out_dir.name}{_STAGING_MARK}{os.getpid()}-"
        return Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir.parent))
    except OSError as exc:
        raise TrainguardError(f"cannot write outputs to {out_dir} ({exc.strerror or exc})") \
            from None


def _remove_abandoned_staging(out_dir: Path) -> None:
    """Staging directories of runs whose process no longer exists (killed mid-write)."""
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}{_STAGING_MARK}*"):
        pid = path.name[len(out_dir.name) + len(_STAGING_MARK) + 1:].split("-", 1)[0]
        if pid.isdigit() and not _process_exists(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """The new run's files replace the previous run's as a set: first the old summary goes
    (it must not vouch for new files), then every file the previous run wrote that this one
    does not (its manifest.json; without one, any trainguard output name), then the new
    files, summary.json last. Other files in DIR are left alone."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = _previous_outputs(out_dir)
    (out_dir / SUMMARY).unlink(missing_ok=True)
    for name in previous - {p.name for p in staging.iterdir()}:
        (out_dir / name).unlink(missing_ok=True)
    for path in sorted(staging.iterdir(), key=lambda p: p.name == SUMMARY):
        os.replace(path, out_dir / path.name)


def _previous_outputs(out_dir: Path) -> set[str]:
    """The files of the trainguard run DIR holds, which the next run may replace: the names
    its manifest lists (else every name trainguard writes) that are trainguard output
    names. None unless DIR holds a trainguard run (`_is_trainguard_run`): a manifest.json
    or summary.json of the user's own must never get their files deleted."""
    if not _is_trainguard_run(out_dir):
        return set()
    listed = _manifest_files(out_dir)
    return _all_output_names() if listed is None else listed & _all_output_names()


def _is_trainguard_run(out_dir: Path) -> bool:
    """DIR's summary.json is a trainguard summary, or its manifest.json is trainguard's (a
    run killed while moving its files in has the manifest and no summary yet)."""
    try:
        summary = json.loads((out_dir / SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    if isinstance(summary, dict) and {"trainguard_version", "outputs", "gate"} <= summary.keys():
        return True
    return _read_manifest(out_dir).get("written_by") == "trainguard"


def _manifest(names) -> dict:
    return {"written_by": "trainguard", "files": sorted({*names, MANIFEST})}


def _read_manifest(out_dir: Path) -> dict:
    """manifest.json as a dict (one written before the `written_by` mark was a list of
    names: read as {"files": names}); {} when missing or unreadable."""
    try:
        data = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {"files": data} if isinstance(data, list) else data if isinstance(data, dict) else {}


def _manifest_files(out_dir: Path) -> set[str] | None:
    files = _read_manifest(out_dir).get("files")
    return {n for n in files if isinstance(n, str)} if isinstance(files, list) else None


def add_output(out_dir: str | Path, name: str, text: str) -> None:
    """A file written into a finished run's DIR after the fact (intake.json), listed in its
    manifest so that the next run replaces it too."""
    out_dir = Path(out_dir)
    manifest = _manifest(_previous_outputs(out_dir) | {name})
    for target, content in ((name, text), (MANIFEST, json.dumps(manifest, indent=2) + "\n")):
        tmp = out_dir / f".{target}.{os.getpid()}.tmp"
        tmp.write_text(content, encoding="utf-8")
        os.replace(tmp, out_dir / target)


def write_records(raw: RawDataset, indices: np.ndarray, path: Path) -> None:
    """The selected input rows, in input order, in the input's own format (and, for text
    formats, its encoding and byte-order mark)."""
    if raw.fmt in ("parquet", "hf-disk", "hf-hub"):  # the Arrow data itself, schema kept
        _write_arrow_rows(raw, indices, path)
        return
    records = [raw.records[i] for i in indices]
    with _open_text(path, raw) as handle:
        if raw.raw_lines is not None:  # jsonl, tsv, csv: copies of the original rows
            if raw.header_line is not None:
                handle.write(raw.header_line)
            handle.writelines(raw.raw_lines[i] for i in indices)
        elif raw.fmt == "jsonl":  # read with via_datasets: no original lines to copy
            handle.writelines(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n"
                              for r in records)
        elif raw.fmt == "tsv":  # read with via_datasets: no original lines to copy
            handle.write("\t".join(raw.columns) + "\n")
            handle.writelines("\t".join("" if r[c] is None else str(r[c]) for c in raw.columns)
                              + "\n" for r in records)
        elif raw.fmt == "json":
            _dump_json(handle, records)
        else:  # csv read with via_datasets
            writer = csv.DictWriter(handle, fieldnames=raw.columns)
            writer.writeheader()
            writer.writerows(records)


def _write_arrow_rows(raw: RawDataset, indices: np.ndarray, path: Path) -> None:
    """The selected rows taken from the input's Arrow data (the table read, or a streamed
    file's row groups), so every value and the schema are the input's own."""
    if raw.arrow_table is not None:
        positions = [raw.row_number(int(i)) - 1 for i in indices]
        pq.write_table(raw.arrow_table.take(pa.array(positions, type=pa.int64())), path)
        return
    with pq.ParquetWriter(path, raw.arrow_schema) as writer:  # no rows: no row group
        for part in raw.records.arrow_rows(indices):  # a streamed file's `StreamedRows`
            writer.write_table(part)


@contextlib.contextmanager
def _open_text(path: Path, raw: RawDataset):
    with open(path, "wb") as binary:
        binary.write(raw.encoding.bom)
        with io.TextIOWrapper(binary, encoding=raw.encoding.codec, newline="") as handle:
            yield handle


def _write_skipped(raw: RawDataset, path: Path) -> None:
    """One JSON object per skipped row: its row number, field, reason and content."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(s.as_dict(), ensure_ascii=False, default=str) + "\n"
                          for s in raw.skipped)


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        _dump_json(handle, value)


def _dump_json(handle, value) -> None:
    json.dump(value, handle, ensure_ascii=False, indent=2, default=_json_default)
    handle.write("\n")


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot serialise {type(value).__name__}")
