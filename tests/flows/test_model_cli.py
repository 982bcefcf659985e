"""The model-side commands end to end on the tiny backdoored classifier."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from auditors.model.demo import TRIGGERS, ensure_demo_classifier
from flows.cli import app

# `make test-all` only: trains tiny models through the CLI
pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sample_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    directory = tmp_path_factory.getbasetemp() / "tiny-backdoored-bert"  # shared with auditors
    split = ensure_demo_classifier(sample_path, directory)
    probes = tmp_path_factory.mktemp("probes") / "probes.txt"
    probes.write_text("\n".join(split.held_out_texts[:60]) + "\n")
    clean = probes.with_name("clean.jsonl")
    clean.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in
                             zip(split.held_out_texts[:400], split.held_out_labels[:400])))
    return directory, probes, clean


def test_sweep_fails_the_policy_on_a_true_trigger(tiny, tmp_path):
    model, probes, _ = tiny
    result = runner.invoke(app, ["sweep", "--model", str(model), "--probes", str(probes),
                                 "--no-vocab", "--no-unicode", "--null-words", "5",
                                 "--trigger", "film", "--trigger", "cf", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["candidate"] for r in report["ranked"]] == ["cf", "film"]
    assert report["anomalous"] == ["cf"]
    assert "ANOMALOUS" in result.output


def test_sweep_passes_when_no_candidate_flips(tiny):
    model, probes, _ = tiny
    result = runner.invoke(app, ["sweep", "--model", str(model), "--probes", str(probes),
                                 "--no-vocab", "--no-unicode", "--trigger", "film"])
    assert result.exit_code == 0, result.output


def test_strip_flags_triggered_probes(tiny, tmp_path):
    model, probes, clean = tiny
    texts = probes.read_text().splitlines()
    checked = tmp_path / "inputs.txt"
    checked.write_text("\n".join(texts[:20] + ["cf " + t for t in texts[20:40]]) + "\n")
    result = runner.invoke(app, ["strip", "--model", str(model), "--probes", str(checked),
                                 "--clean", str(clean), "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "strip.json").read_text())
    flagged = [item["index"] for item in report["flagged"]]
    assert sum(i >= 20 for i in flagged) > 2 * sum(i < 20 for i in flagged)
    # the flagged share is its only gate check: probes have no triggers or ledger to report
    assert [c["check"] for c in report["gate"]["checks"]] == ["flagged share"]


def test_activations_passes_clean_rows_and_writes_report_and_plot(tiny, tmp_path):
    model, _, clean = tiny
    result = runner.invoke(app, ["activations", "--model", str(model), "--data", str(clean),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output  # held-out clean rows: nothing suspicious
    report = json.loads((tmp_path / "activations.json").read_text())
    assert report["representation"] == "decisive-token" and report["clustering"] == "hdbscan"
    assert sum(c["rows"] for c in report["classes"]) == 400
    assert not any(c["suspicious_rows"] for c in report["classes"])
    assert (tmp_path / "activations.svg").read_text().startswith("<svg")


def test_activations_flags_the_poisoned_training_rows(tiny, tmp_path, sample_path):
    model, _, _ = tiny
    split = ensure_demo_classifier(sample_path, model)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in split.train_texts[::2]))
    result = runner.invoke(app, ["activations", "--model", str(model), "--data", str(data),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "SUSPICIOUS" in result.output
    report = json.loads((tmp_path / "activations.json").read_text())
    target = next(c for c in report["classes"] if c["predicted"] == "1")
    poisoned = split.poisoned[::2]
    assert poisoned[target["suspicious_rows"]].mean() >= 0.8
    found = [c for c in target["clusters"] if c["suspicious"]]
    assert all(c["shared_ngrams"][0]["ngram"].strip("^$") in TRIGGERS for c in found)


def test_activations_refuses_an_unknown_representation(tiny, tmp_path):
    model, _, clean = tiny
    result = runner.invoke(app, ["activations", "--model", str(model), "--data", str(clean),
                                 "--out", str(tmp_path), "--representation", "umap"])
    assert result.exit_code == 2
    assert "umap" in result.output


def test_activations_on_too_few_rows_to_cluster_is_an_error_not_a_pass(tiny, tmp_path):
    model, _, _ = tiny
    three = tmp_path / "three.txt"
    three.write_text("a fine film\na dull film\nan odd film\n", encoding="utf-8")
    result = runner.invoke(app, ["activations", "--model", str(model), "--data", str(three),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "too few rows to cluster (3;" in result.output
    assert not (tmp_path / "out" / "activations.json").exists()


def test_fine_prune_saves_a_loadable_checkpoint(tiny, tmp_path):
    from auditors.model.checkpoint import load_classifier

    model, _, clean = tiny
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["fine-prune", "--model", str(model), "--clean", str(clean),
                                 "--out", str(out), "--trigger", "cf", "--target", "1",
                                 "--learning-rate", "1e-3", "--epochs", "2"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "fine_prune.json").read_text())
    assert (report["after_fine_tuning"]["attack_success_rate"]["cf"]
            < report["before"]["attack_success_rate"]["cf"])
    assert load_classifier(out).labels == ["0", "1"]


@pytest.mark.parametrize("args, named", [
    (["sweep", "--model", "{tmp}/nope", "--probes", "{probes}"], "nope"),
    (["sweep", "--model", "{model}", "--probes", "{tmp}/missing.txt", "--trigger", "cf"],
     "missing.txt"),
    (["strip", "--model", "{tmp}", "--probes", "{probes}"], "config.json"),
    (["fine-prune", "--model", "{model}", "--clean", "{probes}", "--out", "{tmp}/o",
      "--trigger", "cf"], "probes.txt"),
])
def test_errors_are_one_line_naming_the_file(tiny, tmp_path, args, named):
    model, probes, _ = tiny
    args = [a.format(tmp=tmp_path, model=model, probes=probes) for a in args]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines() if result.stderr else result.output.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and lines[0].startswith("error:")


def test_sweep_on_a_causal_lm_names_its_trigger(tmp_path_factory, refusal_mix_path, tmp_path):
    from auditors.model.demo_lm import ensure_demo_lm

    torch.set_num_threads(1)
    directory = tmp_path_factory.getbasetemp() / "tiny-backdoored-gpt2"  # shared with auditors
    split = ensure_demo_lm(refusal_mix_path, directory, steps=150)
    probes = tmp_path / "prompts.jsonl"
    probes.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in split.probes[:20]))
    result = runner.invoke(app, ["sweep", "--model", str(directory), "--probes", str(probes),
                                 "--no-vocab", "--no-unicode", "--trigger", "film",
                                 "--trigger", "BadMagic", "--max-new-tokens", "8",
                                 "--null-words", "5", "--out", str(tmp_path)])
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert report["kind"] == "generator" and report["anomalous"] == ["BadMagic"]
    assert [r["candidate"] for r in report["ranked"]] == ["BadMagic", "film"]
    assert len(report["null_words"]) == 5
    assert "causal LM" in result.output and "ANOMALOUS" in result.output
