"""How long `trainguard` takes to refuse the command-line mistakes it checks before Prefect
starts (a missing input, an unknown --schema or --detectors name, a bad intake policy).

    .venv/bin/python -m benchmarks.error_latency    # -> results/error-latency.md

Each command runs `--repeats` times in a fresh process; the table gives the median wall
time (process start to exit, imports included)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.detection import machine

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "error-latency.md"
TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))
SAMPLE = str(ROOT / "sample_data" / "sst2_badnets_sample.tsv")


def cases(tmp: Path) -> dict[str, list[str]]:
    bad_policy = tmp / "bad.toml"
    bad_policy.write_text("max_flagged_share = 0.1\n")
    intake = ["--store", str(tmp / "store"), "--out", str(tmp / "out")]
    return {
        "audit: missing input": ["audit", str(tmp / "nope.tsv"), "--out", str(tmp / "out")],
        "audit: unknown --schema": ["audit", SAMPLE, "--out", str(tmp / "out"), "--schema", "x"],
        "audit: unknown --detectors": ["audit", SAMPLE, "--out", str(tmp / "out"),
                                       "--detectors", "trigerr"],
        "intake: missing input": ["intake", str(tmp / "nope.tsv"), "--policy", str(bad_policy),
                                  *intake],
        "intake: bad policy key": ["intake", SAMPLE, "--policy", str(bad_policy), *intake],
        "intake: bad policy key, with --detectors": ["intake", SAMPLE, "--policy",
                                                     str(bad_policy), *intake,
                                                     "--detectors", "trigger"],
    }


def timed(args: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    done = subprocess.run([TRAINGUARD, *args], capture_output=True, text=True, timeout=120)
    return time.perf_counter() - started, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in cases(Path(tmp)).items():
            runs = [timed(command) for _ in range(args.repeats)]
            assert all(code == 2 for _, code in runs), (name, runs)
            rows.append((name, statistics.median(s for s, _ in runs)))
            print(f"{name}: {rows[-1][1]:.2f} s", flush=True)
    lines = ["# Time to refuse a command-line mistake", "",
             f"`python -m benchmarks.error_latency` on {machine()}; median of "
             f"{args.repeats} fresh processes, exit code 2 each.", "",
             "| mistake | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {seconds:.2f} |" for name, seconds in rows]
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
