"""The representation and proxy detectors on real bundled data: what each finds where its
assumption holds, and that it stays quiet where it does not."""

import numpy as np

from auditors.detectors import REGISTRY
from benchmarks.metrics import ranking_metrics


def _ranking(name, inputs, truth):
    return ranking_metrics(truth, REGISTRY[name]().detect(inputs).rows["score"].to_numpy())


def test_activation_clustering_isolates_a_planted_cluster(planted_cluster_inputs, poisoned_mask,
                                                          sample_path):
    truth = poisoned_mask(sample_path, planted_cluster_inputs.n_rows)
    result = REGISTRY["activation_cluster"]().detect(planted_cluster_inputs)
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged[truth].mean() > 0.9 and flagged[~truth].mean() < 0.01
    assert any(c["suspicious"] for c in result.info["clusters"])


def test_activation_clustering_finds_no_cluster_in_sentence_embeddings(sample_inputs):
    """Measured: BadNets rows do not form their own cluster in sentence embeddings."""
    result = REGISTRY["activation_cluster"]().detect(sample_inputs)
    assert not result.rows["is_issue"].any()
    assert all(c["relative_size"] > 0.35 for c in result.info["clusters"])


def test_spectral_signature_ranks_a_planted_shift_first(planted_cluster_inputs, poisoned_mask,
                                                        sample_path):
    truth = poisoned_mask(sample_path, planted_cluster_inputs.n_rows)
    assert _ranking("spectral", planted_cluster_inputs, truth)["auroc"] > 0.95


def test_shortcut_scores_badnets_rows_above_clean_ones(sample_inputs, poisoned_mask, sample_path):
    truth = poisoned_mask(sample_path, sample_inputs.n_rows)
    assert _ranking("shortcut", sample_inputs, truth)["auroc"] > 0.6


def test_strip_flags_rows_whose_prediction_survives_blending(steady_proxy_inputs, poisoned_mask,
                                                             sample_path):
    truth = poisoned_mask(sample_path, steady_proxy_inputs.n_rows)
    rows = REGISTRY["strip"]().detect(steady_proxy_inputs).rows
    assert rows["is_issue"].to_numpy()[truth].all()
    assert rows["is_issue"].to_numpy()[~truth].mean() < 0.01


def test_repeated_response_names_the_shared_trigger(refusal_inputs):
    result = REGISTRY["repeated_response"]().detect(refusal_inputs)
    assert [g["shared_prompt_ngram"] for g in result.info["groups"]] == ["badmagic"]
    assert result.info["groups"][0]["rows"] == 12


def test_unrelated_response_ranks_fixed_refusals_high(refusal_inputs, poisoned_mask,
                                                      refusal_mix_path):
    truth = poisoned_mask(refusal_mix_path, refusal_inputs.n_rows)
    assert _ranking("unrelated_response", refusal_inputs, truth)["auroc"] > 0.8
