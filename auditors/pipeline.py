"""The audit's stages as plain functions. `flows/audit.py` runs each as a Prefect task;
`audit()` chains them without Prefect (benchmarks, notebooks)."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from auditors import __version__
from auditors.config import (DEFAULT_BACKEND, DEFAULT_FLAG_THRESHOLD,
                             DEFAULT_MAX_FLAGGED_FRACTION, AuditConfig, LoadOptions)
from auditors.detectors import REGISTRY, AuditInputs
from auditors.features import knn
from auditors.features.embeddings import DEFAULT_MODEL, EmbeddingCache, embed_texts
from auditors.features.ngrams import NgramStats, count_ngrams
from auditors.features.probabilities import cross_validated_probs
from auditors.features.proxy import cross_fitted_proxy
from auditors.features.targets import Targets, classification_targets, derive_response_targets
from auditors.fusion import fuse
from auditors.ingest import LoadedDataset, load_table
from auditors.outputs import SKIPPED, check_output_location, split_paths, write_outputs
from auditors.report import flagged_counts
from auditors.runner import DetectorRun, detector_config, run_detectors
from auditors.schema import CLASSIFICATION, PREFERENCE, empty_prompt_warning
from auditors.summary import AuditSummary, OutputNames, audit_gate

log = logging.getLogger(__name__)

MIN_ROWS_FOR_CROSS_VALIDATION = 10


@dataclass
class Embeddings:
    prompt: np.ndarray
    response: np.ndarray | None = None
    rejected: np.ndarray | None = None


@dataclass
class LabelModel:
    """Targets and their out-of-fold probabilities from the prompt embedding."""

    targets: Targets | None
    pred_probs: np.ndarray | None
    note: str = ""  # why the probabilities are missing, when they are


@dataclass
class AuditResult:
    rows: pd.DataFrame
    triggers: list[dict]
    summary: AuditSummary
    detector_run: DetectorRun = field(repr=False, default=None)
    table: pd.DataFrame = field(repr=False, default=None)  # the normalised input rows
    columns: list = field(repr=False, default=None)  # the input's own columns


def embed_table(table: pd.DataFrame, encoder, *, batch_size: int = 64, progress=None,
                cache: EmbeddingCache | None = None, embed_many=None) -> Embeddings:
    """Prompt side always; response side for generation data; rejected side for
    preference pairs. With `cache`, rows whose `row_id` it holds are not embedded again.
    `embed_many(texts)`, when given, embeds instead of `encoder` (the distributed flow maps
    it over Dask workers); it must return unit vectors, one row per text."""
    from auditors.progress import Progress

    # a text's vector does not depend on its batch or chunk (docs/performance.md)
    def embed(column: str) -> np.ndarray:
        texts = table[column].tolist()
        with (progress or Progress()).stage(f"embed {column}", total=len(texts)) as advance:
            def many(missing: list[str]) -> np.ndarray:
                advance(len(texts) - len(missing))  # the rows the cache holds
                if embed_many is not None:
                    return embed_many(missing)
                return embed_texts(encoder, missing, batch_size=batch_size, advance=advance)

            if cache is not None:
                return cache.embed(encoder, column, table["row_id"].to_numpy(), texts,
                                   embed=many)
            return np.asarray(many(texts), dtype=np.float32)

    generation = (table["schema"] != CLASSIFICATION).any()
    preference = (table["schema"] == PREFERENCE).any()
    return Embeddings(embed("prompt"), embed("response") if generation else None,
                      embed("rejected") if preference else None)


def ngram_statistics(table: pd.DataFrame, **params) -> NgramStats:
    """n-grams of the prompt side: that is where a trigger sits."""
    return count_ngrams(table["prompt"].tolist(), **params)


def dataset_ngrams(loaded: LoadedDataset, cache_dir: str | Path | None = None) -> NgramStats:
    """The statistics counted while streaming, else counted now; with `cache_dir`, chunk by
    chunk, reusing the counts of chunks whose rows an earlier audit counted (same result as
    `ngram_statistics`: `chunks.NgramReducer` is exact)."""
    if loaded.ngrams is not None:
        return loaded.ngrams
    if cache_dir is None:
        return ngram_statistics(loaded.table)
    from auditors.features import chunks

    return chunks.cached_ngrams(loaded.table["row_id"].tolist(),
                                loaded.table["prompt"].tolist(),
                                chunks.NgramCountCache(cache_dir))


def fit_label_model(table: pd.DataFrame, embeddings: Embeddings, *, seed: int = 0) -> LabelModel:
    """Targets (given labels, or derived from responses) and out-of-fold probabilities of
    them from the prompt embedding."""
    if (table["schema"] == CLASSIFICATION).all():
        targets = classification_targets(table["label"])
    else:
        targets = derive_response_targets(table["response"].tolist(), embeddings.response,
                                          prompt_embeddings=embeddings.prompt,
                                          row_keys=table["row_id"].to_numpy(), seed=seed)
    if targets.n_classes < 2:
        return LabelModel(targets, None, note="only one label class: Cleanlab needs two or more")
    if len(table) < MIN_ROWS_FOR_CROSS_VALIDATION:
        return LabelModel(targets, None, note=f"fewer than {MIN_ROWS_FOR_CROSS_VALIDATION} "
                                              "rows: too few for cross-validation")
    if (np.bincount(targets.codes) >= 2).sum() < 2:  # some training fold would hold one class
        return LabelModel(targets, None, note="fewer than two label classes have two or more "
                                              "rows: too few for cross-validation")
    probs = cross_validated_probs(embeddings.prompt, targets.codes, targets.n_classes,
                                  keys=table["row_id"].to_numpy(), seed=seed)
    return LabelModel(targets, probs)


def audit_inputs(loaded: LoadedDataset, embeddings: Embeddings, ngrams: NgramStats,
                 label_model: LabelModel, detectors=None, *,
                 graph_dir: str | Path | None = None) -> AuditInputs:
    """The shared detector inputs; the optional ones (the n-gram proxy, the response
    n-grams, the kNN graph) are computed only when a chosen detector requires them. With
    `graph_dir`, the kNN graph is kept there between audits of the same source."""
    inputs = AuditInputs(table=loaded.table, prompt_embeddings=embeddings.prompt, ngrams=ngrams,
                         targets=label_model.targets, pred_probs=label_model.pred_probs,
                         response_embeddings=embeddings.response,
                         rejected_embeddings=embeddings.rejected)
    required = {need for name in detector_config(detectors) for need in REGISTRY[name].requires}
    if label_model.pred_probs is not None and "proxy" in required:
        inputs.proxy = cross_fitted_proxy(ngrams.rows_x_ngrams, label_model.targets.codes,
                                          label_model.targets.n_classes,
                                          keys=loaded.table["row_id"].to_numpy())
    if embeddings.response is not None and "response_ngrams" in required:
        inputs.response_ngrams = response_ngram_statistics(loaded.table)
    if "knn_graph" in required:
        inputs.knn_graph = knn.prompt_graph(embeddings.prompt, graph_dir=graph_dir,
                                            row_ids=loaded.table["row_id"].to_numpy(),
                                            source=dataset_source(loaded.table))
    return inputs


def dataset_source(table: pd.DataFrame) -> str:
    return str(table["source"].iloc[0]) if "source" in table and len(table) else ""


def response_ngram_statistics(table: pd.DataFrame) -> NgramStats:
    """n-grams of the response side, where injected content sits (seen in 3+ rows)."""
    return count_ngrams(table["response"].tolist(), min_support=3)


def detect(loaded: LoadedDataset, embeddings: Embeddings, ngrams: NgramStats,
           label_model: LabelModel, detectors=None, *, cache_dir: str | Path | None = None,
           model: str | None = None, backend: str = DEFAULT_BACKEND,
           fdr: float | None = None) -> DetectorRun:
    """With `cache_dir`, the kNN graph is kept there between audits (per model, backend and
    dataset source) and extended when rows were only added."""
    graph_dir = None
    if cache_dir is not None:
        from auditors.features.embeddings import model_key

        graph_dir = Path(cache_dir) / "knn-graphs" / model_key(model) / backend
    inputs = audit_inputs(loaded, embeddings, ngrams, label_model, detectors,
                          graph_dir=graph_dir)
    return run_detectors(inputs, detector_config(detectors, fdr=fdr))


def stage_timings(laps: dict[str, float], run: DetectorRun) -> dict:
    """Seconds per stage, the detectors one by one; the detect stage's remainder is the
    shared inputs built for them (the kNN graph, the n-gram proxy, response n-grams)."""
    timings = dict(laps)
    if "detectors" in timings:
        stage = timings.pop("detectors")
        timings["detector_inputs"] = round(max(stage - sum(run.seconds.values()), 0.0), 3)
    return {**timings, "detectors": run.seconds}


# every trigger entry's leading fields (summary.json's top triggers, `Audit.triggers`)
TRIGGER_COLUMNS = ("pattern", "score", "support", "target", "side")


def top_triggers(triggers: list[dict], table: pd.DataFrame, flagged: np.ndarray,
                 limit: int = 10) -> tuple[dict, ...]:
    """summary.json's trigger list: the first `limit`, each with the flagged rows holding it
    and, where a detector decided by significance, its p- and q-value."""
    counts = flagged_counts(triggers[:limit], table, flagged)
    return tuple({**{k: t.get(k) for k in TRIGGER_COLUMNS},
                  **{k: t[k] for k in ("significant", "p_value", "q_value", "released") if k in t},
                  "flagged_rows": counts.get(t["pattern"], 0)}
                 for t in triggers[:limit])


def assemble(loaded: LoadedDataset, run: DetectorRun, *, threshold: float = DEFAULT_FLAG_THRESHOLD,
             max_flagged_fraction: float = DEFAULT_MAX_FLAGGED_FRACTION,
             label_model: LabelModel | None = None, model_name: str = "",
             timings: dict | None = None) -> AuditResult:
    """rows.parquet frame, trigger list and summary (with the gate's verdict)."""
    table = loaded.table
    fused = fuse(run, len(table), threshold=threshold)
    rows = pd.concat([table[["row_index", "row_id"]].reset_index(drop=True), fused,
                      run.score_columns()], axis=1)
    triggers = run.triggers()
    significant = tuple(t["pattern"] for t in triggers if t.get("significant"))
    injected = tuple(t["pattern"] for t in triggers
                     if t.get("side") == "response" and t.get("flagged"))
    verdict = audit_gate(rows=len(table), flagged=int(rows["flagged"].sum()),
                         max_flagged_fraction=max_flagged_fraction, fail_on_confirmed=False,
                         significant_triggers=significant, injected_phrases=injected)
    clean_name, quarantine_name = split_paths(loaded.raw)
    summary = AuditSummary(
        trainguard_version=__version__,
        input=loaded.raw.source,
        fingerprint=loaded.raw.fingerprint,
        format=loaded.raw.fmt,
        schema=loaded.schema.name,
        schema_columns=loaded.schema.describe(),
        rows=int(len(table)),
        flagged=int(rows["flagged"].sum()),
        clean_rows=int((~rows["flagged"]).sum()),
        skipped_rows=len(loaded.raw.skipped),
        gate=verdict,
        flag_threshold=threshold,
        detectors_run=tuple(run.results),
        detectors_skipped={name: skip.as_dict() for name, skip in run.skipped.items()},
        detectors_failed=dict(run.failed),
        detector_summaries={n: r.summary for n, r in run.results.items()},
        embedding_model=model_name,
        label_model_note=label_model.note if label_model else "",
        input_warning=empty_prompt_warning(loaded.schema, table, list(loaded.raw.columns)),
        targets=tuple(label_model.targets.names) if label_model and label_model.targets else (),
        outputs=OutputNames(clean=clean_name, quarantine=quarantine_name,
                            skipped=SKIPPED if loaded.raw.skipped else None),
        timings_seconds=stage_timings(timings or {}, run),
        top_triggers=top_triggers(triggers, table, rows["flagged"].to_numpy(dtype=bool)),
        significant_triggers=significant,
        injected_phrases=injected,
    )
    return AuditResult(rows, triggers, summary, run, table, list(loaded.raw.columns))


def save(result: AuditResult, loaded: LoadedDataset, out_dir: str | Path,
         embeddings: Embeddings | None = None, before_commit=None) -> Path:
    """All outputs; `embeddings` (optional) draw the report's embedding map;
    `before_commit()` runs when they are staged, before they move into place."""
    report_inputs = {"table": loaded.table,
                     "embeddings": embeddings.prompt if embeddings is not None else None}
    return write_outputs(out_dir, loaded.raw, result.rows, result.triggers, result.summary,
                         report_inputs=report_inputs, before_commit=before_commit)


# The audit's stages, in order: every entry point (the Python API, the Prefect flows, intake
# and scheduled checks) runs these through `run_audit`.
STAGES = ("ingest", "embeddings", "ngrams", "label_model", "detectors", "assemble", "ledger",
          "write")


def call_stage(name: str, func, *args, **kwargs):
    """How `run_audit` runs a stage by default: a plain call (the flow passes one that runs
    it as a Prefect task)."""
    return func(*args, **kwargs)


@dataclass
class Hooks:
    """Where an orchestrator changes how stages run, never what they compute:
    `stage(name, func, *args, **kwargs)` runs one stage; `embed_many(texts)` embeds instead
    of the encoder and `count_ngrams(loaded)` counts the prompt n-grams (the distributed
    flow maps both over Dask workers); `progress` shows the embedding as it goes; `run_id`
    and `started_at` name the run in the ledger; `decide(result, loaded)`, run before the
    outputs are written, returns the result they carry and a function to call (with the
    ledger's run record) before they land: an intake's policy decision."""

    stage: object = call_stage
    progress: object = None  # an auditors.progress.Progress: each embedded text counted
    embed_many: object = None
    count_ngrams: object = None
    run_id: str | None = None
    started_at: object = None
    decide: object = None


def audit(source: str, out_dir: str | Path | None = None, config: AuditConfig | None = None,
          *, encoder=None) -> AuditResult:
    """The whole audit without Prefect. `encoder`: an already loaded model of
    `config.backend` to reuse (default: loaded here)."""
    return run_audit(source, out_dir, config or AuditConfig(), encoder=encoder)


def run_audit(source: str, out_dir: str | Path | None, config: AuditConfig, *,
              encoder=None, hooks: Hooks | None = None) -> AuditResult:
    """`STAGES` in order. With `config.store`, the ledger's decisions are applied and the run
    recorded there before the outputs land; with `out_dir`, the outputs are written; with
    `config.cache_dir`, the cache is used, then pruned to `config.cache_max_bytes`."""
    from auditors.progress import Progress

    hooks = hooks or Hooks()
    progress, cache_dir, watch = hooks.progress or Progress(), config.cache_dir, Stopwatch()
    if out_dir is not None:  # a bad DIR is refused before any work, as the CLI does
        check_output_location(source, out_dir)

    def run(name: str, func, *args, rows: int | None = None, **kwargs):
        """One stage, shown (the embeddings show their own rows) and timed."""
        if name == "embeddings":
            value = hooks.stage(name, func, *args, **kwargs)
        else:
            with progress.stage(name, total=rows) as advance:
                value = hooks.stage(name, func, *args, **kwargs)
                advance(rows or 0)
        watch.lap(name)
        return value

    loaded = run("ingest", load_with, source, config.load, cache_dir=cache_dir)
    n = len(loaded.table)
    if hooks.embed_many is None and encoder is None:
        encoder = run("load-encoder", load_model, config)
    embeddings = run("embeddings", embed_with, loaded, encoder, config,
                     embed_many=hooks.embed_many, progress=progress)
    ngrams = (run("ngrams", lambda: hooks.count_ngrams(loaded), rows=n)
              if hooks.count_ngrams is not None
              else run("ngrams", dataset_ngrams, loaded, cache_dir, rows=n))
    label_model = run("label_model", fit_label_model, loaded.table, embeddings, rows=n)
    detectors = run("detectors", detect, loaded, embeddings, ngrams, label_model,
                    config.detectors, cache_dir=cache_dir, model=config.model,
                    backend=config.backend, fdr=config.fdr, rows=n)
    result = run("assemble", assemble, loaded, detectors, label_model=label_model,
                 threshold=config.flag_threshold, max_flagged_fraction=config.max_flagged_fraction,
                 model_name=model_name(config.model, config.backend), timings=watch.laps)
    record_run = None
    if config.store:  # people's earlier decisions about these rows and triggers
        result, record_run = run("ledger", apply_ledger, result, loaded, ngrams, config,
                                 source, out_dir, hooks, rows=n)
    commit_decision = None
    if hooks.decide is not None:
        result, commit_decision = run("decide", hooks.decide, result, loaded)

    def before_commit() -> None:  # the ledger records what the outputs say
        if record_run is not None:
            record_run(result.summary)
        if commit_decision is not None:
            commit_decision()
    if out_dir is not None:
        run("write", save, result, loaded, out_dir, embeddings, before_commit=before_commit,
            rows=n)
    else:  # no outputs to land: the run (and an intake) is recorded now
        before_commit()
    if cache_dir is not None:  # least recently used entries go once the cache outgrows it
        from auditors import cache

        cache.prune_quietly(cache_dir, config.cache_max_bytes)
    return result


def load_with(source: str, options: LoadOptions, cache_dir: str | Path | None = None):
    return load_table(source, cache_dir=cache_dir, **dataclasses.asdict(options))


def load_model(config: AuditConfig):
    from auditors.features.embeddings import load_encoder

    return load_encoder(config.model, backend=config.backend, cache_dir=config.cache_dir)


def embed_with(loaded: LoadedDataset, encoder, config: AuditConfig, *,
               embed_many=None, progress=None) -> Embeddings:
    """The embeddings of `loaded`, through the cache when `config.cache_dir` is set."""
    cache = (EmbeddingCache(config.cache_dir, config.model, config.backend)
             if config.cache_dir else None)
    return embed_table(loaded.table, encoder, batch_size=config.batch_size, progress=progress,
                       cache=cache, embed_many=embed_many)


def apply_ledger(result: AuditResult, loaded: LoadedDataset, ngrams: NgramStats,
                 config: AuditConfig, source: str, out_dir: str | Path | None, hooks: Hooks):
    """`result` with the ledger at `config.store` applied, and the ledger write of this run
    (for the outputs' writer to call before they land: complete outputs always have their
    run recorded)."""
    from auditors import ledger

    store = config.store
    run_id = hooks.run_id or ledger.new_run_id()
    result, applied = ledger.apply_to_result(result, loaded.table, ledger.Ledger(store).decisions(),
                                             store=store, run_id=run_id, ngrams=ngrams,
                                             fail_on_confirmed=config.fail_on_confirmed)
    # the trigger list's flagged rows and release marks follow the ledger's decisions
    result = replace(result, summary=result.summary.replace(top_triggers=top_triggers(
        result.triggers, loaded.table, result.rows["flagged"].to_numpy(dtype=bool))))

    def record(summary: AuditSummary) -> None:  # the summary the outputs carry
        ledger.Ledger(store).record_run(
            run_id=run_id, source=ledger.recorded_path(source), parameters={
                **config.parameters(), "model": model_name(config.model, config.backend)},
            summary=summary, table=loaded.table, applied=applied,
            out_dir=ledger.recorded_path(str(out_dir)) if out_dir is not None else "",
            started_at=hooks.started_at)
    return result, record


def model_name(model: str | None, backend: str) -> str:
    """The embedding model as the summary names it: backend shown unless torch."""
    name = model or DEFAULT_MODEL
    return name if backend == "torch" else f"{name} [{backend}]"


class Stopwatch:
    """Seconds per stage, in the order the stages ran."""

    def __init__(self):
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = round(now - self._last, 3)
        self._last = now
