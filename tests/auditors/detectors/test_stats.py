import numpy as np
from scipy.stats import binom, false_discovery_control, hypergeom, norm

from auditors.detectors.stats import (DiscreteStepDown, bh_q_values, deflated_log_p,
                                      enrichment_p_value, evidence, excess_p_value,
                                      genomic_inflation, weighted_bh_q_values)
from auditors.features.ngrams import count_ngrams


def test_excess_p_value_is_the_binomial_tail_when_rows_are_alike():
    probs = np.full(12, 0.39)
    assert np.isclose(excess_p_value(11, probs), binom.sf(10, 12, 0.39))
    assert excess_p_value(0, probs) == 1.0
    # large supports take the normal approximation: cheap, and close to the binomial tail
    many = np.full(20_000, 0.3)
    assert np.isclose(excess_p_value(6_150, many), binom.sf(6_149, 20_000, 0.3), rtol=0.05)
    # far tails stay exact (1 - cdf would round them to 0)
    assert np.isclose(excess_p_value(26, np.full(30, 0.1)), binom.sf(25, 30, 0.1), rtol=1e-9)
    # rows the content model already expects to carry the target are weaker evidence
    assert excess_p_value(5, np.full(5, 0.9)) > excess_p_value(5, np.full(5, 0.1))


def test_q_values_match_scipy_with_the_untested_hypotheses_at_one():
    p = np.array([0.01, 0.001, 0.04, 0.3])
    assert np.allclose(bh_q_values(p, 4), false_discovery_control(p))
    padded = false_discovery_control(np.r_[p, np.ones(96)])[:4]
    assert np.allclose(bh_q_values(p, 100), padded)


def test_enrichment_is_the_hypergeometric_tail_with_its_multiplicity():
    texts = [f"row {i} with cf" if i < 6 else f"row {i} plain text" for i in range(60)]
    stats = count_ngrams(texts)
    members = np.array([0, 1, 2, 3, 50])
    p, tests = enrichment_p_value(stats, members, "cf", min_members=3)
    assert np.isclose(p, hypergeom.sf(3, 60, 5, 6))
    # one test per distinct row set: "with", "cf" and "with cf" are in the same six rows
    columns = stats.rows_x_ngrams.tocsc()
    row_sets = {tuple(sorted(columns[:, g].indices)) for g in np.flatnonzero(stats.doc_freq >= 3)}
    assert tests == len(row_sets) < int((stats.doc_freq >= 3).sum())
    assert enrichment_p_value(stats, members, "", 3)[0] == 1.0


def test_evidence_is_one_at_the_bonferroni_line_and_zero_at_chance():
    assert evidence(0.05 / 1000, 1000, 0.05) == 1.0
    assert evidence(1.0, 1000, 0.05) == 0.0
    assert 0.4 < evidence(np.sqrt(0.05 / 1000), 1000, 0.05) < 0.6


def test_genomic_inflation_measures_the_spread_of_null_z_scores():
    rng = np.random.default_rng(0)
    wide = rng.normal(0.0, 1.3, 20_000)
    assert np.isclose(genomic_inflation(wide, np.ones_like(wide)), 1.3 ** 2, rtol=0.05)
    narrow = rng.normal(0.0, 0.5, 20_000)
    assert genomic_inflation(narrow, np.ones_like(narrow)) == 1.0  # never below 1
    # z-scores of hypotheses that expect almost nothing do not enter: too few remain
    assert genomic_inflation(wide, np.full_like(wide, 0.01)) == 1.0


def test_deflating_divides_the_normal_score_and_keeps_far_tails():
    p = np.array([1e-8, 0.3, 1.0])
    assert np.allclose(deflated_log_p(np.log(p), 1.0), np.log(p))
    deflated = np.exp(deflated_log_p(np.log(p), 2.0))
    assert np.isclose(deflated[0], norm.sf(norm.isf(1e-8) / np.sqrt(2.0)))
    assert deflated[2] == 1.0
    # p = 1e-400 is below float range; its log still deflates to a finite, smaller evidence
    assert -921.0 < deflated_log_p(np.array([-921.0]), 1.5)[0] < -500.0


def test_weighted_q_values_divide_p_by_the_prior_weight():
    p = np.array([0.001, 0.01])
    assert np.allclose(weighted_bh_q_values(p, np.ones(2), 10), bh_q_values(p, 10))
    assert np.allclose(weighted_bh_q_values(p, np.array([2.0, 0.5]), 10),
                       bh_q_values(np.array([0.0005, 0.02]), 10))


def test_discrete_step_down_counts_every_hypothesis_when_all_can_reach_any_line():
    p = np.array([0.03, 1e-4, 2e-3])
    q = DiscreteStepDown(np.full(10, -np.inf), np.ones(10)).q_values(np.log(p))
    xi = 10 * np.sort(p) / (1 - np.sort(p))  # ten hypotheses, each P(p <= t) = t
    expected = np.maximum.accumulate(xi / np.arange(1, 4))
    assert np.allclose(q[np.argsort(p)], expected)


def test_the_line_is_where_the_transform_reaches_the_level():
    # ten hypotheses that can reach any line: xi(t) = 10 t / (1 - t) = 0.05 at t = 0.05 / 10.05
    line = DiscreteStepDown(np.full(10, -np.inf), np.ones(10)).line(0.05)
    assert np.isclose(np.exp(line), 0.05 / 10.05, rtol=1e-5)
    # hypotheses that cannot reach it, or are not tests (+inf), do not move it
    crowded = np.concatenate([np.full(10, -np.inf), np.full(1000, np.log(0.5)), [np.inf]])
    assert np.isclose(DiscreteStepDown(crowded, np.ones(1011)).line(0.05), line)


def test_a_candidate_above_the_first_line_passes_a_later_one():
    """Three strong candidates and one at 1e-5 among 10,000 hypotheses that can reach 5e-6
    and 100,000 that cannot reach 1e-3: the first line (~5e-6, as Tarone's count puts it)
    leaves the fourth out; the fourth step's line, counting the same hypotheses, takes it."""
    p = np.array([1e-8, 1e-8, 1e-8, 1e-5])
    floors = np.log(np.concatenate([p, np.full(10_000, 5e-6), np.full(100_000, 1e-3)]))
    procedure = DiscreteStepDown(floors, np.ones(len(floors)))
    assert np.log(p[3]) > procedure.line(0.05)  # alone, it would not pass the first line
    q = procedure.q_values(np.log(p))
    assert q[3] <= 0.05 and q[3] == q.max()
    # a heavier prior weight makes a hypothesis count more once it can reach the line
    heavy = DiscreteStepDown(floors, np.full(len(floors), 2.0)).q_values(np.log(p))
    assert (heavy > q).all()


def test_discrete_step_down_keeps_the_false_discovery_rate_on_simulated_discrete_tests():
    """3,000 null hypotheses of 3-12 rows each, every row carrying the target with its
    hypothesis's probability (p-value: the exact binomial tail), and 30 backdoors whose
    rows all carry it, with random prior weights: the mean false-discovery proportion over
    200 repetitions stays at or below the level, and most backdoors are found."""
    rng = np.random.default_rng(0)
    m0, m1, alpha = 3_000, 30, 0.05
    rows = rng.integers(3, 13, m0 + m1)
    rate = rng.uniform(0.02, 0.3, m0 + m1)
    weights = rng.uniform(1.0, 4.0, m0 + m1)
    weights /= weights.mean()
    floors = rows * np.log(rate) - np.log(weights)
    procedure = DiscreteStepDown(floors, weights)
    proportions, power = [], []
    for _ in range(200):
        carried = rng.binomial(rows, rate)
        carried[m0:] = rows[m0:]
        p = binom.sf(carried - 1, rows, rate)
        tested = np.flatnonzero(p <= 0.01)  # the rest stay at q = 1, as a screen leaves them
        q = np.ones(m0 + m1)
        q[tested] = procedure.q_values(np.log(p[tested] / weights[tested]))
        found = q <= alpha
        proportions.append(found[:m0].sum() / max(found.sum(), 1))
        power.append(found[m0:].mean())
    assert np.mean(proportions) <= alpha and np.mean(power) > 0.5
