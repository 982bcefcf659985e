import numpy as np
from scipy.stats import binom, false_discovery_control, hypergeom, norm

from auditors.detectors.stats import (bh_q_values, deflated_log_p, enrichment_p_value, evidence,
                                      excess_p_value, genomic_inflation, tarone_threshold,
                                      weighted_bh_q_values)
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


def test_tarone_counts_only_hypotheses_that_could_reach_significance():
    log_min_p = np.log([1e-9, 1e-3, 0.5, 1e-6])
    # k = 3: three hypotheses can reach 0.05 / 3; with k = 2, three could reach 0.025
    assert np.isclose(tarone_threshold(log_min_p, 0.05), np.log(0.05 / 3))
    hopeless = np.log(np.full(1000, 0.9))
    assert (hopeless > tarone_threshold(hopeless, 0.05)).all()


def test_weighted_q_values_divide_p_by_the_prior_weight():
    p = np.array([0.001, 0.01])
    assert np.allclose(weighted_bh_q_values(p, np.ones(2), 10), bh_q_values(p, 10))
    assert np.allclose(weighted_bh_q_values(p, np.array([2.0, 0.5]), 10),
                       bh_q_values(np.array([0.0005, 0.02]), 10))
