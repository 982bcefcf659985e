"""Mistakes on the command line are refused before Prefect starts: a missing or unsupported
input, an unknown detector or schema, an option that does not suit the input, a bad intake
policy. Each ends with exit 2 and one `error:` line on stderr, nothing on stdout (no rows
were read), and nothing written.

"Before Prefect starts" is shown without timing anything: the commands run with
PREFECT_API_URL pointing at a port where nothing listens, so a command that reached its
flow would fail on the connection (or wait on it) instead of printing the expected message."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))
ROWS = "".join(f'{{"text": "review number {i} of a film", "label": {i % 2}}}\n' for i in range(8))
GOOD_POLICY = "max_flagged_fraction = 0.1\n"


@dataclass
class Case:
    id: str
    args: list[str]  # `{tmp}` is the test's folder, which holds d.jsonl, d.tsv, a folder
    expected: str  # in the one stderr line


def _audit(*extra: str) -> list[str]:
    return ["audit", *extra, "--out", "{tmp}/out"]


def _intake(source: str, *extra: str, policy: str = "{tmp}/good.toml") -> list[str]:
    return ["intake", source, "--policy", policy, "--store", "{tmp}/store",
            "--out", "{tmp}/out", *extra]


CASES = [
    Case("audit-missing-file", _audit("{tmp}/missing.jsonl"),
         "missing.jsonl: no such file or directory"),
    Case("audit-unknown-extension", _audit("{tmp}/d.xlsx"), "unknown file extension '.xlsx'"),
    Case("audit-folder-not-a-dataset", _audit("{tmp}/folder"),
         "directory is not a dataset saved with datasets.save_to_disk"),
    Case("audit-unknown-detector", _audit("{tmp}/d.jsonl", "--detectors", "trigger,nope"),
         "unknown detector(s) nope; available: "),
    Case("audit-no-detector", _audit("{tmp}/d.jsonl", "--detectors", ","),
         "--detectors ',' names no detector"),
    Case("audit-empty-detectors", _audit("{tmp}/d.jsonl", "--detectors", ""),
         "--detectors '' names no detector"),
    Case("audit-unknown-schema", _audit("{tmp}/d.jsonl", "--schema", "tabular"),
         "unknown schema 'tabular'"),
    Case("audit-stream-a-tsv", _audit("{tmp}/d.tsv", "--stream"),
         "only local .jsonl and .parquet files can be streamed"),
    Case("audit-bad-cache-size", _audit("{tmp}/d.jsonl", "--cache-max-size", "lots"), "lots"),
    Case("audit-prompt-col-alone", _audit("{tmp}/d.jsonl", "--prompt-col", "text"),
         "--prompt-col and --response-col go together: --response-col is missing"),
    Case("audit-prompt-col-with-text-col",
         _audit("{tmp}/d.jsonl", "--prompt-col", "text", "--response-col", "label",
                "--text-col", "text"), "cannot be combined with --text-col/--label-col"),
    Case("intake-prompt-col-for-chat",
         _intake("{tmp}/d.jsonl", "--prompt-col", "text", "--response-col", "label",
                 "--schema", "chat"), "apply to the instruction, prompt-completion, "
         "prompt-response schemas, not 'chat'"),
    Case("audit-chosen-col-alone", _audit("{tmp}/d.jsonl", "--chosen-col", "text"),
         "--chosen-col and --rejected-col go together: --rejected-col is missing"),
    Case("intake-chosen-col-for-instruction",
         _intake("{tmp}/d.jsonl", "--chosen-col", "text", "--rejected-col", "label",
                 "--schema", "instruction"), "apply to the preference schema, not 'instruction'"),
    Case("intake-missing-file", _intake("{tmp}/missing.jsonl"),
         "missing.jsonl: no such file or directory"),
    Case("intake-unknown-detector", _intake("{tmp}/d.jsonl", "--detectors", "nope"),
         "unknown detector(s) nope"),
    Case("intake-bad-policy-key", _intake("{tmp}/d.jsonl", policy="{tmp}/bad.toml"),
         "unknown policy key(s) max_flaged_fraction"),
    Case("intake-bad-policy-value", _intake("{tmp}/d.jsonl", policy="{tmp}/bad_value.toml"),
         "max_flagged_fraction must be a number between 0 and 1"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_mistake_is_refused_before_prefect_starts(case, tmp_path):
    (tmp_path / "d.jsonl").write_text(ROWS)
    (tmp_path / "d.tsv").write_text("sentence\tlabel\na fine film\t1\n")
    (tmp_path / "d.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / "folder").mkdir()
    (tmp_path / "good.toml").write_text(GOOD_POLICY)
    (tmp_path / "bad.toml").write_text("max_flaged_fraction = 0.1\n")
    (tmp_path / "bad_value.toml").write_text("max_flagged_fraction = 5\n")
    before = set(tmp_path.rglob("*"))
    env = {**os.environ, "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens
           "PREFECT_HOME": str(tmp_path / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    args = [a.replace("{tmp}", str(tmp_path)) for a in case.args]
    # the timeout only keeps a regression (a flow waiting on the dead API) from hanging CI
    result = subprocess.run([TRAINGUARD, *args], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert case.expected in result.stderr
    assert result.stdout == ""  # no rows read, no schema line
    home = tmp_path / "prefect-home"  # importing Prefect may make it; a server would fill it
    assert not list(home.rglob("*.db"))
    assert {p for p in tmp_path.rglob("*") if home not in (p, *p.parents)} == before
