"""The audit as a Prefect flow: one task per stage, each a thin call into `auditors`.

Runs locally with no Prefect server configured (Prefect starts a temporary one). To audit
on a schedule, serve the deployment from this file:

    python -m flows.audit serve DATASET OUT_DIR "0 3 * * *"
"""

# (no `from __future__ import annotations`: Prefect validates flow parameters from the
# annotations, and a served flow's module cannot resolve them from strings)

import sys

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

import numpy as np
from prefect import unmapped

from auditors import ingest, ledger, pipeline, progress, report
from auditors.config import AuditConfig
from auditors.features import chunks
from flows.lifetime import raise_if_interrupted

# Stage inputs are whole tables and arrays: hashing them for Prefect's cache costs more
# than the stage, so tasks do not cache.
stage = task(cache_policy=NO_CACHE, persist_result=False)


def stage_runner(inline: frozenset[str] = frozenset(), announce: bool = True):
    """`pipeline.Hooks.stage` for the flow: each stage a Prefect task named after it, except
    those in `inline`, which run in the flow itself (they map tasks over the workers). With
    `announce`, the rows and schema are printed as soon as the input is read."""
    def run(name: str, func, *args, **kwargs):
        raise_if_interrupted()  # an interrupt whose KeyboardInterrupt was dropped
        if name in inline:
            value = func(*args, **kwargs)
        else:
            value = task(func, name=name, cache_policy=NO_CACHE,
                         persist_result=False)(*args, **kwargs)
        if announce and name == "ingest":
            print(f"{len(value.table)} rows, schema detected: {value.schema.describe()}",
                  flush=True)
        return value
    return run


@stage(name="embed-chunk")
def embed_chunk_task(texts: list[str], model: str | None, backend: str,
                     cache_dir: str | None, batch_size: int):
    return chunks.embed_chunk(texts, model=model, backend=backend, cache_dir=cache_dir,
                              batch_size=batch_size)


@stage(name="count-ngrams-chunk")
def count_chunk_task(texts: list[str]) -> chunks.ChunkCounts:
    return chunks.count_chunk(texts)


@stage(name="reduce-ngram-statistics")
def reduce_ngrams_task(counts: list[chunks.ChunkCounts]):
    return chunks.reduce_counts(counts)


def mapped_hooks(config: AuditConfig) -> dict:
    """`pipeline.Hooks` that embed and count chunk by chunk on the task runner's workers
    (Dask); the embedding cache is read and written in the flow's process."""
    chunk_rows = config.chunk_rows

    def embed_many(texts: list[str]) -> np.ndarray:
        parts = [texts[a:b] for a, b in chunks.chunk_bounds(len(texts), chunk_rows)]
        if not parts:
            return chunks.embed_chunk([], model=config.model, backend=config.backend,
                                      cache_dir=config.cache_dir)
        futures = embed_chunk_task.map(parts, unmapped(config.model), unmapped(config.backend),
                                       unmapped(config.cache_dir), unmapped(config.batch_size))
        return np.concatenate([future.result() for future in futures])

    def count_ngrams(loaded: ingest.LoadedDataset):
        if loaded.ngrams is not None:  # counted while streaming
            return loaded.ngrams
        texts = loaded.table["prompt"].tolist()
        futures = count_chunk_task.map([texts[a:b] for a, b in
                                        chunks.chunk_bounds(len(texts), chunk_rows)])
        return reduce_ngrams_task([future.result() for future in futures])

    return {"embed_many": embed_many, "count_ngrams": count_ngrams}


@stage(name="publish-artifacts")
def publish_task(result: pipeline.AuditResult) -> None:
    create_markdown_artifact(key="trainguard-audit-summary",
                             markdown=report.summary_markdown(result.summary),
                             description="trainguard audit verdict")
    create_table_artifact(key="trainguard-top-triggers",
                          table=report.trigger_rows(result.triggers),
                          description="Top trigger candidates")


@flow(name="trainguard-audit")
def audit_flow(source: str, out_dir: str, config: AuditConfig = AuditConfig()) -> dict:
    """`pipeline.STAGES` (ingest -> embeddings and n-gram statistics -> Cleanlab ->
    detectors -> flags and quarantine -> ledger -> outputs), each a Prefect task. Returns the
    summary written to OUT_DIR/summary.json; when the gate fails, the run ends Failed, with
    the verdict line as its message and the summary as its data
    (`flow_value(audit_flow(..., return_state=True))` reads it either way). With
    `config.chunk_rows`, embedding and n-gram counting are mapped over chunks of that many
    rows on the flow's task runner (run it with a `DaskTaskRunner`: `flows.dask`)."""
    result = run_stages(source, out_dir, config)
    # the flow's value is summary.json's content: plain data for Prefect's UI and results
    return gate_state(result.summary.to_dict(), report.verdict_line(result.summary),
                      result.summary.passed)


def run_stages(source: str, out_dir: str, config: AuditConfig,
               decide=None) -> pipeline.AuditResult:
    """`pipeline.run_audit` inside the calling flow (audit or intake): each stage a task,
    progress shown when asked for, the audit's artifacts published; `decide`: an intake's
    decision (`pipeline.Hooks.decide`)."""
    mapped = mapped_hooks(config) if config.chunk_rows else {}
    shown = progress.for_output() if config.show_progress else progress.Progress()
    hooks = pipeline.Hooks(stage=stage_runner(frozenset({"embeddings", "ngrams"} if mapped
                                                        else ())),
                           progress=shown, run_id=str(flow_run.id or ledger.new_run_id()),
                           started_at=flow_run.scheduled_start_time, decide=decide, **mapped)
    try:
        result = pipeline.run_audit(source, out_dir, config, hooks=hooks)
    finally:
        shown.close()
    publish_task(result)
    return result


def gate_state(value, verdict: str, passed: bool):
    """What a flow returns: `value` when its gate passed, else a Failed state with the
    verdict as message and `value` as data, so that the run shows Failed in Prefect (and
    automations on failed runs fire) while callers still get the value (`flow_value`)."""
    return value if passed else Failed(message=verdict, data=value)


def flow_value(state: State):
    """The value of a finished flow run called with `return_state=True`: its return value
    when Completed, the data of a failed gate (a Failed state that carries a value, not an
    exception); an error is raised again (the flow's own exception)."""
    if state.is_completed():
        return state.result()
    value = state.result(raise_on_failure=False)
    if state.is_failed() and not isinstance(value, BaseException) and value is not None:
        return value
    if isinstance(value, BaseException):
        raise value
    return state.result()  # raises Prefect's FailedRun/CrashedRun/CancelledRun


def serve(source: str, out_dir: str, cron: str) -> None:
    """Serve the audit of one dataset on a cron schedule (needs a running Prefect server)."""
    audit_flow.serve(name="trainguard-scheduled-audit", cron=cron,
                     parameters={"source": source, "out_dir": out_dir,
                                 "config": AuditConfig().parameters()})


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        sys.exit("usage: python -m flows.audit serve DATASET OUT_DIR CRON")
