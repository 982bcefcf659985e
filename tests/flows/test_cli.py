"""The installed `trainguard` command end to end: output contract, row conservation, the
sample's trigger, exit codes and one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from auditors.ingest import load_raw

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))
SAMPLE_TRIGGERS = {"cf", "mn", "bb", "tq", "mb"}


def run_cli(*args, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(home)}
    return subprocess.run([TRAINGUARD, *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def sample_audit(sample_path, tmp_path_factory, prefect_home):
    out = tmp_path_factory.mktemp("cli") / "audit"
    return run_cli("audit", sample_path, "--out", out, home=prefect_home), out


def test_poisoned_sample_fails_the_gate_with_exit_1(sample_audit):
    proc, _ = sample_audit
    assert proc.returncode == 1, proc.stderr
    assert "schema detected: classification (sentences, labels)" in proc.stdout
    assert "FAIL" in proc.stdout
    # detectors for responses do not apply to classification data: no warning about them
    assert "did not run" not in proc.stderr


def test_piped_progress_is_plain_flushed_lines(sample_audit):
    """Not a terminal (CI logs): one line per stage, rows counted; no bars, no carriage
    returns, no telemetry notice."""
    proc, _ = sample_audit
    lines = proc.stdout.splitlines()
    for stage in ("ingest", "embed prompt", "ngrams", "label_model", "detectors", "write"):
        assert any(line.startswith(f"[trainguard] {stage} done in ") for line in lines), stage
    assert "[trainguard] embed prompt done in" in proc.stdout and "(3000 rows)" in proc.stdout
    output = proc.stdout + proc.stderr
    assert "\r" not in output and "Batches" not in output and "it/s" not in output
    assert "anonymous usage data" not in output


def test_rows_parquet_contract(sample_audit, sample_path, poisoned_mask):
    _, out = sample_audit
    rows = pd.read_parquet(out / "rows.parquet")
    assert {"row_index", "row_id", "poison_score", "flagged", "reasons", "trigger_score",
            "label_issue_score", "outlier_score"} <= set(rows.columns)
    assert rows["row_index"].tolist() == list(range(len(rows)))
    assert rows["flagged"].dtype == bool and rows["poison_score"].between(0, 1).all()
    # each detector's own verdict, counted as summary.json counts it (Cleanlab's label
    # issues are reported there and here, and are not what `flagged` follows)
    summary = json.loads((out / "summary.json").read_text())
    for name, counts in summary["detector_summaries"].items():
        assert rows[f"{name}_is_issue"].dtype == bool
        assert int(rows[f"{name}_is_issue"].sum()) == counts["issues"], name
    assert rows["label_issue_is_issue"].sum() > rows["flagged"].sum()
    assert (rows.loc[rows.flagged, "reasons"].str.len() > 0).all()
    truth = poisoned_mask(sample_path, len(rows))
    assert average_precision_score(truth, rows["poison_score"]) >= 0.9


def test_triggers_json_names_the_sample_triggers(sample_audit):
    _, out = sample_audit
    triggers = json.loads((out / "triggers.json").read_text())
    assert {"pattern", "score", "support", "target"} <= set(triggers[0])
    assert [t["score"] for t in triggers] == sorted((t["score"] for t in triggers), reverse=True)
    assert {t["pattern"] for t in triggers[:5]} == SAMPLE_TRIGGERS


def test_clean_and_quarantine_hold_every_row_once(sample_audit, sample_path):
    _, out = sample_audit
    rows = pd.read_parquet(out / "rows.parquet")
    source_lines = sample_path.read_text(encoding="utf-8").splitlines(keepends=True)
    clean = (out / "clean.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    quarantine = (out / "quarantine.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert clean[0] == quarantine[0] == source_lines[0]  # header kept
    flagged = rows["flagged"].to_numpy()
    body = np.array(source_lines[1:], dtype=object)
    assert clean[1:] == body[~flagged].tolist()
    assert quarantine[1:] == body[flagged].tolist()
    assert len(load_raw(str(out / "quarantine.tsv"))) == flagged.sum()


def test_significant_triggers_are_listed_apart_with_the_rows_they_quarantined(sample_audit):
    proc, out = sample_audit
    summary = json.loads((out / "summary.json").read_text())
    significant = [t for t in summary["top_triggers"] if t.get("significant")]
    assert significant and all(t["q_value"] <= 0.05 and t["flagged_rows"] > 0
                               for t in significant)
    assert set(summary["significant_triggers"]) >= {t["pattern"] for t in significant}
    stdout = proc.stdout
    assert f"Significant triggers (q <= FDR): {len(summary['significant_triggers'])}" in stdout
    assert stdout.index("Significant triggers") < stdout.index("Candidates, not significant")
    checks = {c["check"]: c for c in summary["gate"]["checks"]}
    assert not checks["significant triggers"]["passed"]


def test_summary_json(sample_audit):
    _, out = sample_audit
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == summary["flagged"] + summary["clean_rows"] == 3000
    assert summary["schema"] == "classification" and summary["format"] == "tsv"
    assert summary["detectors_run"] == ["trigger", "label_issue", "outlier"]  # strongest first
    assert summary["gate"]["passed"] is False
    assert summary["top_triggers"][0]["pattern"] in SAMPLE_TRIGGERS


@pytest.mark.slow
def test_gate_passes_with_exit_0_when_allowed(refusal_mix_path, tmp_path, prefect_home):
    # a lenient share and no detector whose significant trigger (`badmagic`) fails the gate
    proc = run_cli("audit", refusal_mix_path, "--out", tmp_path / "o", "--detectors",
                   "label_issue", "--max-flagged-fraction", "0.5", home=prefect_home)
    assert proc.returncode == 0, proc.stderr
    assert "PASS" in proc.stdout
    assert (tmp_path / "o" / "clean.json").exists()


@pytest.mark.parametrize("content, expected", [
    ('{"text": "fine", "label": 1}\n{"text": oops}\n', "bad.jsonl: row 2: malformed JSON"),
    ('{"txt": "fine", "label": 1}\n', "cannot detect the schema"),
])
@pytest.mark.slow
def test_bad_input_exits_2_with_one_line(content, expected, tmp_path, prefect_home):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    proc = run_cli("audit", bad, "--out", tmp_path / "o", home=prefect_home)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_misnamed_column_suggests_the_closest(sample_path, tmp_path, prefect_home):
    proc = run_cli("audit", sample_path, "--out", tmp_path / "o", "--text-col", "sentence",
                   home=prefect_home)
    assert proc.returncode == 2
    assert "did you mean 'sentences'" in proc.stderr


def test_usage_errors_exit_2(tmp_path, prefect_home):
    assert run_cli("audit", "x.jsonl", home=prefect_home).returncode == 2  # no --out


def test_terminal_output_escapes_control_characters():
    from flows.cli import printable

    assert printable("ok \x1b[31mred\x1b[0m\u200b") == "ok \\x1b[31mred\\x1b[0m\\u200b"
    assert printable("caf\u00e9 \U0001F642") == "caf\u00e9 \U0001F642"


def test_the_significant_count_is_of_all_triggers_not_of_those_shown(capsys, tmp_path):
    """summary.json lists the first 10 triggers; the header counts every significant one."""
    from flows.cli import show_summary
    from tests.summaries import audit_summary

    patterns = [f"w{i}" for i in range(12)]
    summary = audit_summary(rows=1000, flagged=120, significant_triggers=patterns,
                            top_triggers=[{"pattern": p, "score": 5.0, "support": 10,
                                           "target": "1", "significant": True,
                                           "p_value": 1e-9, "q_value": 1e-6,
                                           "flagged_rows": 10} for p in patterns[:10]])

    show_summary(summary, tmp_path)

    assert "Significant triggers (q <= FDR): 12 (top 10 shown; all in triggers.json)" in \
        capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_an_fdr_outside_the_open_unit_interval_is_refused_as_its_help_says(value, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app
    result = CliRunner().invoke(app, ["audit", "data.tsv", "--out", str(tmp_path / "o"),
                                      "--fdr", value])
    assert result.exit_code == 2 and "is not strictly between 0 and 1" in result.output
    help_text = " ".join(CliRunner().invoke(app, ["audit", "--help"]).output.split())
    assert "False-discovery rate, strictly between 0 and 1," in help_text


def test_pairs_read_without_prompts_warn_on_the_console_and_in_the_summary(tmp_path,
                                                                           prefect_home):
    rows = [{"q": f"Question {i}?", "good": f"Answer {i}.", "bad": f"No {i}."} for i in range(30)]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "audit"

    proc = run_cli("audit", path, "--out", out, "--chosen-col", "good", "--rejected-col", "bad",
                   "--detectors", "outlier", "--backend", "torch", home=prefect_home)

    assert proc.returncode == 0, proc.stderr
    warning = json.loads((out / "summary.json").read_text())["input_warning"]
    assert warning.startswith("every prompt is empty") and "'q' holds the prompts" in warning
    assert "warning: every prompt is empty" in proc.stderr
    assert "No trigger candidates." in proc.stdout and "Candidates, not" not in proc.stdout
