"""The third-party intake gate as a Prefect flow: audit with the ledger applied, then diff
against the previous intake of the same source and decide by the policy.

    trainguard intake SOURCE --policy POLICY.toml --store DIR --out DIR --source-name NAME
"""

# (no `from __future__ import annotations`: Prefect validates flow parameters from the
# annotations, and a served flow's module cannot resolve them from strings)

import json
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from auditors import ingest, pipeline, policy as intake_policy, report
from auditors.errors import AuditInputError
from auditors.outputs import INTAKE as INTAKE_RECORD, add_output
from auditors.config import AuditConfig
from flows.audit import audit_flow, flow_value, gate_state, stage, stage_runner


@stage(name="intake-decision")
def decide_task(store: str, source: str, loaded: ingest.LoadedDataset, summary: dict,
                rules: intake_policy.IntakePolicy,
                provenance: intake_policy.Provenance) -> dict:
    return intake_policy.decide_intake(store, source, loaded.table, loaded.raw.columns, summary,
                                       rules, provenance)


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
    # the audit's gate is the policy's first checks (`ledger.gate_checks`): its run ends
    # Failed when they fail, and the intake goes on to record its decision
    summary = flow_value(audit_flow(source=source, out_dir=out_dir, config=config,
                                    return_state=True))
    # read again for the diff and the character checks (the audit flow returns its summary):
    # the intake vouches for one set of bytes, so this read must be the audited one
    loaded = stage_runner(announce=False)("ingest", pipeline.load_with, source, config.load)
    if loaded.raw.fingerprint != summary["fingerprint"]:
        raise AuditInputError("the file changed during the intake (its bytes differ from the "
                              "audited ones); audit a private copy that nothing else writes "
                              "to", path=source)
    record = decide_task(store, source, loaded, summary, rules, provenance)
    write_record_task(out_dir, record)
    publish_task(record)
    return gate_state({"intake": record, "summary": summary},
                      intake_policy.intake_verdict(record), record["passed"])
