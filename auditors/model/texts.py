"""Probe and data files for the model-side checks: texts with optional labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditors.errors import AuditInputError
from auditors.ingest import load_raw
from auditors.schema import LABEL_COLUMNS, TEXT_COLUMNS

PROMPT_COLUMNS = TEXT_COLUMNS + ("prompt",)


@dataclass
class LabelledTexts:
    texts: list[str]
    labels: list[str] | None  # None when the file has no label column
    source: str


def read_texts(source: str | Path, *, text_col: str | None = None,
               label_col: str | None = None, need_labels: bool = False) -> LabelledTexts:
    """A `.txt` file (one text per line) or any table `trainguard audit` reads (jsonl, json,
    csv, tsv, parquet, a save_to_disk directory) with a text and, optionally, a label column."""
    source = str(source)
    if source.endswith(".txt"):
        texts = _read_lines(source)
        if need_labels:
            raise AuditInputError("needs a label column; a .txt file has none", path=source)
        return LabelledTexts(texts, None, source)
    raw = load_raw(source)
    text_col = _pick(raw.columns, text_col, PROMPT_COLUMNS, "text", source, required=True)
    label_col = _pick(raw.columns, label_col, LABEL_COLUMNS, "label", source,
                      required=need_labels)
    texts = [_field(record, text_col, raw, i) for i, record in enumerate(raw.records)]
    labels = ([_field(record, label_col, raw, i) for i, record in enumerate(raw.records)]
              if label_col else None)
    return LabelledTexts(texts, labels, source)


def _read_lines(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuditInputError(f"cannot read as UTF-8 text ({exc})", path=path) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise AuditInputError("no texts", path=path)
    return lines


def _pick(columns: list[str], given: str | None, known: tuple[str, ...], what: str,
          source: str, *, required: bool) -> str | None:
    if given is not None:
        if given not in columns:
            raise AuditInputError(f"no column '{given}' among {columns}", path=source)
        return given
    found = next((c for c in known if c in columns), None)
    if found is None and required:
        # the model commands take no column options: the file names its columns
        raise AuditInputError(f"no {what} column among {columns} (name it one of "
                              f"{', '.join(known)}, or use a .txt file)", path=source)
    return found


def _field(record: dict, column: str, raw, index: int) -> str:
    value = record.get(column)
    if value is None or isinstance(value, (list, dict)):
        raise AuditInputError("missing or nested value", path=raw.source,
                              row=raw.row_number(index), field=column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)
