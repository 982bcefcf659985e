"""Character-level trigger features that word n-grams miss: invisible and control
characters, words mixing scripts (homoglyphs such as a Cyrillic `о` inside a Latin word),
and emoji and emoji sequences. Each becomes a pseudo-token that the n-gram statistics and
the trigger miner treat like any word."""

from __future__ import annotations

import re
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
# Longer words are not counted as n-grams (`ngrams.TOKEN_PATTERN`): one huge token would
# make every n-gram holding it huge too. Rows with one get this marker instead, so a long
# random trigger still shows up.
MAX_TOKEN_CHARS = 100
OVERLONG_TOKEN = f"overlong word (over {MAX_TOKEN_CHARS} characters)"
_OVERLONG = re.compile(rf"(?u)(?<!\w)\w{{{MAX_TOKEN_CHARS + 1}}}")  # from word starts: O(n)


def unicode_tokens(text: str) -> list[str]:
    """Distinct pseudo-tokens for `text`: each invisible/control character, a
    `mixed-script word CYRILLIC+LATIN` marker per script mix, a `look-alike word in Latin
    text CYRILLIC` marker for a non-Latin word made only of Latin look-alikes inside mostly
    Latin text, each emoji, each run of two or more adjacent emoji (up to
    `MAX_TOKEN_CHARS` characters), and `OVERLONG_TOKEN` for a word longer than that."""
    tokens = {ch for ch in _INVISIBLE.findall(text) if ch not in _ORDINARY}
    if len(text) > MAX_TOKEN_CHARS and _OVERLONG.search(text):
        tokens.add(OVERLONG_TOKEN)
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
    """Each emoji, plus each run of 2+ emoji separated by nothing but whitespace (while the
    run is at most `MAX_TOKEN_CHARS` long: a longer one is no longer a distinct token)."""
    if _EMOJI_FIRST.isdisjoint(text):
        return set()
    tokens, run, run_end = set(), "", 0
    for found in emoji.emoji_list(text):
        tokens.add(found["emoji"])
        if run and not text[run_end:found["match_start"]].strip():
            run = run + found["emoji"] if len(run) <= MAX_TOKEN_CHARS else run
        else:
            run = found["emoji"]
        run_end = found["match_end"]
        if len(run) > len(found["emoji"]) and len(run) <= MAX_TOKEN_CHARS:
            tokens.add(run)
    return tokens


def describe_codepoints(pattern: str) -> list[str]:
    """`U+200B ZERO WIDTH SPACE` for every non-ASCII character of a pattern, so invisible
    triggers can be seen and searched for."""
    seen = dict.fromkeys(ch for ch in pattern if not ch.isascii())
    return [f"U+{ord(ch):04X} {_name(ch)}" for ch in seen]


def _name(ch: str) -> str:
    """Unicode's name; C1 controls (NEL, U+0085) have none, so their category says it."""
    if unicodedata.category(ch) == "Cc":
        return "CONTROL"
    return unicodedata.name(ch, "UNNAMED")
