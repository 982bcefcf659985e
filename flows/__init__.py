"""Prefect flows and the `trainguard` CLI: orchestration only, the work is in `auditors`."""

import os

# Offline machines otherwise log a telemetry error on every run.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
