"""The operations loop on real slices of the poisoned SST-2 sample: intake -> flags ->
confirm a trigger -> a second dataset holding a confirmed row is quarantined and fails the
gate -> release a false positive -> it is not flagged again."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from auditors.ledger import Ledger
from flows.cli import app
from flows.audit import flow_value
from flows.intake import intake_flow

import pytest

# `make test-all` only: a full intake, confirm and release loop
pytestmark = pytest.mark.slow

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))
POLICY = {"max_flagged_fraction": 0.1, "fail_on_confirmed": True,
          "fail_on_control_characters": True, "fail_on_schema_drift": True}


def _write_tsv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "".join(lines), encoding="utf-8")
    return path


def _intake(source: Path, store: Path, out: Path, name: str) -> dict:
    return flow_value(intake_flow(source=str(source), policy=POLICY, store=str(store),
                                  out_dir=str(out), source_name=name,
                                  source_url="https://example.org/sst2", license="CC-BY-4.0",
                                  version="1", return_state=True))


def test_intake_confirm_release_loop(prefect_harness, sample_path, poisoned_mask, tmp_path):
    header, *body = sample_path.read_text(encoding="utf-8").splitlines(keepends=True)
    first = _write_tsv(tmp_path / "vendor_a.tsv", header, body[:1000])  # all 60 poisoned rows
    store, runner = tmp_path / "store", CliRunner()

    # 1. intake: flags, recorded as open (quarantined) rows grouped by trigger
    result = _intake(first, store, tmp_path / "a1", "vendor-a")
    rows = pd.read_parquet(tmp_path / "a1" / "rows.parquet")
    truth = poisoned_mask(sample_path, 3000)[:1000]
    assert rows["flagged"].sum() >= 20 and truth[rows["flagged"]].mean() >= 0.9
    assert result["intake"]["diff"]["added"] == 1000
    assert result["intake"]["license"] == "CC-BY-4.0"
    ledger = Ledger(store)
    assert set(ledger.rows("quarantined")["row_id"]) == set(rows.loc[rows.flagged, "row_id"])
    review = runner.invoke(app, ["review", str(store)])
    assert review.exit_code == 0, review.output
    trigger = json.loads((tmp_path / "a1" / "triggers.json").read_text())[0]["pattern"]
    assert trigger in {"cf", "mn", "bb", "tq", "mb"} and repr(trigger) in review.output

    # 2. confirm the top trigger: its open rows become confirmed
    confirm = runner.invoke(app, ["confirm", str(store), "--trigger", trigger, "--by", "ana"])
    assert confirm.exit_code == 0, confirm.output
    confirmed = ledger.rows("confirmed")
    assert len(confirmed) > 0 and (confirmed["decided_by"] == "ana").all()
    assert all(trigger in t for t in confirmed["triggers"])

    # 3. a second vendor's clean rows, one confirmed row, one new row with the trigger
    flagged_lines = [body[i] for i in np.flatnonzero(rows["flagged"])]
    confirmed_line = next(line for line, rid in zip(flagged_lines, rows.loc[rows.flagged, "row_id"])
                          if rid in set(confirmed["row_id"]))
    clean_b = body[1000:1600]
    new_with_trigger = f"a quietly moving {trigger} portrait of grief .  \t 1\n"
    second = _write_tsv(tmp_path / "vendor_b.tsv", header,
                        clean_b[:300] + [confirmed_line] + clean_b[300:] + [new_with_trigger])
    policy = tmp_path / "policy.toml"
    policy.write_text("max_flagged_fraction = 0.1\n")
    proc = subprocess.run([TRAINGUARD, "intake", second, "--policy", policy, "--store", store,
                           "--out", tmp_path / "b", "--source-name", "vendor-b",
                           "--detectors", "trigger"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PREFECT_HOME": str(tmp_path / "home")})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "INTAKE FAIL" in proc.stdout
    stdout = " ".join(proc.stdout.split())
    # the outputs carry the intake's verdict (summary.json, report.html) and name intake.json
    assert "intake: FAIL: 2 of 602 rows flagged" in stdout
    assert "report.html, summary.json, intake.json)" in stdout
    summary_b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert not summary_b["gate"]["passed"]
    assert [c["check"] for c in summary_b["gate"]["checks"] if not c["passed"]] == \
        ["confirmed rows and triggers"]
    assert "FAIL: 2 of 602 rows flagged" in (tmp_path / "b" / "report.html").read_text()
    assert ledger.runs()["outcome"].tolist()[-1] == "gate-failed"
    record = json.loads((tmp_path / "b" / "intake.json").read_text())
    failed = {c["check"] for c in record["checks"] if not c["passed"]}
    assert failed == {"confirmed rows and triggers"}  # not the flagged share: 2 of 602 rows
    quarantine = (tmp_path / "b" / "quarantine.tsv").read_text(encoding="utf-8")
    assert confirmed_line in quarantine and new_with_trigger in quarantine
    rows_b = pd.read_parquet(tmp_path / "b" / "rows.parquet")
    # the confirmed row was confirmed through its trigger: it follows the trigger's decision
    assert rows_b["reasons"].str.contains("ledger: confirmed row").sum() == 0
    assert rows_b["reasons"].str.contains(f"ledger: confirmed trigger '{trigger}'").sum() >= 2

    # 4. release a false positive from the first intake (a flagged row that is not poisoned,
    # else a flagged row of another trigger), then take the same data in again
    open_rows = rows.flagged & ~rows["row_id"].isin(set(confirmed["row_id"]))
    pick = open_rows & ~pd.Series(truth)
    released = rows.loc[pick if pick.any() else open_rows, "row_id"].iloc[0]
    release = runner.invoke(app, ["release", str(store), "--row-id", released, "--by", "ben"])
    assert release.exit_code == 0, release.output
    again = _intake(first, store, tmp_path / "a2", "vendor-a")
    rows_again = pd.read_parquet(tmp_path / "a2" / "rows.parquet").set_index("row_id")
    assert not rows_again.at[released, "flagged"]
    assert "ledger: released" in rows_again.at[released, "reasons"]
    assert rows_again.loc[list(confirmed["row_id"]), "flagged"].all()
    diff = again["intake"]["diff"]
    # vendor-a's first intake failed (significant triggers), so none of it was accepted: the
    # diff has no baseline and every row (distinct prompts, here all) is new again
    assert not result["intake"]["passed"] and diff["previous_intake"] is None
    assert (diff["added"], diff["removed"], diff["changed"]) == (rows["row_id"].nunique(), 0, 0)
    assert ledger.rows("released")["row_id"].tolist() == [released]
    assert len(ledger.runs()) == 3 and len(ledger.intakes()) == 3
    assert (tmp_path / "a2" / "report.html").exists()
