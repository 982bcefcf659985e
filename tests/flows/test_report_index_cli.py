"""`trainguard report STORE --out DIR`: an index of the audits a ledger recorded, linked to
their reports, with dataset text escaped."""

import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

from auditors import AuditConfig, audit
from auditors.ledger import Ledger

TRAINGUARD = str(Path(sys.executable).with_name("trainguard"))


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs)["href"])


def test_index_lists_every_run_newest_first_with_links_to_their_reports(sample_path, tmp_path,
                                                                       onnx_encoder):
    named = tmp_path / "<img src=x onerror=alert(1)>.tsv"  # attacker-chosen file name
    lines = sample_path.read_text(encoding="utf-8").splitlines(keepends=True)
    named.write_text("".join(lines[:801]), encoding="utf-8")
    store = tmp_path / "ledger"
    config = AuditConfig(store=str(store), detectors=("trigger",))
    first = audit(str(sample_path), tmp_path / "runs" / "first", config, encoder=onnx_encoder)
    # passes: a lenient share and no detector whose significant trigger fails the gate
    second = audit(str(named), tmp_path / "runs" / "second",
                   config.replace(max_flagged_fraction=1.0, detectors=("label_issue",)),
                   encoder=onnx_encoder)

    done = subprocess.run([TRAINGUARD, "report", str(store), "--out", str(tmp_path / "site")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    assert parser.links == ["../runs/second/report.html", "../runs/first/report.html"]
    assert all((tmp_path / "site" / link).resolve().is_file() for link in parser.links)
    assert "img" not in parser.tags and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert page.count(">FAIL<") == 1 and page.count(">PASS<") == 1  # first fails, second passes
    assert f"{first.summary.flagged} of 3000" in page
    assert f"{second.summary.flagged} of 800" in page
    assert first.summary.fingerprint[:16] in page


def test_a_missing_store_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([TRAINGUARD, "report", str(tmp_path / "nope"), "--out",
                           str(tmp_path / "site")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "site" / "index.html").exists()


def test_a_run_whose_folder_a_later_run_reused_has_no_link_and_relative_paths_are_recorded(
        sample_path, tmp_path, onnx_encoder, monkeypatch):
    store = tmp_path / "ledger"
    config = AuditConfig(store=str(store), detectors=("label_issue",), max_flagged_fraction=1.0)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):  # both runs write to the same folder, given relative to the cwd
        audit(str(sample_path), "runs/shared", config, encoder=onnx_encoder)
    runs = Ledger(store).runs()
    assert runs["out_dir"].tolist() == [str(tmp_path / "runs" / "shared")] * 2
    site = tmp_path / "elsewhere" / "site"
    done = subprocess.run([TRAINGUARD, "report", str(store), "--out", str(site)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path / "..")
    assert done.returncode == 0, done.stderr
    page = (site / "index.html").read_text(encoding="utf-8")
    parser = Links()
    parser.feed(page)
    assert parser.links == ["../../runs/shared/report.html"]  # the latest run's only
    assert "no report (replaced by a later run or moved)" in page


def test_an_index_out_path_that_is_a_file_and_a_cache_that_is_not_a_folder_are_errors(tmp_path):
    Ledger(tmp_path / "store")
    (tmp_path / "afile").write_text("")
    for command in (["report", str(tmp_path / "store"), "--out", str(tmp_path / "afile")],
                    ["cache", "--cache", str(tmp_path / "afile")],
                    ["cache", "--cache", str(tmp_path / "nowhere")]):
        done = subprocess.run([TRAINGUARD, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
        assert "must be a folder" in done.stderr or "not a cache directory" in done.stderr
