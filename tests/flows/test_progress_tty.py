"""On a terminal the audit shows a live rich display (stages, rows, ETA) and no telemetry
notice, even on Prefect's first run in a fresh home."""

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))


@pytest.mark.slow
def test_a_terminal_gets_a_rich_progress_display_and_no_telemetry_notice(refusal_mix_path,
                                                                        tmp_path):
    leader, follower = pty.openpty()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "fresh-prefect-home"),
           "COLUMNS": "120", "TERM": "xterm"}
    env.pop("DO_NOT_TRACK", None)  # trainguard itself must keep the notice away
    proc = subprocess.Popen([TRAINGUARD, "audit", str(refusal_mix_path), "--out",
                             str(tmp_path / "out"), "--no-cache"],
                            stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    output, deadline = b"", time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    proc.wait(timeout=60)
    os.close(leader)
    text = output.decode("utf-8", "replace")
    assert proc.returncode == 1, text  # the mix is poisoned: the gate fails
    assert "embed response" in text and "240/240" in text and "ETA" in text
    assert "[trainguard]" not in text  # the live display, not the piped lines
    assert "anonymous usage data" not in text and "Batches" not in text
