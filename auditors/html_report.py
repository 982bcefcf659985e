"""`report.html`: one self-contained page per audit that a person can read without tools.

Headline verdict and what to do next, trigger table with example rows (trigger
highlighted; preference pairs as prompt, chosen and rejected side by side; the rows each
trigger flagged), the flagged rows themselves (the highest-scored first), poison-score
histogram, a 2-D PCA map of the prompt embeddings, and per-detector summaries. Charts are inline SVG; there is no
JavaScript, and a Content-Security-Policy forbids any, so text that escaped escaping still
could not run. All dataset text goes through `html.escape`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from auditors.errors import TrainguardError
from auditors.features.unicode import describe_codepoints
from auditors.report import detectors_not_run, flagged_counts, percents, significance_text
from auditors.schema import PREFERENCE
from auditors.summary import AuditSummary

REPORT = "report.html"
MAX_TRIGGERS = 15
MAX_FLAGGED_SHOWN = 50
EXAMPLES_PER_TRIGGER = 3
MAX_EXAMPLE_CHARS = 400
MAX_MAP_POINTS = 4000
HISTOGRAM_BINS = 20
PALETTE = ("#4e79a7", "#59a14f", "#edc948", "#b07aa1", "#76b7b2", "#ff9da7", "#9c755f",
           "#bab0ac")
FLAG_COLOUR = "#e15759"
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}.pass{color:#2a7d2a}.fail{color:#b3261e}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:4px 8px;
vertical-align:top;text-align:left}th{background:#f3f3f3}mark{background:#ffd54f}
.ex{font-family:ui-monospace,monospace;font-size:12px;white-space:pre-wrap;
overflow-wrap:anywhere;max-width:600px}.muted{color:#666}svg{background:#fafafa}
code.cp{background:#fde2e2}.pairs{width:100%;table-layout:fixed;margin:0}
.pairs th:first-child{width:4em}.pairs .ex{max-width:none}"""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def write_html_report(path: str | Path, *, summary: AuditSummary, rows: pd.DataFrame,
                      triggers: list[dict], table: pd.DataFrame | None = None,
                      embeddings: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.write_text(render_report(summary=summary, rows=rows, triggers=triggers, table=table,
                                  embeddings=embeddings), encoding="utf-8")
    return path


def render_report(*, summary: AuditSummary, rows: pd.DataFrame, triggers: list[dict],
                  table: pd.DataFrame | None = None,
                  embeddings: np.ndarray | None = None) -> str:
    labels = table["label"].astype(str).tolist() if table is not None else None
    pairs = summary.schema == PREFERENCE
    flagged = rows["flagged"].to_numpy(dtype=bool)
    sections = [
        _headline(summary),
        _section("Next steps", _next_steps(summary, triggers)),
        _section("Trigger candidates", _trigger_table(
            triggers, table, pairs=pairs, flagged_counts=flagged_counts(
                triggers[:MAX_TRIGGERS], table, flagged))),
        _section("Flagged rows", _flagged_rows(rows, table, summary, pairs=pairs)),
        _section("Poison scores", _histogram(rows["poison_score"].to_numpy(),
                                             summary.flag_threshold)),
        _section("Embedding map (PCA of the prompt embeddings)",
                 _embedding_map(embeddings, rows["flagged"].to_numpy(dtype=bool), labels)),
        _section("Detectors", _detectors(summary)),
    ]
    if summary.ledger is not None:
        sections.append(_section("Quarantine ledger", _ledger(summary.ledger)))
    title = f"trainguard audit: {esc(summary.input)}"
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            f"<title>{title}</title><style>{_STYLE}</style></head><body>"
            + "".join(sections) + "</body></html>\n")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{esc(title)}</h2>{body}</section>"


def _headline(summary: AuditSummary) -> str:
    gate = summary.gate
    verdict = "PASS" if gate.passed else "FAIL"
    share, limit = percents(gate.flagged_fraction, gate.max_flagged_fraction)  # as the CLI
    skipped = (f"<p class=\"fail\">{summary.skipped_rows} bad row(s) set aside, not audited: "
               f"{esc(summary.outputs.skipped or 'skipped.jsonl')}</p>"
               if summary.skipped_rows else "")
    return (f"<h1 class=\"{'pass' if gate.passed else 'fail'}\" id=\"verdict\">{verdict}: "
            f"{summary.flagged} of {summary.rows} rows flagged "
            f"({share}; the gate allows {limit})</h1>"
            + "".join(f"<p class=\"fail\">{esc(c['check'])}: {esc(c['detail'])}</p>"
                      for c in gate.checks if not c["passed"] and c["check"] != "flagged share")
            + skipped
            + f"<p>input <code>{esc(summary.input)}</code> ({esc(summary.format)}, schema "
            f"{esc(summary.schema_columns)}); embedding model "
            f"{esc(summary.embedding_model)}; trainguard "
            f"{esc(summary.trainguard_version)}</p>")


def _trigger_table(triggers: list[dict], table: pd.DataFrame | None, *,
                   pairs: bool = False, flagged_counts: dict | None = None) -> str:
    """With `pairs` (preference data) each trigger's examples get a full-width row below it.
    `flagged_counts`: per pattern, the flagged rows that hold it; candidates that flagged
    no row are greyed: they are leads, not findings."""
    if not triggers:
        return "<p class=\"muted\">No trigger candidates.</p>"
    flagged_counts = flagged_counts or {}
    head = ("<p class=\"muted\">Greyed: candidates that flagged no row.</p>"
            "<table id=\"triggers\"><tr><th>#</th><th>trigger</th><th>score</th>"
            "<th>significant</th><th>p / q</th><th>support</th><th>flagged rows</th>"
            "<th>target</th><th>purity</th>" + ("" if pairs else "<th>example rows</th>") + "</tr>")
    body = []
    for rank, t in enumerate(triggers[:MAX_TRIGGERS], start=1):
        codepoints = "".join(f"<br><code class=\"cp\">{esc(c)}</code>"
                             for c in t.get("codepoints") or describe_codepoints(t["pattern"]))
        examples = [i for i in t.get("example_row_indices", [])[:EXAMPLES_PER_TRIGGER]
                    if table is not None and i < len(table)]
        n_flagged = flagged_counts.get(t["pattern"], 0)
        cells = (f"<td>{rank}</td><td><code>{esc(t['pattern'])}</code>{codepoints}</td>"
                 f"<td>{t['score']:.2f}</td><td>{'yes' if t.get('significant') else 'no'}"
                 f"{' (released by a reviewer)' if t.get('released') else ''}</td>"
                 f"<td>{esc(significance_text(t))}</td>"
                 f"<td>{t['support']}</td><td>{n_flagged}</td><td>{esc(t['target'])}</td>"
                 f"<td>{t.get('target_share', 0):.0%}</td>")
        row_class = "" if n_flagged else " class=\"muted\""
        if not pairs:
            body.append(f"<tr{row_class}>{cells}"
                        f"<td>{_examples(table, examples, t['pattern'], t.get('side'))}"
                        "</td></tr>")
            continue
        body.append(f"<tr{row_class}>{cells}</tr>")
        if examples:
            body.append(f"<tr><td colspan=\"9\">{_pair_examples(table, examples, t['pattern'])}"
                        "</td></tr>")
    return head + "".join(body) + "</table>"


def _flagged_rows(rows: pd.DataFrame, table: pd.DataFrame | None, summary: AuditSummary, *,
                  pairs: bool) -> str:
    flagged = rows.loc[rows["flagged"]].sort_values("poison_score", ascending=False,
                                                    kind="stable")
    if flagged.empty:
        return "<p class=\"muted\">No row was flagged.</p>"
    where = (f"<p>All {len(flagged)} flagged rows are in <code>"
             f"{esc(summary.outputs.quarantine or 'the quarantine split')}</code> and in "
             "<code>rows.parquet</code> (<code>flagged</code> true); "
             f"{min(len(flagged), MAX_FLAGGED_SHOWN)} shown, highest poison_score first.</p>")
    text_heads = ("<th>prompt</th><th>chosen</th><th>rejected</th>" if pairs
                  else "<th>text</th><th>label / response</th>")
    body = []
    for _, row in flagged.head(MAX_FLAGGED_SHOWN).iterrows():
        i = int(row["row_index"])
        if table is not None and i < len(table):
            columns = ("prompt", "response", "rejected") if pairs else ("prompt",)
            texts = "".join(f"<td class=\"ex\">{_visible(_clip(str(table[c].iat[i]), 300))}</td>"
                            for c in columns)
            if not pairs:
                texts += f"<td class=\"ex\">{esc(_target_of(table, i))}</td>"
        else:
            texts = "<td></td>" * (3 if pairs else 2)
        body.append(f"<tr><td>{i}</td><td><code>{esc(row['row_id'])}</code></td>"
                    f"<td>{row['poison_score']:.2f}</td>{texts}"
                    f"<td class=\"ex\">{esc(_clip(str(row['reasons']), 300))}</td></tr>")
    return (where + "<table id=\"flagged-rows\"><tr><th>row</th><th>row_id</th><th>score</th>"
            + text_heads + "<th>reasons</th></tr>" + "".join(body) + "</table>")


def _next_steps(summary: AuditSummary, triggers: list[dict]) -> str:
    """The commands a reviewer runs next, for this run's store and input."""
    ledger = summary.ledger
    store = ledger.get("store") if ledger else None
    top = next((t["pattern"] for t in triggers if t.get("flagged", True)), None)
    if store:
        steps = [("See the flagged rows grouped by trigger", f"trainguard review {store}"),
                 ("Confirm a trigger (its rows fail every later audit that holds them)",
                  f"trainguard confirm {store} --trigger {_shell_quote(top or 'PATTERN')}"),
                 ("Release a false positive (not flagged again)",
                  f"trainguard release {store} --row-id ROW_ID")]
    else:
        steps = [("Keep reviewers' decisions: audit again with a ledger",
                  f"trainguard audit {_shell_quote(summary.input)} --out OUT --store LEDGER"),
                 ("Then review, confirm or release", "trainguard review LEDGER")]
    verdict = ("The gate passed: the clean split is the whole dataset minus the flagged rows."
               if summary.passed else
               "The gate failed: train on the clean split only after the flagged rows and "
               "triggers are reviewed.")
    return (f"<p>{esc(verdict)}</p><ol>" + "".join(
        f"<li>{esc(what)}: <code>{esc(command)}</code></li>" for what, command in steps)
        + "</ol>")


def _shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(str(text))


def _examples(table: pd.DataFrame, indices: list[int], pattern: str,
              side: str = "prompt") -> str:
    """Each example row's prompt and target; the trigger marked where it sits (an injected
    phrase: in the response)."""
    if side == "response":
        return "".join(f"<div class=\"ex\">row {i}: {esc(_clip(table['prompt'].iat[i], 120))}"
                       f" <span class=\"muted\">→</span> "
                       f"{highlight(table['response'].iat[i], pattern)}</div>" for i in indices)
    return "".join(f"<div class=\"ex\">row {i}: {highlight(table['prompt'].iat[i], pattern)}"
                   f" <span class=\"muted\">→ {esc(_target_of(table, i))}</span></div>"
                   for i in indices)


def _pair_examples(table: pd.DataFrame, indices: list[int], pattern: str) -> str:
    """Prompt, chosen and rejected side by side: a swapped pair shows at a glance."""
    rows = "".join(f"<tr><td>{i}</td>" + "".join(
        f"<td class=\"ex\">{highlight(table[column].iat[i], pattern)}</td>"
        for column in ("prompt", "response", "rejected")) + "</tr>" for i in indices)
    return ("<table class=\"pairs\"><tr><th>row</th><th>prompt</th><th>chosen</th>"
            f"<th>rejected</th></tr>{rows}</table>")


def _target_of(table: pd.DataFrame, i: int) -> str:
    label = table["label"].iat[i]
    return label if label else _clip(table["response"].iat[i], 120)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def text_window(text: str, pattern: str, width: int) -> str:
    """About `width` characters of `text` around the first place it holds `pattern`, else
    its start: an advert appended to a long response, a trigger at the end of a long
    prompt, stays in view."""
    text = str(text)
    if len(text) <= width:
        return text
    matcher = _pattern_regex(pattern)
    found = matcher.search(text) if matcher else None
    start = max(0, min(found.start() - width // 3, len(text) - width)) if found else 0
    return (("…" if start else "") + text[start:start + width]
            + ("…" if start + width < len(text) else ""))


def highlight(text: str, pattern: str) -> str:
    """Escaped `text` (clipped around the trigger's first occurrence) with its occurrences in
    <mark>; invisible characters are shown by code point, so a zero-width trigger is
    visible too."""
    text = text_window(text, pattern, MAX_EXAMPLE_CHARS)
    matcher = _pattern_regex(pattern)
    pieces, last = [], 0
    for found in (matcher.finditer(text) if matcher else ()):
        pieces += [_visible(text[last:found.start()]),
                   f"<mark>{_visible(found.group())}</mark>"]
        last = found.end()
    return "".join(pieces + [_visible(text[last:])])


def _pattern_regex(pattern: str) -> re.Pattern | None:
    # imported here: the n-gram module loads scikit-learn (a second), and commands import
    # this module (through auditors.outputs) to check their output path before any work
    from auditors.features.ngrams import POSITION_END, POSITION_START, TOKEN_PATTERN

    anchored = pattern[:1] in (POSITION_START, POSITION_END) and len(pattern) > 1
    words = re.findall(TOKEN_PATTERN, pattern[1:] if anchored else pattern)
    if not words:  # a Unicode token: the character itself
        return re.compile(re.escape(pattern)) if len(pattern) == 1 else None
    body = r"\W+".join(re.escape(w) for w in words)
    return re.compile(rf"\b{body}\b", re.IGNORECASE)


def _visible(text: str) -> str:
    out = []
    for ch in text:
        if ch in "\t\n" or ch.isprintable():
            out.append(esc(ch))
        else:
            out.append(f"<code class=\"cp\">U+{ord(ch):04X}</code>")
    return "".join(out)


def _histogram(scores: np.ndarray, threshold: float, width: int = 640,
               height: int = 200) -> str:
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    if not counts.sum():
        return "<p class=\"muted\">No rows.</p>"
    # square-root heights: the few suspicious rows stay visible next to thousands of clean ones
    scale = (height - 30) / np.sqrt(counts.max())
    bar = (width - 40) / HISTOGRAM_BINS
    bars = []
    for k, (count, left) in enumerate(zip(counts, edges[:-1])):
        h = np.sqrt(count) * scale
        colour = FLAG_COLOUR if left >= threshold else PALETTE[0]
        bars.append(f"<rect x=\"{20 + k * bar:.1f}\" y=\"{height - 20 - h:.1f}\" "
                    f"width=\"{bar - 2:.1f}\" height=\"{h:.1f}\" fill=\"{colour}\">"
                    f"<title>{left:.2f}–{left + 0.05:.2f}: {count} rows</title></rect>"
                    + (f"<text x=\"{20 + (k + .5) * bar:.1f}\" y=\"{height - 24 - h:.1f}\" "
                       f"font-size=\"10\" text-anchor=\"middle\">{count}</text>" if count else ""))
    axis = "".join(f"<text x=\"{20 + x * (width - 40):.1f}\" y=\"{height - 5}\" font-size=\"10\""
                   f" text-anchor=\"middle\">{x:.1f}</text>" for x in np.linspace(0, 1, 6))
    return (f"<svg id=\"histogram\" width=\"{width}\" height=\"{height}\" "
            f"xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">{''.join(bars)}{axis}</svg>"
            f"<p class=\"muted\">rows per poison_score bin (square-root scale); red: at or "
            f"above the flag threshold {threshold}</p>")


PCA_FIT_ROWS = 5000


def project_2d(embeddings: np.ndarray, seed: int = 0, fit_rows: int = PCA_FIT_ROWS) -> np.ndarray:
    """The first two principal components, fitted on at most `fit_rows` rows (a seeded
    sample: the axes of a picture need no more) and applied to every row."""
    from sklearn.decomposition import PCA

    if len(embeddings) < 3:
        return np.zeros((len(embeddings), 2))
    pca = PCA(n_components=2, random_state=seed)
    if len(embeddings) <= fit_rows:
        return pca.fit_transform(embeddings)
    sample = np.random.default_rng(seed).choice(len(embeddings), fit_rows, replace=False)
    return pca.fit(embeddings[np.sort(sample)]).transform(embeddings)


def _embedding_map(embeddings: np.ndarray | None, flagged: np.ndarray,
                   labels: list[str] | None, size: int = 520) -> str:
    if embeddings is None or len(embeddings) == 0:
        return "<p class=\"muted\">No embeddings for this run.</p>"
    points = project_2d(embeddings)
    keep = np.arange(len(points))
    if len(keep) > MAX_MAP_POINTS:  # every flagged row, and an even sample of the rest
        rest = np.flatnonzero(~flagged)
        keep = np.union1d(np.flatnonzero(flagged),
                          rest[np.linspace(0, len(rest) - 1, MAX_MAP_POINTS).astype(int)])
    low, high = points.min(axis=0), points.max(axis=0)
    xy = 10 + (points - low) / np.where(high > low, high - low, 1) * (size - 20)
    classes = sorted(set(labels)) if labels and any(labels) else [""]
    colour = {c: PALETTE[k % len(PALETTE)] for k, c in enumerate(classes)}
    dots = []
    for i in sorted(keep, key=lambda i: flagged[i]):  # flagged rows drawn on top
        fill = colour[labels[i]] if labels and any(labels) else PALETTE[0]
        x, y = xy[i]
        if flagged[i]:
            dots.append(f"<circle cx=\"{x:.1f}\" cy=\"{y:.1f}\" r=\"4\" fill=\"{fill}\" "
                        f"stroke=\"{FLAG_COLOUR}\" stroke-width=\"2\" class=\"flagged\"/>")
        else:
            dots.append(f"<circle cx=\"{x:.1f}\" cy=\"{y:.1f}\" r=\"2\" fill=\"{fill}\" "
                        "fill-opacity=\"0.55\"/>")
    legend = " ".join(f"<span style=\"color:{colour[c]}\">●</span> {esc(_clip(c, 40))}"
                      for c in classes[:len(PALETTE)] if c)
    return (f"<svg id=\"embedding-map\" width=\"{size}\" height=\"{size}\" "
            f"xmlns=\"http://www.w3.org/2000/svg\" role=\"img\">{''.join(dots)}</svg>"
            f"<p class=\"muted\">fill: label {legend}; "
            f"<span style=\"color:{FLAG_COLOUR}\">red ring</span>: flagged "
            f"({int(flagged.sum())} rows); {len(keep)} of {len(points)} rows drawn</p>")


def _detectors(summary: AuditSummary) -> str:
    lines = [f"<tr><td>{esc(name)}</td><td>ran</td><td>{esc(_numbers(numbers))}</td></tr>"
             for name, numbers in summary.detector_summaries.items()]
    lines += [f"<tr><td>{esc(name)}</td><td>{esc(status)}</td><td>{esc(why)}</td></tr>"
              for name, status, why in detectors_not_run(summary)]
    notes = "".join(f"<p class=\"muted\">{esc(note)}</p>" for note in
                    (summary.label_model_note, summary.input_warning and
                     f"warning: {summary.input_warning}") if note)
    return ("<table id=\"detectors\"><tr><th>detector</th><th>status</th><th>summary</th></tr>"
            + "".join(lines) + "</table>" + notes)


def _numbers(numbers: dict) -> str:
    return ", ".join(f"{key.replace('_', ' ')} {value:.3g}" if isinstance(value, float)
                     else f"{key.replace('_', ' ')} {value}"
                     for key, value in numbers.items() if key != "detector")


def _ledger(ledger: dict) -> str:
    hits = "".join(f"<li>confirmed trigger <code>{esc(p)}</code> in {n} rows</li>"
                   for p, n in ledger.get("confirmed_trigger_rows", {}).items())
    return (f"<ul><li>store <code>{esc(ledger.get('store', ''))}</code>, run "
            f"{esc(ledger.get('run_id', ''))}</li>"
            f"<li>rows confirmed by id that reappeared: {ledger.get('confirmed_rows', 0)}</li>"
            f"<li>released rows not flagged again: {ledger.get('released_rows', 0)}</li>"
            f"{hits}</ul>")


INDEX = "index.html"


def write_run_index(out_dir: str | Path, runs: pd.DataFrame, store: str) -> Path:
    """`index.html` in `out_dir`: every run recorded in the ledger at `store`, newest first,
    each linked to its report.html (relative links, so the folder can be moved with the
    reports)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise TrainguardError(f"{out_dir}: --out must be a folder, and a file is there")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INDEX
    path.write_text(render_run_index(runs, store, out_dir), encoding="utf-8")
    return path


def render_run_index(runs: pd.DataFrame, store: str, out_dir: Path) -> str:
    import os

    lines = []
    for run in runs.sort_values("started_at", ascending=False, kind="stable").itertuples():
        report = _report_of(run)
        if report is not None:
            link = Path(os.path.relpath(report.resolve(), out_dir.resolve())).as_posix()
            report_cell = f"<a href=\"{esc(link)}\">report</a>"
        else:
            report_cell = "<span class=\"muted\">no report (replaced by a later run or moved)</span>"
        passed = run.outcome == "pass"
        share = f"{run.flagged / run.rows:.2%}" if run.rows else "-"
        lines.append(f"<tr><td>{esc(_date(run.started_at))}</td><td>{esc(run.run_id)}</td>"
                     f"<td class=\"ex\">{esc(run.input)}</td>"
                     f"<td><code>{esc(str(run.fingerprint)[:16])}</code></td>"
                     f"<td class=\"{'pass' if passed else 'fail'}\">"
                     f"{'PASS' if passed else 'FAIL'}</td>"
                     f"<td>{run.flagged} of {run.rows} ({share})</td><td>{report_cell}</td></tr>")
    body = ("<table id=\"runs\"><tr><th>started</th><th>run</th><th>dataset</th>"
            "<th>fingerprint</th><th>verdict</th><th>flagged</th><th>report</th></tr>"
            + "".join(lines) + "</table>") if lines else "<p class=\"muted\">No runs yet.</p>"
    title = f"trainguard runs: {esc(store)}"
    # links need href, so this page's policy allows navigation but still no script
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
            f"<title>{title}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{title}</h1><p>{len(lines)} runs recorded in the ledger, newest first.</p>"
            f"{body}</body></html>\n")


def _report_of(run) -> Path | None:
    """The run's report.html, if its folder still holds this run's outputs: runs that share
    an output folder (every scheduled run of a dataset) replace each other's reports, and
    summary.json names the run that wrote them."""
    if not run.out_dir:
        return None
    folder = Path(str(run.out_dir))
    try:
        written_by = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    report = folder / REPORT
    same_run = (written_by.get("ledger") or {}).get("run_id") == run.run_id
    return report if same_run and report.is_file() else None


def _date(value) -> str:
    stamp = pd.Timestamp(value) if value is not None and not pd.isna(value) else None
    return stamp.strftime("%Y-%m-%d %H:%M UTC") if stamp is not None else "-"
