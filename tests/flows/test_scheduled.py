"""Scheduled checks: the config format, and a served deployment that runs on schedule
against a real local Prefect server started by `trainguard serve`."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from auditors.errors import TrainguardError
from auditors.ledger import Ledger
from flows.scheduled import (free_port, load_config, matching_files, output_folders,
                              scheduled_checks_flow)

ROOT = Path(__file__).resolve().parents[2]
TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))


def test_example_config_loads_with_paths_relative_to_it():
    config = load_config(ROOT / "examples" / "scheduled_checks.toml")
    assert config.cron == "0 3 * * *" and config.interval_seconds is None
    assert config.store == str(ROOT / "out" / "ledger")
    sst2, mix = config.datasets
    assert matching_files(sst2.path) == [str(ROOT / "sample_data" / "sst2_badnets_sample.tsv")]
    load = sst2.config.load
    assert (load.schema, load.text_col, load.label_col) == ("classification", "sentences", "labels")
    assert sst2.policy["max_flagged_fraction"] == 0.005  # the default policy file
    assert mix.policy == {"max_flagged_fraction": 0.1, "fail_on_control_characters": True}
    assert mix.config.detectors == ("trigger", "label_issue")


@pytest.mark.parametrize("body, message", [
    ('store = "s"\nout = "o"\n[[datasets]]\nname = "x"\npath = "x"\n', "exactly one of"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\nbogus = 1\ndatasets = []\n', "bogus"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'policy = { max_flagged_share = 0.1 }\n', "max_flagged_share"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'detectors = ["trigerr"]\n', r"datasets\[1\]: unknown detector\(s\) trigerr"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'prompt_cols = ["q"]\n', r"datasets\[1\]: --prompt-col and --response-col go together"),
    ('store = "s"\nout = "o"\ncron = "not a cron"\n[[datasets]]\nname = "x"\npath = "x"\n',
     "cron 'not a cron' is not a cron string"),
    ('store = "s"\nout = "o"\ninterval_seconds = -5\n[[datasets]]\nname = "x"\npath = "x"\n',
     "interval_seconds must be a positive number, not -5"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\ndatasets = "x"\n', "non-empty array of tables"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\ndatasets = []\n', "non-empty array of tables"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = 5\n',
     r"datasets\[1\]: 'path' must be a non-empty string, not 5"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'policy = 0.1\n', r"datasets\[1\]: 'policy' must be a policy file name or a table"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'source_name = ""\n', r"datasets\[1\]: 'source_name' must be a non-empty string"),
    ('store = "s"\nout = "o"\ncron = "* * * * *"\n[[datasets]]\nname = "x"\npath = "x"\n'
     'policy = "nowhere.toml"\n', r"datasets\[1\]: cannot read the policy .*nowhere.toml"),
])
def test_bad_configs_are_refused_before_serving(tmp_path, body, message):
    config = tmp_path / "c.toml"
    config.write_text(body)
    with pytest.raises(TrainguardError, match=message):
        load_config(config)


def test_a_check_names_the_prompt_and_response_columns(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('store = "s"\nout = "o"\ncron = "0 3 * * *"\n[[datasets]]\nname = "qa"\n'
                      'path = "qa.csv"\nprompt_cols = ["q", "context"]\nresponse_col = "a"\n')
    load = load_config(config).datasets[0].config.load
    assert (load.prompt_cols, load.response_col) == (("q", "context"), "a")


def test_a_check_names_the_preference_columns(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('store = "s"\nout = "o"\ncron = "0 3 * * *"\n[[datasets]]\nname = "pairs"\n'
                      'path = "p.jsonl"\nprompt_cols = ["ask"]\nchosen_col = "good"\n'
                      'rejected_col = "bad"\n')
    load = load_config(config).datasets[0].config.load
    assert (load.prompt_cols, load.chosen_col, load.rejected_col) == (("ask",), "good", "bad")


def test_detectors_may_be_given_as_one_comma_separated_string(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('store = "s"\nout = "o"\ncron = "0 3 * * *"\n[[datasets]]\nname = "x"\n'
                      'path = "x.jsonl"\ndetectors = "trigger, label_issue"\n')
    assert load_config(config).datasets[0].config.detectors == ("trigger", "label_issue")


def test_files_sharing_a_stem_get_their_own_output_folders():
    assert output_folders(["d/batch.json", "d/batch.jsonl", "d/other.tsv"]) == {
        "d/batch.json": "batch.json", "d/batch.jsonl": "batch.jsonl", "d/other.tsv": "other"}


def test_a_glob_that_matches_no_file_is_an_error_not_a_pass(tmp_path, prefect_harness):
    config = tmp_path / "c.toml"
    config.write_text('store = "s"\nout = "o"\ncron = "0 3 * * *"\n[[datasets]]\n'
                      'name = "drop"\npath = "incoming/*.jsonl"\n')
    with pytest.raises(TrainguardError, match=r"drop: no file matches .*incoming/\*\.jsonl"):
        scheduled_checks_flow(config=str(config))


def test_dated_drops_under_one_source_name_are_diffed_against_the_last_one(
        tmp_path, refusal_mix_path, prefect_harness):
    """`source_name`: a drop whose file name changes every day is the same source, so each
    is compared with the last that passed (without it, every file is a first intake)."""
    import shutil

    from flows.audit import flow_value

    drops = tmp_path / "drops"
    drops.mkdir()
    config = _mix_config(tmp_path, "drops/vendor-*.json", extra='source_name = "vendor-x"')
    assert load_config(config).datasets[0].source_of("drops/vendor-1.json") == "vendor-x"
    shutil.copy(refusal_mix_path, drops / "vendor-2024-06-01.json")
    [first] = flow_value(scheduled_checks_flow(config=str(config), return_state=True))
    (drops / "vendor-2024-06-01.json").rename(drops / "vendor-2024-06-02.json")
    [second] = flow_value(scheduled_checks_flow(config=str(config), return_state=True))

    record = json.loads((tmp_path / "out" / "mix" / "vendor-2024-06-02" / "intake.json")
                        .read_text())
    assert record["source_name"] == "vendor-x" and second["dataset"].endswith("06-02.json")
    assert record["diff"]["previous_intake"] == first["intake_id"]
    assert record["diff"]["unchanged"] == record["rows"]


def _completed_runs(api: str, flow_name: str) -> list[dict]:
    query = {"flows": {"name": {"any_": [flow_name]}},
             "flow_runs": {"state": {"type": {"any_": ["COMPLETED", "FAILED", "CRASHED"]}}}}
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=json.dumps(query).encode(),
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _stop(proc: subprocess.Popen) -> None:
    """SIGINT (what Ctrl-C sends), then the whole process group we started."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def _mix_config(tmp_path: Path, refusal_mix_path, cron: str = "0 3 * * *",
                extra: str = "") -> Path:
    """A check whose gate passes: no detector that decides by significance (the mix's
    `badmagic` trigger would fail any gate), and a lenient share; `extra`: more keys of the
    dataset entry."""
    config = tmp_path / "checks.toml"
    config.write_text(f"""
store = "store"
out = "out"
cron = "{cron}"
[[datasets]]
name = "mix"
path = "{refusal_mix_path}"
{extra}
detectors = ["label_issue"]
policy = {{ max_flagged_fraction = 0.5 }}
""")
    return config


@pytest.mark.slow  # ~2 min: a Prefect server start, the next minute, one audit
def test_served_deployment_runs_once_on_schedule(tmp_path, refusal_mix_path):
    config = _mix_config(tmp_path, refusal_mix_path, cron="* * * * *")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([TRAINGUARD, "serve", str(config), "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        runs, deadline = [], time.monotonic() + 400
        while not runs and time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            time.sleep(3)
            try:
                runs = _completed_runs(api, "trainguard-scheduled-checks")
            except OSError:  # server still starting
                pass
        assert runs, "no scheduled run finished in time:\n" + (tmp_path / "serve.log").read_text()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ui-settings", timeout=10) as page:
            ui_settings = json.loads(page.read())
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, (tmp_path / "serve.log").read_text()
        assert runs[0]["deployment_id"] is not None  # started by the schedule, not by hand
    finally:
        _stop(proc)
        log.close()
    log_text = (tmp_path / "serve.log").read_text()
    assert "started a local Prefect server at http://127.0.0.1" in log_text
    assert "serving deployment 'trainguard-scheduled-checks/trainguard-scheduled-checks'" in log_text
    assert "cron '* * * * *' (UTC), next run " in log_text and "trainguard run-now" in log_text
    assert "INTAKE PASS: mix/refusal_badnet_mix.json" in log_text  # the run's verdict line
    assert ui_settings["api_url"] == api  # the UI talks to this server, not :4200
    record = json.loads((tmp_path / "out" / "mix" / "refusal_badnet_mix" / "intake.json").read_text())
    assert record["source_name"] == "mix/refusal_badnet_mix.json" and record["passed"]
    assert len(Ledger(tmp_path / "store").runs()) >= 1


def test_the_schedule_is_described_with_its_next_run(tmp_path, refusal_mix_path):
    from flows.scheduled import describe_schedule

    text = describe_schedule(load_config(_mix_config(tmp_path, refusal_mix_path)))
    assert text.startswith("cron '0 3 * * *' (UTC), next run ") and text.endswith(" 03:00 UTC")


def test_run_now_refuses_an_unknown_dataset_before_any_work(tmp_path, refusal_mix_path):
    done = subprocess.run([TRAINGUARD, "run-now", str(_mix_config(tmp_path, refusal_mix_path)),
                           "--dataset", "mixx"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "no dataset named 'mixx' (the config has mix)" in done.stderr


def test_run_now_names_a_file_it_could_not_check_once(tmp_path):
    """Its ERROR line names the file, row and reason; the closing error line tallies, it
    does not repeat the reason."""
    bad = tmp_path / "drop.tsv"
    bad.write_text("text\tlabel\na row without its label\n", encoding="utf-8")
    config = _mix_config(tmp_path, bad)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([TRAINGUARD, "run-now", str(config)], capture_output=True, text=True,
                          timeout=300, env=env)
    reason = f"{bad}: row 2: expected 2 tab-separated fields, found 1"
    assert done.returncode == 2, done.stderr
    assert f"ERROR mix/drop.tsv: {reason}" in done.stdout
    assert reason not in done.stderr
    assert done.stderr.strip() == ("error: 1 dataset file(s) could not be checked (the ERROR "
                                   "lines above), 0 of 0 checked passed their intake gate")


@pytest.mark.slow
def test_run_now_runs_the_checks_at_once_with_a_verdict_line(tmp_path, refusal_mix_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([TRAINGUARD, "run-now", str(_mix_config(tmp_path, refusal_mix_path)),
                           "--dataset", "mix"], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert "INTAKE PASS: mix/refusal_badnet_mix.json" in done.stdout
    assert "1 of 1 dataset(s) passed their intake gate" in done.stdout
    assert len(Ledger(tmp_path / "store").runs()) == 1
