"""One contract, every registered detector: per-row frame in input order, scores in [0, 1]
with higher = more suspicious, a summary and an info dict, parameters stored verbatim."""

import dataclasses
import inspect

import numpy as np
import pytest

from auditors.detectors import DEFAULT_DETECTORS, REGISTRY, Detector, register
from auditors.detectors.base import ROW_COLUMNS


FIXTURES = ("sample_inputs", "refusal_inputs", "preference_inputs", "dos_inputs",
            "injection_inputs")
# Where each detector has something to find; the default is the poisoned SST-2 sample.
# strip and shortcut read a proxy that has learned the trigger (the n-gram proxy fitted on
# the 3,000-row sample is that confident on hardly any poisoned row).
FINDS_ISSUES_IN = {"repeated_response": "refusal_inputs", "unrelated_response": "refusal_inputs",
                   "activation_cluster": "planted_cluster_inputs", "strip": "steady_proxy_inputs",
                   "shortcut": "steady_proxy_inputs",
                   "preference_flip": "preference_inputs", "degraded_response": "dos_inputs",
                   "injected_content": "injection_inputs"}


@pytest.fixture(params=FIXTURES)
def inputs(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_detector_runs_on_some_bundled_data(name, request):
    detector = REGISTRY[name]()
    assert any(not detector.missing_inputs(request.getfixturevalue(f)) for f in FIXTURES)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_detector_contract(name, inputs):
    detector = REGISTRY[name]()
    if detector.missing_inputs(inputs):
        pytest.skip(f"{name} does not apply to this data ({detector.missing_inputs(inputs)})")
    assert detector.name == name and detector.description
    result = detector.detect(inputs)
    assert list(result.rows.columns) == list(ROW_COLUMNS)
    assert len(result.rows) == inputs.n_rows
    assert list(result.rows.index) == list(range(inputs.n_rows))
    scores = result.rows["score"].to_numpy()
    assert np.isfinite(scores).all() and scores.min() >= 0.0 and scores.max() <= 1.0
    assert result.rows["is_issue"].dtype == bool
    flagged_reasons = result.rows.loc[result.rows["is_issue"], "reason"]
    assert (flagged_reasons.str.len() > 0).all(), "every issue explains itself"
    assert result.summary["detector"] == name
    assert result.summary["issues"] == int(result.rows["is_issue"].sum())
    assert isinstance(result.info, dict)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_detector_issues_score_higher_than_the_rest(name, request):
    """Higher = more suspicious: rows a detector calls issues outscore the others on average."""
    inputs = request.getfixturevalue(FINDS_ISSUES_IN.get(name, "sample_inputs"))
    rows = REGISTRY[name]().detect(inputs).rows
    assert rows["is_issue"].any() and not rows["is_issue"].all()  # the poisoned data has some
    assert rows.loc[rows.is_issue, "score"].mean() > rows.loc[~rows.is_issue, "score"].mean()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_init_only_stores_typed_defaulted_parameters(name):
    cls = REGISTRY[name]
    signature = inspect.signature(cls.__init__)
    params = [p for p in signature.parameters.values() if p.name != "self"]
    assert all(p.default is not inspect.Parameter.empty for p in params)
    detector = cls()
    for p in params:
        assert getattr(detector, p.name) == p.default


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_missing_inputs_are_reported(name, preference_inputs):
    detector = REGISTRY[name]()
    stripped = dataclasses.replace(preference_inputs, **{r: None for r in detector.requires})
    assert detector.missing_inputs(stripped) == list(detector.requires)
    assert detector.missing_inputs(preference_inputs) == []  # pairs give every input


def test_registry_rejects_non_detectors_and_duplicates():
    with pytest.raises(TypeError):
        register(type("NotADetector", (), {"name": "x"}))
    with pytest.raises(ValueError):
        register(REGISTRY["trigger"])
    assert set(DEFAULT_DETECTORS) <= set(REGISTRY)
    assert all(issubclass(cls, Detector) for cls in REGISTRY.values())
