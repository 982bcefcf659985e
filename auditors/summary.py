"""What an audit concluded, typed: the gate's verdict and the run's summary. `summary.json`
is `AuditSummary.to_dict()`, and `AuditSummary.from_dict` reads one back; everything else
(outputs, ledger, policy, report, CLI, the Python API) reads the attributes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gate:
    """The flagged share against its limit; an audit's gate (`audit_gate`) passes when every
    check in `checks` (`{"check", "passed", "detail"}`, from `gate_checks`) passes."""

    flagged_fraction: float
    max_flagged_fraction: float
    passed: bool
    checks: tuple[dict, ...] = ()

    def to_dict(self) -> dict:
        data = {"flagged_fraction": self.flagged_fraction,
                "max_flagged_fraction": self.max_flagged_fraction, "passed": self.passed}
        return {**data, "checks": list(self.checks)} if self.checks else data


@dataclass(frozen=True)
class OutputNames:
    """The file names an audit writes next to summary.json (`skipped` only with bad rows)."""

    rows: str = "rows.parquet"
    triggers: str = "triggers.json"
    clean: str = ""
    quarantine: str = ""
    skipped: str | None = None


@dataclass(frozen=True)
class AuditSummary:
    input: str
    rows: int
    flagged: int
    gate: Gate
    trainguard_version: str = ""
    fingerprint: str = ""  # of the bytes audited
    format: str = ""
    schema: str = ""
    schema_columns: str = ""
    clean_rows: int = 0
    skipped_rows: int = 0
    flag_threshold: float = 0.5
    detectors_run: tuple[str, ...] = ()
    detectors_skipped: dict = field(default_factory=dict)  # name -> {"kind", "reason"}
    detectors_failed: dict = field(default_factory=dict)  # name -> error text
    detector_summaries: dict = field(default_factory=dict)
    embedding_model: str = ""
    label_model_note: str = ""
    input_warning: str = ""  # the input reads, but in a way that hides findings
    targets: tuple[str, ...] = ()
    outputs: OutputNames = OutputNames()
    timings_seconds: dict = field(default_factory=dict)
    top_triggers: tuple[dict, ...] = ()
    # candidates whose flag is a significance decision and that were significant
    significant_triggers: tuple[str, ...] = ()
    # response-side phrases that flagged rows (injected content)
    injected_phrases: tuple[str, ...] = ()
    ledger: dict | None = None  # what the quarantine ledger changed, when one was used

    @property
    def passed(self) -> bool:
        return self.gate.passed

    def replace(self, **changes) -> AuditSummary:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """summary.json's content (no `ledger` key without a ledger)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(gate=self.gate.to_dict(), outputs=dataclasses.asdict(self.outputs),
                    detectors_run=list(self.detectors_run), targets=list(self.targets),
                    top_triggers=list(self.top_triggers),
                    significant_triggers=list(self.significant_triggers),
                    injected_phrases=list(self.injected_phrases))
        if self.ledger is None:
            del data["ledger"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AuditSummary:
        """A summary.json read back (keys it does not know are ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        gate = dict(values["gate"])
        values["gate"] = Gate(**{**gate, "checks": tuple(gate.get("checks", ()))})
        values["outputs"] = OutputNames(**values.get("outputs", {}))
        for name in ("detectors_run", "targets", "top_triggers", "significant_triggers",
                     "injected_phrases"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)


def audit_gate(*, rows: int, flagged: int, max_flagged_fraction: float, **options) -> Gate:
    """The gate of an audit or intake: `gate_checks(**options)`, all of which must pass."""
    checks = gate_checks(rows=rows, flagged=flagged, max_flagged_fraction=max_flagged_fraction,
                         **options)
    return Gate(flagged / rows if rows else 0.0, max_flagged_fraction,
                all(c["passed"] for c in checks), tuple(checks))


def share_gate(*, rows: int, flagged: int, max_flagged_fraction: float) -> Gate:
    """A gate on the flagged share alone, for checks that have no triggers or ledger (STRIP's
    probes): `audit_gate`'s other checks would pass vacuously and read as findings."""
    share = _share_check(rows, flagged, max_flagged_fraction)
    return Gate(flagged / rows if rows else 0.0, max_flagged_fraction, share["passed"],
                (share,))


def _share_check(rows: int, flagged: int, max_flagged_fraction: float) -> dict:
    """The flagged share (compared unrounded) against its limit."""
    from auditors.report import percents

    share = flagged / rows if rows else 0.0
    shown, limit = percents(share, max_flagged_fraction)
    return check("flagged share", share <= max_flagged_fraction,
                 f"{flagged} of {rows} rows flagged ({shown}; limit {limit})")


def check(name: str, passed: bool, detail: str) -> dict:
    """One gate or policy check: `{"check", "passed", "detail"}`."""
    return {"check": name, "passed": bool(passed), "detail": detail}


def gate_checks(*, rows: int, flagged: int, max_flagged_fraction: float,
                ledger: dict | None = None, fail_on_confirmed: bool = True,
                significant_triggers=(), injected_phrases=()) -> list[dict]:
    """The gate of every audit and intake, one rule for all: the flagged share (compared
    unrounded) is at most `max_flagged_fraction`; no trigger was significant at the
    configured false-discovery rate (`significant_triggers`, less those a reviewer released:
    a real trigger in 0.2% of rows is an attack, whatever the share); no phrase injected
    into responses flagged rows (`injected_phrases`, less those released: an advert in
    0.4% of the answers is an attack too); and, with
    `fail_on_confirmed`, no confirmed row or row holding a confirmed trigger is in the data.
    `ledger` is the summary's ledger counts (`apply_ledger`'s `counts`)."""
    checks = [_share_check(rows, flagged, max_flagged_fraction)]
    ledger = ledger or {}
    significant = [p for p in significant_triggers if p not in ledger.get("released_triggers", ())]
    checks.append(check("significant triggers", not significant,
                        ", ".join(repr(p) for p in significant) or "none"))
    injected = [p for p in injected_phrases if p not in ledger.get("released_triggers", ())]
    checks.append(check("injected content", not injected,
                        ", ".join(repr(p) for p in injected) or "none"))
    if fail_on_confirmed:
        confirmed_rows = ledger.get("confirmed_rows", 0)
        trigger_rows = ledger.get("confirmed_trigger_rows", {})
        hits = ", ".join(f"{p!r} in {n} rows" for p, n in trigger_rows.items())
        found = ([f"{confirmed_rows} rows confirmed by id reappear"] if confirmed_rows else []) \
            + ([f"rows holding a confirmed trigger: {hits}"] if hits else [])
        checks.append(check("confirmed rows and triggers",
                            confirmed_rows == 0 and not any(trigger_rows.values()),
                            "; ".join(found) or "none"))
    return checks
