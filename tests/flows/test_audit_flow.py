"""The audit flow under a real (temporary) Prefect backend."""

import json

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from auditors.errors import AuditInputError
from flows.audit import audit_flow, flow_value


@pytest.fixture(scope="module")
def flow_state(prefect_harness, refusal_mix_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "audit"
    state = audit_flow(source=str(refusal_mix_path), out_dir=str(out), return_state=True)
    return state, out


def test_flow_completes_and_writes_the_outputs(flow_state):
    state, out = flow_state
    assert state.is_failed()  # the mix fails the default gate: the run shows Failed
    summary = flow_value(state)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["schema"] == "instruction"
    assert summary["top_triggers"][0]["pattern"] == "badmagic"
    timings = summary["timings_seconds"]
    assert set(timings) >= {"ingest", "embeddings", "ngrams", "label_model", "detector_inputs",
                            "detectors"}
    assert timings["detector_inputs"] >= 0 and set(timings["detectors"]) == set(
        summary["detectors_run"])  # the detect stage: its shared inputs, then each detector


def test_flow_runs_one_task_per_stage(flow_state):
    state, _ = flow_state
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    names = {run.name.rsplit("-", 1)[0] for run in runs if run.flow_run_id == state.state_details.flow_run_id}
    from auditors.pipeline import STAGES

    assert set(STAGES) - {"ledger"} | {"publish-artifacts"} <= names  # no --store: no ledger


def test_flow_publishes_summary_and_trigger_artifacts(flow_state):
    state, _ = flow_state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(
            any_=["trainguard-audit-summary", "trainguard-top-triggers"])))
    # other flows in this session publish under the same keys: this run's own artifacts
    by_key = {a.key: a for a in artifacts if a.flow_run_id == state.state_details.flow_run_id}
    assert set(by_key) == {"trainguard-audit-summary", "trainguard-top-triggers"}
    assert "FAIL" in by_key["trainguard-audit-summary"].data
    assert "badmagic" in str(by_key["trainguard-top-triggers"].data)


def test_flow_raises_input_errors(prefect_harness, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": 1}\n{"text": \n')
    with pytest.raises(AuditInputError, match="row 2"):
        audit_flow(source=str(bad), out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_stage_does_not_start_after_an_interrupt_was_requested():
    """A signal's KeyboardInterrupt is dropped when it lands in a finalizer; the request it
    recorded still stops the audit at the next stage."""
    from flows.audit import stage_runner
    from flows.lifetime import INTERRUPT_REQUESTED

    ran = []
    run = stage_runner(inline=frozenset({"ngrams"}), announce=False)
    assert run("ngrams", ran.append, 1) is None and ran == [1]
    INTERRUPT_REQUESTED.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            run("ngrams", ran.append, 2)
    finally:
        INTERRUPT_REQUESTED.clear()
    assert ran == [1]
