"""The quarantine ledger: what people decided about flagged rows and triggers, kept across
audits in one DuckDB file under a store directory.

Rows are keyed by `row_id` (a hash of the normalised content, the same in every dataset).
A row is `quarantined` when an audit flags it and nobody has decided yet, `confirmed` when
a person agrees it is poisoned, `released` when a person says it is not. Trigger patterns
are confirmed or released the same way. `apply_ledger` is the pure step that brings those
decisions into a new audit; `Ledger` reads and writes the file.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from auditors.errors import TrainguardError
from auditors.features.ngrams import (POSITION_END, POSITION_START, TOKEN_PATTERN, character_tokens,
                                      is_character_token, position_tokens)
from auditors.features.unicode import unicode_tokens
from auditors.fusion import gate

LEDGER_FILE = "ledger.duckdb"
QUARANTINED, CONFIRMED, RELEASED = "quarantined", "confirmed", "released"
STATUSES = (QUARANTINED, CONFIRMED, RELEASED)
TRIGGERS_PER_ROW = 3  # a row's ledger entry names at most this many triggers it contains
VERSIONED_PACKAGES = ("trainguard", "cleanlab", "sentence-transformers", "scikit-learn",
                      "prefect", "duckdb", "pandas")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    input VARCHAR, fingerprint VARCHAR, parameters JSON, versions JSON,
    rows INTEGER, flagged INTEGER, ledger JSON, outcome VARCHAR, out_dir VARCHAR);
CREATE TABLE IF NOT EXISTS rows (
    row_id VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, reasons VARCHAR, triggers VARCHAR[],
    prompt VARCHAR, response VARCHAR, label VARCHAR, poison_score DOUBLE,
    first_run VARCHAR, last_run VARCHAR, first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
    dataset_fingerprint VARCHAR, input VARCHAR, decided_by VARCHAR, decided_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS triggers (
    pattern VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, decided_by VARCHAR,
    decided_at TIMESTAMPTZ);
CREATE TABLE IF NOT EXISTS intakes (
    intake_id VARCHAR PRIMARY KEY, source_name VARCHAR, source_url VARCHAR, license VARCHAR,
    version VARCHAR, fingerprint VARCHAR, run_id VARCHAR, taken_at TIMESTAMPTZ, schema VARCHAR,
    columns VARCHAR[], rows INTEGER, diff JSON, checks JSON, passed BOOLEAN);
CREATE TABLE IF NOT EXISTS intake_rows (intake_id VARCHAR, prompt_key VARCHAR, row_id VARCHAR);
"""


# --- pure parts: fingerprints, pattern matching, applying decisions -----------------------

def fingerprint(source: str) -> str:
    """`sha256:<hex>` of a file, or of a directory's files (relative names and contents, in
    name order); hub datasets have no local bytes and are named instead."""
    path = Path(source)
    if not path.exists():
        return f"name:{source}"
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if file != path:
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\x00")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


class TextFeatures:
    """A row's text as the n-gram statistics see it, tokenised once for many patterns."""

    def __init__(self, text: str):
        self.text = text

    @cached_property
    def words(self) -> str:
        return f" {' '.join(re.findall(TOKEN_PATTERN, self.text.lower()))} "

    @cached_property
    def positions(self) -> set[str]:
        return set(position_tokens(self.text))

    @cached_property
    def unicode(self) -> set[str]:
        return set(unicode_tokens(self.text))

    @cached_property
    def characters(self) -> set[str]:
        return set(character_tokens(self.text))

    def __contains__(self, pattern: str) -> bool:
        """A case-folded word sequence, a position token (`^first words`, `$last`), a
        character n-gram (`~tcf`), or a Unicode token (an invisible character, a
        mixed-script marker, an emoji)."""
        if pattern[:1] in (POSITION_START, POSITION_END) and len(pattern) > 1:
            return pattern in self.positions
        if is_character_token(pattern):
            return pattern in self.characters
        words = re.findall(TOKEN_PATTERN, pattern.lower())
        if words and " ".join(words) == pattern.lower():
            return f" {pattern.lower()} " in self.words
        return pattern in self.unicode


def contains_pattern(text: str, pattern: str) -> bool:
    """Does `text` hold the trigger `pattern` the way the n-gram statistics count it?"""
    return pattern in TextFeatures(text)


def triggers_in(text: str | TextFeatures, patterns: list[str],
                limit: int | None = None) -> list[str]:
    features = text if isinstance(text, TextFeatures) else TextFeatures(text)
    return [p for p in patterns if p in features][:limit]


@dataclass
class Decisions:
    """What people decided, as read from the ledger."""

    confirmed_rows: set[str] = field(default_factory=set)
    released_rows: set[str] = field(default_factory=set)
    confirmed_triggers: list[str] = field(default_factory=list)
    released_triggers: set[str] = field(default_factory=set)


@dataclass
class Applied:
    rows: pd.DataFrame  # the audit's rows frame with flags and reasons updated
    row_triggers: list[list[str]]  # per row: the candidate/confirmed triggers it contains
    counts: dict  # what the ledger changed, for the summary and the gate


def apply_ledger(rows: pd.DataFrame, prompts: list[str], triggers: list[dict],
                 decisions: Decisions) -> Applied:
    """Bring people's decisions into an audit's rows (same rows, same order):

    - a confirmed row is flagged wherever it reappears;
    - a row containing a confirmed trigger is flagged (`ledger: confirmed trigger X`);
    - a released row is never flagged, nor is a row whose only triggers were released.
    """
    rows = rows.copy()
    flagged = rows["flagged"].to_numpy(dtype=bool).copy()
    reasons = rows["reasons"].tolist()
    candidates = [t["pattern"] for t in triggers if t["pattern"] not in decisions.released_triggers]
    released_candidates = [t["pattern"] for t in triggers
                           if t["pattern"] in decisions.released_triggers]
    counts = {"confirmed_rows": 0, "released_rows": 0, "released_trigger_rows": 0,
              "confirmed_trigger_rows": {}}
    row_triggers = []
    for i, (row_id, prompt) in enumerate(zip(rows["row_id"], prompts)):
        text = TextFeatures(prompt)
        confirmed_here = triggers_in(text, decisions.confirmed_triggers)
        row_triggers.append(list(dict.fromkeys(confirmed_here + triggers_in(text, candidates)))
                            [:TRIGGERS_PER_ROW])
        notes = []
        if row_id in decisions.released_rows:
            if flagged[i]:
                counts["released_rows"] += 1
            flagged[i] = False
            notes.append("ledger: released by a reviewer")
        elif row_id in decisions.confirmed_rows:
            flagged[i] = True
            counts["confirmed_rows"] += 1
            notes.append("ledger: confirmed row")
        elif confirmed_here:
            flagged[i] = True
            for pattern in confirmed_here:
                counts["confirmed_trigger_rows"][pattern] = \
                    counts["confirmed_trigger_rows"].get(pattern, 0) + 1
                notes.append(f"ledger: confirmed trigger {pattern!r}")
        elif flagged[i] and not row_triggers[i] and triggers_in(text, released_candidates):
            flagged[i] = False
            counts["released_trigger_rows"] += 1
            notes.append("ledger: its trigger was released by a reviewer")
        if notes:
            reasons[i] = "; ".join([reasons[i], *notes] if reasons[i] else notes)
    rows["flagged"], rows["reasons"] = flagged, reasons
    return Applied(rows, row_triggers, counts)


def updated_summary(summary: dict, applied: Applied, *, store: str, run_id: str) -> dict:
    """The summary after the ledger: counts and the gate follow the updated flags."""
    flagged = applied.rows["flagged"]
    return {**summary, "flagged": int(flagged.sum()), "clean_rows": int((~flagged).sum()),
            "gate": gate(flagged, summary["gate"]["max_flagged_fraction"]),
            "ledger": {"store": store, "run_id": run_id, **applied.counts}}


def apply_to_result(result, table: pd.DataFrame, decisions: Decisions, *, store: str,
                    run_id: str):
    """An `AuditResult` with the ledger applied, and what applying it did."""
    applied = apply_ledger(result.rows, table["prompt"].tolist(), result.triggers, decisions)
    summary = updated_summary(result.summary, applied, store=str(store), run_id=run_id)
    return replace(result, rows=applied.rows, summary=summary), applied


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- the file ------------------------------------------------------------------------------

class Ledger:
    """One DuckDB file under `store`. Each method opens and closes its own connection so a
    served deployment and a reviewer's command do not hold the file between steps."""

    def __init__(self, store: str | Path, *, create: bool = True):
        self.store = Path(store)
        self.path = self.store / LEDGER_FILE
        if not self.path.exists():
            if not create:
                raise TrainguardError(f"{self.path}: no ledger here (run an audit with "
                                      f"--store {self.store} first)")
            self.store.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.execute(_SCHEMA)

    def _connect(self) -> duckdb.DuckDBPyConnection:
        return duckdb.connect(str(self.path))

    def decisions(self) -> Decisions:
        with self._connect() as con:
            rows = con.execute("SELECT row_id, status FROM rows WHERE status != ?",
                               [QUARANTINED]).fetchall()
            patterns = con.execute("SELECT pattern, status FROM triggers ORDER BY pattern"
                                   ).fetchall()
        return Decisions(
            confirmed_rows={r for r, s in rows if s == CONFIRMED},
            released_rows={r for r, s in rows if s == RELEASED},
            confirmed_triggers=[p for p, s in patterns if s == CONFIRMED],
            released_triggers={p for p, s in patterns if s == RELEASED})

    def record_run(self, *, run_id: str, source: str, parameters: dict, summary: dict,
                   table: pd.DataFrame, applied: Applied, out_dir: str,
                   started_at: datetime | None = None) -> None:
        """The run, and every row it flagged or that the ledger already knows: new rows
        start `quarantined`; known rows keep their status and get this run as `last_run`."""
        now = _now()
        input_fingerprint = fingerprint(source)
        known = self.decisions()
        keep = applied.rows["flagged"].to_numpy(dtype=bool) | applied.rows["row_id"].isin(
            known.confirmed_rows | known.released_rows).to_numpy()
        picked = np.flatnonzero(keep)
        entries = pd.DataFrame({
            "row_id": applied.rows["row_id"].to_numpy()[picked],
            "reasons": applied.rows["reasons"].to_numpy()[picked],
            "triggers": [applied.row_triggers[i] for i in picked],
            "prompt": table["prompt"].to_numpy()[picked],
            "response": table["response"].to_numpy()[picked],
            "label": table["label"].to_numpy()[picked],
            "poison_score": applied.rows["poison_score"].to_numpy()[picked],
        }).drop_duplicates("row_id")
        outcome = "pass" if summary["gate"]["passed"] else "gate-failed"
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, started_at or now, now, source, input_fingerprint,
                         json.dumps(parameters, default=str), json.dumps(package_versions()),
                         summary["rows"], summary["flagged"],
                         json.dumps(summary.get("ledger", {})), outcome, out_dir])
            con.register("entries", entries)
            con.execute("""
                INSERT INTO rows BY NAME
                SELECT *, 'quarantined' AS status, $run AS first_run, $run AS last_run,
                       $now AS first_seen, $now AS last_seen, $fp AS dataset_fingerprint,
                       $src AS input
                FROM entries
                ON CONFLICT (row_id) DO UPDATE SET
                    last_run = excluded.last_run, last_seen = excluded.last_seen,
                    reasons = excluded.reasons, triggers = excluded.triggers,
                    poison_score = excluded.poison_score,
                    dataset_fingerprint = excluded.dataset_fingerprint, input = excluded.input
                """, {"run": run_id, "now": now, "fp": input_fingerprint, "src": source})
            con.execute("COMMIT")

    def record_intake(self, record: dict, keys: pd.DataFrame) -> None:
        """One intake (provenance, diff, checks) and its rows' keys for the next diff."""
        keys = keys.assign(intake_id=record["intake_id"])[["intake_id", "prompt_key", "row_id"]]
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO intakes BY NAME SELECT * FROM (SELECT $intake_id AS "
                        "intake_id, $source_name AS source_name, $source_url AS source_url, "
                        "$license AS license, $version AS version, $fingerprint AS fingerprint,"
                        " $run_id AS run_id, $taken_at AS taken_at, $schema AS schema, $columns AS columns,"
                        " $rows AS rows, $diff AS diff, $checks AS checks, $passed AS passed)",
                        {**record, "diff": json.dumps(record["diff"]),
                         "checks": json.dumps(record["checks"])})
            con.register("intake_keys", keys)
            con.execute("INSERT INTO intake_rows SELECT * FROM intake_keys")
            con.execute("COMMIT")

    def previous_intake(self, source_name: str) -> tuple[dict, pd.DataFrame] | None:
        """The latest intake of `source_name` and its rows' keys, or None."""
        with self._connect() as con:
            found = con.execute("SELECT * FROM intakes WHERE source_name = ? ORDER BY taken_at DESC "
                                "LIMIT 1", [source_name]).df()
            if found.empty:
                return None
            keys = con.execute("SELECT prompt_key, row_id FROM intake_rows WHERE intake_id = ?",
                               [found.at[0, "intake_id"]]).df()
        record = found.iloc[0].to_dict()
        record["columns"] = list(record["columns"])
        return record, keys

    def intakes(self) -> pd.DataFrame:
        with self._connect() as con:
            return con.execute("SELECT * FROM intakes ORDER BY taken_at").df()

    # --- decisions ---

    def decide(self, status: str, *, row_ids: list[str] = (), trigger: str | None = None,
               by: str = "") -> int:
        """Confirm or release rows by id, or a trigger pattern and the open rows holding it.
        Returns how many ledger rows changed."""
        if status not in (CONFIRMED, RELEASED):
            raise TrainguardError(f"unknown decision {status!r}")
        now = _now()
        with self._connect() as con:
            con.execute("BEGIN")
            changed = 0
            if row_ids:
                known = {r for (r,) in con.execute(
                    "SELECT row_id FROM rows WHERE list_contains(?, row_id)",
                    [list(row_ids)]).fetchall()}
                missing = sorted(set(row_ids) - known)
                if missing:
                    con.execute("ROLLBACK")
                    raise TrainguardError(f"row id(s) not in the ledger: {', '.join(missing)}")
                changed += con.execute(
                    "UPDATE rows SET status = ?, decided_by = ?, decided_at = ? "
                    "WHERE list_contains(?, row_id)", [status, by, now, list(row_ids)]
                ).fetchone()[0]
            if trigger is not None:
                con.execute("INSERT INTO triggers VALUES (?, ?, ?, ?) ON CONFLICT (pattern) DO "
                            "UPDATE SET status = excluded.status, decided_by = "
                            "excluded.decided_by, decided_at = excluded.decided_at",
                            [trigger, status, by, now])
                changed += con.execute(
                    "UPDATE rows SET status = ?, decided_by = ?, decided_at = ? "
                    "WHERE status = 'quarantined' AND list_contains(triggers, ?)",
                    [status, by, now, trigger]).fetchone()[0]
            con.execute("COMMIT")
        return changed

    # --- reading ---

    def open_flags(self, examples: int = 3) -> list[dict]:
        """Quarantined rows grouped by their first trigger, largest group first."""
        with self._connect() as con:
            frame = con.execute("""
                SELECT coalesce(triggers[1], '(no trigger)') AS trigger, count(*) AS rows,
                       list(row_id ORDER BY poison_score DESC) AS row_ids,
                       list(prompt ORDER BY poison_score DESC) AS prompts,
                       list(label ORDER BY poison_score DESC) AS labels
                FROM rows WHERE status = 'quarantined'
                GROUP BY ALL ORDER BY rows DESC, trigger""").df()
        return [{"trigger": r.trigger, "rows": int(r.rows),
                 "examples": [{"row_id": i, "prompt": p, "label": lab}
                              for i, p, lab in list(zip(r.row_ids, r.prompts, r.labels))[:examples]]}
                for r in frame.itertuples()]

    def rows(self, status: str | None = None) -> pd.DataFrame:
        with self._connect() as con:
            if status is None:
                return con.execute("SELECT * FROM rows ORDER BY row_id").df()
            return con.execute("SELECT * FROM rows WHERE status = ? ORDER BY row_id",
                               [status]).df()

    def trigger_decisions(self) -> pd.DataFrame:
        with self._connect() as con:
            return con.execute("SELECT * FROM triggers ORDER BY pattern").df()

    def runs(self) -> pd.DataFrame:
        with self._connect() as con:
            return con.execute("SELECT * FROM runs ORDER BY started_at").df()
