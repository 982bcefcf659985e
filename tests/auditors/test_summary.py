"""The gate rule shared by audits, intake, the ledger and the STRIP probe check."""

import pytest

from auditors.summary import audit_gate


@pytest.mark.parametrize("flagged, rows, limit, passed", [
    (1, 100, 0.01, True),
    (2, 100, 0.01, False),
    (0, 0, 0.0, True),
])
def test_flagged_share_gate(flagged, rows, limit, passed):
    verdict = audit_gate(rows=rows, flagged=flagged, max_flagged_fraction=limit,
                         fail_on_confirmed=False)
    assert verdict.passed is passed
    assert verdict.flagged_fraction == (flagged / rows if rows else 0.0)
    assert [c["check"] for c in verdict.to_dict()["checks"]] == [
        "flagged share", "significant triggers", "injected content"]


def test_a_significant_trigger_fails_the_gate_below_the_share_limit():
    verdict = audit_gate(rows=1000, flagged=2, max_flagged_fraction=0.05,
                         significant_triggers=["cf"])
    assert not verdict.passed
    failed = [c["check"] for c in verdict.checks if not c["passed"]]
    assert failed == ["significant triggers"]
    released = audit_gate(rows=1000, flagged=2, max_flagged_fraction=0.05,
                          significant_triggers=["cf"], ledger={"released_triggers": ["cf"]})
    assert released.passed


def test_injected_content_fails_the_gate_below_the_share_limit():
    verdict = audit_gate(rows=2000, flagged=9, max_flagged_fraction=0.005,
                         injected_phrases=["visit shopnova"])
    assert [(c["check"], c["detail"]) for c in verdict.checks if not c["passed"]] == [
        ("injected content", "'visit shopnova'")]
    released = audit_gate(rows=2000, flagged=9, max_flagged_fraction=0.005,
                          injected_phrases=["visit shopnova"],
                          ledger={"released_triggers": ["visit shopnova"]})
    assert released.passed
