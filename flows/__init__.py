"""Prefect flows and the `trainguard` CLI: orchestration only, the work is in `auditors`."""

import os

# Offline machines otherwise log a telemetry error on every run; and no usage data is sent
# from the client either (Prefect's first-run notice in a terminal included).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
