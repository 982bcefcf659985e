"""Servers that must not outlive the `trainguard` command, even when it is killed with
SIGKILL, which runs no cleanup: Prefect's temporary API server (uvicorn, started by Prefect
when no `PREFECT_API_URL` is set) and the local server `trainguard serve` starts.

Each gets a watchdog: a small process that reads a pipe from this one. When this process
ends, however it ends, the kernel closes the pipe; the watchdog reads end-of-file and stops
the server (SIGTERM, SIGKILL after 5 s) if it is still the same process. (PR_SET_PDEATHSIG
would not do: it fires when the *thread* that started the child exits, and Prefect starts
its server from whichever thread first needs the API.)
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

# Set by the command's SIGINT/SIGTERM handler. The KeyboardInterrupt that handler raises is
# dropped when the signal lands in a finalizer (`__del__`: "Exception ignored in ..."), so
# every stage checks this before it starts (`raise_if_interrupted`).
INTERRUPT_REQUESTED = threading.Event()


def raise_if_interrupted() -> None:
    if INTERRUPT_REQUESTED.is_set():
        raise KeyboardInterrupt

_WATCHDOG = r"""
import os, signal, sys, time
from pathlib import Path

def started(pid):
    try:  # field 22 of /proc/PID/stat: start time, so a reused pid is left alone
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None

pid, start = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()  # returns when the command has exited
if started(pid) == start:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while started(pid) == start and time.monotonic() < deadline:
        time.sleep(0.1)
    if started(pid) == start:
        os.kill(pid, signal.SIGKILL)
"""

_watchdogs: list[subprocess.Popen] = []  # their pipes stay open as long as this process


def stop_with_this_process(pid: int) -> None:
    """Stop process `pid` when this process exits (Linux: needs /proc)."""
    start = _start_time(pid)
    if start is None:
        return
    # its own session: a Ctrl-C in the terminal must not stop it before the server
    _watchdogs.append(subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(pid), start], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def tie_prefect_server() -> None:
    """Give Prefect's temporary server a watchdog as it starts (`SubprocessASGIServer`,
    Prefect 3); a no-op with `PREFECT_API_URL` set, or when Prefect has no such hook."""
    import os

    if os.environ.get("PREFECT_API_URL"):
        return
    from prefect.server.api import server

    server_class = getattr(server, "SubprocessASGIServer", None)
    start = getattr(server_class, "_run_uvicorn_command", None)
    if start is None or getattr(start, "tied", False):
        return

    def start_tied(self):
        process = start(self)
        stop_with_this_process(process.pid)
        return process

    start_tied.tied = True
    server_class._run_uvicorn_command = start_tied
