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
from flows.scheduled import free_port, load_config, matching_files

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
])
def test_bad_configs_are_refused_before_serving(tmp_path, body, message):
    config = tmp_path / "c.toml"
    config.write_text(body)
    with pytest.raises(TrainguardError, match=message):
        load_config(config)


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


@pytest.mark.slow  # ~2 min: a Prefect server start, the next minute, one audit
def test_served_deployment_runs_once_on_schedule(tmp_path, refusal_mix_path):
    config = tmp_path / "checks.toml"
    config.write_text(f"""
store = "store"
out = "out"
cron = "* * * * *"
[[datasets]]
name = "mix"
path = "{refusal_mix_path}"
detectors = ["trigger"]
policy = {{ max_flagged_fraction = 0.5 }}
""")
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
        assert {r["state_type"] for r in runs} == {"COMPLETED"}, (tmp_path / "serve.log").read_text()
        assert runs[0]["deployment_id"] is not None  # started by the schedule, not by hand
    finally:
        _stop(proc)
        log.close()
    assert "started a local Prefect server at http://127.0.0.1" in (tmp_path / "serve.log").read_text()
    record = json.loads((tmp_path / "out" / "mix" / "refusal_badnet_mix" / "intake.json").read_text())
    assert record["source_name"] == "mix/refusal_badnet_mix.json" and record["passed"]
    assert len(Ledger(tmp_path / "store").runs()) >= 1
