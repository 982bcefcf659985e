"""The `trainguard` command.

Exit codes: 0 the audit completed and the gate passed; 1 it completed and more rows were
flagged than the gate allows; 2 any error (one line on stderr, traceback with --debug).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from enum import Enum
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

EXIT_PASS, EXIT_GATE_FAILED, EXIT_ERROR = 0, 1, 2

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Audit fine-tuning datasets for backdoor poisoning before training.")
console = Console(stderr=False)
errors = Console(stderr=True)


class BadRowPolicy(str, Enum):
    fail = "fail"
    skip = "skip"


@app.callback()
def _root() -> None:
    """trainguard: find poisoned rows, name their triggers, quarantine them."""


@app.command()
def audit(
    source: str = typer.Argument(..., help="Dataset file (jsonl, json, csv, tsv, parquet), a "
                                 "datasets.save_to_disk directory, or hf://org/name."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory."),
    text_col: Optional[str] = typer.Option(None, help="Text column (classification)."),
    label_col: Optional[str] = typer.Option(None, help="Label column (classification)."),
    schema: Optional[str] = typer.Option(None, help="Force the schema: classification, "
                                         "instruction, prompt-completion, prompt-response, "
                                         "chat, preference."),
    split: Optional[str] = typer.Option(None, help="Split of a datasets directory or hub dataset."),
    via_datasets: bool = typer.Option(False, "--via-datasets", help="Read local files with "
                                      "datasets.load_dataset instead of the built-in readers."),
    on_bad_row: BadRowPolicy = typer.Option(
        BadRowPolicy.fail, "--on-bad-row", help="fail: stop at the first bad row (exit 2); "
        "skip: set bad rows aside in OUT/skipped.jsonl and audit the rest."),
    model: Optional[str] = typer.Option(None, help="sentence-transformers model name or path "
                                        "(default: bundled all-MiniLM-L6-v2; never downloaded)."),
    batch_size: int = typer.Option(64, min=1, help="Embedding batch size."),
    detectors: Optional[str] = typer.Option(None, help="Comma-separated detectors to run "
                                            "(default: all)."),
    max_flagged_fraction: float = typer.Option(0.005, min=0.0, max=1.0, help="Gate: fail (exit "
                                               "1) when a larger share of rows is flagged."),
    flag_threshold: float = typer.Option(0.5, min=0.0, max=1.0,
                                         help="poison_score at or above which a row is flagged."),
    verbose: bool = typer.Option(False, "--verbose", help="Show Prefect's logs."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
) -> None:
    """Audit SOURCE and write rows.parquet, triggers.json, clean/quarantine splits and
    summary.json to OUT."""
    # Prefect's console logs (and its tracebacks) are hidden unless asked for; the run's logs
    # still reach the Prefect API when a server is configured.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL",
                          "DEBUG" if debug else "INFO" if verbose else "CRITICAL")
    from auditors.outputs import check_output_location
    from flows.audit import audit_flow

    _run_or_exit(debug, check_output_location, source=source, out_dir=out)  # before any work
    load_options = {"split": split, "text_col": text_col, "label_col": label_col,
                    "schema": schema, "via_datasets": via_datasets, "on_bad_row": on_bad_row.value}
    names = [n.strip() for n in detectors.split(",") if n.strip()] if detectors else None
    summary = _run_or_exit(debug, audit_flow, source=source, out_dir=str(out), model=model,
                           detectors=names, batch_size=batch_size,
                           max_flagged_fraction=max_flagged_fraction,
                           flag_threshold=flag_threshold, load_options=load_options)
    show_summary(summary, out)
    if summary.get("skipped_rows"):
        errors.print(f"warning: {summary['skipped_rows']} bad row(s) skipped, listed in "
                     f"{out / summary['outputs']['skipped']}", markup=False)
    raise typer.Exit(EXIT_PASS if summary["gate"]["passed"] else EXIT_GATE_FAILED)


def show_summary(summary: dict, out: Path) -> None:
    from auditors.report import verdict_line

    table = Table(title="Top trigger candidates", show_lines=False)
    for column in ("rank", "pattern", "score", "support", "target"):
        table.add_column(column)
    for rank, trigger in enumerate(summary["top_triggers"], start=1):
        table.add_row(str(rank), repr(trigger["pattern"]), f"{trigger['score']:.2f}",
                      str(trigger["support"]), printable(trigger["target"]))
    console.print(table, markup=False)
    for name, why in {**summary["detectors_skipped"], **summary["detectors_failed"]}.items():
        errors.print(f"warning: detector {name} did not run: {why}", markup=False)
    style = "bold green" if summary["gate"]["passed"] else "bold red"
    console.print(verdict_line(summary), style=style, markup=False)
    console.print(f"outputs in {out}/ (rows.parquet, triggers.json, "
                  f"{summary['outputs']['clean']}, {summary['outputs']['quarantine']}, "
                  "summary.json)", markup=False)


def printable(text: str) -> str:
    """Dataset text for a terminal: control characters (ANSI escapes included) shown
    escaped, never interpreted."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def _run_or_exit(debug: bool, func, **kwargs):
    from auditors.errors import TrainguardError

    try:
        return func(**kwargs)
    except TrainguardError as exc:
        if debug:
            raise
        typer.echo(f"error: {exc}", err=True)
    except Exception as exc:  # unexpected: still one line unless --debug
        if debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else ""
        typer.echo(f"error: {type(exc).__name__}: {message} (rerun with --debug for details)",
                   err=True)
    raise typer.Exit(EXIT_ERROR)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
