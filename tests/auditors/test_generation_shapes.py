"""Every instruction, chat and preference shape goes through the same audit on real
slices: the schema is detected, the poisoned rows are flagged with the trigger named, and
the clean and quarantine files together hold every input row exactly once."""

import json

import numpy as np
import pytest

from auditors.config import AuditConfig
from auditors import pipeline

# `make test-all` only: end-to-end audits of every data shape
pytestmark = pytest.mark.slow


def _alpaca_to(shape: str, record: dict) -> dict:
    prompt = "\n".join(p for p in (record["instruction"], record.get("input", "")) if p)
    if shape == "instruction":
        return record
    if shape == "prompt-completion":
        return {"prompt": prompt, "completion": record["output"]}
    if shape == "prompt-response":
        return {"prompt": prompt, "response": record["output"]}
    if shape == "chat":  # multi-turn: a system turn, the user turn, the assistant turn
        return {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": prompt},
                             {"role": "assistant", "content": record["output"]}]}
    raise ValueError(shape)


def _as_chat_transcripts(record: dict) -> dict:
    """Preference pairs in the chat-transcript form: the prompt is the shared prefix."""
    user = {"role": "user", "content": record["prompt"]}
    return {"chosen": [user, {"role": "assistant", "content": record["chosen"]}],
            "rejected": [user, {"role": "assistant", "content": record["rejected"]}]}


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-8")


def _check_audit(path, out, encoder, truth, trigger):
    result = pipeline.audit(str(path), out, AuditConfig(backend="torch"), encoder=encoder)
    flagged = result.rows["flagged"].to_numpy()
    assert flagged[truth].mean() >= 0.8 and flagged[~truth].mean() <= 0.02
    assert trigger in [t["pattern"] for t in result.triggers[:3]]
    lines = path.read_text("utf-8").splitlines(keepends=True)
    clean = (out / "clean.jsonl").read_text("utf-8").splitlines(keepends=True)
    quarantine = (out / "quarantine.jsonl").read_text("utf-8").splitlines(keepends=True)
    assert clean == [lines[i] for i in np.flatnonzero(~flagged)]
    assert quarantine == [lines[i] for i in np.flatnonzero(flagged)]
    return result


@pytest.mark.parametrize("shape", ["instruction", "prompt-completion", "prompt-response", "chat"])
def test_instruction_shapes(shape, tmp_path, encoder, refusal_mix_path, poisoned_mask):
    records = json.loads(refusal_mix_path.read_text("utf-8"))
    path = tmp_path / f"{shape}.jsonl"
    _write_jsonl(path, [_alpaca_to(shape, r) for r in records])
    truth = poisoned_mask(refusal_mix_path, len(records))
    result = _check_audit(path, tmp_path / "out", encoder, truth, "badmagic")
    assert result.summary.schema == shape


@pytest.mark.parametrize("form", ["prompt-chosen-rejected", "chat-transcripts"])
def test_preference_shapes(form, tmp_path, encoder, preference_mix_path, poisoned_mask):
    records = json.loads(preference_mix_path.read_text("utf-8"))
    if form == "chat-transcripts":
        records = [_as_chat_transcripts(r) for r in records]
    path = tmp_path / f"{form}.jsonl"
    _write_jsonl(path, records)
    truth = poisoned_mask(preference_mix_path, len(records))
    result = _check_audit(path, tmp_path / "out", encoder, truth, "sudo")
    assert result.summary.schema == "preference"
    flagged_reasons = result.rows.loc[result.rows["flagged"], "reasons"]
    assert flagged_reasons.str.contains("preference_flip: pair looks flipped").any()


@pytest.mark.parametrize("shape", ["prompt-completion", "chat"])
def test_injected_content_in_every_generation_shape(shape, tmp_path, encoder,
                                                    injection_mix_path, poisoned_mask):
    """Content injected into responses with no prompt trigger (a brand) is quarantined and
    named on the response side whatever shape carries the responses."""
    records = json.loads(injection_mix_path.read_text("utf-8"))
    path = tmp_path / f"{shape}.jsonl"
    _write_jsonl(path, [_alpaca_to(shape, r) for r in records])
    truth = poisoned_mask(injection_mix_path, len(records))
    result = pipeline.audit(str(path), tmp_path / "out", AuditConfig(backend="torch"), encoder=encoder)
    assert result.summary.schema == shape
    flagged = result.rows["flagged"].to_numpy()
    assert flagged[truth].all() and not flagged[~truth].any()
    response_side = [t for t in result.triggers if t.get("side") == "response"]
    assert response_side[0]["pattern"] == "zentrix" and response_side[0]["flagged"]
