"""Scheduled checks: a Prefect deployment that runs the intake gate over every dataset listed
in a TOML config, on a cron (or interval) schedule, recording results in the ledger.

    trainguard serve examples/scheduled_checks.toml

A cron schedule only fires while a Prefect server is running (the ephemeral API never
schedules), so `serve_config` starts a local one (SQLite under PREFECT_HOME, loopback only)
unless PREFECT_API_URL points at one. See docs/operations.md for the config format.
"""

# (no `from __future__ import annotations`: Prefect validates flow parameters from the
# annotations, and a served flow's module cannot resolve them from strings)

import glob
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger

from auditors.config import AuditConfig, LoadOptions
from auditors.errors import TrainguardError
from auditors.policy import IntakePolicy, intake_verdict
from flows.audit import flow_value, gate_state
from flows.intake import intake_flow
from flows.lifetime import stop_with_this_process

DEPLOYMENT = "trainguard-scheduled-checks"
SERVER_START_TIMEOUT_S = 180
# a check's input options: LoadOptions fields
_LOAD_KEYS = ("schema", "text_col", "label_col", "prompt_cols", "response_col", "chosen_col",
              "rejected_col", "split")
_DATASET_KEYS = {"name", "path", *_LOAD_KEYS, "detectors", "policy", "model", "source_name"}
_TOP_KEYS = {"store", "out", "cron", "interval_seconds", "model", "datasets", "policy"}


@dataclass
class DatasetCheck:
    name: str
    path: str  # a file, directory or glob; relative to the config file
    policy: dict = field(default_factory=dict)
    config: AuditConfig = field(default_factory=AuditConfig)
    # every matched file taken in as this one source (dated drops: each diffed against the
    # last that passed); None: each file is its own source, `<name>/<file name>`
    source_name: str | None = None

    def source_of(self, file: str) -> str:
        return self.source_name or f"{self.name}/{Path(file).name}"


@dataclass
class ScheduleConfig:
    store: str
    out: str
    datasets: list[DatasetCheck]
    cron: str | None = None
    interval_seconds: float | None = None


def load_config(path: str | Path) -> ScheduleConfig:
    """Read and check the config; relative paths are relative to the config file."""
    path = Path(path)
    try:
        values = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TrainguardError(f"{path}: cannot read the schedule config ({exc})") from None
    _no_unknown(values, _TOP_KEYS, str(path))
    for key in ("store", "out", "datasets"):
        if key not in values:
            raise TrainguardError(f"{path}: missing '{key}'")
    if ("cron" in values) == ("interval_seconds" in values):
        raise TrainguardError(f"{path}: give exactly one of 'cron' and 'interval_seconds'")
    _check_schedule(values, str(path))
    datasets = values["datasets"]
    if not isinstance(datasets, list) or not datasets or not all(isinstance(e, dict)
                                                                 for e in datasets):
        raise TrainguardError(f"{path}: 'datasets' must be a non-empty array of tables "
                              "([[datasets]] entries with a name and a path)")
    base = path.resolve().parent
    default_policy = _policy(values.get("policy", {}), base, str(path))
    checks = []
    for k, entry in enumerate(datasets, start=1):
        where = f"{path}: datasets[{k}]"
        _no_unknown(entry, _DATASET_KEYS, where)
        if "name" not in entry or "path" not in entry:
            raise TrainguardError(f"{where}: needs 'name' and 'path'")
        for key in ("name", "path", "source_name"):
            if key in entry and (not isinstance(entry[key], str) or not entry[key].strip()):
                raise TrainguardError(f"{where}: '{key}' must be a non-empty string, not "
                                      f"{entry[key]!r}")
        checks.append(DatasetCheck(
            name=entry["name"], path=os.path.normpath(base / entry["path"]),
            policy=_policy(entry["policy"], base, where) if "policy" in entry else default_policy,
            config=_audit_config(entry, values, where), source_name=entry.get("source_name")))
    return ScheduleConfig(store=os.path.normpath(base / values["store"]),
                          out=os.path.normpath(base / values["out"]),
                          datasets=checks, cron=values.get("cron"),
                          interval_seconds=values.get("interval_seconds"))


def _audit_config(entry: dict, values: dict, where: str) -> AuditConfig:
    try:
        load = LoadOptions(**{k: entry[k] for k in _LOAD_KEYS if k in entry})
        return AuditConfig(load=load, detectors=entry.get("detectors"),
                           model=entry.get("model", values.get("model")))
    except TrainguardError as exc:
        raise TrainguardError(f"{where}: {exc}") from None


def _check_schedule(values: dict, where: str) -> None:
    """A cron string Prefect accepts, or a positive interval, checked before any run (and
    before `serve` starts a server)."""
    if "cron" in values:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=values["cron"])
        except ValueError:
            raise TrainguardError(f"{where}: cron {values['cron']!r} is not a cron string "
                                  "(five fields, e.g. '0 6 * * *')") from None
    interval = values.get("interval_seconds", 1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval <= 0:
        raise TrainguardError(f"{where}: interval_seconds must be a positive number, not "
                              f"{interval!r}")


def _policy(value: str | dict, base: Path, where: str) -> dict:
    """A policy file name or an inline table, checked now so a bad one fails at `serve`."""
    if isinstance(value, str):
        try:
            with open(base / value, "rb") as handle:
                value = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise TrainguardError(f"{where}: cannot read the policy {base / value} "
                                  f"({exc})") from None
    if not isinstance(value, dict):
        raise TrainguardError(f"{where}: 'policy' must be a policy file name or a table, not "
                              f"{value!r}")
    IntakePolicy.from_dict(value, where=where)
    return value


def _no_unknown(values: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise TrainguardError(f"{where}: unknown key(s) {', '.join(unknown)}")


def matching_files(pattern: str) -> list[str]:
    return sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]


def output_folders(sources: list[str]) -> dict[str, str]:
    """Each matched file's folder name under OUT/<dataset>/: its stem, or its whole name
    where two files share a stem (`batch.json`, `batch.jsonl`), so none overwrites another's
    outputs."""
    stems = [Path(s).stem for s in sources]
    return {s: (Path(s).name if stems.count(Path(s).stem) > 1 else Path(s).stem)
            for s in sources}


def report_line(text: str) -> None:
    """A verdict for the person watching `serve` or `run-now` (flushed stdout) and for the
    run's logs in Prefect."""
    print(text, flush=True)
    get_run_logger().info(text)


class ChecksNotRun(TrainguardError):
    """Some dataset could not be checked. The message lists every failure (the run's
    failure message in Prefect); `shown` is the tally for a terminal, where each failure
    already has its ERROR line."""

    def __init__(self, message: str, *, shown: str):
        super().__init__(message)
        self.shown = shown


@flow(name="trainguard-scheduled-checks")
def scheduled_checks_flow(config: str, only: str | None = None) -> list[dict]:
    """Run the intake gate over every dataset file in CONFIG (with `only`, the datasets of
    that name). One dataset's error does not stop the others; the run fails at the end (an
    error) if any dataset could not be checked, and ends Failed with the failed datasets'
    verdicts as its message (the results as its data) if any failed its intake gate."""
    settings = load_config(config)
    checks = [c for c in settings.datasets if only is None or c.name == only]
    if not checks:
        raise TrainguardError(f"{config}: no dataset named '{only}' (the config has "
                              f"{', '.join(c.name for c in settings.datasets)})")
    results, failures, verdicts = [], [], []
    for check in checks:
        sources = matching_files(check.path)
        if not sources:  # a vendor drop that did not arrive is an error, not a pass
            failures.append(f"{check.name}: no file matches {check.path}")
            report_line(f"ERROR {failures[-1]}")
        folders = output_folders(sources)
        for source in sources:
            name = f"{check.name}/{Path(source).name}"
            try:
                outcome = flow_value(intake_flow(
                    source=source, policy=check.policy, store=settings.store,
                    out_dir=str(Path(settings.out) / check.name / folders[source]),
                    source_name=check.source_of(source), config=check.config,
                    return_state=True))
            except TrainguardError as exc:
                failures.append(f"{name}: {exc}")
                report_line(f"ERROR {name}: {exc}")
                continue
            passed = outcome["intake"]["passed"]
            report_line(intake_verdict(outcome["intake"]))
            if not passed:
                verdicts.append(intake_verdict(outcome["intake"]))
            results.append({"dataset": name, "passed": passed,
                            "intake_id": outcome["intake"]["intake_id"]})
    failed = [r["dataset"] for r in results if not r["passed"]]
    if failures:
        raise ChecksNotRun("; ".join(failures + [f"{name}: intake gate failed"
                                                 for name in failed]),
                           shown=f"{len(failures)} dataset file(s) could not be checked (the "
                                 f"ERROR lines above), {len(results) - len(failed)} of "
                                 f"{len(results)} checked passed their intake gate")
    return gate_state(results, f"{len(failed)} of {len(results)} dataset(s) failed the intake "
                      f"gate: " + "; ".join(verdicts), not failed)


def serve_config(config_path: str, port: int | None = None, announce=print) -> None:
    """Serve the scheduled checks until interrupted, with a local Prefect server when none
    is configured."""
    config_path = str(Path(config_path).resolve())
    settings = load_config(config_path)
    schedule = ({"cron": settings.cron} if settings.cron
                else {"interval": settings.interval_seconds})
    with prefect_server(port, announce):
        announce(f"serving deployment '{scheduled_checks_flow.name}/{DEPLOYMENT}': "
                 f"{len(settings.datasets)} dataset check(s) from {config_path}; "
                 f"{describe_schedule(settings)}")
        announce(f"run them now with: trainguard run-now {config_path}; Ctrl-C stops serving")
        # limit=1: a run that outlasts the interval waits instead of competing for the CPU
        scheduled_checks_flow.serve(name=DEPLOYMENT, parameters={"config": config_path},
                                    print_starting_message=False, limit=1, **schedule)


def describe_schedule(settings: ScheduleConfig) -> str:
    """The schedule and its next run, computed by Prefect's own schedule classes."""
    import asyncio
    import datetime

    from prefect.server.schemas.schedules import CronSchedule

    if settings.cron:
        (next_run,) = asyncio.run(CronSchedule(cron=settings.cron).get_dates(1))
        return f"cron '{settings.cron}' (UTC), next run {next_run:%Y-%m-%d %H:%M} UTC"
    every = datetime.timedelta(seconds=settings.interval_seconds)
    return f"every {every}, the first run within {every} from now"


@contextmanager
def prefect_server(port: int | None, announce=print):
    """The configured Prefect API, or a local server on loopback for as long as needed."""
    if os.environ.get("PREFECT_API_URL"):
        announce(f"using the Prefect API at {os.environ['PREFECT_API_URL']}")
        yield os.environ["PREFECT_API_URL"]
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = port or free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
         "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # the UI calls the API it is told about (else the default port, 4200)
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
             "PREFECT_UI_API_URL": url})
    stop_with_this_process(server.pid)  # even when `serve` is killed with SIGKILL
    try:
        wait_for_health(url, server)
        announce(f"started a local Prefect server at {url} (UI at http://127.0.0.1:{port})")
        os.environ["PREFECT_API_URL"] = url  # for flow-run subprocesses
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(url: str, server: subprocess.Popen | None = None,
                    timeout_s: float = SERVER_START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise TrainguardError(f"the local Prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise TrainguardError(f"no Prefect server answered at {url} within {timeout_s:.0f} s")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m flows.scheduled CONFIG")
    serve_config(sys.argv[1])
