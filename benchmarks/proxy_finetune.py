"""Training dynamics of a proxy fine-tune on attacks without a trigger word (issue 21): is a
poisoned row fitted earlier or more confidently than its content explains?

    .venv/bin/python -m benchmarks.proxy_finetune   # -> benchmarks/results/proxy-finetune.{md,json}

Per case: the bundled MiniLM with a new classification head is fine-tuned on the case's rows
and labels (AdamW, lr 5e-5, batch 32, seed 0; by default all six layers for three epochs, as
SEEP fine-tunes its victim model; `--trainable-layers` freezes the lower ones), and every
row's loss is measured `--checkpoints` times per epoch. Three row scores are ranked against
the ground truth at each point:
- `low loss`: the fine-tuned loss, low = suspicious (ABL, Li et al. 2021);
- `inverse confidence`: the mean of 1 / (1 - p(label)) over the points so far (SEEP's seed
  score, He et al. 2024);
- `fitted beyond content`: the out-of-fold embedding model's loss minus the fine-tuned loss
  (fitted more easily than its content predicts).
The cases are the syntactic and style attacks written like their host data, so that
formatting cannot score. The training speed (rows/s) is measured on this machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks import corpora
from benchmarks.detection import CACHE, RESULTS, load_case, machine, write_results
from benchmarks.metrics import ranking_metrics

CASES = (
    lambda: corpora.resampled_tsv_case("sst2", "synbkd", "syntactic", 0.01, host_tokens=True),
    lambda: corpora.resampled_tsv_case("sst2", "synbkd", "syntactic", 0.05, host_tokens=True),
    lambda: corpora.resampled_tsv_case("offenseval", "synbkd", "syntactic", 0.01,
                                       host_tokens=True),
    lambda: corpora.style_case(0.05, host_tokens=True),
)
SCORES = ("low loss", "inverse confidence", "fitted beyond content")


def content_loss(case: corpora.Case) -> np.ndarray:
    """Each row's loss under the out-of-fold embedding model (the audit's label model), and
    the rows' label codes."""
    from auditors import pipeline
    from auditors.features.embeddings import CachingEncoder, load_encoder

    encoder = CachingEncoder(load_encoder(backend="torch"),
                             str(CACHE / "embeddings-all-MiniLM-L6-v2.npz"))
    loaded = load_case(case)
    model = pipeline.fit_label_model(loaded.table, pipeline.embed_table(loaded.table, encoder))
    codes = model.targets.codes
    return -np.log(model.pred_probs[np.arange(len(codes)), codes]), codes


def proxy_classifier(n_labels: int, trainable_layers: int, seed: int):
    """The bundled MiniLM with a fresh classification head; only the top
    `trainable_layers` encoder layers and the head are trained."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from auditors.features.embeddings import resolve_model_path
    from auditors.model.checkpoint import Classifier

    transformers_logging.set_verbosity_error()  # the new head's "newly initialized" report
    torch.manual_seed(seed)
    path = resolve_model_path(None)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=n_labels, local_files_only=True, trust_remote_code=False)
    frozen = model.config.num_hidden_layers - trainable_layers
    for module in [model.bert.embeddings, *model.bert.encoder.layer[:frozen]]:
        module.requires_grad_(False)
    return Classifier(model, AutoTokenizer.from_pretrained(path, local_files_only=True),
                      Path(path), max_length=64)


def row_losses(classifier, texts: list[str], codes: np.ndarray) -> np.ndarray:
    probs = classifier.probs(texts)
    return -np.log(np.clip(probs[np.arange(len(codes)), codes], 1e-12, 1.0))


def measure(case: corpora.Case, *, trainable_layers: int, checkpoints: int, epochs: int,
            seed: int) -> dict:
    from auditors.model.training import train_classifier

    texts = [r["text"] for r in case.records]
    content, codes = content_loss(case)
    classifier = proxy_classifier(int(codes.max()) + 1, trainable_layers, seed)
    batch_size = 32
    n_steps = len(texts) / batch_size  # per epoch
    total = max(1, int(round(epochs * n_steps)))  # as train_classifier counts them
    eval_at = {min(total, int(round(n_steps * (k + 1) / checkpoints)))
               for k in range(checkpoints * epochs)}
    losses, step, eval_seconds = [], [0], [0.0]

    def after_step():
        step[0] += 1
        if step[0] in eval_at:
            started = time.perf_counter()
            losses.append((step[0], row_losses(classifier, texts, codes)))
            classifier.model.train()
            eval_seconds[0] += time.perf_counter() - started

    started = time.perf_counter()
    train_classifier(classifier, texts, codes.tolist(), epochs=float(epochs), batch_size=batch_size,
                     seed=seed, after_step=after_step)
    train_seconds = time.perf_counter() - started - eval_seconds[0]
    truth = case.poisoned
    points, inverse_confidence = [], []
    for at, loss in losses:
        inverse_confidence.append(1.0 / np.clip(-np.expm1(-loss), 1e-6, None))
        scores = {"low loss": -loss, "inverse confidence": np.mean(inverse_confidence, axis=0),
                  "fitted beyond content": content - loss}
        points.append({"epoch": round(at / n_steps, 2),
                       "poisoned_mean_loss": float(loss[truth].mean()),
                       "clean_mean_loss": float(loss[~truth].mean()),
                       **{name: ranking_metrics(truth, s) for name, s in scores.items()}})
    return {"case": case.name, "rows": len(texts), "poisoned": int(truth.sum()),
            "content_metrics": ranking_metrics(truth, content),
            # poisoned rows whose content model gives their label less than even odds
            "poisoned_contradicted_share": round(float((content[truth] > np.log(2)).mean()), 3),
            "train_rows_per_second": round(epochs * len(texts) / train_seconds, 1),
            "points": points}


def markdown(records: list[dict], meta: dict) -> str:
    lines = ["# Proxy fine-tune: training dynamics on attacks without a trigger word", "",
             f"Generated by `python -m benchmarks.proxy_finetune` on {meta['date']}, "
             f"{meta['machine']}. Total {meta['seconds']:.0f} s. MiniLM, top "
             f"{meta['trainable_layers']} of 6 layers and a new head trained, "
             f"{meta['epochs']} epoch(s).", "",
             "AUROC / AP of each row score against the poisoned rows (see the module "
             "docstring). `content`: the out-of-fold embedding model's loss alone. "
             "`contradicted`: share of the poisoned rows to whose label the content model "
             "gives less than even odds (the rest read like their label).", "",
             "| case | rows | poisoned | contradicted | train rows/s | epoch | "
             "mean loss poisoned / clean | " + " | ".join(SCORES) + " | content |",
             "| --- | --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in SCORES)
             + " | --- |"]
    for r in records:
        content = r["content_metrics"]
        for p in r["points"]:
            cells = " | ".join(f"{p[s]['auroc']:.3f} / {p[s]['ap']:.3f}" for s in SCORES)
            lines.append(f"| {r['case']} | {r['rows']} | {r['poisoned']} | "
                         f"{r['poisoned_contradicted_share']:.2f} | "
                         f"{r['train_rows_per_second']} | {p['epoch']} | "
                         f"{p['poisoned_mean_loss']:.3f} / {p['clean_mean_loss']:.3f} | {cells} "
                         f"| {content['auroc']:.3f} / {content['ap']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--trainable-layers", type=int, default=6)
    parser.add_argument("--checkpoints", type=int, default=2, help="loss measurements per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    records = []
    for build in CASES:
        case = build()
        if args.only and args.only not in case.name:
            continue
        record = measure(case, trainable_layers=args.trainable_layers,
                         checkpoints=args.checkpoints, epochs=args.epochs, seed=args.seed)
        records.append(record)
        last = record["points"][-1]
        print(f"{record['case']}: {record['train_rows_per_second']} rows/s; at the end "
              + "; ".join(f"{s} AP {last[s]['ap']:.3f}" for s in SCORES), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "seconds": time.perf_counter() - started, "trainable_layers": args.trainable_layers, "epochs": args.epochs}
    write_results(args.results, "proxy-finetune", markdown(records, meta), meta, records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
