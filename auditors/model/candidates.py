"""Candidate triggers for the behavioural sweep, each with where it came from: the data
audit's triggers.json, a user list, Unicode tricks (invisible characters, homoglyphs,
emoji) and the tokenizer's vocabulary."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from auditors.errors import AuditInputError

# Position pseudo-tokens of the data audit (`^current year`, `$cf`) and its Unicode markers.
_AUDIT_START, _AUDIT_END = "^", "$"
_AUDIT_MARKERS = ("mixed-script word ", "look-alike word in Latin text ")

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\u2066"]
# Latin words spelled with Cyrillic or Greek look-alike letters.
CONFUSABLES = ["th\u0435", "\u0430", "m\u043ev\u0456e", "g\u043e\u043ed", "\u0391I"]
EMOJI = ["\U0001F600", "\U0001F642", "\U0001F44D", "\U0001F525", "\u2764\ufe0f",
         "\U0001F602", "\U0001F916", "\u2728", "\U0001F64F", "\U0001F480"]


@dataclass(frozen=True)
class Candidate:
    text: str
    source: str  # audit, user, unicode, vocab
    positions: tuple[str, ...] = ("start", "end", "random")


def audit_candidates(path: str | Path, *, limit: int = 50) -> list[Candidate]:
    """Patterns from `trainguard audit`'s triggers.json, a JSON list of strings, or the
    candidates of `trainguard sweep`'s sweep.json, best first. Position markers choose where to insert; Unicode markers, which name a
    kind of character rather than a string, are left to the Unicode candidates."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AuditInputError(f"cannot read candidates ({exc})", path=path) from None
    if isinstance(entries, dict) and isinstance(entries.get("ranked"), list):  # sweep.json
        entries = [{"pattern": row.get("candidate")} for row in entries["ranked"]
                   if isinstance(row, dict)]
    if not isinstance(entries, list):
        raise AuditInputError("expected a JSON list (triggers.json) or a sweep.json",
                              path=path)
    found = []
    for k, entry in enumerate(entries, start=1):
        pattern = entry.get("pattern") if isinstance(entry, dict) else entry
        if not isinstance(pattern, str):
            raise AuditInputError("no string 'pattern'", path=path, row=k, field="pattern")
        candidate = _from_audit_pattern(pattern)
        if candidate is not None:
            found.append(candidate)
    return _unique(found)[:limit]


def _from_audit_pattern(pattern: str) -> Candidate | None:
    if not pattern.strip() or pattern.startswith(_AUDIT_MARKERS):
        return None
    if pattern.startswith(_AUDIT_START) and len(pattern) > 1:
        return Candidate(pattern[1:], "audit", ("start",))
    if pattern.startswith(_AUDIT_END) and len(pattern) > 1:
        return Candidate(pattern[1:], "audit", ("end",))
    return Candidate(pattern, "audit")


def user_candidates(texts: list[str]) -> list[Candidate]:
    return [Candidate(text, "user") for text in texts if text.strip()]


def unicode_candidates() -> list[Candidate]:
    return [Candidate(text, "unicode") for text in INVISIBLE + CONFUSABLES + EMOJI]


def vocabulary_candidates(tokenizer, *, limit: int = 10_000) -> list[Candidate]:
    """Whole-word tokens of the tokenizer's vocabulary (no special tokens, no word pieces,
    nothing that re-tokenises into several pieces), rarest in general English first, at
    most `limit`: a trigger is a token the model knows but people rarely write."""
    from wordfreq import zipf_frequency

    special = set(tokenizer.all_special_tokens)
    words = set()
    for token in tokenizer.get_vocab():
        if token in special or token.startswith("##"):
            continue
        word = tokenizer.convert_tokens_to_string([token]).strip()
        if len(word) < 2 or not any(ch.isalnum() for ch in word):
            continue
        if len(tokenizer.tokenize(word)) == 1:
            words.add(word)
    ranked = sorted(words, key=lambda w: (zipf_frequency(w, "en"), w))
    return [Candidate(word, "vocab") for word in ranked[:limit]]


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for candidate in candidates:
        if candidate.text not in seen:
            seen.add(candidate.text)
            out.append(candidate)
    return out


def merge(*groups: list[Candidate]) -> list[Candidate]:
    """All groups, the first occurrence of a text kept (audit and user before vocab)."""
    return _unique([c for group in groups for c in group])
