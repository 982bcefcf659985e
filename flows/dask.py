"""Distributed audits: the audit flow with Prefect's `DaskTaskRunner` (prefect-dask).

Embedding and n-gram counting are mapped over row chunks on the Dask workers and their
statistics reduced in the flow (`auditors.features.chunks`); the label model, detectors and
outputs run in the flow's process. `--workers N` starts a `distributed.LocalCluster` of N
worker processes (one thread each) for the run; `--dask-address tcp://host:8786` uses a
running cluster (docs/performance.md, "Running on a Dask cluster")."""

from __future__ import annotations

import re

from auditors.errors import TrainguardError
from auditors.features.chunks import DEFAULT_CHUNK_ROWS

_ADDRESS = re.compile(r"^(tcp|tls|ucx|ws|wss)://[^\s/:]+(:\d{1,5})?/?$")


def check_address(address: str) -> str:
    """A Dask scheduler address such as `tcp://10.0.0.5:8786`."""
    if not _ADDRESS.match(address or ""):
        raise TrainguardError(f"--dask-address '{address}' is not a Dask scheduler address "
                              "(expected e.g. tcp://10.0.0.5:8786)")
    return address


def task_runner(*, workers: int | None = None, address: str | None = None,
                memory_limit: str | None = None):
    """A `DaskTaskRunner` on the cluster at `address`, or on a fresh LocalCluster of
    `workers` processes; None when neither is given (the flow's default runner)."""
    if address and workers:
        raise TrainguardError("give either --workers (a local cluster) or --dask-address "
                              "(an existing cluster), not both")
    if not address and not workers:
        return None
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=check_address(address),
                              client_kwargs={"timeout": "20s"})
    if workers < 1:
        raise TrainguardError("--workers must be at least 1")
    cluster_kwargs = {"n_workers": workers, "threads_per_worker": 1, "processes": True,
                      "dashboard_address": None}
    if memory_limit:
        cluster_kwargs["memory_limit"] = memory_limit
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs=cluster_kwargs)


def audit_flow_on(*, workers: int | None = None, address: str | None = None):
    """The audit flow to call: on Dask when `workers` or `address` is given (its stages
    mapped over chunks), else the plain flow."""
    from flows.audit import audit_flow

    runner = task_runner(workers=workers, address=address)
    return audit_flow if runner is None else audit_flow.with_options(task_runner=runner)


def run_audit(source: str, out_dir: str, config=None, *, workers: int | None = None,
              address: str | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict:
    """The audit flow's summary (also when the gate fails and the run ends Failed),
    distributed over chunks of `chunk_rows` when `workers` or `address` is given."""
    from auditors.config import AuditConfig
    from flows.audit import flow_value

    config = config or AuditConfig()
    if workers or address:
        config = config.replace(chunk_rows=chunk_rows)
    flow_fn = audit_flow_on(workers=workers, address=address)
    return flow_value(flow_fn(source=source, out_dir=out_dir, config=config, return_state=True))
