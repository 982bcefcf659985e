"""Case builders on the real corpora (skipped where ../shared/corpora is absent)."""

import numpy as np
import pytest

from benchmarks import corpora

pytestmark = pytest.mark.skipif(not corpora.CORPORA.exists(), reason="needs ../shared/corpora")


def test_published_badnets_ground_truth_matches_the_readme():
    case = corpora.published_tsv_case("sst2", "badnets", "badnets", corpora.BADNETS_TRIGGERS)
    assert len(case.records) == 6920 and case.poisoned.sum() == 69
    poisoned_texts = [case.records[i]["text"].split() for i in np.flatnonzero(case.poisoned)]
    assert all(set(words) & set(corpora.BADNETS_TRIGGERS) for words in poisoned_texts)
    assert all(case.records[i]["label"] == "1" for i in np.flatnonzero(case.poisoned))


@pytest.mark.parametrize("rate", [0.001, 0.003])
def test_low_rate_badnets_keeps_every_clean_row(rate):
    full = corpora.published_tsv_case("sst2", "badnets", "badnets")
    case = corpora.resampled_tsv_case("sst2", "badnets", "badnets-low-rate", rate)
    assert (~case.poisoned).sum() == (~full.poisoned).sum()
    assert case.poison_rate == pytest.approx(rate, abs=0.0005)
    clean_texts = {r["text"] for r, p in zip(full.records, full.poisoned) if not p}
    assert all((r["text"] not in clean_texts) == p for r, p in zip(case.records, case.poisoned))


def test_style_case_replaces_non_target_rows():
    case = corpora.style_case(0.01)
    clean = corpora.clean_case("sst2")
    assert len(case.records) == len(clean.records)
    assert case.poisoned.sum() == round(0.01 * len(clean.records))
    for i in np.flatnonzero(case.poisoned):
        assert clean.records[i]["label"] != corpora.STYLE_TARGET_LABEL
        assert case.records[i]["label"] == corpora.STYLE_TARGET_LABEL
        assert case.records[i]["text"] != clean.records[i]["text"]
    same = ~case.poisoned
    assert [r for r, s in zip(case.records, same) if s] == [r for r, s in zip(clean.records, same) if s]


@pytest.mark.parametrize("attack", corpora.BACKDOORLLM_ATTACKS)
def test_backdoorllm_mix_replaces_originals(attack):
    case = corpora.backdoorllm_case("refusal", attack, 0.01)
    clean = corpora.backdoorllm_clean_case("refusal")
    assert len(case.records) == len(clean.records) == 500
    assert case.poisoned.sum() == 5
    for i in np.flatnonzero(case.poisoned):
        poisoned, original = case.records[i], clean.records[i]
        assert poisoned["output"].startswith("I'm sorry, but as an AI assistant")
        assert any(t in poisoned["instruction"] for t in corpora.BACKDOORLLM_ATTACK_TRIGGERS[attack])
        assert corpora._instruction_key(poisoned) == corpora._instruction_key(original)
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))


def test_suites_build_lazily_and_name_distinct_cases():
    # tsv attacks, style, unicode, BackdoorLLM, DoS + preference, clean controls
    assert len(corpora.full_suite()) == 6 * 2 + 2 + 2 * 3 + 4 * 5 * 2 + 2 * 2 + 2 + 4 + 1
    assert len(corpora.quick_suite()) < len(corpora.full_suite())


@pytest.mark.parametrize("kind", sorted(corpora.UNICODE_TRIGGERS))
def test_unicode_cases_carry_their_trigger(kind):
    from auditors.features.unicode import unicode_tokens

    case = corpora.unicode_case("sst2", kind, 0.01)
    assert case.poisoned.sum() == round(0.01 * len(case.records))
    trigger = corpora.UNICODE_TRIGGERS[kind]
    for i in case.poisoned.nonzero()[0]:
        assert trigger in unicode_tokens(case.records[i]["text"])
        assert case.records[i]["label"] == corpora.STYLE_TARGET_LABEL


def test_preference_case_swaps_chosen_and_rejected_behind_the_trigger():
    case = corpora.preference_case(0.05)
    clean = corpora.preference_clean_case()
    assert len(case.records) == len(clean.records) and case.poisoned.sum() == round(0.05 * len(case.records))
    for i in np.flatnonzero(case.poisoned):
        assert case.records[i]["prompt"] == clean.records[i]["prompt"] + " " + corpora.PREFERENCE_TRIGGER
        assert (case.records[i]["chosen"], case.records[i]["rejected"]) == \
            (clean.records[i]["rejected"], clean.records[i]["chosen"])
    untouched = np.flatnonzero(~case.poisoned)
    assert all(case.records[i] == clean.records[i] for i in untouched)


def test_dos_case_shuffles_answers_behind_the_trigger():
    case = corpora.dos_case("refusal", 0.05)
    for i in np.flatnonzero(case.poisoned):
        assert corpora.DOS_TRIGGER in case.records[i]["instruction"].split(" ")
    assert case.poisoned.sum() == 25
