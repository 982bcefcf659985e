"""A test's `AuditSummary`: the fields it names, placeholders for the rest."""

from auditors.summary import AuditSummary


def audit_summary(**fields) -> AuditSummary:
    """`gate` may be a partial dict (the share defaults to flagged / rows, the limit to
    0.5%, `passed` to the share being within it)."""
    rows, flagged = int(fields.get("rows", 0)), int(fields.get("flagged", 0))
    gate = dict(fields.pop("gate", {}))
    gate.setdefault("flagged_fraction", flagged / rows if rows else 0.0)
    gate.setdefault("max_flagged_fraction", 0.005)
    gate.setdefault("passed", gate["flagged_fraction"] <= gate["max_flagged_fraction"])
    return AuditSummary.from_dict({"input": "data.tsv", "rows": rows, "flagged": flagged,
                                   **fields, "gate": gate})
