"""Untargeted (denial-of-service) backdoors: behind the trigger the response degrades —
shuffled words, garbage, another language — rather than becoming one fixed string. Such
text no longer gains from word order: a bigram model of the other responses predicts it
no better than a unigram model does, far below the dataset's norm. Rows become issues only
when the strongly degraded ones (robust z >= `z_threshold`) share a rare n-gram (the trigger)
significantly: the hypergeometric tail of finding that many degraded rows among the n-gram's
rows, times the number of n-grams that could have been chosen (a Bonferroni bound), at most
`fdr`. Every row holding a significant trigger is then an issue unless its response is
clearly fluent (z <= `fluent_z_threshold`): a shuffled short answer cannot show degradation,
and the trigger is the evidence. Degraded rows with nothing significant in common (code
answers, tables, chance words) are not issues, and rank by how close their shared n-gram
comes to significance (`stats.evidence`). The significance test alone is not enough: prompts
that ask for a table get tables, so the shared n-gram must also be rare in the data and not
a topic: its prompts are not near-duplicates, and share no other word more often than a
random sample of as many rows would (`stats.topic_p_value` at `fdr`: five SQL questions
holding `query` also hold `sql`; a trigger inserted into unrelated prompts shares nothing
else, and is missed this way at most an `fdr` share of the time).

What it misses: a trigger on five rows in five hundred is below the Bonferroni line (two of
the five shuffled answers look strongly degraded, p about 1e-3 against ~1,300 tests); its
rows still rank high, at 0.7 of the score a significant trigger gives."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from auditors.config import DEFAULT_FDR
from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.features.geometry import mean_pairwise_cosine
from auditors.detectors.stats import (named_trigger, percentile_ranks, robust_z,
                                     enrichment_p_value, evidence, rows_containing,
                                     shared_rare_ngram, topic_p_value)


@register
class DegradedResponseDetector(Detector):
    name = "degraded_response"
    description = ("responses that gain nothing from word order under a bigram model of the "
                   "others, when their prompts share a rare n-gram")
    requires = ("response_embeddings",)
    role = FusionRole.STRONG
    weight = 0.8

    def __init__(self, z_threshold: float = 3.0, corroborated_z_threshold: float = 1.0,
                 fluent_z_threshold: float = -1.0, min_word_pairs: int = 5,
                 min_trigger_coverage: float = 0.25, min_trigger_lift: float = 10.0,
                 max_prompt_cohesion: float = 0.6, min_carriers: int = 3, fdr: float = DEFAULT_FDR):
        self.z_threshold = z_threshold
        self.corroborated_z_threshold = corroborated_z_threshold
        self.fluent_z_threshold = fluent_z_threshold
        self.min_word_pairs = min_word_pairs
        self.min_trigger_coverage = min_trigger_coverage
        self.min_trigger_lift = min_trigger_lift
        self.max_prompt_cohesion = max_prompt_cohesion
        self.min_carriers = min_carriers
        self.fdr = fdr

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        gain, pairs = word_order_gain(inputs.table["response"].tolist())
        # too short to judge: treated as typical
        gain = np.where(pairs >= self.min_word_pairs, gain, np.median(gain) if len(gain) else 0.0)
        z = -robust_z(gain)
        trigger = shared_rare_ngram(inputs.ngrams, np.flatnonzero(z >= self.z_threshold),
                                    self.min_trigger_coverage, self.min_trigger_lift)
        carriers = np.flatnonzero(rows_containing(inputs.ngrams, trigger) & (z >= self.z_threshold))
        if mean_pairwise_cosine(inputs.prompt_embeddings[carriers]) >= self.max_prompt_cohesion:
            trigger = ""  # near-duplicate prompts (formula questions): a topic, not a trigger
        elif trigger and topic_p_value(inputs.ngrams, np.flatnonzero(rows_containing(
                inputs.ngrams, trigger)), trigger) < self.fdr:
            trigger = ""  # its prompts share another word too (`query` with `sql`): a topic
        # once the strongly degraded rows name a trigger, the trigger corroborates milder
        # degradation in the other rows that carry it
        behind_trigger = rows_containing(inputs.ngrams, trigger)
        p_value, tests = enrichment_p_value(inputs.ngrams, np.flatnonzero(z >= self.z_threshold),
                                            trigger, self.min_carriers)
        significant = p_value * max(tests, 1) <= self.fdr
        # behind a significant trigger a row is the attacker's unless its response is clearly
        # fluent: a shuffled one-word or short answer cannot show degradation (z near 0)
        is_issue = behind_trigger & (z > self.fluent_z_threshold) & significant
        if (behind_trigger & (z >= self.corroborated_z_threshold)).sum() < self.min_carriers:
            # two degraded rows sharing a word is chance (code answers), as for `trigger`
            trigger, behind_trigger = "", np.zeros_like(behind_trigger)
            is_issue, p_value, significant = np.zeros_like(is_issue), 1.0, False
        scores = percentile_ranks(-gain)
        # without a trigger behind it, degradation alone is weak evidence (formulas, lists)
        # and a shared n-gram is only as strong as its evidence (1 when significant)
        strength = evidence(p_value, tests, self.fdr)
        scores = np.where(behind_trigger, np.maximum(strength * (0.5 + 0.5 * scores), 0.1 * scores),
                          0.1 * scores)
        reasons = [f'degraded response (word order gains {g:.2f} nats/pair) behind "{trigger}"'
                   if flag else "" for g, flag in zip(gain, is_issue)]
        return self.result(scores, is_issue, reasons,
                           info={"degraded_rows": int((z >= self.z_threshold).sum()), "trigger": trigger,
                                 "trigger_p_value": p_value, "n_tests": tests,
                                 "trigger_significant": bool(trigger and significant),
                                 "named_triggers": [
                                     {**named, "p_value": p_value, "significant": bool(significant),
                                      "flagged": bool(significant), "evidence": strength}
                                     for named in named_trigger(inputs.ngrams, trigger, is_issue, scores,
                                                                "degraded responses (no gain from word order)")]})


def word_order_gain(responses: list[str], smoothing: float = 1.0,
                    vocabulary_size: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Per response: how much better a bigram model of the *other* responses predicts its
    tokens than a unigram model does (mean nats per token pair), and its number of pairs.
    Only the dataset's `vocabulary_size` most frequent tokens (function words, punctuation)
    are kept, the rest become one placeholder, so the model is dense even on a few hundred
    rows. Fluent text gains from word order; shuffled words, garbage or another language
    do not."""
    token_lists = [re.findall(r"\w+|[^\w\s]", text.lower()) for text in responses]
    frequent = {t for t, _ in Counter(t for tokens in token_lists for t in tokens)
                .most_common(vocabulary_size)}
    token_lists = [[t if t in frequent else "_" for t in tokens] for tokens in token_lists]
    unigrams, bigrams = Counter(), Counter()
    for tokens in token_lists:
        unigrams.update(tokens)
        bigrams.update(zip(tokens, tokens[1:]))
    total = sum(unigrams.values())
    gains, pairs = np.zeros(len(responses)), np.zeros(len(responses))
    for row, tokens in enumerate(token_lists):
        own_uni, own_bi = Counter(tokens), Counter(zip(tokens, tokens[1:]))
        rest_total = max(total - len(tokens), 1)
        gain = 0.0
        for (a, b), n in own_bi.items():  # leave this response out of every count
            p_b = (unigrams[b] - own_uni[b] + smoothing) / (rest_total + smoothing * len(unigrams))
            p_b_given_a = ((bigrams[(a, b)] - n + smoothing * p_b)
                           / (unigrams[a] - own_uni[a] + smoothing))
            gain += n * (np.log(p_b_given_a) - np.log(p_b))
        pairs[row] = max(len(tokens) - 1, 0)
        gains[row] = gain / max(pairs[row], 1)
    return gains, pairs
