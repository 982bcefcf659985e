"""The Python API: `from auditors import audit`.

    >>> from auditors import AuditConfig, audit
    >>> audit("train.jsonl", config=AuditConfig(store="ledger/"))
    trainguard audit of train.jsonl: FAIL: 60 of 3000 rows flagged (2.00%; ...)
    ...

The same stages and options as `trainguard audit` (an `AuditConfig`: ledger store, cache,
the same default backend); the result joins each row's text to its scores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from auditors import pipeline
from auditors.config import AuditConfig
from auditors.report import verdict_line
from auditors.summary import AuditSummary

# the normalised text columns a reviewer reads, by schema
TEXT_COLUMNS = {"classification": ("prompt", "label"), "preference": ("prompt", "response", "rejected")}
GENERATION_TEXT = ("prompt", "response")


@dataclass
class Audit:
    """`rows`: one row per input row (input order): its text (prompt and label, or prompt
    and response, or prompt, chosen and rejected), `poison_score`, `flagged`, `reasons` and
    each detector's score. `triggers`: the ranked trigger list. `summary`: the
    `AuditSummary` (summary.json is its `to_dict()`).
    `result`: the pipeline's `AuditResult`."""

    rows: pd.DataFrame
    triggers: pd.DataFrame
    summary: AuditSummary
    result: pipeline.AuditResult

    @property
    def passed(self) -> bool:
        return self.summary.passed

    @property
    def flagged(self) -> pd.DataFrame:
        return self.rows[self.rows["flagged"]]

    def __repr__(self) -> str:
        top = ", ".join(repr(t) for t in self.triggers["pattern"].head(5)) or "none"
        return "\n".join([
            f"trainguard audit of {self.summary.input}: {verdict_line(self.summary)}",
            f"  schema {self.summary.schema_columns}; detectors "
            f"{', '.join(self.summary.detectors_run)}",
            f"  top triggers: {top}",
            "  .rows (text, scores, flags), .flagged, .triggers, .summary, .passed"])


def audit(source: str | Path, out_dir: str | Path | None = None,
          config: AuditConfig | None = None, *, encoder=None) -> Audit:
    """Audit `source` (any input `trainguard audit` reads) with `config` (default:
    `AuditConfig()`, the CLI's defaults); with `out_dir`, write the same outputs as the CLI."""
    result = pipeline.audit(str(source), out_dir, config, encoder=encoder)
    table = result.table
    schema = result.summary.schema
    text = list(TEXT_COLUMNS.get(schema, GENERATION_TEXT))
    names = {"response": "chosen"} if schema == "preference" else {}
    rows = pd.concat([table[text].rename(columns=names).reset_index(drop=True),
                      result.rows.drop(columns=["row_index"])], axis=1)
    rows.index = result.rows["row_index"].to_numpy()
    triggers = pd.DataFrame(result.triggers)
    if triggers.empty:
        triggers = pd.DataFrame(columns=list(pipeline.TRIGGER_COLUMNS))
    return Audit(rows, triggers, result.summary, result)
