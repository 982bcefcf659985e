"""The audit as a Prefect flow: one task per stage, each a thin call into `auditors`.

Runs locally with no Prefect server configured (Prefect starts a temporary one). To audit
on a schedule, serve the deployment from this file:

    python -m flows.audit serve DATASET OUT_DIR "0 3 * * *"
"""

from __future__ import annotations

import sys

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.states import Failed, State

import numpy as np
from prefect import unmapped

from auditors import cache, ledger, pipeline, report
from auditors.features import chunks
from auditors.features.embeddings import EmbeddingCache, load_encoder

# The flow's (and so `trainguard audit`'s, intake's and the scheduled checks') embedding
# backend: onnx-int8 passed the detection gate (benchmarks/results/throughput-detection.md:
# AP within 0.02 of torch on every family of the quick suite). The library functions keep
# torch, the reference.
DEFAULT_BACKEND = "onnx-int8"

# Stage inputs are whole tables and arrays: hashing them for Prefect's cache costs more
# than the stage, so tasks do not cache.
stage = task(cache_policy=NO_CACHE, persist_result=False)


@stage(name="ingest")
def ingest_task(source: str, load_options: dict,
                cache_dir: str | None = None) -> pipeline.LoadedDataset:
    return pipeline.load_table(source, cache_dir=cache_dir, **load_options)


@stage(name="embeddings")
def embeddings_task(loaded: pipeline.LoadedDataset, model: str | None,
                    batch_size: int, show_progress: bool, backend: str = "torch",
                    cache_dir: str | None = None) -> pipeline.Embeddings:
    cache = EmbeddingCache(cache_dir, model, backend) if cache_dir else None
    encoder = load_encoder(model, backend=backend, cache_dir=cache_dir)
    return pipeline.embed_table(loaded.table, encoder,
                                batch_size=batch_size, show_progress=show_progress, cache=cache)


@stage(name="ngram-statistics")
def ngram_task(loaded: pipeline.LoadedDataset, cache_dir: str | None = None):
    return pipeline.dataset_ngrams(loaded, cache_dir)


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
    reducer = chunks.NgramReducer()
    for chunk in counts:
        reducer.add(chunk)
    return reducer.finish()


def mapped_embeddings(loaded: pipeline.LoadedDataset, model: str | None, backend: str,
                      cache_dir: str | None, batch_size: int,
                      chunk_rows: int) -> pipeline.Embeddings:
    """Embeddings with the rows the cache lacks embedded chunk by chunk on the task runner's
    workers (Dask); the cache is read and written here, in the flow's process."""
    def embed_many(texts: list[str]) -> np.ndarray:
        parts = [texts[a:b] for a, b in chunks.chunk_bounds(len(texts), chunk_rows)]
        if not parts:
            return chunks.embed_chunk([], model=model, backend=backend, cache_dir=cache_dir)
        futures = embed_chunk_task.map(parts, unmapped(model), unmapped(backend),
                                       unmapped(cache_dir), unmapped(batch_size))
        return np.concatenate([future.result() for future in futures])

    cache = EmbeddingCache(cache_dir, model, backend) if cache_dir else None
    return pipeline.embed_table(loaded.table, None, cache=cache, embed_many=embed_many)


def map_ngram_counts(loaded: pipeline.LoadedDataset, chunk_rows: int):
    """Submits the n-gram counting of each chunk (prompt side) to the workers: futures."""
    texts = loaded.table["prompt"].tolist()
    return count_chunk_task.map([texts[a:b] for a, b in chunks.chunk_bounds(len(texts),
                                                                           chunk_rows)])


@stage(name="cleanlab-label-model")
def label_model_task(loaded: pipeline.LoadedDataset,
                     embeddings: pipeline.Embeddings) -> pipeline.LabelModel:
    return pipeline.fit_label_model(loaded.table, embeddings)


@stage(name="detectors")
def detectors_task(loaded, embeddings, ngrams, label_model, detectors, cache_dir=None,
                   model=None, backend="torch"):
    return pipeline.detect(loaded, embeddings, ngrams, label_model, detectors,
                           cache_dir=cache_dir, model=model, backend=backend)


@stage(name="flags-and-quarantine")
def assemble_task(loaded, run, label_model, options: dict, timings: dict):
    return pipeline.assemble(loaded, run, label_model=label_model, timings=timings, **options)


@stage(name="write-outputs")
def write_task(result: pipeline.AuditResult, loaded: pipeline.LoadedDataset, out_dir: str,
               embeddings: pipeline.Embeddings | None = None, record_run=None) -> str:
    """`record_run()` (the ledger's record of this run) runs once the outputs are staged
    and before they move into place: complete outputs always have their run recorded."""
    return str(pipeline.save(result, loaded, out_dir, embeddings, before_commit=record_run))


@stage(name="apply-ledger")
def apply_ledger_task(store: str, result: pipeline.AuditResult, loaded: pipeline.LoadedDataset,
                      run_id: str, fail_on_confirmed: bool = True):
    decisions = ledger.Ledger(store).decisions()
    return ledger.apply_to_result(result, loaded.table, decisions, store=store, run_id=run_id,
                                  fail_on_confirmed=fail_on_confirmed)


def run_recorder(store: str, run_id: str, source: str, parameters: dict,
                 result: pipeline.AuditResult, loaded: pipeline.LoadedDataset,
                 applied: ledger.Applied, out_dir: str):
    """The ledger write of this run, for `write_task` to call before the outputs land."""
    started_at = flow_run.scheduled_start_time

    def record() -> None:
        ledger.Ledger(store).record_run(run_id=run_id, source=source, parameters=parameters,
                                        summary=result.summary, table=loaded.table,
                                        applied=applied, out_dir=out_dir,
                                        started_at=started_at)
    return record


@stage(name="publish-artifacts")
def publish_task(result: pipeline.AuditResult) -> None:
    create_markdown_artifact(key="trainguard-audit-summary",
                             markdown=report.summary_markdown(result.summary),
                             description="trainguard audit verdict")
    create_table_artifact(key="trainguard-top-triggers",
                          table=report.trigger_rows(result.triggers),
                          description="Top trigger candidates")


@flow(name="trainguard-audit")
def audit_flow(source: str, out_dir: str, model: str | None = None,
               detectors: list[str] | None = None, batch_size: int = 64,
               max_flagged_fraction: float = pipeline.DEFAULT_MAX_FLAGGED_FRACTION,
               flag_threshold: float = pipeline.DEFAULT_THRESHOLD,
               load_options: dict | None = None, show_progress: bool = True,
               store: str | None = None, backend: str = DEFAULT_BACKEND,
               cache_dir: str | None = None, chunk_rows: int | None = None,
               cache_max_bytes: int | None = None, fail_on_confirmed: bool = True) -> dict:
    """ingest -> embeddings and n-gram statistics -> Cleanlab -> detectors -> flags and
    quarantine. Returns the summary written to OUT_DIR/summary.json; when the gate fails,
    the run ends Failed, with the verdict line as its message and the summary as its data
    (`flow_value(audit_flow(..., return_state=True))` reads it either way). With `store`,
    the quarantine ledger there is applied to the flags and the run is recorded in it, and
    confirmed rows or triggers found in the data fail the gate (unless not
    `fail_on_confirmed`; `ledger.gate_checks`).
    `backend` picks the embedding backend (default onnx-int8); with `cache_dir`,
    embeddings are cached there by row_id and re-audits embed only new rows, and the cache
    is pruned to `cache_max_bytes` at the end (default `cache.DEFAULT_MAX_BYTES`). With
    `chunk_rows`, embedding and n-gram counting are mapped over chunks of that many rows on
    the flow's task runner (run it with a `DaskTaskRunner`: `flows.dask.run_audit`) and
    their statistics reduced."""
    watch = pipeline.Stopwatch()
    loaded = ingest_task(source, load_options or {}, cache_dir)
    watch.lap("ingest")
    print(f"{len(loaded.table)} rows, schema detected: {loaded.schema.describe()}")
    if chunk_rows:  # counting runs on the workers while they embed (unless streamed)
        counts = map_ngram_counts(loaded, chunk_rows) if loaded.ngrams is None else None
        embeddings = mapped_embeddings(loaded, model, backend, cache_dir, batch_size, chunk_rows)
        watch.lap("embeddings")
        ngrams = (reduce_ngrams_task([future.result() for future in counts])
                  if counts is not None else loaded.ngrams)
    else:
        embeddings = embeddings_task(loaded, model, batch_size, show_progress, backend,
                                     cache_dir)
        watch.lap("embeddings")
        ngrams = ngram_task(loaded, cache_dir)
    watch.lap("ngrams")
    label_model = label_model_task(loaded, embeddings)
    watch.lap("label_model")
    run = detectors_task(loaded, embeddings, ngrams, label_model, detectors, cache_dir, model,
                         backend)
    watch.lap("detectors")
    options = {"threshold": flag_threshold, "max_flagged_fraction": max_flagged_fraction,
               "model_name": pipeline.model_name(model, backend)}
    result = assemble_task(loaded, run, label_model, options, watch.laps)
    record = None
    if store:  # people's earlier decisions about these rows and triggers
        run_id = str(flow_run.id or ledger.new_run_id())
        result, applied = apply_ledger_task(store, result, loaded, run_id, fail_on_confirmed)
        parameters = {"model": options["model_name"], "backend": backend, "detectors": detectors,
                      "batch_size": batch_size, "max_flagged_fraction": max_flagged_fraction,
                      "flag_threshold": flag_threshold, "load_options": load_options or {}}
        record = run_recorder(store, run_id, source, parameters, result, loaded, applied,
                              out_dir)
    write_task(result, loaded, out_dir, embeddings, record)
    publish_task(result)
    if cache_dir:  # least recently used entries go once the cache outgrows its bound
        cache.prune_quietly(cache_dir, cache_max_bytes or cache.DEFAULT_MAX_BYTES)
    return gate_state(result.summary, report.verdict_line(result.summary),
                      result.summary["gate"]["passed"])


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
                     parameters={"source": source, "out_dir": out_dir, "show_progress": False})


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(*sys.argv[2:])
    else:
        sys.exit("usage: python -m flows.audit serve DATASET OUT_DIR CRON")
