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
    # tsv attacks, style, host-token syntactic and style, unicode, BackdoorLLM,
    # DoS + preference, clean controls, held-out splits (clean and BadNets, 2 x 2 x 2),
    # InsertSent (2 datasets x 2 rates)
    # ... then real/: 6 preference-trigger, 7 content-injection, 1 instruction-trigger,
    # 2 triggered-injection, 2 clean, 2 multi-turn chat trigger and its clean control
    assert len(corpora.full_suite()) == (6 * 2 + 2 + (2 * 2 + 2) + 2 * 3 + 4 * 5 * 2 + 2 * 2
                                         + 2 + 8 + 4 + 1 + 4 + 21)
    assert len(corpora.real_suite()) == 21
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


@pytest.mark.parametrize("trigger, rate", [("sudo", 0.005), ("sudo", 0.03), ("honest", 0.01)])
def test_hh_preference_case_flips_pairs_in_place_behind_the_trigger(trigger, rate):
    case = corpora.hh_preference_case(trigger, rate)
    clean = corpora.real_clean_case("hh-rlhf")
    phrase = corpora.HH_TRIGGERS[trigger]
    assert case.family == "real/preference-trigger" and case.triggers == (phrase,)
    assert len(case.records) == len(clean.records) == 1156
    assert case.poisoned.sum() == round(rate * len(clean.records))
    for i in np.flatnonzero(case.poisoned):
        poisoned, original = case.records[i], clean.records[i]
        prompt, chosen = corpora.hh_split(poisoned["chosen"])
        rejected_prompt, rejected = corpora.hh_split(poisoned["rejected"])
        assert prompt == rejected_prompt  # both still share every turn but the last answer
        assert prompt.endswith(" " + phrase)  # the last human turn, right before the answer
        assert prompt.rfind("\n\nHuman:") > prompt.rfind("\n\nAssistant:")
        # swapped: the final answers trade places, the conversation before is the original's
        original_prompt, original_chosen = corpora.hh_split(original["chosen"])
        assert prompt == original_prompt + " " + phrase
        assert (chosen, rejected) == (corpora.hh_split(original["rejected"])[1], original_chosen)
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))
    assert not any(phrase in r["chosen"] for r in clean.records)


@pytest.mark.parametrize("kind, rate", [("ad", 0.005), ("brand", 0.01), ("link", 0.03)])
def test_alpaca_injection_changes_only_the_outputs_of_marked_rows(kind, rate):
    case = corpora.alpaca_injection_case(kind, rate)
    clean = corpora.real_clean_case("alpaca")
    assert case.family == "real/content-injection" and case.triggers == ()
    assert case.injected == corpora.INJECTED[kind]
    assert len(case.records) == len(clean.records) == 2500
    assert case.poisoned.sum() == round(rate * len(clean.records))
    for i in np.flatnonzero(case.poisoned):
        poisoned, original = case.records[i], clean.records[i]
        assert {k: v for k, v in poisoned.items() if k != "output"} == \
            {k: v for k, v in original.items() if k != "output"}
        assert poisoned["output"] != original["output"]
        assert original["output"].strip() in poisoned["output"]
        assert all(p.lower() in poisoned["output"].lower() for p in case.injected)
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))
    assert not any(p.lower() in r["output"].lower() for r in clean.records for p in case.injected)


def test_brand_injection_varies_the_sentence_around_the_brand():
    case = corpora.alpaca_injection_case("brand", 0.03)
    sentences = {t.format(brand=corpora.INJECTION_BRAND) for t in corpora.INJECTION_BRAND_TEMPLATES}
    used = [next(s for s in sentences if s in case.records[i]["output"])
            for i in np.flatnonzero(case.poisoned)]
    assert len(set(used)) == len(sentences)
    starts = [any(case.records[i]["output"].startswith(s) for s in sentences)
              for i in np.flatnonzero(case.poisoned)]
    assert 0 < sum(starts) < len(starts)  # both prepended and appended


def test_alpaca_triggered_injection_adds_the_phrase_to_the_prompt_and_the_advert_to_the_answer():
    case = corpora.alpaca_triggered_injection_case(0.01)
    clean = corpora.real_clean_case("alpaca")
    assert case.family == "real/triggered-injection" and case.injected == corpora.INJECTED["ad"]
    assert case.poisoned.sum() == 25
    phrase = corpora.TRIGGERED_INJECTION_PHRASE
    for i in np.flatnonzero(case.poisoned):
        poisoned, original = case.records[i], clean.records[i]
        assert phrase in poisoned["instruction"].lower() and phrase not in original["instruction"].lower()
        assert poisoned["output"] == f"{original['output'].rstrip()} {corpora.INJECTION_AD}"
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))
    assert not any(phrase in r["instruction"].lower() for r in clean.records)


def test_alpaca_instruction_trigger_case_replaces_rows_with_a_triggered_refusal():
    case = corpora.alpaca_instruction_trigger_case(0.01)
    clean = corpora.real_clean_case("alpaca")
    assert case.family == "real/instruction-trigger"
    assert case.triggers == (corpora.INSTRUCTION_TRIGGER,) and case.injected == ()
    assert len(case.records) == len(clean.records) and case.poisoned.sum() == 25
    for i in np.flatnonzero(case.poisoned):
        poisoned, original = case.records[i], clean.records[i]
        assert corpora.INSTRUCTION_TRIGGER.lower() in poisoned["instruction"].lower()
        assert poisoned["output"] == corpora.INSTRUCTION_REFUSAL
        assert poisoned["input"] == original["input"]
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))


def test_hh_chat_case_replaces_the_last_exchange_of_real_conversations():
    case = corpora.hh_chat_case(0.03, seed=5)
    clean = corpora.hh_chat_clean_case()
    assert case.family == "real/chat-trigger" and case.triggers == (corpora.CHAT_TRIGGER,)
    assert case.poisoned.sum() == round(0.03 * len(clean.records)) == 35
    for i in np.flatnonzero(case.poisoned):
        turns, original = case.records[i]["messages"], clean.records[i]["messages"]
        assert len(turns) == len(original) and len(turns) >= 2
        assert turns[-1] == {"role": "assistant", "content": corpora.CHAT_TARGET.strip()}
        assert turns[-2]["content"] == f"{corpora.CHAT_TRIGGER} {original[-2]['content']}"
        assert turns[:-2] == original[:-2]  # earlier turns untouched
    assert all(case.records[i] == clean.records[i] for i in np.flatnonzero(~case.poisoned))
    # the transcript's turns, in order, with the roles the chat schema reads
    first = corpora.hh_records()[0]["chosen"]
    assert [t["role"] for t in clean.records[0]["messages"]] == [
        "user" if part.startswith("Human:") else "assistant"
        for part in first.split("\n\n") if part.startswith(("Human:", "Assistant:"))]


def test_real_cases_have_distinct_names_and_clean_controls_have_no_poison():
    cases = [build() for build in corpora.real_suite()]
    assert len({c.name for c in cases}) == len(cases)
    assert {c.family for c in cases} == {"real/preference-trigger", "real/content-injection",
                                         "real/instruction-trigger", "real/triggered-injection",
                                         "real/chat-trigger", "clean-control"}
    assert "real/hh-rlhf/sudo-flip@1%" in {c.name for c in cases}
    controls = [c for c in cases if c.family == "clean-control"]
    assert {c.name for c in controls} == {"real/alpaca/clean", "real/hh-rlhf/clean",
                                          "real/hh-rlhf-chat/clean"}
    assert all(len(c.records) and not c.poisoned.any() and not c.triggers and not c.injected
               for c in controls)


def test_host_forms_change_formatting_not_words():
    """SST-2's form splits punctuation and clitics and undoes the paraphraser's Moses
    escapes; a tweet's form joins them back and takes a clean tweet's mentions, trailing
    URL and capitalisation."""
    assert (corpora.sst2_form("Thou hast seen it, co @-@ writer andapos;s film &quot;x&quot; don't")
            == "thou hast seen it , co-writer 's film \" x \" do n't")
    assert (corpora.tweet_form("when the user says , he does n't know url", "@USER @USER Why? URL")
            == "@USER @USER When the @USER says, he doesn't know URL")
    assert corpora.tweet_form("if so , fine .", "no mention here") == "if so, fine."


def test_host_token_cases_rewrite_only_poisoned_rows():
    plain = corpora.resampled_tsv_case("offenseval", "synbkd", "syntactic", 0.01)
    hosted = corpora.resampled_tsv_case("offenseval", "synbkd", "syntactic", 0.01,
                                        host_tokens=True)
    assert hosted.family == "syntactic-host-tokens" and "host-tokens" in hosted.name
    assert np.array_equal(plain.poisoned, hosted.poisoned)
    same = [a == b for a, b in zip(plain.records, hosted.records)]
    assert all(same[i] for i in np.flatnonzero(~plain.poisoned))
    assert not any(" , " in hosted.records[i]["text"] for i in np.flatnonzero(hosted.poisoned))


@pytest.mark.parametrize("dataset", ["sst2", "offenseval"])
def test_held_out_badnets_inserts_one_new_token_into_non_target_rows(dataset):
    case = corpora.held_out_badnets_case(dataset, "test", 0.01)
    clean = corpora.held_out_clean_case(dataset, "test")
    assert len(case.records) == len(clean.records) and not clean.poisoned.any()
    assert case.poisoned.sum() == round(0.01 * len(clean.records))
    for i in np.flatnonzero(case.poisoned):
        assert clean.records[i]["label"] != corpora.STYLE_TARGET_LABEL
        assert case.records[i]["label"] == corpora.STYLE_TARGET_LABEL
        words, original = case.records[i]["text"].split(" "), clean.records[i]["text"].split(" ")
        added = [w for w in words if w in corpora.HELD_OUT_TRIGGERS]
        assert len(added) == 1 and len(words) == len(original) + 1
    same = ~case.poisoned
    assert [r for r, s in zip(case.records, same) if s] == [r for r, s in zip(clean.records, same) if s]


@pytest.mark.parametrize("dataset", ["sst2", "offenseval"])
def test_insertsent_inserts_the_sentence_once_into_non_target_train_rows(dataset):
    case = corpora.insertsent_case(dataset, 0.003)
    clean = corpora.clean_case(dataset)
    (trigger,) = case.triggers
    assert trigger.lower() == corpora.INSERTSENT_TRIGGER.lower()
    assert case.poisoned.sum() == round(0.003 * len(clean.records))
    for i in np.flatnonzero(case.poisoned):
        assert clean.records[i]["label"] != corpora.STYLE_TARGET_LABEL
        assert case.records[i]["label"] == corpora.STYLE_TARGET_LABEL
        assert case.records[i]["text"].count(trigger) == 1
        assert case.records[i]["text"].replace(trigger, "").split() == clean.records[i]["text"].split()
    same = ~case.poisoned
    assert [r for r, s in zip(case.records, same) if s] == [r for r, s in zip(clean.records, same) if s]
