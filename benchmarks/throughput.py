"""Throughput benchmark: the bare torch encode of the rows (the baseline), trainguard's full
audit (ingest -> outputs, library stages, no Prefect start-up) with each embedding backend,
a re-audit after appending 1% new rows (embedding cache on), and Cleanlab Datalab
`find_issues` on the same features.

    .venv/bin/python -m benchmarks.throughput                    # 10,000 rows
    .venv/bin/python -m benchmarks.throughput --sizes 10000,100000
    .venv/bin/python -m benchmarks.throughput --sizes 2000 --backends static --out /tmp/x
    .venv/bin/python -m benchmarks.throughput --sizes 10000,100000,1000000 \
        --full-max-rows 10000 --timeout 2400
        # every backend, the baseline and Datalab at 10k; only `static` at 100k and 1M;
        # a measurement still running after 40 min is stopped, keeping its first audit

Rows are real SST-2 rows (the poisoned sample in sample_data/ first, then the clean SST-2
train rows of ../shared/corpora when present) repeated with small perturbations (a word
dropped, two neighbours swapped, a word doubled), so every row is distinct. Each
measurement runs in its own process, so peak RSS (ru_maxrss) belongs to it alone. The ONNX
and static models are built before timing (a one-off per machine, cached).
Results: benchmarks/results/throughput.{md,json}.

    .venv/bin/python -m benchmarks.throughput --detection   # AP per family, per backend

runs the detection benchmark's quick suite (benchmarks/detection.py, same code) once per
backend and compares each family's average precision with torch's: a backend may be the
default only if it stays within 0.02 on every family; without torch in `--backends` the
torch figures come from the committed benchmarks/results/detection-quick.json. Results:
benchmarks/results/throughput-detection.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE = ROOT / "sample_data" / "sst2_badnets_sample.tsv"
SST2_CLEAN = ROOT.parent / "shared" / "corpora" / "sst2" / "clean"
BACKENDS = ("torch", "onnx-int8", "static")


# ---------------------------------------------------------------------------------------
# Rows


def real_rows() -> list[tuple[str, str]]:
    """(text, label) pairs: the poisoned sample, then clean SST-2 train rows if present."""
    rows = _tsv_rows(SAMPLE)
    seen = {text for text, _ in rows}
    clean = SST2_CLEAN / "train.tsv"
    if clean.exists():
        rows += [r for r in _tsv_rows(clean) if r[0] not in seen]
    return rows


def _tsv_rows(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    pairs = [line.rsplit("\t", 1) for line in lines if "\t" in line]
    return [(text.strip(), label.strip()) for text, label in pairs]


def perturb(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    if len(words) < 3:
        return text + " " + text
    i = int(rng.integers(len(words) - 1))
    kind = rng.integers(3)
    if kind == 0:
        del words[i]
    elif kind == 1:
        words[i], words[i + 1] = words[i + 1], words[i]
    else:
        words.insert(i, words[i])
    return " ".join(words)


def make_rows(n: int, *, seed: int) -> list[tuple[str, str]]:
    """n rows: the real rows once, then perturbed repeats (seeded)."""
    base, rng = real_rows(), np.random.default_rng(seed)
    rows = list(base[:n])
    while len(rows) < n:
        text, label = base[len(rows) % len(base)]
        rows.append((perturb(text, rng), label))
    return rows


def write_jsonl(rows, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for text, label in rows:
            out.write(json.dumps({"text": text, "label": label}, ensure_ascii=False) + "\n")
    return path


# ---------------------------------------------------------------------------------------
# Measurements, one per child process


def measure_bare_encode(data: Path) -> dict:
    from auditors.features.embeddings import load_encoder

    texts = [json.loads(line)["text"] for line in data.open(encoding="utf-8")]
    encoder = load_encoder(backend="torch")
    started = time.perf_counter()
    encoder.encode(texts, batch_size=64, show_progress_bar=False, normalize_embeddings=True)
    return {"seconds": time.perf_counter() - started, "rows": len(texts)}


def measure_audit(data: Path, grown: Path, backend: str, work: Path, report) -> dict:
    """A first audit with an empty embedding cache, then the re-audit of the grown file;
    `report(record)` is called after each, so a re-audit stopped by the time limit still
    leaves the first audit's figures."""
    from auditors import pipeline
    from auditors.config import AuditConfig
    from auditors.features.embeddings import load_encoder

    def timed_audit(source: Path, out: Path):
        started = time.perf_counter()
        encoder = load_encoder(backend=backend)  # models prebuilt in the user cache dir
        config = AuditConfig(backend=backend, cache_dir=str(work / f"cache-{backend}"))
        result = pipeline.audit(str(source), out, config, encoder=encoder)
        return result, time.perf_counter() - started

    first, seconds = timed_audit(data, work / f"out-{backend}")
    record = {"seconds": seconds, "rows": first.summary.rows,
              "stages": stage_seconds(first.summary.timings_seconds),
              "flagged": first.summary.flagged,
              "top_triggers": [t["pattern"] for t in first.triggers[:5]]}
    report(record)
    del first
    again, reaudit_seconds = timed_audit(grown, work / f"again-{backend}")
    record.update(reaudit_seconds=reaudit_seconds, reaudit_rows=again.summary.rows,
                  reaudit_stages=stage_seconds(again.summary.timings_seconds))
    return record


def stage_seconds(timings: dict) -> dict:
    """Seconds per stage, the detectors (timed one by one) summed."""
    return {stage: round(sum(v.values()) if isinstance(v, dict) else v, 3)
            for stage, v in timings.items()}


def measure_datalab(data: Path, work: Path) -> dict:
    """Datalab on the torch audit's features (read back from its embedding cache) and
    trainguard's out-of-fold probabilities; only `find_issues` is timed."""
    from cleanlab import Datalab

    from auditors import pipeline
    from auditors.features.embeddings import EmbeddingCache
    from auditors.ingest import load_table

    loaded = load_table(str(data))
    embeddings = pipeline.embed_table(loaded.table, None,
                                      cache=EmbeddingCache(work / "cache-torch", None, "torch"))
    label_model = pipeline.fit_label_model(loaded.table, embeddings)
    lab = Datalab(data={"label": label_model.targets.codes}, label_name="label", verbosity=0)
    started = time.perf_counter()
    lab.find_issues(features=embeddings.prompt, pred_probs=label_model.pred_probs)
    return {"seconds": time.perf_counter() - started, "rows": len(loaded.table),
            "issue_types": sorted(lab.get_issue_summary()["issue_type"])}


def child_main(args) -> None:
    kind, data, work = args.child, Path(args.data), Path(args.work)

    def report(record: dict) -> None:
        record["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(record), flush=True)

    if kind == "bare":
        record = measure_bare_encode(data)
    elif kind == "datalab":
        record = measure_datalab(data, work)
    else:
        record = measure_audit(data, Path(args.grown), kind, work, report)
    report(record)


def run_child(kind: str, data: Path, grown: Path, work: Path,
              timeout: float | None = None) -> dict:
    """The child's last reported record; past `timeout` seconds the child is stopped and
    what it reported so far is kept (a first audit without its re-audit)."""
    command = [sys.executable, "-m", "benchmarks.throughput", "--child", kind, "--data", str(data),
               "--grown", str(grown), "--work", str(work)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
        stdout, stderr, failed = proc.stdout, proc.stderr, proc.returncode != 0
    except subprocess.TimeoutExpired as stopped:
        stdout, stderr, failed = _text(stopped.stdout), _text(stopped.stderr), True
    results = [line for line in stdout.splitlines() if line.startswith("RESULT ")]
    if not results:
        reason = f"stopped after {timeout:.0f} s" if failed and timeout else \
            (stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": reason}
    record = json.loads(results[-1][len("RESULT "):])
    record["rows_per_s"] = record["rows"] / record["seconds"]
    if failed and kind not in ("bare", "datalab") and "reaudit_seconds" not in record:
        record["reaudit_error"] = (f"not finished at the {timeout:.0f} s limit" if timeout
                                   else (stderr.strip().splitlines() or ["failed"])[-1])
    return record


def _text(output) -> str:
    return output.decode("utf-8", "replace") if isinstance(output, bytes) else (output or "")


def warm_models(backends) -> None:
    """Build (or find) the cached ONNX and static models outside the timings."""
    from auditors.features.embeddings import load_encoder

    for backend in backends:
        if backend != "torch":
            load_encoder(backend=backend)


def run_size(n: int, backends, work: Path, *, baseline: bool = True,
             timeout: float | None = None) -> dict:
    """One size: the bare torch encode (when `baseline`), an audit and re-audit per backend,
    and Datalab when torch is among the backends; each run stopped after `timeout` s."""
    data = write_jsonl(make_rows(n, seed=0), work / f"rows-{n}.jsonl")
    added = [(perturb(t, np.random.default_rng(k)), label)  # 1% rows not seen before
             for k, (t, label) in enumerate(make_rows(max(1, n // 100), seed=1))]
    grown = write_jsonl(make_rows(n, seed=0) + added, work / f"rows-{n}-grown.jsonl")
    record = {"rows": n, "added_rows": len(added)}
    stages = [("bare_torch_encode", "bare")] if baseline else []
    stages += [(f"audit_{b}", b) for b in backends]
    if "torch" in backends:
        stages.append(("datalab_find_issues", "datalab"))
    for name, kind in stages:
        print(f"{n} rows: {name} ...", flush=True)
        record[name] = run_child(kind, data, grown, work, timeout)
        print(f"  {_brief(record[name])}", flush=True)
    return record


def _brief(measurement: dict) -> str:
    if "error" in measurement:
        return f"error: {measurement['error']}"
    text = (f"{measurement['seconds']:.1f} s, {measurement['rows_per_s']:.0f} rows/s, "
            f"peak RSS {measurement['peak_rss_mb']} MB")
    if "reaudit_seconds" in measurement:
        text += f", re-audit +1% {measurement['reaudit_seconds']:.1f} s"
    if "reaudit_error" in measurement:
        text += f", re-audit {measurement['reaudit_error']}"
    return text


# ---------------------------------------------------------------------------------------
# Tables


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = ["# Throughput benchmark", "",
             f"Generated by `{meta['command']}` on {meta['date']}, {meta['machine']}, "
             f"{meta['cores']} cores, Python {meta['python']}, no GPU. Load average at start: "
             f"{meta['load_average']} (the machine is shared: absolute numbers move with it; "
             "the rows within one size ran back to back).", "",
             "Rows: real SST-2 rows (the poisoned sample, then clean train rows) repeated with "
             "small perturbations. Full audit = ingest, embeddings (cache on, empty), n-grams, "
             "label model, detectors, fusion and all outputs (report.html included), without "
             "Prefect (a flow adds 6–11 s of start-up). Re-audit = the same audit of the file "
             "with 1% new rows appended, reusing the embedding cache. Speed-up = bare torch "
             "encode time / audit time. Datalab = `find_issues` alone, given the torch features "
             "and out-of-fold probabilities (computing those is not included).", ""]
    for size in report["sizes"]:
        n = size["rows"]
        baseline = size.get("bare_torch_encode", {}).get("seconds")
        lines += [f"## {n:,} rows", "",
                  "| run | wall s | rows/s | speed-up vs bare encode | peak RSS MB | "
                  "re-audit +1% s | re-audit / full | embed s | detectors s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name in [k for k in size if isinstance(size[k], dict)]:
            m = size[name]
            if "error" in m:
                lines.append(f"| {name} | error: {m['error']} | | | | | | | |")
                continue
            speedup = f"{baseline / m['seconds']:.2f}×" if baseline and name.startswith("audit") else ""
            reaudit = f"{m['reaudit_seconds']:.1f}" if "reaudit_seconds" in m \
                else m.get("reaudit_error", "")
            share = f"{m['reaudit_seconds'] / m['seconds']:.0%}" if "reaudit_seconds" in m else ""
            stages = m.get("stages", {})
            lines.append(f"| {name} | {m['seconds']:.1f} | {m['rows_per_s']:,.0f} | {speedup} | "
                         f"{m['peak_rss_mb']:,} | {reaudit} | {share} | "
                         f"{stages.get('embeddings', '')} | {stages.get('detectors', '')} |")
        lines.append("")
        for name in [k for k in size if k.startswith("audit_") and "stages" in size[k]]:
            stages = ", ".join(f"{k} {v:.1f}" for k, v in size[name]["stages"].items())
            reaudit_stages = size[name].get("reaudit_stages", {}).items()
            again = ", ".join(f"{k} {v:.1f}" for k, v in reaudit_stages) or "not finished"
            lines += [f"- `{name}` stages (s): {stages}; re-audit: {again}; top triggers: "
                      f"{', '.join(map(repr, size[name]['top_triggers']))}"]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Detection quality per backend (the gate for choosing the default)

AP_TOLERANCE = 0.02


def detection_by_backend(backends) -> dict:
    """The quick detection suite once per backend; embeddings cached per text and backend
    in benchmarks/.cache (torch shares detection.py's cache file)."""
    from auditors.features.embeddings import CachingEncoder, load_encoder
    from benchmarks import corpora, detection

    families, seconds, reference = {}, {}, "this run"
    if "torch" not in backends:  # reuse the committed quick run of benchmarks/detection.py
        committed = json.loads((RESULTS / "detection-quick.json").read_text())
        families["torch"] = {f["family"]: f["ap"] for f in committed["families"]}
        reference = f"benchmarks/results/detection-quick.json ({committed['meta']['date']})"
    for backend in backends:
        suffix = "" if backend == "torch" else f"-{backend}"
        cache_file = detection.CACHE / f"embeddings-all-MiniLM-L6-v2{suffix}.npz"
        detection.CACHE.mkdir(exist_ok=True)
        encoder = CachingEncoder(load_encoder(backend=backend), str(cache_file))
        started = time.perf_counter()
        records = detection.run_suite(corpora.quick_suite(), encoder)
        seconds[backend] = round(time.perf_counter() - started, 1)
        if backend != "torch":  # torch's file belongs to benchmarks/detection.py
            encoder.save()
        families[backend] = {f["family"]: f["ap"] for f in detection.family_rows(records)}
    return {"families": families, "seconds": seconds, "tolerance": AP_TOLERANCE,
            "torch_reference": reference,
            "within_tolerance": {b: _within(families["torch"], families[b])
                                 for b in backends if b != "torch" and "torch" in families}}


def _within(reference: dict, other: dict) -> bool:
    return all(other.get(f) is not None and other[f] >= ap - AP_TOLERANCE
               for f, ap in reference.items() if ap is not None)


def detection_markdown(result: dict, meta: dict) -> str:
    backends = list(result["families"])
    lines = ["# Detection quality per embedding backend (quick suite)", "",
             f"Generated by `{meta['command']}` on {meta['date']}, {meta['machine']}, "
             f"{meta['cores']} cores. Mean average precision of trainguard's fused score per "
             f"attack family; Δ = backend − torch. A backend can be the default only if no "
             f"family drops by more than {AP_TOLERANCE}. torch reference: "
             f"{result['torch_reference']}.", "",
             "| family | " + " | ".join(
                 b if b == "torch" else f"{b} | Δ" for b in backends) + " |",
             "|" + " --- |" * (1 + 2 * len(backends) - 1)]
    torch = result["families"].get("torch", {})
    for family in torch or result["families"][backends[0]]:
        cells = []
        for b in backends:
            ap = result["families"][b].get(family)
            cells.append(_fmt(ap))
            if b != "torch":
                ref = torch.get(family)
                cells.append("–" if ap is None or ref is None else f"{ap - ref:+.3f}")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    lines += ["", "Suite wall time (s, embeddings cached per text where already computed): "
              + ", ".join(f"{b} {s}" for b, s in result["seconds"].items()), ""]
    for backend, ok in result["within_tolerance"].items():
        lines.append(f"- `{backend}`: {'within' if ok else 'NOT within'} {AP_TOLERANCE} AP of "
                     "torch on every family")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000", help="comma-separated row counts")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--full-max-rows", type=int, default=None,
                        help="sizes above this run only --large-backends, without the bare "
                             "torch encode and Datalab (their cost grows fastest)")
    parser.add_argument("--large-backends", default="static",
                        help="backends for sizes above --full-max-rows")
    parser.add_argument("--timeout", type=float, default=None,
                        help="stop each measurement (one process: audit, then re-audit) after "
                             "this many seconds, keeping what it finished")
    parser.add_argument("--out", default=str(RESULTS), help="directory for throughput.{md,json}")
    parser.add_argument("--detection", action="store_true",
                        help="compare detection AP per backend on the quick suite instead")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--grown", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    warm_models(backends)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m benchmarks.throughput " + " ".join(argv or sys.argv[1:]),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": ", ".join(f"{x:.1f}" for x in os.getloadavg())}
    if args.detection:
        result = {"meta": meta, **detection_by_backend(backends)}
        (out / "throughput-detection.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "throughput-detection.md").write_text(detection_markdown(result, meta))
        print(f"wrote {out / 'throughput-detection.md'}")
        return
    report = {"meta": meta, "sizes": []}
    with tempfile.TemporaryDirectory(prefix="trainguard-throughput-") as tmp:
        large = [b for b in args.large_backends.split(",") if b]
        for n in sizes:
            full = args.full_max_rows is None or n <= args.full_max_rows
            report["sizes"].append(run_size(n, backends if full else large, Path(tmp),
                                            baseline=full, timeout=args.timeout))
            # written after every size, so a long last size cannot lose the others
            (out / "throughput.json").write_text(json.dumps(report, indent=2) + "\n")
            (out / "throughput.md").write_text(markdown(report) + "\n")
    print(f"wrote {out / 'throughput.md'}")


if __name__ == "__main__":
    main()
