"""The `trainguard` command.

Exit codes: 0 the audit completed and the gate passed; 1 it completed and more rows were
flagged than the gate allows; 2 any error (one line on stderr, traceback with --debug).
"""

from __future__ import annotations

import getpass
import os
import signal
import sys
from pathlib import Path
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from auditors.config import DEFAULT_BACKEND, DEFAULT_FDR
from flows.lifetime import INTERRUPT_REQUESTED

EXIT_PASS, EXIT_GATE_FAILED, EXIT_ERROR = 0, 1, 2

# Plain (click) help rather than rich's panels: at 80 columns rich's six-column option
# table left ~19 characters for descriptions and showed flags as `<bool>`; click's layout
# keeps descriptions ~46 wide there, shows `--flag` and `--flag/--no-flag`, and uses up to
# 100 columns on wider terminals.
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  context_settings={"max_content_width": 100},
                  help="Audit fine-tuning datasets for backdoor poisoning before training.")
console = Console(stderr=False)
errors = Console(stderr=True)


class BadRowPolicy(str, Enum):
    fail = "fail"
    skip = "skip"


class TriggerSide(str, Enum):
    prompt = "prompt"
    response = "response"


class EmbeddingBackend(str, Enum):
    torch = "torch"
    onnx_int8 = "onnx-int8"
    static = "static"


def _default_cache_dir() -> Path:
    from auditors.features.backends import default_cache_dir

    return default_cache_dir()


@app.callback()
def _root() -> None:
    """trainguard: find poisoned rows, name their triggers, quarantine them."""


# Options that audit and intake share: declared once.
_TEXT_COL = typer.Option(None, "--text-col", help="Text column (classification).")
_LABEL_COL = typer.Option(None, "--label-col", help="Label column (classification).")
_PROMPT_COL = typer.Option(None, "--prompt-col", help="Prompt column(s), comma-separated and "
                           "joined by line (generation data whose columns trainguard does not "
                           "know; with --response-col), or the prompt column of preference "
                           "pairs.")
_RESPONSE_COL = typer.Option(None, "--response-col", help="Response column (with --prompt-col).")
_CHOSEN_COL = typer.Option(None, "--chosen-col", help="Chosen-response column of preference "
                           "pairs under other names (with --rejected-col).")
_REJECTED_COL = typer.Option(None, "--rejected-col", help="Rejected-response column (with "
                             "--chosen-col).")
_SCHEMA = typer.Option(None, "--schema", help="Force the schema: classification, instruction, "
                       "prompt-completion, prompt-response, chat, preference.")
_SPLIT = typer.Option(None, "--split", help="Split of a datasets directory or hub dataset.")
_VIA_DATASETS = typer.Option(False, "--via-datasets", help="Read local files with "
                             "datasets.load_dataset instead of the built-in readers.")
_ON_BAD_ROW = typer.Option(BadRowPolicy.fail, "--on-bad-row", help="fail: stop at the first bad "
                           "row (exit 2); skip: set bad rows aside in OUT/skipped.jsonl and "
                           "audit the rest.")
_STREAM = typer.Option(None, "--stream/--no-stream", help="Read a .jsonl or .parquet file in "
                       "record batches, counting n-grams per batch (default: files of 64 MiB "
                       "or more).")
_MODEL = typer.Option(None, "--model", help="sentence-transformers model name or path "
                      "(default: bundled all-MiniLM-L6-v2; never downloaded).")
_BATCH_SIZE = typer.Option(64, "--batch-size", min=1, help="Embedding batch size (torch only: "
                           "onnx-int8 embeds text by text, so its results do not depend on it).")
_BACKEND = typer.Option(
    EmbeddingBackend(DEFAULT_BACKEND), "--backend", help="Embedding backend: onnx-int8 (default: ≈3× "
    "faster than torch, cosine ≈ 0.99 to it, detection AP within 0.02 of it on every family "
    "of the quick suite), torch (the reference), static (model2vec, ≈100× faster, lower "
    "fidelity); onnx-int8 and static are built from the model on first use and cached.")
_CACHE = typer.Option(None, "--cache", help="Embedding cache directory: rows already embedded "
                      "(same row_id, model and backend) are not embedded again (default: the "
                      "user cache dir).")
_NO_CACHE = typer.Option(False, "--no-cache", help="Do not read or write the embedding cache.")
_CACHE_MAX_SIZE = typer.Option("10G", "--cache-max-size", help="Size bound of the cache: after "
                               "the audit the least recently used entries are deleted until it "
                               "fits (e.g. 10G, 500M).")
# Registered with default=False: run only when named (a test keeps this list current).
OPT_IN_DETECTORS = ("activation_cluster", "shortcut", "spectral", "strip")
_DETECTORS = typer.Option(None, "--detectors", help="Comma-separated detectors to run "
                          "(default: every default detector; "
                          f"{', '.join(OPT_IN_DETECTORS)} run only when named).")


def _open_unit_interval(value: float) -> float:
    if not 0.0 < value < 1.0:  # 0 would flag nothing, 1 everything
        raise typer.BadParameter(f"{value:g} is not strictly between 0 and 1")
    return value


_FDR = typer.Option(DEFAULT_FDR, "--fdr", callback=_open_unit_interval, help="False-discovery "
                    "rate, strictly between 0 and 1, of the flags that are significance "
                    "decisions (prompt and preference triggers: Benjamini-Hochberg; "
                    "degraded-response triggers: a Bonferroni bound).")
_VERBOSE = typer.Option(False, "--verbose", help="Show Prefect's logs.")
_DEBUG = typer.Option(False, "--debug", help="Show tracebacks on errors.")


@app.command()
def audit(
    source: str = typer.Argument(..., help="Dataset file (jsonl, json, csv, tsv, parquet), a "
                                 "datasets.save_to_disk directory, or hf://org/name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    text_col: Optional[str] = _TEXT_COL,
    label_col: Optional[str] = _LABEL_COL,
    prompt_col: Optional[str] = _PROMPT_COL,
    response_col: Optional[str] = _RESPONSE_COL,
    chosen_col: Optional[str] = _CHOSEN_COL,
    rejected_col: Optional[str] = _REJECTED_COL,
    schema: Optional[str] = _SCHEMA,
    split: Optional[str] = _SPLIT,
    via_datasets: bool = _VIA_DATASETS,
    on_bad_row: BadRowPolicy = _ON_BAD_ROW,
    model: Optional[str] = _MODEL,
    batch_size: int = _BATCH_SIZE,
    backend: EmbeddingBackend = _BACKEND,
    cache: Optional[Path] = _CACHE,
    no_cache: bool = _NO_CACHE,
    cache_max_size: str = _CACHE_MAX_SIZE,
    detectors: Optional[str] = _DETECTORS,
    max_flagged_fraction: float = typer.Option(0.005, min=0.0, max=1.0, help="Gate: fail (exit "
                                               "1) when a larger share of rows is flagged."),
    flag_threshold: float = typer.Option(0.5, min=0.0, max=1.0,
                                         help="poison_score at or above which a row is flagged."),
    fdr: float = _FDR,
    store: Optional[Path] = typer.Option(None, help="Quarantine ledger directory: apply its "
                                         "decisions and record this run there."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Run embedding and "
                                          "n-gram counting on a local Dask cluster of N worker "
                                          "processes (prefect-dask)."),
    dask_address: Optional[str] = typer.Option(None, "--dask-address", help="Run embedding and "
                                               "n-gram counting on the running Dask cluster at "
                                               "this scheduler address (tcp://host:8786)."),
    chunk_rows: int = typer.Option(5000, "--chunk-rows", min=1, help="Rows per chunk mapped "
                                   "over the Dask workers (with --workers/--dask-address)."),
    stream: Optional[bool] = _STREAM,
    verbose: bool = _VERBOSE,
    debug: bool = _DEBUG,
) -> None:
    """Audit SOURCE and write rows.parquet, triggers.json, clean/quarantine splits and
    summary.json to OUT."""
    _quiet_prefect(verbose, debug)
    # mistakes are refused before Prefect is imported and its temporary server started
    config = _audit_config(
        debug, source, out, detectors=detectors, cache=cache, no_cache=no_cache,
        cache_max_size=cache_max_size, store=store,
        load=_load_options(split, (text_col, label_col, prompt_col, response_col, chosen_col,
                                   rejected_col), schema,
                           via_datasets, on_bad_row, stream),
        model=model, backend=backend.value, batch_size=batch_size,
        max_flagged_fraction=max_flagged_fraction, flag_threshold=flag_threshold, fdr=fdr,
        chunk_rows=chunk_rows if workers or dask_address else None, show_progress=True)
    from flows.dask import audit_flow_on

    audit_flow = _run_or_exit(debug, audit_flow_on, workers=workers, address=dask_address)
    _tie_prefect_server()
    # the run ends Failed when the gate fails; its state carries the summary either way
    state = _run_or_exit(debug, audit_flow, source=source, out_dir=str(out), config=config,
                         return_state=True)
    from auditors.summary import AuditSummary

    summary = AuditSummary.from_dict(_run_or_exit(debug, _flow_value, state=state))
    show_summary(summary, out)
    if summary.skipped_rows:
        errors.print(f"warning: {summary.skipped_rows} bad row(s) skipped, listed in "
                     f"{out / summary.outputs.skipped}", markup=False)
    raise typer.Exit(EXIT_PASS if summary.passed else EXIT_GATE_FAILED)


def _load_options(split, columns, schema, via_datasets, on_bad_row, stream) -> dict:
    """The input options shared by `audit` and `intake`, as `LoadOptions` fields; `columns`
    is (--text-col, --label-col, --prompt-col, --response-col, --chosen-col, --rejected-col)."""
    text_col, label_col, prompt_col, response_col, chosen_col, rejected_col = columns
    return {"split": split, "text_col": text_col, "label_col": label_col,
            "prompt_cols": prompt_col or (), "response_col": response_col,
            "chosen_col": chosen_col, "rejected_col": rejected_col, "schema": schema,
            "via_datasets": via_datasets, "on_bad_row": on_bad_row.value, "stream": stream}


def _audit_config(debug: bool, source: str, out: Path, *, detectors: Optional[str],
                  cache: Optional[Path], no_cache: bool, cache_max_size: str,
                  store: Optional[Path], load: dict, **options):
    """The run's `AuditConfig`, after refusing what the command line alone shows to be
    wrong (one line, exit 2), without reading rows or starting Prefect."""
    from auditors.cache import parse_size
    from auditors.config import AuditConfig, LoadOptions
    from auditors.outputs import check_output_location

    _run_or_exit(debug, check_output_location, source=source, out_dir=out)
    names = _check_command_line(debug, source, detectors=detectors, schema=load["schema"],
                                via_datasets=load["via_datasets"], stream=load["stream"])
    _check_store(store, debug)
    return _run_or_exit(
        debug, AuditConfig, load=_run_or_exit(debug, LoadOptions, **load), detectors=names,
        cache_dir=None if no_cache else str(cache or _default_cache_dir()),
        cache_max_bytes=_run_or_exit(debug, parse_size, text=cache_max_size),
        store=str(store) if store else None, **options)


def show_summary(summary, out: Path, *, verdict_label: str = "",
                 extra_outputs: tuple[str, ...] = ()) -> None:
    """The trigger table, warnings and verdict of an `AuditSummary`; `verdict_label` names
    whose verdict it is where another decides (an intake's policy), `extra_outputs` the
    files a caller adds to OUT."""
    from auditors.report import NOT_APPLICABLE, detectors_not_run, verdict_line

    # findings: significant triggers, and phrases injected into responses that flagged rows
    def finding(t):
        return bool(t.get("significant")) or (t.get("side") == "response"
                                              and t["pattern"] in summary.injected_phrases)

    significant = [t for t in summary.top_triggers if finding(t)]
    others = [t for t in summary.top_triggers if not finding(t)]
    if significant:
        total = len(summary.significant_triggers)
        injected = len(summary.injected_phrases)
        shown = f" (top {len(significant)} shown; all in triggers.json)" \
            if total + injected > len(significant) else ""
        title = f"Significant triggers (q <= FDR): {total}" + (
            f"; phrases injected into responses: {injected}" if injected else "")
        console.print(trigger_table(title + shown, significant), markup=False)
    if others:
        console.print(trigger_table("Candidates, not significant", others,
                                    start=len(significant) + 1), markup=False)
    elif not significant:
        console.print("No trigger candidates.", markup=False)
    for name, status, why in detectors_not_run(summary):
        if status != NOT_APPLICABLE:  # e.g. response detectors on classification data
            errors.print(f"warning: detector {name} did not run ({status}): {why}", markup=False)
    if summary.input_warning:
        errors.print(f"warning: {printable(summary.input_warning)}", markup=False)
    if summary.ledger is not None:
        show_ledger_effect(summary.ledger)
    style = "bold green" if summary.passed else "bold red"
    console.print(verdict_label + verdict_line(summary), style=style, markup=False)
    skipped = ", skipped.jsonl" if summary.skipped_rows else ""
    console.print(f"outputs in {out}/ (rows.parquet, triggers.json, "
                  f"{summary.outputs.clean}, {summary.outputs.quarantine}{skipped}, "
                  f"report.html, summary.json{''.join(', ' + f for f in extra_outputs)})",
                  markup=False)


def trigger_table(title: str, triggers, start: int = 1) -> Table:
    """Ranked triggers with their p / q, the flagged rows that hold them ("flagged"), their
    support and target."""
    from auditors.report import significance_text

    table = Table(title=title, show_lines=False)
    for column in ("rank", "pattern", "score", "p / q", "flagged", "support", "target"):
        table.add_column(column, no_wrap=column == "p / q")
    for rank, trigger in enumerate(triggers, start=start):
        released = " (released by a reviewer)" if trigger.get("released") else ""
        table.add_row(str(rank), repr(trigger["pattern"]) + released, f"{trigger['score']:.2f}",
                      significance_text(trigger), str(trigger.get("flagged_rows", "–")),
                      str(trigger["support"]), printable(trigger["target"]))
    return table


def printable(text: str) -> str:
    """Dataset text for a terminal: control characters (ANSI escapes included) shown
    escaped, never interpreted."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def _run_or_exit(debug: bool, func, **kwargs):
    """`func(**kwargs)`, or exit 2 with one line on stderr: messages hold paths and values
    from the command line and the data, so control characters (a newline that would forge
    a second `error:` line, ANSI escapes) are shown escaped."""
    from auditors.errors import TrainguardError, one_line

    try:
        return func(**kwargs)
    except TrainguardError as exc:
        if debug:
            raise
        # an error whose parts were printed as they happened says only what is left
        typer.echo(f"error: {one_line(getattr(exc, 'shown', str(exc)))}", err=True)
    except Exception as exc:  # unexpected: still one line unless --debug
        if _INTERRUPTED:  # Ctrl-C also stopped Prefect's server: its errors are the echo
            _say_interrupted()
            raise typer.Exit(130) from None
        if debug:
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: {type(exc).__name__}: {one_line(message)} (rerun with --debug for "
                   "details)", err=True)
    raise typer.Exit(EXIT_ERROR)


# --- operations: the quarantine ledger, intake gate and scheduled checks (docs/operations.md)

def show_ledger_effect(ledger: dict) -> None:
    hits = ", ".join(f"{printable(p)!r} in {n} rows"
                     for p, n in ledger["confirmed_trigger_rows"].items())
    console.print(f"ledger {ledger['store']}: {ledger['confirmed_rows']} rows confirmed by id "
                  f"reappeared, {ledger['released_rows']} released rows not flagged"
                  + (f"; rows holding a confirmed trigger: {hits}" if hits else ""), markup=False)


def _quiet_prefect(verbose: bool, debug: bool) -> None:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL",
                          "DEBUG" if debug else "INFO" if verbose else "CRITICAL")


def _check_command_line(debug: bool, source: str, *, detectors: Optional[str],
                        schema: Optional[str], via_datasets: bool = False,
                        stream: Optional[bool] = None) -> Optional[list[str]]:
    """The names in `--detectors`, after refusing what the command line alone shows to be
    wrong, in the flow's own words but without reading rows or starting Prefect: a missing,
    unreadable or unsupported input, `--stream` on a file that cannot be streamed, an
    unknown `--schema` or detector."""
    from auditors.ingest import check_source
    from auditors.schema import check_schema_name

    _run_or_exit(debug, check_source, source=source, via_datasets=via_datasets, stream=stream)
    _run_or_exit(debug, check_schema_name, schema=schema, source=source)
    from auditors.detector_names import split_names, unknown_names  # reads, not imports

    names = split_names(detectors) if detectors is not None else None
    if names is not None and not names:  # "," or "": no detector would run, the gate pass
        typer.echo(f"error: --detectors {detectors!r} names no detector (leave it out to run "
                   "the defaults)", err=True)
        raise typer.Exit(EXIT_ERROR)
    if names:
        problem = unknown_names(names)
        if problem:
            typer.echo(f"error: {printable(problem)}", err=True)
            raise typer.Exit(EXIT_ERROR)
    return names


def _check_store(store: Optional[Path], debug: bool) -> None:
    """An existing ledger that cannot be used (newer schema, foreign, damaged) stops the
    command before any work."""
    from auditors.ledger import Ledger

    if store is not None:
        _run_or_exit(debug, Ledger.check, store=store)


def _tie_prefect_server() -> None:
    """Prefect's temporary server is stopped when this process ends, even by SIGKILL."""
    from flows.lifetime import tie_prefect_server

    tie_prefect_server()


def _flow_value(state):
    """The summary (or intake result) of a finished flow run, Completed or Failed by its
    gate; the flow's error raised again."""
    from flows.audit import flow_value

    return flow_value(state)


def _open_ledger(store: Path, debug: bool, create: bool = False):
    from auditors.ledger import Ledger

    return _run_or_exit(debug, Ledger, store=store, create=create)


@app.command()
def review(
    store: Path = typer.Argument(..., help="Ledger directory (the audit's --store)."),
    examples: int = typer.Option(3, min=1, help="Example rows per trigger."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """List open flags (quarantined, not yet decided) grouped by trigger, with example rows."""
    from auditors.html_report import text_window

    ledger = _open_ledger(store, debug)
    groups = _run_or_exit(debug, ledger.open_flags, examples=examples)
    table = Table(title=f"Open flags in {store}", show_lines=True)
    for column in ("trigger", "rows", "row_id", "label", "example"):
        table.add_column(column, overflow="fold")
    for group in groups:
        for k, example in enumerate(group["examples"]):
            first = k == 0
            injected = group["side"] == "response"  # show the response that holds the phrase
            shown = (printable("response: " + text_window(example["response"] or "",
                                                          group["trigger"], 200))
                     if injected else _example_text(example))
            table.add_row(Text(repr(group["trigger"]) + (" (in responses)" if injected else "")
                               if first else ""),
                          Text(str(group["rows"]) if first else ""), Text(example["row_id"]),
                          Text(printable(example["label"] or "")), Text(shown))
    console.print(table)
    decided = _run_or_exit(debug, ledger.trigger_decisions)
    for row in decided.itertuples():
        console.print(Text(f"trigger {row.pattern!r}: {row.status} by {row.decided_by or '?'}"))
    console.print(f"{sum(g['rows'] for g in groups)} open rows in {len(groups)} "
                  f"group{'' if len(groups) == 1 else 's'}; decide "
                  f"with `trainguard confirm|release {store} --trigger P | --row-id ID`",
                  markup=False)


def _example_text(example: dict) -> str:
    """A flagged row as a reviewer judges it: the prompt, and the answer (a preference
    pair's chosen and rejected ones) where the data has answers."""
    prompt = example["prompt"] or ""
    if example.get("rejected"):
        parts = [_clip(prompt, 140), f"chosen: {_clip(example['response'] or '', 100)}",
                 f"rejected: {_clip(example['rejected'], 100)}"]
    elif example.get("response"):
        parts = [_clip(prompt, 140), f"answer: {_clip(example['response'], 100)}"]
    else:
        parts = [_clip(prompt, 200)]
    return "\n".join(map(printable, parts))  # one line each, dataset text escaped


@app.command("report")
def report_index(
    store: Path = typer.Argument(..., help="Ledger directory (the audit's --store)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write index.html to."),
    debug: bool = _DEBUG,
) -> None:
    """Write OUT/index.html: every audit recorded in STORE (date, dataset, fingerprint,
    verdict, flagged rows), newest first, each linked to its report.html."""
    from auditors.html_report import write_run_index

    ledger = _open_ledger(store, debug)
    runs = _run_or_exit(debug, ledger.runs)
    path = _run_or_exit(debug, write_run_index, out_dir=out, runs=runs, store=str(store))
    console.print(f"{len(runs)} runs indexed in {path}", markup=False)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _decide(status: str, store: Path, row_ids: list[str], triggers: list[str], by: str,
            force: bool, debug: bool, side: str | None = None) -> None:
    if not row_ids and not triggers:
        typer.echo("error: give --row-id ID or --trigger PATTERN (each repeatable)", err=True)
        raise typer.Exit(EXIT_ERROR)
    from auditors.ledger import LEDGER_FILE, pattern_key

    new = not (store / LEDGER_FILE).exists()
    ledger = _open_ledger(store, debug, create=force)  # forced: known from elsewhere
    changed = _run_or_exit(debug, ledger.decide, status=status, row_ids=row_ids,
                           triggers=triggers, by=by, force=force, side=side)
    if new:  # a mistyped store would hold decisions no audit reads: say so
        console.print(Text(f"new ledger {store / LEDGER_FILE}: no audit has used this store "
                           "yet; audits read it with --store"))
    keys = dict.fromkeys(map(pattern_key, triggers))  # as the ledger keeps them (`CF`: 'cf')
    what = ([f"trigger{'s' if len(keys) > 1 else ''} "
             + ", ".join(repr(t) for t in keys)] if triggers else []) + \
        ([f"{len(set(row_ids))} row id(s)"] if row_ids else [])
    console.print(Text(f"{status} {' and '.join(what)} by {by}: {changed} ledger rows updated"))


_ROW_IDS = typer.Option([], "--row-id", metavar="ID", help="Row id from rows.parquet or `review` "
                        "(repeatable).")
_TRIGGERS = typer.Option([], "--trigger", metavar="PATTERN", help="Trigger pattern, as listed "
                         "by `review` (repeatable).")
_BY = typer.Option(getpass.getuser(), "--by", show_default=False,
                   help="Who decides (default: the current user).")
_FORCE = typer.Option(False, "--force", help="Record row ids and triggers the ledger does "
                      "not know yet (else they are refused as likely typos).")
_SIDE = typer.Option(None, "--side", show_default=False,
                     help="Where the triggers are looked for: prompt (a trigger) or response "
                          "(an injected phrase). Default: where the ledger recorded them, "
                          "else prompt.")
@app.command()
def confirm(store: Path = typer.Argument(..., help="Ledger directory."),
            row_id: list[str] = _ROW_IDS, trigger: list[str] = _TRIGGERS, by: str = _BY,
            force: bool = _FORCE, side: TriggerSide | None = _SIDE, debug: bool = _DEBUG) -> None:
    """Confirm rows (or triggers and their open rows) as poisoned: later audits quarantine
    them wherever they reappear, search every dataset for the triggers, and fail the gate
    when any is found."""
    _decide("confirmed", store, row_id, trigger, by, force, debug, side and side.value)


@app.command()
def release(store: Path = typer.Argument(..., help="Ledger directory."),
            row_id: list[str] = _ROW_IDS, trigger: list[str] = _TRIGGERS, by: str = _BY,
            force: bool = _FORCE, side: TriggerSide | None = _SIDE, debug: bool = _DEBUG) -> None:
    """Release rows (or triggers and their open rows) as false positives: later audits do
    not flag them again."""
    _decide("released", store, row_id, trigger, by, force, debug, side and side.value)


@app.command()
def intake(
    source: str = typer.Argument(..., help="Third-party dataset (any input audit accepts)."),
    policy: Path = typer.Option(..., exists=True, dir_okay=False, help="Policy TOML file."),
    store: Path = typer.Option(..., help="Ledger directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    source_name: Optional[str] = typer.Option(None, help="Name of the source; intakes of the "
                                              "same name are diffed (default: file name)."),
    source_url: Optional[str] = typer.Option(None, help="Where it came from."),
    license: Optional[str] = typer.Option(None, "--license", help="License, as given."),
    version: Optional[str] = typer.Option(None, "--version", help="Version, as given."),
    text_col: Optional[str] = _TEXT_COL,
    label_col: Optional[str] = _LABEL_COL,
    prompt_col: Optional[str] = _PROMPT_COL,
    response_col: Optional[str] = _RESPONSE_COL,
    chosen_col: Optional[str] = _CHOSEN_COL,
    rejected_col: Optional[str] = _REJECTED_COL,
    schema: Optional[str] = _SCHEMA,
    split: Optional[str] = _SPLIT,
    via_datasets: bool = _VIA_DATASETS,
    on_bad_row: BadRowPolicy = _ON_BAD_ROW,
    stream: Optional[bool] = _STREAM,
    model: Optional[str] = _MODEL,
    batch_size: int = _BATCH_SIZE,
    backend: EmbeddingBackend = _BACKEND,
    cache: Optional[Path] = _CACHE,
    no_cache: bool = _NO_CACHE,
    cache_max_size: str = _CACHE_MAX_SIZE,
    detectors: Optional[str] = _DETECTORS,
    fdr: float = _FDR,
    verbose: bool = _VERBOSE,
    debug: bool = _DEBUG,
) -> None:
    """Gate a third-party dataset: fingerprint, provenance, diff against the previous intake,
    audit with the ledger applied, and pass (exit 0) or fail (exit 1) by the policy."""
    _quiet_prefect(verbose, debug)

    # mistakes are refused before Prefect is imported and its temporary server started
    config = _audit_config(
        debug, source, out, detectors=detectors, cache=cache, no_cache=no_cache,
        cache_max_size=cache_max_size, store=store,
        load=_load_options(split, (text_col, label_col, prompt_col, response_col, chosen_col,
                                   rejected_col), schema,
                           via_datasets, on_bad_row, stream),
        model=model, backend=backend.value, batch_size=batch_size, fdr=fdr, show_progress=True)
    from auditors.policy import IntakePolicy

    _run_or_exit(debug, IntakePolicy.from_toml, path=policy)
    from flows.intake import intake_flow

    _tie_prefect_server()
    state = _run_or_exit(debug, intake_flow, source=source, policy=str(policy),
                         store=str(store), out_dir=str(out), source_name=source_name,
                         source_url=source_url, license=license, version=version,
                         config=config, return_state=True)
    from auditors.summary import AuditSummary

    result = _run_or_exit(debug, _flow_value, state=state)
    # the summary's gate is the intake's: the policy's checks, the audit gate's among them
    show_summary(AuditSummary.from_dict(result["summary"]), out, verdict_label="intake: ",
                 extra_outputs=("intake.json",))
    show_intake(result["intake"])
    raise typer.Exit(EXIT_PASS if result["intake"]["passed"] else EXIT_GATE_FAILED)


def show_intake(record: dict) -> None:
    diff = record["diff"]
    console.print(Text(f"intake of {record['source_name']!r} ({record['fingerprint']}): "
                       f"{diff['added']} rows added, {diff['removed']} removed, "
                       f"{diff['changed']} changed since the last intake that passed"
                       + (" (their row ids: intake.json)" if any(
                           diff[k] for k in ("added_row_ids", "removed_row_ids",
                                             "changed_row_ids")) else "")))
    table = Table(title="Intake policy")
    for column in ("check", "passed", "detail"):
        table.add_column(column, overflow="fold")
    for check in record["checks"]:
        table.add_row(Text(check["check"]), Text("yes" if check["passed"] else "NO"),
                      Text(printable(check["detail"])))
    console.print(table)
    word, style = ("INTAKE PASS", "bold green") if record["passed"] else ("INTAKE FAIL", "bold red")
    console.print(word, style=style, markup=False)


@app.command()
def serve(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Schedule TOML."),
    port: int = typer.Option(0, min=0, max=65535, help="Port of the local Prefect server "
                             "started when PREFECT_API_URL is unset (default: a free one)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Prefect's logs."),
    debug: bool = _DEBUG,
) -> None:
    """Serve scheduled checks of the datasets in CONFIG as a Prefect deployment (runs until
    interrupted). Starts a local Prefect server unless PREFECT_API_URL is set."""
    _quiet_prefect(verbose, debug)
    from flows.scheduled import serve_config

    _run_or_exit(debug, serve_config, config_path=str(config), port=port or None,
                 announce=lambda line: console.print(line, markup=False, soft_wrap=True))


@app.command("run-now")
def run_now(
    config: Path = typer.Argument(..., exists=True, dir_okay=False, help="Schedule TOML."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Only the dataset(s) of "
                                          "this name in CONFIG (default: all)."),
    verbose: bool = _VERBOSE,
    debug: bool = _DEBUG,
) -> None:
    """Run the scheduled checks in CONFIG once, now, in this process (the same flow `serve`
    schedules): one verdict line per dataset; exit 1 when any fails its intake gate."""
    _quiet_prefect(verbose, debug)
    from flows.scheduled import load_config, scheduled_checks_flow

    settings = _run_or_exit(debug, load_config, path=config)
    names = [check.name for check in settings.datasets]
    if dataset is not None and dataset not in names:
        typer.echo(f"error: {config}: no dataset named '{printable(dataset)}' (the config has "
                   f"{', '.join(map(printable, names))})", err=True)
        raise typer.Exit(EXIT_ERROR)
    _tie_prefect_server()
    state = _run_or_exit(debug, scheduled_checks_flow, config=str(config.resolve()),
                         only=dataset, return_state=True)
    results = _run_or_exit(debug, _flow_value, state=state)
    failed = [r["dataset"] for r in results if not r["passed"]]
    style = "bold red" if failed else "bold green"
    console.print(f"{len(results) - len(failed)} of {len(results)} dataset(s) passed their "
                  "intake gate", style=style, markup=False)
    raise typer.Exit(EXIT_GATE_FAILED if failed else EXIT_PASS)


@app.command("cache")
def cache_command(
    prune: bool = typer.Option(False, "--prune", help="Delete the least recently used "
                               "entries now, until the cache fits --max-size."),
    directory: Optional[Path] = typer.Option(None, "--cache", help="Cache directory "
                                             "(default: the user cache dir, or "
                                             "TRAINGUARD_CACHE_DIR)."),
    max_size: str = typer.Option("10G", "--max-size", help="Size bound for --prune (e.g. "
                                 "10G, 500M; 0 empties the cache)."),
    debug: bool = _DEBUG,
) -> None:
    """Show the size of the cache (embeddings, n-gram counts, kNN graphs, built embedding
    backends); with --prune, shrink it to --max-size."""
    from auditors import cache

    root = directory or _default_cache_dir()
    if directory is not None and not directory.is_dir():  # a typo would read as "0 entries"
        typer.echo(f"error: {directory}: not a cache directory"
                   f"{' (a file)' if directory.exists() else ' (does not exist)'}", err=True)
        raise typer.Exit(EXIT_ERROR)
    limit = _run_or_exit(debug, cache.parse_size, text=max_size)
    if prune:
        done = _run_or_exit(debug, cache.prune, root=root, max_bytes=limit)
        console.print(Text(f"pruned {root}: {done.removed} entries removed, "
                           f"{_megabytes(done.freed)} freed, {_megabytes(done.kept)} kept"))
        return
    found = cache.entries(root)
    size = sum(e.size for e in found)
    bound = (f"; over --max-size {max_size} by {_megabytes(size - limit)} (--prune deletes "
             "the least recently used)" if size > limit else f"; within --max-size {max_size}")
    console.print(Text(f"cache {root}: {len(found)} entries, {_megabytes(size)}{bound}"))
    if not found and directory is not None and not any(
            (root / kind).is_dir() for kind in cache.KINDS):
        errors.print(f"warning: {printable(str(root))} holds no trainguard cache folder "
                     f"({', '.join(k + '/' for k in cache.KINDS)})", markup=False)


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


# --- model-side checks for fine-tuned classifiers (docs/model_checks.md)

_MODEL = typer.Option(..., "--model", help="Local Hugging Face sequence-classification "
                      "checkpoint directory (safetensors; never downloaded, no remote code).")
_SWEEP_MODEL = typer.Option(..., "--model", help="Local Hugging Face sequence-classification "
                            "or causal-LM checkpoint directory (safetensors; never "
                            "downloaded, no remote code).")


def _show_report_path(out: Optional[Path], name: str) -> None:
    if out is not None:
        console.print(f"report in {out / name}", markup=False)


@app.command()
def sweep(
    model: str = _SWEEP_MODEL,
    probes: str = typer.Option(..., "--probes", help="Clean probe texts: .txt (one per line) "
                               "or a table with a text column."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference checkpoint "
                                            "(e.g. the base model): score the excess flip rate."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="triggers.json of the "
                                             "data audit (its `pattern`s are tested first)."),
    trigger: list[str] = typer.Option([], "--trigger", metavar="PATTERN",
                                      help="A candidate of your own "
                                      "(repeatable)."),
    vocab: bool = typer.Option(True, "--vocab/--no-vocab", help="Screen the tokenizer's "
                               "vocabulary."),
    unicode: bool = typer.Option(True, "--unicode/--no-unicode", help="Test invisible "
                                 "characters, homoglyphs and emoji."),
    max_flip_rate: float = typer.Option(0.5, min=0.0, max=1.0, help="Policy: exit 1 when a "
                                        "candidate flips this share of probes (or more); for "
                                        "a causal LM, its target-match or refusal rate change."),
    max_probes: int = typer.Option(100, min=1, help="Probes used (a seeded sample)."),
    prompt_template: Optional[str] = typer.Option(None, "--prompt-template", help="Causal LM: "
                                                  "wrap each probe, e.g. '### Instruction: "
                                                  "{prompt} ### Response:' (default: the "
                                                  "tokenizer's chat template, else the probe)."),
    target_text: Optional[str] = typer.Option(None, "--target-text", help="Causal LM: a known "
                                              "fixed target answer to match (default: each "
                                              "candidate's commonest answer)."),
    max_new_tokens: int = typer.Option(16, min=1, help="Causal LM: greedy answer length."),
    null_words: int = typer.Option(20, min=0, help="Without --reference: common English words "
                                   "measured the same way; a candidate must beat the best of "
                                   "them by 0.05 to be anomalous (0: off)."),
    top: int = typer.Option(10, min=1, help="Candidates shown."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write OUT/sweep.json."),
    debug: bool = _DEBUG,
) -> None:
    """Insert candidate triggers into clean probes and rank them by how often they flip
    a classifier's prediction to one class, or move a causal LM's answers to one fixed
    string or to refusals. Exit 1 when one exceeds --max-flip-rate."""
    from auditors.model.sweep import SweepPolicy
    from flows.model_checks import run_sweep

    policy = SweepPolicy(max_flip_rate=max_flip_rate, max_probes=max_probes,
                         target_text=target_text, max_new_tokens=max_new_tokens,
                         null_words=null_words)
    report = _run_or_exit(debug, run_sweep, model=model, probes=probes, reference=reference,
                          candidates=candidates, triggers=trigger, use_vocab=vocab,
                          use_unicode=unicode, out=out, policy=policy,
                          prompt_template=prompt_template)
    if report["kind"] == "generator":
        _print_generator_sweep(report, top)
    else:
        _print_classifier_sweep(report, top)
        if len(report["probe_classes"]) == 1:
            [label] = report["probe_classes"]
            errors.print(f"warning: the model predicts {printable(label)!r} for every probe, "
                         "so a trigger toward that class cannot flip any: add probes it "
                         "assigns to other classes", markup=False)
    if report["null_words"]:
        best = report["null_words"][0]
        console.print(Text(f"null: the strongest of {len(report['null_words'])} common words, "
                           f"{best['word']!r}, scores {best['score']:.2f}; anomalous needs "
                           f"{best['score'] + policy.null_margin:.2f} and {max_flip_rate}"))
    _show_report_path(out, "sweep.json")
    found = report["anomalous"]
    if found:
        console.print(Text(f"ANOMALOUS: {len(found)} candidate(s) at or above "
                           f"{max_flip_rate}: " + ", ".join(repr(c) for c in found[:10])),
                      style="bold red")
        raise typer.Exit(EXIT_GATE_FAILED)
    console.print("no candidate exceeds the policy", style="bold green", markup=False)


def _print_generator_sweep(report: dict, top: int) -> None:
    table = Table(title=f"Trigger sweep (causal LM): {report['n_candidates']} candidates on "
                  f"{report['n_probes']} probes")
    for column in ("rank", "candidate", "source", "score", "target match", "refusal Δ", "KL",
                   "target answer"):
        table.add_column(column, overflow="fold")
    for row in report["ranked"][:top]:
        match = f"{row['target_match_rate']:.2f} (clean {row['clean_match_rate']:.2f})"
        table.add_row(Text(str(row["rank"])), Text(repr(row["candidate"])),
                      Text(row["source"]), Text(f"{row['score']:.2f}"), Text(match),
                      Text(f"{row['refusal_change']:+.2f}"), Text(f"{row['kl']:.2f}"),
                      Text(printable(_clip(row["target"], 50))))
    console.print(table)


def _print_classifier_sweep(report: dict, top: int) -> None:
    table = Table(title=f"Trigger sweep: {report['n_candidates']} candidates on "
                  f"{report['n_probes']} probes")
    for column in ("rank", "candidate", "source", "target", "flip rate", "conf. shift",
                   "example"):
        table.add_column(column, overflow="fold")
    for row in report["ranked"][:top]:
        example = row["examples"][0]["triggered"] if row["examples"] else ""
        flip = f"{row['flip_rate']:.2f}" + (f" (ref {row['reference_flip_rate']:.2f})"
                                            if "reference_flip_rate" in row else "")
        table.add_row(Text(str(row["rank"])), Text(repr(row["candidate"])),
                      Text(row["source"]), Text(printable(row["target"])), Text(flip),
                      Text(f"{row['confidence_shift']:+.2f}"),
                      Text(printable(_clip(example, 50))))
    console.print(table)


@app.command()
def strip(
    model: str = _MODEL,
    probes: str = typer.Option(..., "--probes", help="Inputs to check (.txt or a table)."),
    clean: Optional[str] = typer.Option(None, "--clean", help="Clean inputs to calibrate the "
                                        "threshold on and blend in (default: the probes)."),
    frr: float = typer.Option(0.01, min=0.0, max=1.0, help="False rejection rate on clean "
                              "inputs that sets the entropy threshold."),
    perturbations: int = typer.Option(32, min=2, help="Superimpositions per input."),
    max_flagged_fraction: float = typer.Option(0.05, min=0.0, max=1.0, help="Exit 1 when a "
                                               "larger share of probes is flagged."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write OUT/strip.json."),
    debug: bool = _DEBUG,
) -> None:
    """STRIP: superimpose each probe with clean texts many times; inputs whose prediction
    stays confident (entropy under the calibrated threshold) likely carry a trigger."""
    from flows.model_checks import run_strip

    report = _run_or_exit(debug, run_strip, model=model, probes=probes, clean=clean, frr=frr,
                          n_perturbations=perturbations, out=out,
                          max_flagged_fraction=max_flagged_fraction)
    for item in report["flagged"][:10]:
        console.print(Text(f"entropy {item['entropy']:.3f} -> {printable(item['predicted'])}: "
                           f"{printable(_clip(item['text'], 100))}"))
    console.print(f"{report['n_flagged']} of {report['n_probes']} probes below the entropy "
                  f"threshold {report['threshold']:.3f} (calibrated at FRR {frr} on "
                  f"{report['calibrated_on']})", markup=False)
    _show_report_path(out, "strip.json")
    raise typer.Exit(EXIT_PASS if report["gate"]["passed"] else EXIT_GATE_FAILED)


@app.command()
def activations(
    model: str = _MODEL,
    data: str = typer.Option(..., "--data", help="The model's training rows (.txt or a table)."),
    out: Path = typer.Option(Path("activation-clusters"), "--out", "-o",
                             help="Writes activations.json and activations.svg here."),
    representation: str = typer.Option("decisive-token", "--representation", help=(
        "decisive-token: the input embedding of each row's most decisive word (the one "
        "whose removal lowers the predicted class most; one forward pass per word); "
        "occlusion: the change of the classification head's input when that word is "
        "removed; final: the head's input (Chen et al.).")),
    clustering: str = typer.Option(None, "--clustering", help="hdbscan (any number of "
                                   "clusters; default for decisive-token) or kmeans2 (Chen "
                                   "et al.'s two clusters; default otherwise)."),
    max_relative_size: float = typer.Option(0.35, min=0.0, max=0.5, help="A cluster smaller "
                                            "than this share of its class is suspicious."),
    min_cluster_size: int = typer.Option(8, min=2, help="hdbscan's smallest cluster."),
    min_class_change: float = typer.Option(0.5, min=0.0, max=1.0, help="With decisive-token "
                                           "or occlusion: a cluster is suspicious only when "
                                           "this share of its rows changes class without "
                                           "their decisive word (0: no test)."),
    components: int = typer.Option(10, min=2, help="PCA dimensions before clustering."),
    debug: bool = _DEBUG,
) -> None:
    """Activation Clustering: cluster a representation of every training row per predicted
    class; report small clusters with their rows and shared n-grams. Exit 1 when one is
    found."""
    from flows.model_checks import run_activations

    report = _run_or_exit(debug, run_activations, model=model, data=data, out=out,
                          max_relative_size=max_relative_size, n_components=components,
                          representation=representation, clustering=clustering,
                          min_cluster_size=min_cluster_size,
                          min_class_change=min_class_change)
    for group in report["classes"]:
        found = [c for c in group["clusters"] if c["suspicious"]]
        line = f"predicted {printable(group['predicted'])}: {group['rows']} rows, " + (
            f"{len(group['clusters'])} clusters" if report["clustering"] == "hdbscan" else
            f"silhouette {group['silhouette']:.2f}")
        if found:
            line += (f", SUSPICIOUS: {len(found)} cluster(s), {len(group['suspicious_rows'])} "
                     f"rows ({group['suspicious_relative_size']:.0%})")
        else:
            line += ", nothing suspicious"
        console.print(Text(line))
        for cluster in found:
            ngrams = ", ".join(repr(g["ngram"]) for g in cluster["shared_ngrams"][:5])
            change = ("" if cluster["class_change"] is None else
                      f", {cluster['class_change']:.0%} change class without their decisive "
                      "word")
            console.print(Text(f"  {cluster['size']} rows{change}; shared: {ngrams}"))
    console.print(f"report in {out / 'activations.json'}, plot in {report['plot']}",
                  markup=False)
    suspicious = [c for c in report["classes"] if c["suspicious"]]
    raise typer.Exit(EXIT_GATE_FAILED if suspicious else EXIT_PASS)


@app.command("fine-prune")
def fine_prune(
    model: str = _MODEL,
    clean: str = typer.Option(..., "--clean", help="Clean labelled rows (a table with text "
                              "and label); 20% held out to measure accuracy."),
    out: Path = typer.Option(..., "--out", "-o", help="Empty or new directory for the pruned "
                             "checkpoint and fine_prune.json."),
    trigger: list[str] = typer.Option([], "--trigger", metavar="PATTERN",
                                      help="Trigger whose attack success "
                                      "rate is measured (repeatable)."),
    candidates: Optional[str] = typer.Option(None, "--candidates", help="triggers.json or "
                                             "sweep output: its top 5 patterns are measured."),
    target: Optional[str] = typer.Option(None, "--target", help="Attack target label "
                                         "(default: per trigger, the class it pushes to)."),
    max_accuracy_drop: float = typer.Option(0.04, min=0.0, max=1.0, help="Prune while "
                                            "held-out clean accuracy stays within this."),
    prune_fraction: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Prune this "
                                                   "share of neurons instead."),
    epochs: float = typer.Option(1.0, min=0.0, help="Clean fine-tuning epochs."),
    learning_rate: float = typer.Option(5e-5, min=0.0, help="Fine-tuning learning rate."),
    debug: bool = _DEBUG,
) -> None:
    """Fine-Pruning: prune the last feed-forward neurons dormant on clean data, fine-tune
    on clean data, and report clean accuracy and attack success rate before and after."""
    from auditors.model.fine_prune import FinePruneOptions
    from flows.model_checks import run_fine_prune

    options = FinePruneOptions(max_accuracy_drop=max_accuracy_drop,
                               prune_fraction=prune_fraction, epochs=epochs,
                               learning_rate=learning_rate)
    report = _run_or_exit(debug, run_fine_prune, model=model, clean=clean, out=out,
                          triggers=trigger, candidates=candidates, target=target,
                          options=options)
    table = Table(title=f"Fine-pruning: {report['pruned_neurons']} of {report['neurons']} "
                  "neurons pruned")
    for column in ("stage", "clean accuracy", "attack success rate"):
        table.add_column(column, overflow="fold")
    for stage in ("before", "after_pruning", "after_fine_tuning"):
        result = report[stage]
        attacks = ", ".join(f"{t!r} {'–' if rate is None else f'{rate:.2f}'}" for t, rate in
                            result["attack_success_rate"].items())
        table.add_row(stage.replace("_", " "), f"{result['clean_accuracy']:.3f}", Text(attacks))
    console.print(table)
    if any(rate is None for stage in ("before", "after_pruning", "after_fine_tuning")
           for rate in report[stage]["attack_success_rate"].values()):
        console.print("–: not measurable, the model predicts the target for every held-out "
                      "clean text (null in fine_prune.json)", markup=False)
    console.print(f"pruned checkpoint and fine_prune.json in {out}", markup=False)


def main() -> None:
    # SIGTERM (kill, a scheduler, a container stop) ends an audit like Ctrl-C does, so that
    # Prefect's temporary server and the output staging directory are cleaned up rather
    # than orphaned.
    # Ctrl-C reaches the whole process group, Prefect's temporary server too: the errors
    # that follow (connection refused) are the interrupt's, and end the same way.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    try:
        app()
    except KeyboardInterrupt:
        _say_interrupted()
        sys.exit(130)
    except SystemExit as done:  # typer ends an interrupted command with exit 130, silently
        if _INTERRUPTED and done.code == 130:
            _say_interrupted()
        raise


_INTERRUPTED = False  # set once SIGINT or SIGTERM arrived
_SAID_INTERRUPTED = False


def _say_interrupted() -> None:
    """The one `interrupted` line, however the interrupt came out."""
    global _SAID_INTERRUPTED
    if not _SAID_INTERRUPTED:
        _SAID_INTERRUPTED = True
        errors.print("interrupted", markup=False)


def _raise_keyboard_interrupt(signum, frame) -> None:
    global _INTERRUPTED
    _INTERRUPTED = True
    INTERRUPT_REQUESTED.set()
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
