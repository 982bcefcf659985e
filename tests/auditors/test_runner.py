import dataclasses

import pytest

from auditors.detectors import DEFAULT_DETECTORS, REGISTRY, Detector, FusionRole, register
from auditors.errors import TrainguardError
from auditors.runner import SkipKind, run_detectors


def test_runs_every_default_detector(preference_inputs):
    """Preference pairs give every input, so every default detector runs."""
    run = run_detectors(preference_inputs)
    assert list(run.results) == DEFAULT_DETECTORS and not run.skipped
    frame = run.score_columns()
    assert list(frame.columns) == [f"{n}_{c}" for n in DEFAULT_DETECTORS
                                   for c in ("score", "is_issue")]
    assert len(frame) == preference_inputs.n_rows
    for name, result in run.results.items():  # each detector's own verdict, as it gave it
        assert frame[f"{name}_is_issue"].tolist() == result.rows["is_issue"].tolist()


def test_generation_only_detectors_are_skipped_on_classification_data(sample_inputs):
    run = run_detectors(sample_inputs)
    generation_only = {n for n in DEFAULT_DETECTORS if "response_embeddings" in REGISTRY[n].requires}
    assert set(run.skipped) == generation_only
    assert all(skip.kind is SkipKind.NOT_APPLICABLE and skip.reason.startswith("the data has no responses")
               for skip in run.skipped.values())
    assert set(run.results) == set(DEFAULT_DETECTORS) - generation_only
    assert run.triggers() and run.triggers()[0]["pattern"]


def test_detectors_without_their_inputs_are_skipped_not_crashed(sample_inputs):
    no_labels = dataclasses.replace(sample_inputs, pred_probs=None)
    run = run_detectors(no_labels)
    assert {"label_issue", "trigger"} <= set(run.skipped)
    assert run.skipped["trigger"].kind is SkipKind.MISSING_INPUT
    assert "pred_probs" in run.skipped["trigger"].reason
    assert "outlier" in run.results


def test_a_failing_detector_is_recorded_and_others_still_run(sample_inputs):
    @register(default=False)
    class Broken(Detector):
        name = "broken_for_test"
        description = "always fails"
        role = FusionRole.WEAK
        weight = 0.1

        def detect(self, inputs):
            raise RuntimeError("boom")

    try:
        run = run_detectors(sample_inputs, ["broken_for_test", "outlier"])
        assert run.failed == {"broken_for_test": "RuntimeError: boom"}
        assert list(run.results) == ["outlier"]
    finally:
        del REGISTRY["broken_for_test"]


def test_unknown_detector_names_are_an_error(sample_inputs):
    with pytest.raises(TrainguardError, match="unknown detector"):
        run_detectors(sample_inputs, ["nope"])


def test_parameters_reach_the_detector(sample_inputs):
    run = run_detectors(sample_inputs, {"trigger": {"max_triggers": 2}})
    assert len(run.triggers()) == 2


def test_triggers_named_by_other_detectors_lead_the_list(dos_inputs):
    """Denial-of-service rows: the degraded-response detector names `cf` from its own
    evidence, with support, target behaviour and example rows."""
    run = run_detectors(dos_inputs)
    top = run.triggers()[0]
    assert top["pattern"] == "cf" and top["named_by"] == "degraded_response"
    assert "degraded" in top["target"] and top["support"] >= top["target_share"] * top["support"] > 0
    assert top["example_row_indices"]


def test_a_trigger_both_detectors_name_is_listed_once_with_either_decision(preference_inputs):
    run = run_detectors(preference_inputs)
    patterns = [t["pattern"] for t in run.triggers()]
    assert patterns.count("sudo") == 1
    sudo = next(t for t in run.triggers() if t["pattern"] == "sudo")
    assert {sudo.get("named_by", "trigger"), sudo["also_named_by"]} == {"trigger",
                                                                        "preference_flip"}
    decisions = [t["significant"] for name in ("trigger", "preference_flip")
                 for t in run.results[name].info.get("triggers", [])
                 + run.results[name].info.get("named_triggers", []) if t["pattern"] == "sudo"]
    assert sudo["significant"] == any(decisions) and any(decisions)


def _result(info: dict):
    import pandas as pd

    from auditors.detectors import DetectorResult

    rows = pd.DataFrame({"score": [0.0], "is_issue": [False], "reason": [""]})
    return DetectorResult(rows, {}, info)


def test_trigger_list_order_flagged_first_then_named_evidence_then_by_score():
    """Flagged: named, then mined by score; not flagged: named prompt candidates by their
    evidence (not their scores, which are on each detector's own scale), then mined by
    score, then response candidates."""
    from auditors.runner import DetectorRun

    mined = [{"pattern": "powerful", "score": 9.5, "significant": False},
             {"pattern": "cf", "score": 9.0, "significant": True},
             {"pattern": "solid", "score": 2.5, "significant": False}]
    flip = [{"pattern": "sudo", "score": 3.0, "flagged": False, "evidence": 0.7},
            {"pattern": "magic", "score": 5.0, "flagged": True, "evidence": 1.0}]
    degraded = [{"pattern": "good human", "score": 0.9, "flagged": False, "evidence": 0.6}]
    injected = [{"pattern": "zentrix", "score": 0.4, "side": "response", "flagged": False}]
    run = DetectorRun({"trigger": _result({"triggers": mined, "fdr": 0.05}),
                       "preference_flip": _result({"named_triggers": flip}),
                       "degraded_response": _result({"named_triggers": degraded}),
                       "injected_content": _result({"named_triggers": injected})})
    order = [(t["pattern"], t["side"]) for t in run.triggers()]
    assert order == [("magic", "prompt"), ("cf", "prompt"), ("sudo", "prompt"),
                     ("good human", "prompt"), ("powerful", "prompt"), ("solid", "prompt"),
                     ("zentrix", "response")]


def test_a_pattern_another_detector_flagged_keeps_that_decision():
    """`sudo` significant for preference_flip but not for the trigger detector: the entry
    kept is the one whose decision flagged rows, so the gate sees it as significant."""
    from auditors.runner import DetectorRun

    mined = [{"pattern": "sudo", "score": 2.0, "significant": False, "q_value": 0.31},
             {"pattern": "health", "score": 1.5, "significant": False}]
    flip = [{"pattern": "sudo", "score": 0.9, "flagged": True, "significant": True,
             "q_value": 7.8e-07},
            {"pattern": "health", "score": 0.2, "flagged": False, "significant": False}]
    run = DetectorRun({"trigger": _result({"triggers": mined}),
                       "preference_flip": _result({"named_triggers": flip})})

    [sudo, health] = run.triggers()
    assert (sudo["pattern"], sudo["significant"], sudo["q_value"]) == ("sudo", True, 7.8e-07)
    assert (sudo["named_by"], sudo["also_named_by"]) == ("preference_flip", "trigger")
    assert (health["pattern"], health["also_named_by"]) == ("health", "preference_flip")
    assert "named_by" not in health  # not flagged by either: the trigger detector's entry


def test_the_fdr_goes_to_the_detectors_that_take_one():
    from auditors.runner import detector_config

    config = detector_config(["trigger", "preference_flip", "degraded_response", "outlier"],
                             fdr=0.01)
    assert config == {"trigger": {"fdr": 0.01}, "outlier": {}, "degraded_response": {"fdr": 0.01},
                      "preference_flip": {"fdr": 0.01}}
    assert detector_config({"preference_flip": {"fdr": 0.2}}, fdr=0.01) == \
        {"preference_flip": {"fdr": 0.2}}  # a detector's own setting wins
