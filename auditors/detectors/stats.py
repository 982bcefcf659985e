"""Small statistics shared by detectors."""

from __future__ import annotations

import re

import numpy as np
from scipy.special import ndtri_exp
from scipy.stats import chi2, hypergeom, median_abs_deviation, norm, poisson_binom, rankdata

from auditors.features.ngrams import NgramStats, row_set_groups


def robust_z(values: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 * MAD): a z-score that a few extreme rows cannot inflate."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    spread = median_abs_deviation(values, scale="normal")
    if not np.isfinite(spread) or spread <= 0:
        spread = values.std() or 1.0
    return (values - np.median(values)) / spread


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1]; ties share their average rank."""
    values = np.asarray(values, dtype=np.float64)
    return rankdata(values) / len(values) if values.size else values


def shared_rare_ngram(ngrams: NgramStats, members: np.ndarray, min_coverage: float,
                      min_lift: float) -> str:
    """The n-gram most concentrated in `members` (rows) relative to the whole dataset, if it
    covers at least `min_coverage` of them and is `min_lift` times more common there than
    overall: the candidate trigger a group of suspicious rows shares. "" when none is."""
    if ngrams.rows_x_ngrams.shape[1] == 0 or len(members) == 0:
        return ""
    in_group = np.asarray(ngrams.rows_x_ngrams[members].sum(axis=0)).ravel()
    coverage = in_group / len(members)
    lift = coverage / np.maximum(ngrams.doc_freq / ngrams.n_rows, 1e-12)
    eligible = (coverage >= min_coverage) & (lift >= min_lift)
    if not eligible.any():
        return ""
    best = np.flatnonzero(eligible)[np.argmax(lift[eligible])]
    return str(ngrams.vocabulary[best])


def rows_containing(ngrams: NgramStats, ngram: str) -> np.ndarray:
    """Boolean per row: does the row contain this n-gram ("" matches none)."""
    matches = np.flatnonzero(ngrams.vocabulary == ngram) if ngram else []
    if not len(matches):
        return np.zeros(ngrams.n_rows, dtype=bool)
    return ngrams.rows_x_ngrams[:, int(matches[0])].toarray().ravel() > 0


_WORD_NGRAM = re.compile(r"\w+(?: \w+)*")


def topic_p_value(ngrams: NgramStats, rows: np.ndarray, trigger: str) -> float:
    """Do the prompts of `rows` (a candidate trigger's rows) hold another word n-gram more
    often than a random sample of as many rows would? The smallest hypergeometric tail over
    the word n-grams that share no word with `trigger`, times their number (Bonferroni over
    every such n-gram counted, two rows or more: any of them could have come out smallest).
    Small when the rows share a topic beside the candidate (`query` with `sql`): a trigger
    is inserted into prompts whatever they ask, a topic word is not."""
    if len(rows) < 2:
        return 1.0
    vocabulary = [str(g) for g in ngrams.vocabulary]
    own = set(trigger.lstrip("^$").split())
    tested = np.array([g for g, text in enumerate(vocabulary) if _WORD_NGRAM.fullmatch(text)
                       and not own & set(text.split())], dtype=np.int64)
    if not len(tested):
        return 1.0
    counts = np.asarray(ngrams.rows_x_ngrams[rows][:, tested].sum(axis=0)).ravel()
    shared = counts >= 2  # a count of one has a tail near 1: not computed
    if not shared.any():
        return 1.0
    tails = hypergeom.sf(counts[shared] - 1, ngrams.n_rows, ngrams.doc_freq[tested[shared]],
                         len(rows))
    return float(min(1.0, tails.min() * len(tested)))


def named_trigger(ngrams: NgramStats, pattern: str, is_issue: np.ndarray, scores: np.ndarray,
                  target: str) -> list[dict]:
    """A `triggers.json` entry for a trigger a detector named ([] when none): support is
    the rows carrying it, target_share the share of those the detector calls issues."""
    if not pattern:
        return []
    carriers = rows_containing(ngrams, pattern)
    support = int(carriers.sum())
    return [{"pattern": pattern, "score": round(float(scores[carriers].mean()), 4) if support else 0.0,
             "support": support, "target": target,
             "target_share": round(float(is_issue[carriers].mean()), 4) if support else 0.0,
             "example_row_indices": [int(i) for i in np.flatnonzero(carriers & is_issue)[:5]]}]


# Above this many rows the Poisson-binomial tail is taken from its normal approximation:
# scipy's exact distribution costs O(n^2) time and memory (2.8 s at 10,000 rows; a 50,000-row
# candidate exhausted memory), and at such supports the approximation is tight.
EXACT_TAIL_MAX_ROWS = 1_000


def excess_p_value(observed: int, probs: np.ndarray) -> float:
    """P(at least `observed` of the rows carry the target) when row i carries it
    independently with probability `probs[i]` (the content model's): the exact
    Poisson-binomial upper tail, or its continuity-corrected normal approximation above
    `EXACT_TAIL_MAX_ROWS` rows."""
    if observed <= 0:
        return 1.0
    probs = np.clip(np.asarray(probs, dtype=np.float64), 0.0, 1.0)
    if len(probs) > EXACT_TAIL_MAX_ROWS:
        spread = np.sqrt(max(float((probs * (1 - probs)).sum()), 1e-12))
        return float(norm.sf((observed - 0.5 - probs.sum()) / spread))
    tail = poisson_binom(probs)
    p = float(tail.sf(observed - 1))
    if p < 1e-10:  # sf is 1 - cdf: below ~1e-16 it is 0; the summed pmf is exact there
        p = float(tail.pmf(np.arange(observed, len(probs) + 1)).sum())
    return p


def bh_q_values(p_values: np.ndarray, n_tests: int) -> np.ndarray:
    """Benjamini-Hochberg q-values of `p_values` as the smallest of `n_tests` hypotheses,
    the untested rest counted with p = 1 (they can only raise q)."""
    p_values = np.asarray(p_values, dtype=np.float64)
    n_tests = max(int(n_tests), len(p_values), 1)
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * n_tests / np.arange(1, len(p_values) + 1)
    q = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty_like(q)
    out[order] = q
    return out


# Hypotheses whose z-score enters the inflation estimate: with a variance of at least 1 the
# normal approximation holds (a sparse target's n-grams mostly expect ~0 rows and would pull
# the median to 0); below MIN_INFLATION_TESTS such hypotheses the inflation is taken as 1.
INFLATION_MIN_VARIANCE = 1.0
MIN_INFLATION_TESTS = 100


def genomic_inflation(z: np.ndarray, variance: np.ndarray) -> float:
    """lambda = median(z^2) / median(chi2_1), at least 1: genomic control (Devlin & Roeder
    1999). A content model that misses some of what real words say about labels makes every
    n-gram's z-score spread wider than N(0, 1) under the null; the bulk of n-grams is null,
    so their median z^2 measures that spread, and dividing z^2 by it calibrates the tail."""
    z = np.asarray(z, dtype=np.float64)[np.asarray(variance) >= INFLATION_MIN_VARIANCE]
    if len(z) < MIN_INFLATION_TESTS:
        return 1.0
    return float(max(1.0, np.median(z ** 2) / chi2.median(1)))


def deflated_log_p(log_p: np.ndarray, inflation: float) -> np.ndarray:
    """log of the one-sided p-value whose normal score is that of `exp(log_p)` divided by
    sqrt(inflation) (in logs: exact p-values of a few rows reach 1e-300 and below)."""
    log_p = np.minimum(np.asarray(log_p, dtype=np.float64), 0.0)
    z = -ndtri_exp(log_p)
    return np.where(log_p < 0, norm.logsf(z / np.sqrt(inflation)), 0.0)


def weighted_bh_q_values(p_values: np.ndarray, weights: np.ndarray, n_tests: int) -> np.ndarray:
    """Benjamini-Hochberg q-values of p / w (Genovese, Roeder & Wasserman 2006): weights
    fixed before the labels are seen and averaging 1 over the `n_tests` hypotheses keep the
    false-discovery rate, and put power where the prior says discoveries are."""
    weighted = np.asarray(p_values, dtype=np.float64) / np.maximum(np.asarray(weights), 1e-12)
    return bh_q_values(np.minimum(weighted, 1.0), n_tests)


class DiscreteStepDown:
    """The discrete Benjamini-Hochberg step-down procedure [HSD] of Döhler, Durand & Roquain
    (2018), for weighted statistics s = p / w (weights fixed before the labels are seen,
    mean 1 over the hypotheses).

    A hypothesis whose smallest attainable statistic (`log_floors`: log(min p / w), every
    row carrying the target; +inf for one that is not a test) is above t cannot reach
    s <= t, and one that can does so with probability at most w * t under its null; so
    xi(t) = sum, over the hypotheses with floor <= t, of G / (1 - G) with G = w * t bounds
    the procedure's transform from above. Tarone's count (Gilbert 2005) fixes the
    hypotheses counted at the first line; here the count grows with the line, so a
    candidate too weak for the first line can pass a later one."""

    def __init__(self, log_floors: np.ndarray, weights: np.ndarray):
        log_floors = np.asarray(log_floors, dtype=np.float64)
        tests = np.flatnonzero(log_floors < np.inf)
        order = tests[np.argsort(log_floors[tests], kind="stable")]
        self.floors, self.weights = log_floors[order], np.asarray(weights, dtype=np.float64)[order]

    def transform(self, log_t: float) -> float:
        """xi(t), for t given as log t."""
        chance = self.weights[: self.reachable(log_t)] * np.exp(min(log_t, 0.0))
        return float((chance / (1.0 - chance)).sum()) if (chance < 1.0).all() else np.inf

    def reachable(self, log_t: float) -> int:
        """How many hypotheses can reach s <= t."""
        return int(np.searchsorted(self.floors, log_t, side="right"))

    def q_values(self, log_statistics: np.ndarray) -> np.ndarray:
        """Adjusted p-values of the candidates (hypotheses among those given, their own
        floors included): with their statistics ordered s_(1) <= s_(2) <= ...,
        q_(k) = max_{j<=k} xi(s_(j)) / j, and rejecting q <= alpha is [HSD] at level alpha
        (proved for independent tests)."""
        log_statistics = np.asarray(log_statistics, dtype=np.float64)
        q = np.ones(len(log_statistics))
        running = 0.0
        for k, i in enumerate(np.argsort(log_statistics, kind="stable"), start=1):
            running = max(running, self.transform(log_statistics[i]) / k)
            q[i] = min(running, 1.0)
        return q

    def line(self, level: float) -> float:
        """log of the line at `level` (alpha times the step): the largest t, to 1e-6 in
        log t, with xi(t) <= level."""
        low, high = -800.0, 0.0  # xi(e^-800) is 0 (a float's exp underflows there)
        while high - low > 1e-6:
            mid = (low + high) / 2
            low, high = (mid, high) if self.transform(mid) <= level else (low, mid)
        return low


def enrichment_p_value(ngrams: NgramStats, members: np.ndarray, ngram: str,
                       min_members: int) -> tuple[float, int]:
    """(p, tests) for "the rows holding `ngram` include this many of `members` by chance":
    the hypergeometric upper tail, and the number of n-grams that could have been chosen
    (those in at least `min_members` rows, one per distinct row set), the multiplicity a
    Bonferroni bound divides by."""
    eligible = np.flatnonzero(np.asarray(ngrams.doc_freq) >= min_members)
    groups = row_set_groups(ngrams.rows_x_ngrams.tocsc(), eligible)
    tests = int((groups[eligible] == eligible).sum())
    carriers = rows_containing(ngrams, ngram)
    if not carriers.any():
        return 1.0, tests
    hits = int(carriers[members].sum())
    return float(hypergeom.sf(hits - 1, ngrams.n_rows, len(members), int(carriers.sum()))), tests


def evidence(p_value: float, tests: int, fdr: float) -> float:
    """A p-value on a [0, 1] scale shared by detectors: log p over log(fdr / tests), so 1
    at the Bonferroni line and above it, 0.5 halfway there in orders of magnitude. Ranks
    candidates that are not significant by how close they come."""
    line = np.log(fdr / max(tests, 1))
    return float(np.clip(np.log(max(p_value, 1e-300)) / line, 0.0, 1.0)) if line < 0 else 1.0
