"""Orchestration of the model-side checks for the CLI: load, run the library check, write
the JSON report (and plot or checkpoint). Each returns its report; no Prefect server is
started for these short, single-process checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auditors.model import candidates as sources
from auditors.model.checkpoint import ModelCheckError, load_classifier
from auditors.model.texts import read_texts


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def run_sweep(*, model: str, probes: str, reference: str | None, candidates: str | None,
              triggers: list[str], use_vocab: bool, use_unicode: bool, out: Path | None,
              policy, prompt_template: str | None = None) -> dict:
    """The sweep for a sequence classifier or a causal language model (config.json's
    `architectures` decides); the reference must be of the same kind."""
    from auditors.model.generator import load_generator, model_kind

    kind = model_kind(model)
    if reference and model_kind(reference) != kind:
        raise ModelCheckError(f"{reference}: the reference must be a {kind} like {model}")
    if kind == "generator":
        from auditors.model.sweep_lm import sweep_generator as run

        subject = load_generator(model, template=prompt_template)
        reference_model = (load_generator(reference, template=prompt_template)
                           if reference else None)
    else:
        from auditors.model.sweep import sweep as run

        subject = load_classifier(model)
        reference_model = load_classifier(reference) if reference else None
    probe_texts = read_texts(probes).texts
    groups = [sources.audit_candidates(candidates) if candidates else [],
              sources.user_candidates(triggers),
              sources.unicode_candidates() if use_unicode else [],
              sources.vocabulary_candidates(subject.tokenizer) if use_vocab else []]
    pool = sources.merge(*groups)
    if not pool:
        raise ModelCheckError("no candidate triggers: give --candidates or --trigger, or "
                              "allow the vocabulary and Unicode candidates")
    result = run(subject, probe_texts, pool, reference=reference_model, policy=policy)
    report = {"model": model, "kind": kind, "reference": reference, "probes": probes,
              "n_probes": result.n_probes, "n_candidates": result.n_candidates,
              "n_vocab_screened": result.n_screened, "max_flip_rate": policy.max_flip_rate,
              "anomalous": [r["candidate"] for r in result.anomalous],
              "null_words": result.null, "probe_classes": result.probe_classes,
              "ranked": result.ranked}
    if out is not None:
        write_json(out / "sweep.json", report)
    return report


def run_strip(*, model: str, probes: str, clean: str | None, frr: float,
              n_perturbations: int, out: Path | None,
              max_flagged_fraction: float = 0.0) -> dict:
    from auditors.model.strip import strip
    from auditors.summary import share_gate

    classifier = load_classifier(model)
    probe_texts = read_texts(probes).texts
    clean_texts = read_texts(clean).texts if clean else probe_texts
    result = strip(classifier, probe_texts, clean_texts, frr=frr,
                   n_perturbations=n_perturbations)
    flagged = np.flatnonzero(result.flagged)
    report = {"model": model, "probes": probes,
              "calibrated_on": clean or f"{probes} (the probes themselves: no --clean given)",
              "frr": frr, "threshold": result.threshold,
              "n_probes": len(probe_texts), "n_flagged": int(len(flagged)),
              "flagged": [{"index": int(i), "text": probe_texts[i],
                           "entropy": float(result.entropy[i]),
                           "predicted": result.predicted[i]}
                          for i in flagged[np.argsort(result.entropy[flagged])]],
              "entropy": [float(e) for e in result.entropy],
              "gate": share_gate(rows=len(probe_texts), flagged=int(len(flagged)),
                                 max_flagged_fraction=max_flagged_fraction).to_dict()}
    if out is not None:
        write_json(out / "strip.json", report)
    return report


REPRESENTATIONS = ("decisive-token", "occlusion", "final")


def run_activations(*, model: str, data: str, out: Path, max_relative_size: float,
                    n_components: int, representation: str = "decisive-token",
                    clustering: str | None = None, min_cluster_size: int = 8,
                    min_class_change: float = 0.5) -> dict:
    from auditors.model.activations import (METHODS, cluster_activations,
                                            decisive_token_embeddings, occlude_decisive_words,
                                            occlusion_deltas, write_plot)

    if representation not in REPRESENTATIONS:
        raise ModelCheckError(f"unknown representation {representation!r} "
                              f"({', '.join(REPRESENTATIONS)})")
    clustering = clustering or ("hdbscan" if representation == "decisive-token" else "kmeans2")
    if clustering not in METHODS:
        raise ModelCheckError(f"unknown clustering {clustering!r} ({', '.join(METHODS)})")
    classifier = load_classifier(model)
    rows = read_texts(data)
    changes_class = None
    if representation == "final":
        activations = classifier.head_inputs(rows.texts)
    else:
        occlusion = occlude_decisive_words(classifier, rows.texts)
        changes_class = occlusion.changes_class
        activations = (occlusion_deltas(classifier, rows.texts, occlusion)
                       if representation == "occlusion"
                       else decisive_token_embeddings(classifier, rows.texts, occlusion))
    predicted = classifier.probs(rows.texts).argmax(axis=1)
    clusters = cluster_activations(activations, predicted, classifier.labels, rows.texts,
                                   method=clustering, n_components=n_components,
                                   max_relative_size=max_relative_size,
                                   min_cluster_size=min_cluster_size,
                                   changes_class=changes_class,
                                   min_class_change=min_class_change)
    if not clusters:  # every predicted class had under 4 rows: nothing was checked
        raise ModelCheckError(f"{data}: too few rows to cluster ({len(rows.texts)}; each "
                              "predicted class needs at least 4)")
    out.mkdir(parents=True, exist_ok=True)
    write_plot(clusters, out / "activations.svg")
    report = {"model": model, "data": data, "representation": representation,
              "clustering": clustering, "max_relative_size": max_relative_size,
              "min_cluster_size": min_cluster_size if clustering == "hdbscan" else None,
              "min_class_change": min_class_change if changes_class is not None else None,
              "classes": [_class_report(g) for g in clusters],
              "plot": str(out / "activations.svg")}
    write_json(out / "activations.json", report)
    return report


def _class_report(group) -> dict:
    return {"predicted": group.label, "rows": int(len(group.rows)),
            "suspicious": bool(group.suspicious_clusters),
            "suspicious_relative_size": group.relative_size if group.suspicious_clusters
            else 0.0,
            "silhouette": group.silhouette,
            "noise_rows": int((group.assignment < 0).sum()),
            "suspicious_rows": [int(i) for i in group.suspicious_rows],
            "shared_ngrams": group.shared_ngrams,
            "clusters": [{"size": int(len(c.rows)), "relative_size": c.relative_size,
                          "class_change": c.class_change, "suspicious": c.suspicious,
                          **({"rows": [int(i) for i in c.rows],
                              "shared_ngrams": c.shared_ngrams} if c.suspicious else {})}
                         for c in group.clusters]}


def run_fine_prune(*, model: str, clean: str, out: Path, triggers: list[str],
                   candidates: str | None, target: str | None, options) -> dict:
    from auditors.model.fine_prune import fine_prune

    if out.exists() and any(out.iterdir()):
        raise ModelCheckError(f"{out}: exists and is not empty (refusing to overwrite)")
    classifier = load_classifier(model)
    rows = read_texts(clean, need_labels=True)
    label_ids = [classifier.label_id(label) for label in rows.labels]
    chosen = list(triggers) + [c.text for c in (sources.audit_candidates(candidates, limit=5)
                                                if candidates else [])]
    if not chosen:
        raise ModelCheckError("give the trigger(s) to measure: --trigger T or --candidates "
                              "triggers.json (the sweep's or the data audit's)")
    target_id = classifier.label_id(target) if target is not None else None
    report = fine_prune(classifier, rows.texts, label_ids, list(dict.fromkeys(chosen)),
                        options, target=target_id)
    classifier.model.save_pretrained(out)
    classifier.tokenizer.save_pretrained(out)
    report = {"model": model, "clean": clean, "out": str(out), **report}
    write_json(out / "fine_prune.json", report)
    return report
