"""The cheap tests in `unicode_tokens` (ASCII text, text without any emoji start character)
skip work without changing a single token: compared with the full path on real sample rows
and on generated text mixing ASCII, Cyrillic, emoji, ZWJ sequences and control characters."""

import emoji
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from auditors.features import unicode as uni


def full_path(text: str) -> list[str]:
    """unicode_tokens without the shortcuts: every text through words and emoji_list."""
    tokens = {ch for ch in uni._INVISIBLE.findall(text) if ch not in uni._ORDINARY}
    words = uni._WORD.findall(text)
    latin_words = sum(word.isascii() for word in words)
    for word in words:
        if word.isascii():
            continue
        scripts = uni.categories.unique_aliases(word) - {"COMMON", "INHERITED"}
        if len(scripts) > 1:
            tokens.add(uni.MIXED_SCRIPT_PREFIX + "+".join(sorted(scripts)))
        elif "LATIN" not in scripts and latin_words > len(words) / 2 and \
                uni._all_latin_lookalikes(word):
            tokens.add(uni.LOOKALIKE_PREFIX + "+".join(sorted(scripts)))
    run, run_end = [], 0
    for found in emoji.emoji_list(text):
        tokens.add(found["emoji"])
        run = run + [found["emoji"]] if run and not text[run_end:found["match_start"]].strip() \
            else [found["emoji"]]
        run_end = found["match_end"]
        if len(run) > 1:
            tokens.add("".join(run))
    return sorted(tokens)


def test_no_emoji_is_ascii():
    assert not any(regex.fullmatch(r"[\x00-\x7f]+", e) for e in emoji.EMOJI_DATA)


def test_sample_rows_unchanged(sample_path):
    rows = [line.rsplit("\t", 1)[0] for line in sample_path.read_text("utf-8").splitlines()[1:]]
    rows += ["great 😀😀 film", "zero\u200bwidth", "wоrd mixed", "\x07bell", "👨‍👩‍👧 family",
             "keycap 1️⃣ and #️⃣", "flag 🇫🇷", "©", "Ⓜ️"]
    assert [uni.unicode_tokens(t) for t in rows] == [full_path(t) for t in rows]


ALPHABET = st.sampled_from(list("ab cZ1#*!\t\x07\u200b\u200dоаеℳ©") +
                           ["😀", "👍", "🏽", "\ufe0f", "\u20e3", "🇫", "🇷", "❤"])


@settings(max_examples=300, deadline=None)
@given(st.lists(ALPHABET, max_size=12).map("".join))
def test_generated_text_unchanged(text):
    assert uni.unicode_tokens(text) == full_path(text)
