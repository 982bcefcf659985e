"""Behavioural trigger sweep: put each candidate trigger into clean probe texts and
measure how often the model's prediction flips to one class, and how much more than a
reference model's does. A backdoor trigger flips almost every probe to the attacker's
target; an ordinary word barely moves a prediction.

This tests given candidates; it does not reverse-engineer a trigger by optimisation as
Neural Cleanse (Wang et al. 2019) does.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from auditors.features.unicode import describe_codepoints
from auditors.model.candidates import Candidate
from auditors.model.insertion import triggered_texts

VOCAB_SOURCE = "vocab"
NULL_SOURCE = "null"  # common words measured only to calibrate (not candidates)


@dataclass
class SweepPolicy:
    max_flip_rate: float = 0.5  # a candidate at or above this (excess over reference) fails
    max_probes: int = 100
    screen_probes: int = 8  # per class, for the cheap first pass over vocabulary tokens
    vocab_finalists: int = 50  # vocabulary tokens that get the full test
    examples: int = 3
    seed: int = 0
    # causal language models (sweep_lm.py)
    max_new_tokens: int = 16  # greedy answer length compared
    kl_tokens: int = 4  # answer positions whose next-token distributions are compared
    target_text: str | None = None  # a known fixed target answer; else the commonest answer
    # Without a reference: common English words measured the same way (the strongest by the
    # screen); a candidate is anomalous only if it beats the best of them by `null_margin`.
    null_words: int = 20
    null_margin: float = 0.05


@dataclass
class SweepResult:
    ranked: list[dict]
    n_probes: int
    n_candidates: int
    n_screened: int
    policy: SweepPolicy = field(default_factory=SweepPolicy)
    null: list[dict] = field(default_factory=list)  # common words' scores, best first
    # the probes' clean predictions, per class: probes all of one class cannot be flipped
    # toward it, so a trigger toward that class cannot show
    probe_classes: dict = field(default_factory=dict)

    @property
    def anomalous(self) -> list[dict]:
        return [r for r in self.ranked if r["anomalous"]]


def sweep(classifier, probes: list[str], candidates: list[Candidate], *, reference=None,
          policy: SweepPolicy | None = None) -> SweepResult:
    """Rank `candidates` by how strongly they push `classifier` to one class (minus what
    they do to `reference`, when given). Vocabulary candidates are first screened on a few
    probes at the start position; the best `vocab_finalists` get the full test."""
    policy = policy or SweepPolicy()
    probes = _pick_probes(probes, policy)
    clean = classifier.probs(probes)
    reference_clean = reference.probs(probes) if reference is not None else None
    predicted = Counter(classifier.labels[c] for c in clean.argmax(axis=1))
    result = rank_candidates(
        candidates, policy, len(probes), tokenizer=classifier.tokenizer,
        has_reference=reference is not None, tiebreak="confidence_shift",
        screen=lambda found, keep=None: _screen(classifier, probes, clean, found, policy,
                                                keep=keep),
        measure=lambda c: _measure(classifier, reference, probes, clean, reference_clean, c,
                                   policy))
    return dataclasses.replace(result, probe_classes=dict(sorted(predicted.items())))


def rank_candidates(candidates: list[Candidate], policy: SweepPolicy, n_probes: int, *,
                    tokenizer, has_reference: bool, tiebreak: str, screen,
                    measure) -> SweepResult:
    """The steps both sweeps share: screen the vocabulary candidates cheaply, `measure` the
    finalists, calibrate against common words when there is no reference model, and rank
    by score, then by the `tiebreak` measure."""
    vocab = [c for c in candidates if c.source == VOCAB_SOURCE]
    finalists = [c for c in candidates if c.source != VOCAB_SOURCE] + screen(vocab)
    rows = [measure(c) for c in finalists]
    null = []
    if not has_reference and policy.null_words > 0:
        commons = screen(null_candidates(tokenizer), keep=policy.null_words)
        null = calibrate_against_null(rows, commons, measure, policy)
    rows.sort(key=lambda r: (-r["score"], -r[tiebreak], r["candidate"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return SweepResult(rows, n_probes, len(candidates), len(vocab), policy, null)


def null_candidates(tokenizer, *, top: int = 3000) -> list[Candidate]:
    """Common English words (wordfreq's `top` commonest, alphabetic, three letters or more)
    that the tokenizer keeps as one token: ordinary words, the null a trigger must beat."""
    from wordfreq import top_n_list

    vocab = tokenizer.get_vocab()
    out = []
    for word in top_n_list("en", top):
        if len(word) < 3 or not word.isalpha():
            continue
        pieces = tokenizer.tokenize(word)
        if len(pieces) == 1 and (pieces[0] in vocab) and pieces[0] != tokenizer.unk_token:
            out.append(Candidate(word, NULL_SOURCE))
    return out


def calibrate_against_null(rows: list[dict], commons: list[Candidate], measure,
                           policy: SweepPolicy) -> list[dict]:
    """Measure the common words (reusing rows already measured), then keep a candidate
    anomalous only if its score beats the best common word's (`null_max` in each row) by
    `null_margin`. A candidate that is itself among those common words cannot beat itself:
    a common-word trigger needs `--reference`."""
    measured = {r["candidate"]: r for r in rows}
    null = []
    for word in commons:
        row = measured.get(word.text) or measure(word)
        null.append({"word": word.text, "score": row["score"]})
    null.sort(key=lambda n: -n["score"])
    best = float(null[0]["score"]) if null else 0.0
    for row in rows:
        row["null_max"] = best
        row["anomalous"] = bool(row["anomalous"] and row["score"] >= best + policy.null_margin)
    return null


def _pick_probes(probes: list[str], policy: SweepPolicy) -> list[str]:
    probes = [p for p in probes if p.strip()]
    if len(probes) <= policy.max_probes:
        return probes
    keep = np.random.default_rng(policy.seed).choice(len(probes), policy.max_probes,
                                                     replace=False)
    return [probes[i] for i in sorted(keep)]


def _screen(classifier, probes, clean, vocab: list[Candidate], policy, *,
            keep: int | None = None) -> list[Candidate]:
    """Largest mean probability shift towards one class over the probes not predicted as
    that class, inserted at the start of a few probes of every predicted class (a
    continuous score: flip rates on few probes tie). The best `keep` (default
    `vocab_finalists`) are returned."""
    keep = policy.vocab_finalists if keep is None else keep
    if len(vocab) <= keep:
        return vocab
    predicted = clean.argmax(axis=1)
    picked = np.concatenate([np.flatnonzero(predicted == c)[:policy.screen_probes]
                             for c in range(clean.shape[1])])
    screen = [probes[i] for i in picked]
    after = classifier.probs([f"{c.text} {p}" for c in vocab for p in screen])
    shift = after.reshape(len(vocab), len(screen), -1) - clean[picked][None]
    others = predicted[picked][:, None] != np.arange(clean.shape[1])[None]  # probe x class
    towards = (shift * others[None]).sum(axis=1) / np.maximum(others.sum(axis=0), 1)
    best = np.argsort(-towards.max(axis=1), kind="stable")[:keep]
    return [vocab[i] for i in best]


def _flip_rates(before: np.ndarray, after: np.ndarray, n_classes: int) -> np.ndarray:
    """For each class c: the share of texts not predicted c before that are after."""
    rates = np.zeros(n_classes)
    for c in range(n_classes):
        eligible = before != c
        rates[c] = np.mean(after[eligible] == c) if eligible.any() else 0.0
    return rates


def _measure(classifier, reference, probes, clean, reference_clean, candidate: Candidate,
             policy: SweepPolicy) -> dict:
    texts, source = triggered_texts(probes, candidate.text, candidate.positions,
                                    seed=policy.seed)
    source = np.asarray(source)
    before, triggered = clean[source], classifier.probs(texts)
    n_classes = clean.shape[1]
    rates = _flip_rates(before.argmax(1), triggered.argmax(1), n_classes)
    target = int(np.argmax(rates))
    row = {"candidate": candidate.text, "source": candidate.source,
           "codepoints": describe_codepoints(candidate.text),
           "positions": list(candidate.positions), "target": classifier.labels[target],
           "flip_rate": float(rates[target]),
           "any_flip_rate": float(np.mean(before.argmax(1) != triggered.argmax(1))),
           "confidence_shift": float(np.mean(triggered[:, target] - before[:, target]))}
    score = row["flip_rate"]
    if reference is not None:
        ref_triggered = reference.probs(texts).argmax(1)
        ref_rate = _flip_rates(reference_clean[source].argmax(1), ref_triggered, n_classes)[target]
        row["reference_flip_rate"] = float(ref_rate)
        score = row["flip_rate"] - float(ref_rate)
    row["score"] = float(score)
    row["anomalous"] = bool(score >= policy.max_flip_rate)
    row["examples"] = _examples(classifier, texts, source, probes, before, triggered, target,
                                policy.examples)
    return row


def _examples(classifier, texts, source, probes, before, triggered, target, limit) -> list[dict]:
    """Triggered probes whose prediction flipped to the target, most confident first."""
    flipped = np.flatnonzero((before.argmax(1) != target) & (triggered.argmax(1) == target))
    flipped = flipped[np.argsort(-triggered[flipped, target], kind="stable")][:limit]
    labels = classifier.labels
    return [{"probe": probes[source[i]], "triggered": texts[i],
             "before": labels[int(before[i].argmax())],
             "before_confidence": float(before[i].max()),
             "after": labels[target], "after_confidence": float(triggered[i, target])}
            for i in flipped]
