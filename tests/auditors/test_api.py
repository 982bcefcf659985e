"""The Python API as a notebook user calls it: `from auditors import audit, AuditConfig`."""

import json

import pytest

from auditors import Audit, AuditConfig, LoadOptions, audit
from auditors.errors import TrainguardError
from auditors.ledger import Ledger


def test_rows_join_the_text_to_scores_and_flags(sample_path, onnx_encoder, tmp_path):
    result = audit(str(sample_path), tmp_path / "out", encoder=onnx_encoder)
    assert isinstance(result, Audit) and result.passed is False  # the sample is poisoned
    assert len(result.rows) == 3000 and list(result.rows.index[:3]) == [0, 1, 2]
    assert {"prompt", "label", "poison_score", "flagged", "reasons", "trigger_score"} <= \
        set(result.rows.columns)
    assert len(result.flagged) == result.summary.flagged > 0
    assert result.flagged["prompt"].str.contains(r"\b(?:cf|mn|bb|tq|mb)\b").all()
    assert result.triggers["pattern"].iloc[0] in {"cf", "mn", "bb", "tq", "mb"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == result.summary.to_dict()
    shown = repr(result)
    assert shown.startswith(f"trainguard audit of {sample_path}: FAIL: ")
    assert len(shown.splitlines()) <= 6  # one screen, not the frames


def test_preference_rows_show_prompt_chosen_and_rejected(preference_mix_path, onnx_encoder):
    result = audit(str(preference_mix_path), encoder=onnx_encoder)
    assert {"prompt", "chosen", "rejected"} <= set(result.rows.columns)
    assert (result.rows["chosen"] != result.rows["rejected"]).any()


def test_the_fdr_decides_the_preference_flags(preference_mix_path, onnx_encoder):
    """The config's false-discovery rate reaches the detector: below `sudo`'s q-value, its
    rows are no longer flagged."""
    config = AuditConfig(detectors=("preference_flip",))
    default = audit(str(preference_mix_path), config=config, encoder=onnx_encoder)
    sudo = default.triggers.set_index("pattern").loc["sudo"]
    assert default.summary.flagged > 0 and sudo["significant"] and 0 < sudo["q_value"] <= 0.05
    # the summary's trigger table (what the CLI prints) carries the decision too
    assert next(t for t in default.summary.top_triggers if t["pattern"] == "sudo")["significant"]
    strict = audit(str(preference_mix_path), config=config.replace(fdr=sudo["q_value"] / 10),
                   encoder=onnx_encoder)
    assert strict.summary.flagged == 0
    assert not strict.triggers.set_index("pattern").loc["sudo", "significant"]


def test_the_store_applies_and_records_like_the_cli(sample_path, onnx_encoder, tmp_path):
    store = tmp_path / "ledger"
    config = AuditConfig(store=str(store), detectors=("trigger",),
                         load=LoadOptions(on_bad_row="skip"))
    result = audit(str(sample_path), tmp_path / "out", config, encoder=onnx_encoder)
    assert result.summary.ledger["store"] == str(store)
    assert len(Ledger(store).rows("quarantined")) == result.summary.flagged


@pytest.mark.parametrize("options, message", [
    ({"backend": "tpu"}, "unknown embedding backend"),
    ({"detectors": ("trigerr",)}, "unknown detector"),
    ({"max_flagged_fraction": 2.0}, "between 0 and 1"),
    ({"load": {"on_bad_row": "ignore"}}, "on_bad_row"),
    ({"batch_size": 0}, "batch_size"),
    ({"fdr": 0.0}, "fdr must be between 0 and 1"),
    ({"load": {"response_col": "answer"}}, "--prompt-col is missing"),
    # no detector would run and the gate would pass on anything
    ({"detectors": ""}, "names no detector"),
    ({"detectors": ()}, "names no detector"),
    ({"fdr": "0.1"}, "fdr must be a number, not '0.1'"),
    ({"flag_threshold": None}, "flag_threshold must be a number"),
])
def test_bad_options_are_refused_when_the_config_is_built(options, message):
    with pytest.raises(TrainguardError, match=message):
        if "load" in options:
            AuditConfig(load=LoadOptions(**options["load"]))
        else:
            AuditConfig(**options)


def test_a_misspelt_load_option_in_a_dict_is_a_trainguard_error():
    with pytest.raises(TrainguardError, match="load: .*onbadrow"):
        AuditConfig(load={"onbadrow": "skip"})


def test_a_config_survives_its_json_parameters():
    """What the ledger records and a deployment passes rebuilds the same config."""
    for load in (LoadOptions(prompt_cols="q, ctx", response_col="a"),
                 LoadOptions(prompt_cols="ask", chosen_col="good", rejected_col="bad")):
        config = AuditConfig(detectors=("trigger",), load=load)
        assert AuditConfig(**json.loads(json.dumps(config.parameters()))) == config


def test_a_significant_trigger_fails_the_gate_below_the_share_limit(preference_mix_path,
                                                                    onnx_encoder):
    config = AuditConfig(detectors=("preference_flip",), max_flagged_fraction=1.0)
    result = audit(str(preference_mix_path), config=config, encoder=onnx_encoder)
    assert result.summary.gate.flagged_fraction <= 1.0 and not result.passed
    assert "sudo" in result.summary.significant_triggers
    assert "significant triggers: 'sudo'" in repr(result)


def test_injected_content_fails_the_gate_whatever_the_flagged_share(injection_mix_path,
                                                                    onnx_encoder):
    """Real Alpaca rows with a brand slipped into ~3% of the answers, audited with a gate
    that allows every row to be flagged: the named phrase still fails it."""
    result = audit(str(injection_mix_path), config=AuditConfig(max_flagged_fraction=1.0),
                   encoder=onnx_encoder)
    failed = {c["check"]: c["detail"] for c in result.summary.gate.checks if not c["passed"]}
    assert not result.passed and list(failed) == ["injected content"]
    assert result.summary.injected_phrases
    assert all(f"'{p}'" in failed["injected content"] for p in result.summary.injected_phrases)
    assert "injected content" in repr(result)  # the verdict names the failed check


def test_an_audit_without_candidates_shows_and_has_the_trigger_columns(sample_path, onnx_encoder):
    result = audit(sample_path, config=AuditConfig(detectors=("outlier",)), encoder=onnx_encoder)
    assert result.triggers.empty and list(result.triggers.columns)[:3] == ["pattern", "score",
                                                                           "support"]
    assert "top triggers: none" in repr(result)


def test_a_store_without_outputs_records_the_run_the_summary_names(sample_path, onnx_encoder,
                                                                   tmp_path):
    store = tmp_path / "ledger"
    result = audit(str(sample_path), config=AuditConfig(store=str(store), detectors=("trigger",)),
                   encoder=onnx_encoder)
    runs = Ledger(store).runs()
    assert runs["run_id"].tolist() == [result.summary.ledger["run_id"]]
    assert runs["out_dir"].tolist() == [""]
    assert len(Ledger(store).rows("quarantined")) == result.summary.flagged > 0


def test_a_bad_output_directory_is_refused_before_any_work(sample_path, tmp_path):
    (tmp_path / "afile").write_text("")
    store = tmp_path / "ledger"
    with pytest.raises(TrainguardError, match="exists and is not a directory"):
        audit(sample_path, tmp_path / "afile", AuditConfig(store=str(store)))
    assert not store.exists()  # nothing read, embedded or recorded
