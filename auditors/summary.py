"""What an audit concluded, typed: the gate's verdict and the run's summary. `summary.json`
is `AuditSummary.to_dict()`, and `AuditSummary.from_dict` reads one back; everything else
(outputs, ledger, policy, report, CLI, the Python API) reads the attributes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Gate:
    """The flagged share against its limit; with a ledger or an intake policy, `passed` also
    needs every check in `checks` (`{"check", "passed", "detail"}`) to pass."""

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
    targets: tuple[str, ...] = ()
    outputs: OutputNames = OutputNames()
    timings_seconds: dict = field(default_factory=dict)
    top_triggers: tuple[dict, ...] = ()
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
                    top_triggers=list(self.top_triggers))
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
        for name in ("detectors_run", "targets", "top_triggers"):
            values[name] = tuple(values.get(name, ()))
        return cls(**values)
