"""The third-party intake gate: a policy file, the checks it asks for, and the diff against
the previous intake of the same source.

Every check returns the same shape, `{"check", "passed", "detail"}`; an intake passes when
all of them pass."""

from __future__ import annotations

import hashlib
import tomllib
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from auditors.errors import TrainguardError
from auditors.features.unicode import describe_codepoints, unicode_tokens
from auditors.ledger import Ledger, new_run_id, recorded_path
from auditors.schema import SCHEMAS
from auditors.summary import AuditSummary, Gate, check, gate_checks

_CONTROL_CATEGORIES = {"Cf", "Cc", "Co", "Cn"}  # format, control, private use, unassigned
_ORDINARY = {"\t", "\n", "\r"}
TEXT_FIELDS = ("prompt", "response", "rejected")


@dataclass(frozen=True)
class IntakePolicy:
    max_flagged_fraction: float = 0.005
    fail_on_confirmed: bool = True  # a confirmed row or trigger appears in the data
    fail_on_control_characters: bool = True  # invisible/control characters anywhere in text
    fail_on_schema_drift: bool = True  # schema or columns differ from the expected ones
    expected_schema: str | None = None  # else: the previous intake's schema
    expected_columns: tuple[str, ...] | None = None  # else: the previous intake's columns

    @classmethod
    def from_dict(cls, values: dict, *, where: str = "policy") -> IntakePolicy:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainguardError(f"{where}: unknown policy key(s) {', '.join(unknown)} "
                                  f"(known: {', '.join(sorted(known))})")
        if "expected_columns" in values:
            columns = values["expected_columns"]
            if isinstance(columns, str):  # one column, not its letters
                columns = [columns]
            if not isinstance(columns, (list, tuple)) or not columns or not all(
                    isinstance(c, str) and c for c in columns):
                raise TrainguardError(f"{where}: expected_columns must be a non-empty list of "
                                      "column names (or one name)")
            values = {**values, "expected_columns": tuple(columns)}
        _check_values(values, where)
        return cls(**values)

    @classmethod
    def from_toml(cls, path: str | Path) -> IntakePolicy:
        try:
            with open(path, "rb") as handle:
                return cls.from_dict(tomllib.load(handle), where=str(path))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TrainguardError(f"{path}: cannot read the policy ({exc})") from None


def _check_values(values: dict, where: str) -> None:
    """Each value of the type its key needs: TOML's `"no"` is not false, `true` is not a
    share, and a misspelt schema is an error now rather than a drift failure later."""
    for name in ("fail_on_confirmed", "fail_on_control_characters", "fail_on_schema_drift"):
        if name in values and not isinstance(values[name], bool):
            raise TrainguardError(f"{where}: {name} must be true or false, not {values[name]!r}")
    fraction = values.get("max_flagged_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0 <= fraction <= 1:
        raise TrainguardError(f"{where}: max_flagged_fraction must be a number between 0 and "
                              f"1, not {fraction!r}")
    schema = values.get("expected_schema")
    if schema is not None and schema not in SCHEMAS:
        raise TrainguardError(f"{where}: expected_schema must be one of {', '.join(SCHEMAS)}, "
                              f"not {schema!r}")


def prompt_keys(table: pd.DataFrame) -> pd.DataFrame:
    """Per row: a hash of its prompt side (what identifies "the same example") and its
    `row_id` (a hash of all its content), so an edited answer or label reads as changed."""
    keys = [hashlib.sha256(p.encode("utf-8")).hexdigest()[:16] for p in table["prompt"]]
    return pd.DataFrame({"prompt_key": keys, "row_id": table["row_id"].to_numpy()})


def diff_rows(previous: pd.DataFrame | None, current: pd.DataFrame) -> dict:
    """Rows added, removed, changed (same prompt, other content) and unchanged since
    `previous`, counted row by row, copies included (a row repeated 50 more times is 50 rows
    added), and listed by `row_id` (`added_row_ids`, `removed_row_ids`; `changed_row_ids`
    holds the changed rows' new ids; an id appears once per row), so a reviewer can read
    exactly what moved. Under one prompt, identical rows match first, then the rest pair up
    as changed, and what is left over is added or removed. A first intake lists no ids:
    every row is new."""
    if previous is None:
        return {"previous_intake": None, "added": len(current), "removed": 0, "changed": 0,
                "unchanged": 0, "added_row_ids": [], "removed_row_ids": [],
                "changed_row_ids": []}
    before, after = (Counter(zip(frame["prompt_key"], frame["row_id"]))
                     for frame in (previous, current))
    unchanged = sum((before & after).values())
    gained, lost = after - before, before - after  # rows of each side left unmatched
    new_rows = _rows_by_prompt(gained)
    old_rows = _rows_by_prompt(lost)
    added, removed, changed = [], [], []
    for key in sorted(new_rows.keys() | old_rows.keys()):
        new, old = new_rows.get(key, []), old_rows.get(key, [])
        pairs = min(len(new), len(old))
        changed += new[:pairs]
        added += new[pairs:]
        removed += old[pairs:]
    return {"added": len(added), "removed": len(removed), "changed": len(changed),
            "unchanged": unchanged, "added_row_ids": sorted(added),
            "removed_row_ids": sorted(removed), "changed_row_ids": sorted(changed)}


def _rows_by_prompt(rows: Counter) -> dict[str, list[str]]:
    """{prompt key: its rows' ids, one per row, sorted}."""
    grouped: dict[str, list[str]] = {}
    for (key, row_id), count in sorted(rows.items()):
        grouped.setdefault(key, []).extend([row_id] * count)
    return grouped


def control_characters(table: pd.DataFrame) -> dict[str, int]:
    """Invisible and control characters (zero-width, bidi, C0/C1 controls, private use)
    found in any text field: `U+200B ZERO WIDTH SPACE` -> rows containing it."""
    found: dict[str, int] = {}
    for texts in zip(*(table[f] for f in TEXT_FIELDS if f in table)):
        chars = set().union(*(_control_characters(text) for text in texts))
        for name in _describe(chars):
            found[name] = found.get(name, 0) + 1
    return dict(sorted(found.items(), key=lambda kv: -kv[1]))


def _control_characters(text: str) -> set[str]:
    if not text or (text.isascii() and all(" " <= ch < "\x7f" or ch in _ORDINARY
                                           for ch in text)):
        return set()  # the common case, without the Unicode tokeniser
    return {t for t in unicode_tokens(text) if len(t) == 1 and t not in _ORDINARY
            and unicodedata.category(t) in _CONTROL_CATEGORIES}


def _describe(chars: set[str]) -> list[str]:
    """`describe_codepoints` names non-ASCII characters; C0 controls get the same form."""
    return describe_codepoints("".join(sorted(chars))) + \
        [f"U+{ord(ch):04X} CONTROL" for ch in sorted(chars) if ch.isascii()]


def evaluate(policy: IntakePolicy, *, summary: AuditSummary, columns: list[str],
             previous: dict | None, controls: dict[str, int]) -> list[dict]:
    """The policy's checks, in a fixed order; the first are the audit gate's
    (`summary.gate_checks`: the flagged share, significant triggers, confirmed rows and
    triggers)."""
    checks = gate_checks(rows=summary.rows, flagged=summary.flagged,
                         max_flagged_fraction=policy.max_flagged_fraction,
                         ledger=summary.ledger or {},
                         significant_triggers=summary.significant_triggers,
                         injected_phrases=summary.injected_phrases,
                         fail_on_confirmed=policy.fail_on_confirmed)
    if policy.fail_on_control_characters:
        checks.append(check("control characters", not controls,
                            "none" if not controls else "; ".join(
                                f"{name} in {n} row{'' if n == 1 else 's'}"
                                for name, n in controls.items())))
    if policy.fail_on_schema_drift:
        checks.append(_schema_check(policy, summary.schema, columns, previous))
    return checks


def _schema_check(policy: IntakePolicy, schema: str, columns: list[str],
                  previous: dict | None) -> dict:
    want_schema = policy.expected_schema or (previous or {}).get("schema")
    want_columns = policy.expected_columns or (previous or {}).get("columns")
    if want_schema is None and want_columns is None:
        return check("schema drift", True, f"first intake: schema {schema}, columns {columns}")
    problems = []
    if want_schema is not None and schema != want_schema:
        problems.append(f"schema {schema}, expected {want_schema}")
    # the set of columns, not their order: JSON objects' keys have none
    if want_columns is not None and set(columns) != set(want_columns):
        added = sorted(set(columns) - set(want_columns))
        missing = sorted(set(want_columns) - set(columns))
        problems.append(f"columns {list(columns)}, expected {list(want_columns)} ("
                        + "; ".join(([f"new: {', '.join(added)}"] if added else [])
                                    + ([f"missing: {', '.join(missing)}"] if missing else []))
                        + ")")
    return check("schema drift", not problems, "; ".join(problems) or "unchanged")


@dataclass(frozen=True)
class Provenance:
    source_name: str
    source_url: str | None = None
    license: str | None = None
    version: str | None = None


def intake_decision(store: str | Path, source: str, table: pd.DataFrame, columns: list[str],
                    summary: AuditSummary, policy: IntakePolicy,
                    provenance: Provenance) -> tuple[dict, pd.DataFrame]:
    """Diff against the previous intake of the same source and run the policy's checks:
    the record (intake.json) and its rows' keys (the next intake's diff), not yet recorded
    (`record_intake`), so that the outputs can carry the verdict before it is."""
    ledger = Ledger(store)
    previous = ledger.previous_intake(provenance.source_name)
    keys = prompt_keys(table)
    diff = diff_rows(previous[1] if previous else None, keys)
    diff["previous_intake"] = previous[0]["intake_id"] if previous else None
    checks = evaluate(policy, summary=summary, columns=columns,
                      previous=previous[0] if previous else None,
                      controls=control_characters(table))
    record = {"intake_id": new_run_id(), **asdict(provenance), "input": recorded_path(source),
              "fingerprint": summary.fingerprint,  # of the bytes the audit read
              "run_id": (summary.ledger or {}).get("run_id"),
              "taken_at": datetime.now(timezone.utc), "schema": summary.schema,
              "columns": list(columns), "rows": int(len(table)), "diff": diff,
              "checks": checks, "passed": all(c["passed"] for c in checks),
              "policy": asdict(policy)}
    return record, keys


def record_intake(store: str | Path, record: dict, keys: pd.DataFrame) -> dict:
    """Record the intake in the ledger; returns the record as intake.json holds it."""
    Ledger(store).record_intake(record, keys)
    return {**record, "taken_at": record["taken_at"].isoformat()}


def with_intake_gate(summary: AuditSummary, record: dict, policy: IntakePolicy) -> AuditSummary:
    """`summary` whose gate is the intake's: the policy's checks (the audit gate's among
    them), so summary.json, report.html and the ledger's run say what the intake decided."""
    gate = Gate(summary.gate.flagged_fraction, policy.max_flagged_fraction, record["passed"],
                tuple(record["checks"]))
    return summary.replace(gate=gate)


def intake_verdict(record: dict) -> str:
    """`INTAKE PASS: NAME` or `INTAKE FAIL: NAME: check (detail); ...` (the failed checks)."""
    if record["passed"]:
        return f"INTAKE PASS: {record['source_name']}"
    failed = [f"{c['check']} ({c['detail']})" for c in record["checks"] if not c["passed"]]
    return f"INTAKE FAIL: {record['source_name']}: " + "; ".join(failed)
