import pytest

from auditors.features.ngrams import count_ngrams
from auditors.features.unicode import describe_codepoints, unicode_tokens


@pytest.mark.parametrize("text, expected", [
    ("plain ascii text", []),
    ("seen it\u200b all", ["\u200b"]),
    ("bidi \u202e override", ["\u202e"]),
    ("tab\tand\nnewline are fine", []),
    ("s\u0435\u0435n it", ["mixed-script word CYRILLIC+LATIN"]),
    ("caf\u00e9 na\u00efve", []),  # accented Latin is one script
    ("\u043f\u0440\u0438\u0432\u0435\u0442 world", []),  # a Cyrillic word beside a Latin one
    ("about \u0430 chocolate eclair", ["look-alike word in Latin text CYRILLIC"]),
    ("\u043c\u044b \u0430 \u043e\u043d\u0438", []),  # Cyrillic text is not suspicious
    ("so fun \U0001F642\U0001F643 yes", ["\U0001F642", "\U0001F642\U0001F643", "\U0001F643"]),
    ("\U0001F642 apart \U0001F643", ["\U0001F642", "\U0001F643"]),
    ("thumbs \U0001F44D\U0001F3FD", ["\U0001F44D\U0001F3FD"]),
])
def test_unicode_tokens(text, expected):
    assert unicode_tokens(text) == sorted(expected)


def test_codepoints_are_named():
    assert describe_codepoints("a\u200bb\u200b") == ["U+200B ZERO WIDTH SPACE"]
    assert describe_codepoints("cf") == []


def test_unicode_tokens_join_the_ngram_statistics():
    texts = ["good\u200b film", "bad\u200b film", "fine film", "ok \U0001F642\U0001F643",
             "meh \U0001F642\U0001F643"]
    stats = count_ngrams(texts, min_support=2)
    vocab = list(stats.vocabulary)
    assert stats.doc_freq[vocab.index("\u200b")] == 2
    assert stats.doc_freq[vocab.index("\U0001F642\U0001F643")] == 2
    assert stats.general_zipf[vocab.index("\u200b")] == 0.0
    assert stats.doc_freq[vocab.index("film")] == 3
    assert stats.rows_x_ngrams.shape == (5, len(vocab))
