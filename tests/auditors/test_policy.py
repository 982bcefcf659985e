"""The intake gate's pieces: policy files, row diff, control characters, checks."""

import json
from pathlib import Path

import pandas as pd
import pytest

from auditors.errors import TrainguardError
from auditors.ledger import Ledger
from auditors.policy import (IntakePolicy, control_characters, diff_rows, evaluate,
                             prompt_keys)
from tests.summaries import audit_summary


def test_policy_files_reject_unknown_keys_and_bad_values(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("max_flagged_fraction = 0.02\nexpected_columns = ['text', 'label']\n")
    policy = IntakePolicy.from_toml(path)
    assert policy.max_flagged_fraction == 0.02 and policy.expected_columns == ("text", "label")
    path.write_text("max_flaged_fraction = 0.02\n")
    with pytest.raises(TrainguardError, match="unknown policy key"):
        IntakePolicy.from_toml(path)
    with pytest.raises(TrainguardError, match="between 0 and 1"):
        IntakePolicy.from_dict({"max_flagged_fraction": 2})


@pytest.mark.parametrize("values, message", [
    ({"fail_on_confirmed": "no"}, "fail_on_confirmed must be true or false, not 'no'"),
    ({"fail_on_schema_drift": 0}, "fail_on_schema_drift must be true or false, not 0"),
    ({"max_flagged_fraction": True}, "must be a number between 0 and 1, not True"),
    ({"max_flagged_fraction": "0.01"}, "must be a number between 0 and 1, not '0.01'"),
    ({"expected_schema": "instructions"}, "expected_schema must be one of classification, "),
    ({"expected_schema": 5}, "not 5"),
])
def test_policy_values_must_have_their_keys_types(values, message):
    with pytest.raises(TrainguardError, match=message):
        IntakePolicy.from_dict(values)


def _table(prompts, ids):
    return pd.DataFrame({"prompt": prompts, "row_id": ids})


def test_diff_counts_added_removed_and_changed_rows():
    before = prompt_keys(_table(["a", "b", "c"], ["1", "2", "3"]))
    after = prompt_keys(_table(["a", "b", "d"], ["1", "2x", "4"]))  # b's label changed
    assert diff_rows(before, after) == {"added": 1, "removed": 1, "changed": 1, "unchanged": 1,
                                        "added_row_ids": ["4"], "removed_row_ids": ["3"],
                                        "changed_row_ids": ["2x"]}
    first = diff_rows(None, after)
    assert first["added"] == 3 and first["added_row_ids"] == []


def test_diff_lists_every_changed_row_not_a_sample():
    prompts = [f"prompt {i}" for i in range(40)]
    before = prompt_keys(_table(prompts, [f"old{i}" for i in range(40)]))
    after = prompt_keys(_table(prompts, [f"new{i}" for i in range(40)]))
    assert diff_rows(before, after)["changed_row_ids"] == sorted(f"new{i}" for i in range(40))


def test_diff_counts_rows_with_their_copies():
    """Copies are rows: 50 more copies of an existing row are 50 rows added; a second
    answer under an existing prompt is added, not a change to the first; one of two
    answers dropped is removed. Every row of either side is counted exactly once."""
    before = prompt_keys(_table(["a", "b", "c", "c"], ["1", "2", "3", "3b"]))
    after = prompt_keys(_table(["a"] * 51 + ["b", "b", "c"], ["1"] * 51 + ["2", "2b", "3"]))

    diff = diff_rows(before, after)

    assert {k: diff[k] for k in ("added", "removed", "changed", "unchanged")} == \
        {"added": 51, "removed": 1, "changed": 0, "unchanged": 3}
    assert diff["added_row_ids"] == ["1"] * 50 + ["2b"] and diff["removed_row_ids"] == ["3b"]
    assert diff["unchanged"] + diff["changed"] + diff["added"] == len(after)
    assert diff["unchanged"] + diff["changed"] + diff["removed"] == len(before)


def test_c1_controls_are_named_and_single_rows_are_one_row():
    table = pd.DataFrame({"prompt": ["next\x85line", "fine"], "response": "", "rejected": ""})
    assert control_characters(table) == {"U+0085 CONTROL": 1}
    checks = evaluate(IntakePolicy(), summary=audit_summary(rows=2, flagged=0), columns=[],
                      previous=None, controls=control_characters(table))
    assert "U+0085 CONTROL in 1 row" in {c["check"]: c["detail"] for c in checks}[
        "control characters"]


def test_control_characters_are_found_in_any_text_field():
    table = pd.DataFrame({"prompt": ["fine", "zero\u200bwidth", "esc \x1b[31m", "tab\tok\n"],
                          "response": ["\u202eevil", "", "", ""], "rejected": ""})
    assert control_characters(table) == {"U+200B ZERO WIDTH SPACE": 1,
                                         "U+202E RIGHT-TO-LEFT OVERRIDE": 1,
                                         "U+001B CONTROL": 1}
    assert control_characters(table.iloc[[3]]) == {}  # tabs and newlines are ordinary


SUMMARY = audit_summary(rows=100, flagged=1, schema="classification",
                        gate={"max_flagged_fraction": 0.05},
                        ledger={"confirmed_rows": 0, "confirmed_trigger_rows": {}})


def _failed(checks):
    return {c["check"] for c in checks if not c["passed"]}


def test_checks_pass_on_a_clean_first_intake():
    checks = evaluate(IntakePolicy(max_flagged_fraction=0.05), summary=SUMMARY,
                      columns=["text", "label"], previous=None, controls={})
    assert [c["check"] for c in checks] == ["flagged share", "significant triggers",
                                            "injected content", "confirmed rows and triggers",
                                            "control characters", "schema drift"]
    assert not _failed(checks)


def test_each_check_fails_on_its_own_evidence():
    summary = audit_summary(rows=100, flagged=10, schema="classification",
                            gate={"max_flagged_fraction": 0.05},
                            significant_triggers=("sudo", "bb"),
                            injected_phrases=("visit shopnova",),
                            ledger={"confirmed_rows": 1, "confirmed_trigger_rows": {"cf": 2},
                                    "released_triggers": ["bb"]})
    checks = evaluate(IntakePolicy(max_flagged_fraction=0.05), summary=summary,
                      columns=["text", "label", "extra"],
                      previous={"schema": "classification", "columns": ["text", "label"]},
                      controls={"U+200B ZERO WIDTH SPACE": 3})
    assert _failed(checks) == {"flagged share", "significant triggers", "injected content",
                               "confirmed rows and triggers", "control characters",
                               "schema drift"}
    detail = {c["check"]: c["detail"] for c in checks}
    assert detail["significant triggers"] == "'sudo'"  # 'bb' was released by a reviewer
    assert detail["injected content"] == "'visit shopnova'"
    assert "'cf' in 2 rows" in detail["confirmed rows and triggers"]
    assert "U+200B ZERO WIDTH SPACE in 3 rows" in detail["control characters"]
    assert "expected ['text', 'label']" in detail["schema drift"]


def test_pinned_schema_is_checked_and_disabled_checks_are_skipped():
    checks = evaluate(IntakePolicy(expected_schema="instruction", fail_on_confirmed=False,
                                   fail_on_control_characters=False, max_flagged_fraction=0.05),
                      summary=SUMMARY, columns=["text", "label"], previous=None,
                      controls={"U+200B ZERO WIDTH SPACE": 3})
    assert [c["check"] for c in checks] == ["flagged share", "significant triggers",
                                            "injected content", "schema drift"]
    assert _failed(checks) == {"schema drift"}


def test_reordered_columns_are_not_drift_and_changed_ones_are_named():
    previous = {"schema": "instruction", "columns": ["instruction", "input", "output"]}
    summary = audit_summary(schema="instruction", rows=10, flagged=0)

    def drift(columns):
        checks = evaluate(IntakePolicy(), summary=summary, columns=columns, previous=previous,
                          controls={})
        return next(c for c in checks if c["check"] == "schema drift")

    assert drift(["output", "instruction", "input"])["passed"]  # JSON keys have no order
    renamed = drift(["instruction", "context", "output"])
    assert not renamed["passed"] and "(new: context; missing: input)" in renamed["detail"]


def test_an_intake_is_compared_with_the_last_one_that_passed(tmp_path):
    """Rerunning a failed intake fails it again: the failed one was not accepted, so it is
    not the baseline."""
    from auditors.policy import Provenance, intake_decision, record_intake

    def intake(columns, prompts):  # decided, then recorded, as the intake flow does
        table = pd.DataFrame({"prompt": prompts, "response": "r", "rejected": "", "label": "",
                              "row_id": [f"id-{p}" for p in prompts]})
        summary = audit_summary(schema="instruction", rows=len(prompts), flagged=0)
        store = tmp_path / "store"
        return record_intake(store, *intake_decision(store, "d.jsonl", table, columns,
                                                     summary, IntakePolicy(),
                                                     Provenance("vendor")))

    first = intake(["instruction", "input", "output"], ["a", "b"])
    renamed = ["instruction", "context", "output"]
    failed = intake(renamed, ["a", "b", "c"])
    again = intake(renamed, ["a", "b", "c"])
    assert first["passed"] and not failed["passed"] and not again["passed"]
    assert again["diff"]["previous_intake"] == first["intake_id"]
    assert again["diff"]["added"] == 1 and again["diff"]["added_row_ids"] == ["id-c"]
    recorded = Ledger(tmp_path / "store").intakes()  # with the input and the policy it met
    assert recorded["input"].tolist() == [str(Path("d.jsonl").resolve())] * 3
    assert json.loads(recorded["policy"].iat[0])["max_flagged_fraction"] == 0.005


def test_a_policy_failure_is_the_verdict_the_outputs_carry(tmp_path):
    """Schema drift with nothing flagged: the audit gate alone passes, the intake does not,
    and the summary written (summary.json, report.html, the ledger's run) says FAIL."""
    from auditors.policy import Provenance, intake_decision, with_intake_gate
    from auditors.report import verdict_line

    table = pd.DataFrame({"prompt": ["a", "b"], "response": "r", "rejected": "", "label": "",
                          "row_id": ["id-a", "id-b"]})
    summary = audit_summary(schema="instruction", rows=2, flagged=0)
    rules = IntakePolicy(expected_columns=("instruction", "input", "output"))
    record, _ = intake_decision(tmp_path / "store", "d.jsonl", table,
                                ["instruction", "input", "output", "system"], summary, rules,
                                Provenance("vendor"))

    gated = with_intake_gate(summary, record, rules)

    assert summary.passed and not record["passed"] and not gated.passed
    assert verdict_line(gated).startswith("FAIL: 0 of 2 rows flagged")
    assert "schema drift: columns" in verdict_line(gated) and "new: system" in verdict_line(gated)
    assert Ledger(tmp_path / "store").intakes().empty  # decided, not yet recorded
