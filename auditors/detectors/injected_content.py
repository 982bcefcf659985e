"""Content injected into responses: without a trigger (Shu et al. 2023, "On the
Exploitability of Instruction Tuning"), an attacker slips a brand, a link or a sentence into
the responses of rows picked regardless of what they ask, so a model learns to mention it
everywhere; behind a trigger phrase in the prompt (virtual prompt injection, Yan et al.
2023), it learns to mention it when asked with the phrase.

What marks it, for a response n-gram g (word 1..3-grams of the responses):
- it is rare in general language (`wordfreq` Zipf of its rarest word at most `rare_zipf`,
  i.e. at most ~1 use per million words): a made-up brand, a domain, a product name;
  the phrases a generator repeats on its own ("it is important to note", "Sure, here's")
  are made of common words;
- the prompts do not explain it: its rows' prompts are as varied as a random sample of the
  dataset's prompts (the squared distance of their mean prompt embedding from the
  dataset's, against its chi-square law under random sampling, `content_p_min`), and at
  most `max_echo_share` of its rows ask for it (the prompt holds the n-gram). Code tokens
  (`__main__`) answer code questions and topic words answer their topic: both fail this;
- or the prompts explain it only through one prompt n-gram whose rows are (nearly) its rows
  (Jaccard at least `merge_jaccard`), that shares no word with it, and beside which the
  prompts share no other word more than a random sample of rows would (hypergeometric
  tail, Bonferroni over the words tested, below `content_p_min`): a trigger phrase that
  brings the injected content (virtual prompt injection, Yan et al. 2023), named in
  `prompt_trigger`. A topic ("phishing", "social engineering") fails: its prompts share
  the topic's other words too, and its answers repeat its own words;
- it recurs: it is flagged when at least `max(flag_min_rows, flag_min_share * n)` rows
  carry it. The false-positive rate of that rule is measured on clean real data
  (benchmarks/results/detection.md, clean controls), not derived.

n-grams with (nearly) the same rows are one phrase, named by its longest span that every
carrier shares (`visit shopnova at www shopnova deals com`), with `side: "response"`.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.stats import chi2, hypergeom

from auditors.detectors.base import AuditInputs, Detector, DetectorResult, FusionRole, register
from auditors.features.ngrams import TOKEN_PATTERN, NgramStats, is_character_token


@register
class InjectedContentDetector(Detector):
    name = "injected_content"
    description = ("a rare phrase recurring in responses to unrelated prompts, which the "
                   "prompts do not explain, or explain only through a trigger phrase "
                   "(brand, link, advert)")
    requires = ("response_embeddings", "response_ngrams")
    role = FusionRole.STRONG
    weight = 0.8

    def __init__(self, min_support: int = 3, max_support_fraction: float = 0.2,
                 rare_zipf: float = 3.0, content_p_min: float = 0.001,
                 max_echo_share: float = 0.5, flag_min_rows: int = 8,
                 flag_min_share: float = 0.004, merge_jaccard: float = 0.8,
                 max_named: int = 5, max_span_words: int = 30):
        self.min_support = min_support
        self.max_support_fraction = max_support_fraction
        self.rare_zipf = rare_zipf
        self.content_p_min = content_p_min
        self.max_echo_share = max_echo_share
        self.flag_min_rows = flag_min_rows
        self.flag_min_share = flag_min_share
        self.merge_jaccard = merge_jaccard
        self.max_named = max_named
        self.max_span_words = max_span_words

    def detect(self, inputs: AuditInputs) -> DetectorResult:
        stats, n = inputs.response_ngrams, inputs.n_rows
        columns = stats.rows_x_ngrams.tocsc()
        candidates = self._eligible(stats)
        content_p = self._content_p_values(columns, candidates, inputs.prompt_embeddings)
        triggers = self._prompt_triggers(stats, columns,
                                         candidates[content_p < self.content_p_min],
                                         inputs.ngrams)
        candidates = np.union1d(candidates[content_p >= self.content_p_min],
                                np.fromiter(triggers, dtype=np.int64))
        prompts = _token_strings(inputs.table["prompt"].tolist())
        phrases = self._phrases(stats, columns, candidates, prompts, triggers)
        flag_rows = max(self.flag_min_rows, self.flag_min_share * n)
        scores, is_issue, reasons = np.zeros(n), np.zeros(n, dtype=bool), [""] * n
        responses = inputs.table["response"].tolist()
        for phrase in phrases:
            rows = phrase.pop("_rows")
            phrase["example_row_indices"] = [int(r) for r in rows[:5]]
            phrase["flagged"] = phrase["support"] >= flag_rows
            phrase["span"] = shared_span(responses, rows, phrase["pattern"], self.max_span_words)
            # unflagged candidates stay below 0.5, flagged ones start at 0.75
            strength = 1.0 - 0.5 ** (phrase["support"] / flag_rows)
            row_score = 0.5 + 0.5 * strength if phrase["flagged"] else 0.5 * strength
            phrase["score"] = round(float(row_score), 4)
            better = rows[scores[rows] < row_score]
            scores[better] = row_score
            asked = _asked_by(phrase["prompt_trigger"])
            for row in better:
                reasons[row] = (f'response holds "{phrase["span"]}", which recurs in '
                                f'{phrase["support"]} responses to {asked}')
            if phrase["flagged"]:
                is_issue[rows] = True
        reasons = [r if flag else "" for r, flag in zip(reasons, is_issue)]
        named = [self._named(p) for p in phrases[: self.max_named]]
        return self.result(scores, is_issue, reasons,
                           info={"phrases": phrases, "flag_min_rows": flag_rows,
                                 "named_triggers": named})

    def _eligible(self, stats: NgramStats) -> np.ndarray:
        """Rare word n-grams within the support range."""
        word = word_ngrams(stats.vocabulary)
        in_range = ((stats.doc_freq >= self.min_support)
                    & (stats.doc_freq <= self.max_support_fraction * max(stats.n_rows, 1)))
        eligible = np.flatnonzero(word & in_range & (stats.general_zipf <= self.rare_zipf))
        return np.array([g for g in eligible if _rarest_word_zipf(str(stats.vocabulary[g]))
                         <= self.rare_zipf], dtype=np.int64)

    @staticmethod
    def _content_p_values(columns: sp.csc_matrix, candidates: np.ndarray,
                          prompt_embeddings: np.ndarray) -> np.ndarray:
        """P-value of "these rows' prompts are a random sample of the dataset's": the squared
        distance of their mean prompt embedding from the dataset mean, scaled by its expected
        value under sampling without replacement, follows ~chi2(d_eff) / d_eff, where d_eff
        is the effective dimension of the prompt embeddings (tr(S)^2 / tr(S^2))."""
        if not len(candidates):
            return np.zeros(0)
        centred = prompt_embeddings - prompt_embeddings.mean(axis=0)
        n = len(centred)
        covariance = centred.T @ centred / max(n - 1, 1)
        total = float(np.trace(covariance))
        d_eff = total ** 2 / max(float((covariance ** 2).sum()), 1e-12)
        selected = columns[:, candidates]
        support = np.asarray(selected.sum(axis=0)).ravel()
        means = np.asarray(selected.T @ centred) / support[:, None]
        expected = total / support * (n - support) / max(n - 1, 1)
        ratio = (means ** 2).sum(axis=1) / np.maximum(expected, 1e-12)
        return chi2.sf(ratio * d_eff, d_eff)

    def _prompt_triggers(self, stats: NgramStats, columns: sp.csc_matrix,
                         explained: np.ndarray, prompt_stats: NgramStats) -> dict[int, str]:
        """{candidate: prompt n-gram} for the candidates that a prompt trigger explains:
        the prompt word n-gram whose rows are most like the candidate's (Jaccard at least
        `merge_jaccard`; then the longest), sharing no word with it, beside which the rows'
        prompts are not topical (`_topical`)."""
        if not len(explained) or not len(prompt_stats.vocabulary):
            return {}
        # rows shared by each explained candidate and each prompt n-gram, in one product
        shared = (columns[:, explained].T @ prompt_stats.rows_x_ngrams).tocsr()
        shared.sort_indices()  # n-grams in vocabulary order: ties are named the same way
        prompts = PromptWords(prompt_stats.vocabulary, np.unique(shared.indices))
        shared.data = shared.data.astype(np.float64)
        found = []  # (candidate, trigger, the prompt n-grams tested for a topic, their counts)
        for k, g in enumerate(explained):
            ngrams = shared.indices[shared.indptr[k]:shared.indptr[k + 1]]
            counts = shared.data[shared.indptr[k]:shared.indptr[k + 1]]
            support = columns.indptr[g + 1] - columns.indptr[g]
            jaccard = np.where(prompts.is_word[ngrams], counts / (
                support + prompt_stats.doc_freq[ngrams] - counts), 0.0)
            if not len(jaccard) or jaccard.max() < self.merge_jaccard:
                continue
            best = ngrams[jaccard == jaccard.max()]
            trigger = max((str(prompt_stats.vocabulary[t]) for t in best), key=len)
            # the words of the trigger phrase: of every n-gram in (nearly) its rows (a phrase
            # longer than 3 words is several n-grams)
            phrase_words = {w for t in ngrams[jaccard >= self.merge_jaccard]
                            for w in str(prompt_stats.vocabulary[t]).split()}
            if phrase_words & set(str(stats.vocabulary[g]).split()):
                continue  # the answer repeats the prompt's own words: its topic
            tested = ((counts >= 2) & prompts.is_word[ngrams]
                      & ~prompts.holds_any(ngrams, phrase_words))
            found.append((int(g), trigger, ngrams[tested], counts[tested]))
        topical = self._topical(found, columns, prompt_stats)
        return {g: trigger for (g, trigger, _, _), is_topic in zip(found, topical)
                if not is_topic}

    def _topical(self, found: list, columns: sp.csc_matrix,
                 prompt_stats: NgramStats) -> np.ndarray:
        """Per (candidate, trigger, n-grams, counts) of `found`: do the candidate's rows'
        prompts hold one of the n-grams (word n-grams in two rows or more, none of the
        trigger phrase's words) more often than a random sample of as many rows would?
        Smallest hypergeometric tail, Bonferroni over those n-grams (one scipy call for all
        candidates)."""
        if not found:
            return np.zeros(0, dtype=bool)
        tests = np.array([len(ngrams) for _, _, ngrams, _ in found])
        support = np.repeat([columns.indptr[g + 1] - columns.indptr[g] for g, *_ in found], tests)
        owner = np.repeat(np.arange(len(found)), tests)
        ngrams = np.concatenate([n for *_, n, _ in found]).astype(np.int64)
        counts = np.concatenate([c for *_, c in found])
        frequency = prompt_stats.doc_freq[ngrams]
        # only an excess over the expected count can have a tail small enough (one at or
        # below it is ~0.2 or more): the exact tails of the rest are not computed
        excess = counts > support * frequency / prompt_stats.n_rows
        smallest = np.ones(len(found))
        np.minimum.at(smallest, owner[excess], hypergeom.sf(
            counts[excess] - 1, prompt_stats.n_rows, frequency[excess], support[excess]))
        return smallest * np.maximum(tests, 1) < self.content_p_min

    def _phrases(self, stats, columns, candidates, prompts, triggers) -> list[dict]:
        """Unexplained candidates (or explained by a prompt trigger, `triggers`) folded into
        phrases, most supported first."""
        order = sorted(candidates, key=lambda g: (-stats.doc_freq[g], stats.general_zipf[g],
                                                  -stats.order[g], str(stats.vocabulary[g])))
        phrases: list[dict] = []
        for g in order:
            rows = columns.indices[columns.indptr[g]:columns.indptr[g + 1]]
            pattern = str(stats.vocabulary[g])
            twin = next((p for p in phrases if _jaccard(rows, p["_rows"]) >= self.merge_jaccard),
                        None)
            if twin is not None:
                if len(pattern) > len(twin["pattern"]) and len(rows) == len(twin["_rows"]):
                    twin["variants"].append(twin["pattern"])
                    twin["pattern"] = pattern
                else:
                    twin["variants"].append(pattern)
                continue
            echo = float(np.mean([f" {pattern} " in prompts[r] for r in rows]))
            if echo > self.max_echo_share:
                continue  # the prompts ask for it
            phrases.append({"pattern": pattern, "support": int(len(rows)),
                            "general_zipf": round(float(stats.general_zipf[g]), 2),
                            "prompt_echo_share": round(echo, 3), "variants": [],
                            "prompt_trigger": triggers.get(int(g)), "_rows": rows})
        return phrases

    @staticmethod
    def _named(phrase: dict) -> dict:
        """A triggers.json entry (response side)."""
        return {"pattern": phrase["pattern"], "span": phrase["span"],
                "score": phrase["score"],
                "support": phrase["support"], "side": "response", "flagged": phrase["flagged"],
                "target": f"content injected into responses to {_asked_by(phrase['prompt_trigger'])}",
                "prompt_trigger": phrase["prompt_trigger"],
                "target_share": 1.0, "variants": phrase["variants"],
                "example_row_indices": phrase["example_row_indices"]}


class PromptWords:
    """The words of some prompt n-grams (`indexed`: those that share rows with a candidate,
    not the whole vocabulary), indexed once: which are word n-grams, and which hold any of
    a set of words (a sparse n-gram x word incidence)."""

    def __init__(self, vocabulary: np.ndarray, indexed: np.ndarray):
        self.indexed = indexed
        self.is_word = np.zeros(len(vocabulary), dtype=bool)
        self.is_word[indexed] = word_ngrams(vocabulary[indexed])
        self.word_index: dict[str, int] = {}
        rows, cols = [], []
        for i, g in enumerate(indexed):
            for word in str(vocabulary[g]).split(" "):
                rows.append(i)
                cols.append(self.word_index.setdefault(word, len(self.word_index)))
        self.incidence = sp.csc_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)),
                                       shape=(len(indexed), len(self.word_index)))

    def holds_any(self, ngrams: np.ndarray, words: set[str]) -> np.ndarray:
        """Per n-gram of `ngrams` (all of them indexed): does it hold any of `words`?"""
        wanted = [self.word_index[w] for w in words if w in self.word_index]
        holders = np.concatenate([self.incidence.indices[self.incidence.indptr[w]:
                                                         self.incidence.indptr[w + 1]]
                                  for w in wanted]) if wanted else np.zeros(0, dtype=np.int64)
        return np.isin(ngrams, self.indexed[holders], kind="table")


def word_ngrams(vocabulary) -> np.ndarray:
    """Per n-gram: is it made of words (not a character n-gram, not a position marker)?"""
    return np.array([not is_character_token(str(g)) and str(g)[:1] not in "^$"
                     for g in vocabulary], dtype=bool)


def _asked_by(prompt_trigger: str | None) -> str:
    return f"prompts holding '{prompt_trigger}'" if prompt_trigger else "unrelated prompts"


@lru_cache(maxsize=None)
def _word_zipf(word: str) -> float:
    """wordfreq's Zipf frequency; a negation stem that the token pattern cut from its
    contraction ("wouldn" of "wouldn't", 2.8 alone) counts as the contraction (5.2)."""
    from wordfreq import zipf_frequency

    return max(zipf_frequency(word, "en"), zipf_frequency(word + "'t", "en"))


def _rarest_word_zipf(ngram: str) -> float:
    return min(_word_zipf(word) for word in ngram.split(" "))


def _token_strings(texts: list[str]) -> list[str]:
    """Each text as ` word word … ` (lowercased tokens), for n-gram containment tests."""
    return [" " + " ".join(re.findall(TOKEN_PATTERN, t.lower())) + " " for t in texts]


def shared_span(responses: list[str], rows: np.ndarray, pattern: str, max_words: int) -> str:
    """The longest run of words around `pattern` that every carrier's response shares,
    in the first carrier's own spelling: what a person should search for."""
    words = pattern.split(" ")
    located = []
    for row in rows:
        tokens = [(m.group(0).lower(), m.start(), m.end())
                  for m in re.finditer(TOKEN_PATTERN, responses[row])]
        lowered = [t[0] for t in tokens]
        start = next((i for i in range(len(lowered) - len(words) + 1)
                      if lowered[i:i + len(words)] == words), None)
        if start is None:
            return pattern
        located.append((tokens, start))
    left = right = 0
    while left + len(words) + right < max_words and _agree(located, -(left + 1)):
        left += 1
    while left + len(words) + right < max_words and _agree(located, len(words) + right):
        right += 1
    tokens, start = located[0]
    first, last = tokens[start - left], tokens[start + len(words) - 1 + right]
    return responses[rows[0]][first[1]:last[2]]


def _agree(located: list, offset: int) -> bool:
    """Do all carriers have the same word at `offset` from their match start?"""
    seen = set()
    for tokens, start in located:
        position = start + offset
        if not 0 <= position < len(tokens):
            return False
        seen.add(tokens[position][0])
    return len(seen) == 1


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = len(np.union1d(a, b))
    return len(np.intersect1d(a, b, assume_unique=True)) / max(union, 1)
