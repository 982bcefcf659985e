"""Character-level trigger features that word n-grams miss: invisible and control
characters, words mixing scripts (homoglyphs such as a Cyrillic `о` inside a Latin word),
and emoji and emoji sequences. Each becomes a pseudo-token that the n-gram statistics and
the trigger miner treat like any word."""

from __future__ import annotations

import unicodedata

import emoji
import regex
from confusable_homoglyphs import categories, confusables

# Format (Cf: zero-width space/joiner, bidi controls), control (Cc), private-use (Co) and
# unassigned (Cn) characters; ordinary whitespace controls are not suspicious.
_INVISIBLE = regex.compile(r"[\p{Cf}\p{Cc}\p{Co}\p{Cn}]")
_ORDINARY = {"\t", "\n", "\r"}
_WORD = regex.compile(r"\w+")
MIXED_SCRIPT_PREFIX = "mixed-script word "
LOOKALIKE_PREFIX = "look-alike word in Latin text "


def unicode_tokens(text: str) -> list[str]:
    """Distinct pseudo-tokens for `text`: each invisible/control character, a
    `mixed-script word CYRILLIC+LATIN` marker per script mix, a `look-alike word in Latin
    text CYRILLIC` marker for a non-Latin word made only of Latin look-alikes inside mostly
    Latin text, each emoji, and each run of two or more adjacent emoji."""
    tokens = {ch for ch in _INVISIBLE.findall(text) if ch not in _ORDINARY}
    if text.isascii():  # no mixed scripts, no look-alikes, no emoji: only control characters
        return sorted(tokens)
    words = _WORD.findall(text)
    latin_words = sum(word.isascii() for word in words)
    for word in words:
        if word.isascii():
            continue
        scripts = categories.unique_aliases(word) - {"COMMON", "INHERITED"}
        if len(scripts) > 1:
            tokens.add(MIXED_SCRIPT_PREFIX + "+".join(sorted(scripts)))
        elif "LATIN" not in scripts and latin_words > len(words) / 2 and _all_latin_lookalikes(word):
            tokens.add(LOOKALIKE_PREFIX + "+".join(sorted(scripts)))
    tokens.update(_emoji_tokens(text))
    return sorted(tokens)


def _all_latin_lookalikes(word: str) -> bool:
    """Every letter of a non-Latin word can pass for a Latin letter (Cyrillic `а`)."""
    found = confusables.is_confusable(word, greedy=True, preferred_aliases=["latin"]) or []
    return len({item["character"] for item in found}) == len(set(word))


# Every emoji sequence the `emoji` library knows starts with one of these characters (none is
# ASCII), so a text holding none of them has no emoji and `emoji_list` (the costliest step
# of the n-gram statistics) is skipped.
_EMOJI_FIRST = frozenset(sequence[0] for sequence in emoji.EMOJI_DATA)


def _emoji_tokens(text: str) -> set[str]:
    """Each emoji, plus each run of 2+ emoji separated by nothing but whitespace."""
    if _EMOJI_FIRST.isdisjoint(text):
        return set()
    tokens, run, run_end = set(), [], 0
    for found in emoji.emoji_list(text):
        tokens.add(found["emoji"])
        if run and not text[run_end:found["match_start"]].strip():
            run.append(found["emoji"])
        else:
            run = [found["emoji"]]
        run_end = found["match_end"]
        if len(run) > 1:
            tokens.add("".join(run))
    return tokens


def describe_codepoints(pattern: str) -> list[str]:
    """`U+200B ZERO WIDTH SPACE` for every non-ASCII character of a pattern, so invisible
    triggers can be seen and searched for."""
    seen = dict.fromkeys(ch for ch in pattern if not ch.isascii())
    return [f"U+{ord(ch):04X} {unicodedata.name(ch, 'UNNAMED')}" for ch in seen]
