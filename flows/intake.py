"""The third-party intake gate as a Prefect flow: audit with the ledger applied, then diff
against the previous intake of the same source and decide by the policy.

    trainguard intake SOURCE --policy POLICY.toml --store DIR --out DIR --source-name NAME
"""

# (no `from __future__ import annotations`: Prefect validates flow parameters from the
# annotations, and a served flow's module cannot resolve them from strings)

import json
from dataclasses import replace
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from auditors import pipeline, policy as intake_policy, report
from auditors.config import AuditConfig
from auditors.outputs import INTAKE as INTAKE_RECORD, add_output
from flows.audit import gate_state, run_stages, stage


def intake_decider(store: str, source: str, rules: intake_policy.IntakePolicy,
                   provenance: intake_policy.Provenance, decided: dict):
    """`pipeline.Hooks.decide` for an intake: the policy's decision, before the outputs are
    written, becomes their gate; it is recorded in the ledger with the run, and kept in
    `decided["record"]`."""
    def decide(result: pipeline.AuditResult, loaded):
        record, keys = intake_policy.intake_decision(store, source, result.table,
                                                     result.columns, result.summary, rules,
                                                     provenance)

        def commit() -> None:
            decided["record"] = intake_policy.record_intake(store, record, keys)
        summary = intake_policy.with_intake_gate(result.summary, record, rules)
        return replace(result, summary=summary), commit
    return decide


@stage(name="write-intake-record")
def write_record_task(out_dir: str, record: dict) -> None:
    add_output(out_dir, INTAKE_RECORD,
               json.dumps(record, indent=2, ensure_ascii=False, default=str) + "\n")


@stage(name="publish-intake-artifact")
def publish_task(record: dict) -> None:
    create_markdown_artifact(key="trainguard-intake", markdown=intake_markdown(record),
                             description="trainguard intake decision")


def intake_markdown(record: dict) -> str:
    word = "PASS" if record["passed"] else "FAIL"
    diff = record["diff"]
    lines = [f"# trainguard intake: {word}", "",
             f"- source: {report.escape_markdown(record['source_name'])} "
             f"(version {report.escape_markdown(record['version'] or '-')}, license "
             f"{report.escape_markdown(record['license'] or '-')})",
             f"- fingerprint: `{record['fingerprint']}`",
             f"- since the previous intake: {diff['added']} added, {diff['removed']} removed, "
             f"{diff['changed']} changed", "", "| check | passed | detail |", "| --- | --- | --- |"]
    lines += [f"| {c['check']} | {'yes' if c['passed'] else 'NO'} | "
              f"{report.escape_markdown(c['detail'])} |" for c in record["checks"]]
    return "\n".join(lines) + "\n"


@flow(name="trainguard-intake")
def intake_flow(source: str, policy: str | dict, store: str, out_dir: str,
                source_name: str | None = None, source_url: str | None = None,
                license: str | None = None, version: str | None = None,
                config: AuditConfig = AuditConfig()) -> dict:
    """Audit SOURCE with `config` (the ledger at STORE applied and the run recorded there;
    the gate's limits are POLICY's), then check it against POLICY (a TOML file or a dict).
    Returns `{"intake": record, "summary": audit summary}`; when the intake fails, the run
    ends Failed with `policy.intake_verdict` as its message and that dict as its data
    (`flow_value(intake_flow(..., return_state=True))` reads it either way)."""
    rules = (intake_policy.IntakePolicy.from_dict(policy) if isinstance(policy, dict)
             else intake_policy.IntakePolicy.from_toml(policy))
    provenance = intake_policy.Provenance(source_name or Path(source).name, source_url,
                                          license, version)
    config = config.replace(store=store, max_flagged_fraction=rules.max_flagged_fraction,
                            fail_on_confirmed=rules.fail_on_confirmed)
    # one read: the audit's stages run in this flow, and the diff and the character checks
    # use the rows they read, so the intake vouches for exactly the bytes it audited (the
    # summary's fingerprint) even if the file changes meanwhile
    decided = {}
    result = run_stages(source, out_dir, config,
                        decide=intake_decider(store, source, rules, provenance, decided))
    record = decided["record"]
    write_record_task(out_dir, record)
    publish_task(record)
    return gate_state({"intake": record, "summary": result.summary.to_dict()},
                      intake_policy.intake_verdict(record), record["passed"])
