"""A detector is one class with one decorator: registered, run, fused and able to flag, with
no other file touched (README: "Adding a detector")."""

import pkgutil

import numpy as np
import pytest

import auditors.detectors
from auditors.detectors import (DEFAULT_DETECTORS, REGISTRY, AuditInputs, Detector,
                                DetectorResult, FusionRole, register)
from auditors.fusion import fuse
from auditors.runner import run_detectors


class LongPrompt(Detector):
    """Toy: prompts longer than `max_chars` are suspicious."""

    name = "long_prompt_for_test"
    description = "prompt longer than max_chars"
    role = FusionRole.STRONG
    weight = 1.0
    requires = ("prompt_embeddings",)

    def __init__(self, max_chars: int = 150):
        self.max_chars = max_chars

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        length = inputs.table["prompt"].str.len().to_numpy()
        is_issue = length > self.max_chars
        return self.result(np.where(is_issue, 0.9, 0.0), is_issue,
                           [f"{n} characters" if f else "" for n, f in zip(length, is_issue)])


@pytest.fixture
def toy_registered():
    register(LongPrompt)
    try:
        yield LongPrompt
    finally:
        del REGISTRY[LongPrompt.name]
        DEFAULT_DETECTORS.remove(LongPrompt.name)


def test_a_registered_detector_runs_by_default_and_its_rows_are_flagged(toy_registered,
                                                                        sample_inputs):
    run = run_detectors(sample_inputs)
    assert LongPrompt.name in run.results
    fused = fuse(run, sample_inputs.n_rows)
    long_rows = sample_inputs.table["prompt"].str.len().to_numpy() > 150
    assert long_rows.any()
    assert fused.loc[long_rows, "flagged"].all()
    assert fused.loc[long_rows, "reasons"].str.contains(f"{LongPrompt.name}: ").all()
    assert f"{LongPrompt.name}_score" in run.score_columns()


def test_weak_role_orders_rows_but_never_flags_beside_a_strong_detector(toy_registered,
                                                                       sample_inputs):
    LongPrompt.role, LongPrompt.weight = FusionRole.WEAK, 0.05
    try:
        run = run_detectors(sample_inputs, ["trigger", LongPrompt.name])
        fused = fuse(run, sample_inputs.n_rows)
        by_trigger = run.results["trigger"].rows["is_issue"].to_numpy()
        assert (fused["flagged"].to_numpy() <= by_trigger).all()
    finally:
        LongPrompt.role, LongPrompt.weight = FusionRole.STRONG, 1.0


@pytest.mark.parametrize("missing", ["role", "weight", "description"])
def test_a_detector_must_declare_its_fusion_place(missing):
    attributes = {"name": "incomplete_for_test", "description": "d", "role": FusionRole.WEAK,
                  "weight": 0.1, "detect": lambda self, inputs: None}
    del attributes[missing]
    with pytest.raises(TypeError, match=missing):
        register(type("Incomplete", (Detector,), attributes))
    assert "incomplete_for_test" not in REGISTRY


def test_requiring_an_input_that_does_not_exist_is_refused():
    attributes = {"name": "typo_for_test", "description": "d", "role": FusionRole.WEAK,
                  "weight": 0.1, "requires": ("prompt_embedings",),
                  "detect": lambda self, inputs: None}
    with pytest.raises(TypeError, match="prompt_embedings"):
        register(type("Typo", (Detector,), attributes))


def test_every_detector_class_in_the_package_is_registered_by_its_decorator():
    import importlib

    defined = set()
    for info in pkgutil.iter_modules(auditors.detectors.__path__):
        module = importlib.import_module(f"auditors.detectors.{info.name}")
        defined |= {obj for obj in vars(module).values() if isinstance(obj, type)
                    and issubclass(obj, Detector) and obj is not Detector
                    and obj.__module__ == module.__name__}
    assert defined and defined == set(REGISTRY.values())


def test_detectors_run_strongest_first_whatever_order_they_are_asked_in(sample_inputs):
    run = run_detectors(sample_inputs, ["outlier", "label_issue", "trigger"])
    assert list(run.results) == ["trigger", "label_issue", "outlier"]


def test_names_read_from_the_source_equal_the_registry():
    """The CLI refuses a mistyped --detectors name from the modules' source, without
    importing them; it must know exactly the registered detectors."""
    from auditors.detector_names import declared_names, unknown_names

    assert declared_names() == sorted(REGISTRY)
    assert unknown_names(["trigger", "outlier"]) is None
    assert unknown_names(["trigerr"]).startswith("unknown detector(s) trigerr; available: ")


def test_the_help_names_the_detectors_that_run_only_when_asked():
    """`--detectors`' help says which registered detectors are not in the default set."""
    from flows.cli import OPT_IN_DETECTORS

    assert sorted(OPT_IN_DETECTORS) == sorted(set(REGISTRY) - set(DEFAULT_DETECTORS))
