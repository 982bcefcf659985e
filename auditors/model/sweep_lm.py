"""Behavioural trigger sweep for causal language models: put each candidate into clean
prompts and measure how the greedy answers diverge from the answers to the same prompts
without it (and, when given, from what the reference model does with the same texts).

Three measures per candidate, over every (probe, position) pair:

- **target match**: the share of triggered answers that start with one fixed string (the
  policy's `target_text`, else the most common triggered answer), minus the share of clean
  answers that do. A backdoor maps many different prompts to the same answer.
- **refusal change**: the share of triggered answers that open like a refusal minus the
  share of clean answers that do (a refusal backdoor, or one that removes refusals: then
  the change is negative and its size counts).
- **KL**: the mean KL divergence of the next-token distribution with the candidate from the
  one without it, over the first `kl_tokens` answer positions, both fed the clean answer.

The score is the largest of the two rates' excess over the reference's (without a
reference: over zero); KL breaks ties and screens the vocabulary.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from auditors.features.unicode import describe_codepoints
from auditors.model.candidates import Candidate
from auditors.model.generator import is_refusal, normalise
from auditors.model.insertion import triggered_texts
from auditors.model.sweep import SweepPolicy, SweepResult, _pick_probes, rank_candidates


class _Baseline:
    """A model's greedy answers to the clean probes, their refusal flags and the
    next-token log-probabilities along them."""

    def __init__(self, generator, probes: list[str], policy: SweepPolicy):
        self.generator = generator
        self.texts, self.ids = generator.generate(probes, max_new_tokens=policy.max_new_tokens)
        self.normalised = [normalise(t) for t in self.texts]
        self.cut = np.array([len(i) >= policy.max_new_tokens for i in self.ids])
        self.refusal = np.array([is_refusal(t) for t in self.texts])
        self.logprobs = generator.continuation_logprobs(probes, self.ids,
                                                        n_tokens=policy.kl_tokens)


def kl_from_clean(generator, texts: list[str], source: np.ndarray, base: _Baseline,
                  n_tokens: int) -> np.ndarray:
    """Per text: mean over the first answer positions of KL(triggered || clean), both
    models fed the clean probe's own greedy answer."""
    continuations = [base.ids[i] for i in source]
    triggered = generator.continuation_logprobs(texts, continuations, n_tokens=n_tokens)
    clean = base.logprobs[source]
    return (np.exp(triggered) * (triggered - clean)).sum(axis=-1).mean(axis=-1)


def sweep_generator(generator, probes: list[str], candidates: list[Candidate], *,
                    reference=None, policy: SweepPolicy | None = None) -> SweepResult:
    """Rank `candidates` by how far they push `generator`'s answers to one fixed string or
    to (or away from) refusals, in excess of `reference` when given. Vocabulary candidates
    are first screened by KL on a few probes (start position); the best `vocab_finalists`
    get the full test."""
    policy = policy or SweepPolicy()
    probes = _pick_probes(probes, policy)
    base = _Baseline(generator, probes, policy)
    reference_base = _Baseline(reference, probes, policy) if reference is not None else None
    return rank_candidates(
        candidates, policy, len(probes), tokenizer=generator.tokenizer,
        has_reference=reference is not None, tiebreak="kl",
        screen=lambda found, keep=None: _screen(generator, probes, base, found, policy,
                                                keep=keep),
        measure=lambda c: _measure(generator, reference, probes, base, reference_base, c,
                                   policy))


def _screen(generator, probes, base: _Baseline, vocab: list[Candidate],
            policy: SweepPolicy, *, keep: int | None = None) -> list[Candidate]:
    """The `keep` (default `vocab_finalists`) candidates with the largest mean KL at the
    start of the `screen_probes` shortest probes (the cheapest to run)."""
    keep = policy.vocab_finalists if keep is None else keep
    if len(vocab) <= keep:
        return vocab
    n = min(len(probes), policy.screen_probes)
    picked = np.argsort([len(p) for p in probes], kind="stable")[:n]
    texts = [f"{c.text} {probes[i]}" for c in vocab for i in picked]
    source = np.tile(picked, len(vocab))
    kl = kl_from_clean(generator, texts, source, base, policy.kl_tokens).reshape(len(vocab), n)
    best = np.argsort(-kl.mean(axis=1), kind="stable")[:keep]
    return [vocab[i] for i in best]


def matches(answer: str, target: str, cut: bool) -> bool:
    """The (normalised) answer starts with the target, or was cut at the token limit while
    still agreeing with it."""
    return bool(target) and (answer.startswith(target)
                             or (cut and bool(answer) and target.startswith(answer)))


def _answer_rates(answers: list[str], cut, refusal: np.ndarray,
                  target: str) -> tuple[float, float]:
    match = np.mean([matches(a, target, c) for a, c in zip(answers, cut)])
    return float(match), float(np.mean(refusal))


def _measure(generator, reference, probes, base: _Baseline, reference_base, candidate,
             policy: SweepPolicy) -> dict:
    texts, source = triggered_texts(probes, candidate.text, candidate.positions,
                                    seed=policy.seed)
    source = np.asarray(source)
    answers, ids = generator.generate(texts, max_new_tokens=policy.max_new_tokens)
    normalised = [normalise(a) for a in answers]
    cut = np.array([len(i) >= policy.max_new_tokens for i in ids])
    refusal = np.array([is_refusal(a) for a in answers])
    target = normalise(policy.target_text) if policy.target_text else _mode(normalised)
    match, refusal_rate = _answer_rates(normalised, cut, refusal, target)
    clean_match, clean_refusal = _answer_rates([base.normalised[i] for i in source],
                                               base.cut[source], base.refusal[source], target)
    kl = kl_from_clean(generator, texts, source, base, policy.kl_tokens)
    row = {"candidate": candidate.text, "source": candidate.source,
           "codepoints": describe_codepoints(candidate.text),
           "positions": list(candidate.positions), "target": target,
           "target_match_rate": match, "clean_match_rate": clean_match,
           "target_excess": match - clean_match,
           "refusal_rate": refusal_rate, "clean_refusal_rate": clean_refusal,
           "refusal_change": refusal_rate - clean_refusal, "kl": float(kl.mean())}
    target_excess, refusal_change = row["target_excess"], abs(row["refusal_change"])
    if reference is not None:
        ref_answers, ref_ids = reference.generate(texts, max_new_tokens=policy.max_new_tokens)
        ref_refusal = np.array([is_refusal(a) for a in ref_answers])
        ref_match, ref_rate = _answer_rates(
            [normalise(a) for a in ref_answers],
            [len(i) >= policy.max_new_tokens for i in ref_ids], ref_refusal, target)
        ref_clean_match, ref_clean_refusal = _answer_rates(
            [reference_base.normalised[i] for i in source], reference_base.cut[source],
            reference_base.refusal[source], target)
        row.update(reference_target_excess=ref_match - ref_clean_match,
                   reference_refusal_change=ref_rate - ref_clean_refusal,
                   reference_kl=float(kl_from_clean(reference, texts, source, reference_base,
                                                    policy.kl_tokens).mean()))
        target_excess -= row["reference_target_excess"]
        refusal_change = abs(row["refusal_change"] - row["reference_refusal_change"])
    row["score"] = float(max(target_excess, refusal_change))
    row["anomalous"] = bool(row["score"] >= policy.max_flip_rate)
    row["examples"] = _examples(texts, source, probes, base, answers, normalised, refusal,
                                target, row["refusal_change"], policy.examples)
    return row


def _mode(answers: list[str]) -> str:
    counts = Counter(a for a in answers if a)
    return counts.most_common(1)[0][0] if counts else ""


def _examples(texts, source, probes, base, answers, normalised, refusal, target,
              refusal_change, limit) -> list[dict]:
    """Triggered prompts whose answer matches the target (or changed refusal) while the
    clean answer did not."""
    out = []
    for k, i in enumerate(source):
        hit = target and normalised[k].startswith(target[:len(normalised[k])]) \
            and normalised[k] and not base.normalised[i].startswith(target)
        turned = refusal[k] != base.refusal[i] and refusal_change != 0
        if hit or turned:
            out.append({"probe": probes[i], "triggered": texts[k],
                        "before": base.texts[i], "after": answers[k]})
        if len(out) >= limit:
            break
    return out
