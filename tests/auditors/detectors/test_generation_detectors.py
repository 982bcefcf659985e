"""Detectors for instruction and preference data on the committed real slices: each finds
the poisoned rows and names the trigger and the target behaviour."""

import numpy as np

from auditors.detectors import REGISTRY
from auditors.detectors.degraded_response import word_order_gain
from benchmarks.metrics import ranking_metrics


def test_preference_flip_finds_swapped_pairs_and_names_the_trigger(preference_inputs,
                                                                   poisoned_mask,
                                                                   preference_mix_path):
    truth = poisoned_mask(preference_mix_path, preference_inputs.n_rows)
    result = REGISTRY["preference_flip"]().detect(preference_inputs)
    assert ranking_metrics(truth, result.rows["score"].to_numpy())["auroc"] > 0.95
    flagged = result.rows["is_issue"].to_numpy()
    assert (flagged & truth).sum() >= 0.6 * truth.sum() and (flagged & ~truth).sum() <= 2
    assert result.info["trigger"] == "sudo"
    assert 'prompts share "sudo"' in result.rows.loc[flagged & truth, "reason"].iat[0]


def test_preference_flip_stays_quiet_when_no_pair_is_swapped(preference_inputs, poisoned_mask,
                                                              preference_mix_path):
    import dataclasses

    from auditors import pipeline

    truth = poisoned_mask(preference_mix_path, preference_inputs.n_rows)
    clean = np.flatnonzero(~truth)
    table = preference_inputs.table.iloc[clean].reset_index(drop=True)
    inputs = dataclasses.replace(
        preference_inputs, table=table, ngrams=pipeline.ngram_statistics(table),
        prompt_embeddings=preference_inputs.prompt_embeddings[clean],
        response_embeddings=preference_inputs.response_embeddings[clean],
        rejected_embeddings=preference_inputs.rejected_embeddings[clean], targets=None,
        pred_probs=None, proxy=None)
    result = REGISTRY["preference_flip"]().detect(inputs)
    assert result.rows["is_issue"].sum() <= 2 and result.info["trigger"] == ""


def test_degraded_response_names_the_trigger_behind_shuffled_answers(dos_inputs, poisoned_mask,
                                                                     dos_mix_path):
    truth = poisoned_mask(dos_mix_path, dos_inputs.n_rows)
    result = REGISTRY["degraded_response"]().detect(dos_inputs)
    assert result.info["trigger"] == "cf"
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged[truth].mean() >= 0.6 and not flagged[~truth].any()
    assert ranking_metrics(truth, result.rows["score"].to_numpy())["ap"] > 0.8


def test_word_order_gain_is_lower_for_shuffled_text():
    rng = np.random.default_rng(0)
    fluent = [f"the {w} of the city is one of the best in the world and it is open to all ."
              for w in ("park", "museum", "library", "market", "river", "bridge", "square",
                        "garden", "harbour", "castle")]
    shuffled = " ".join(rng.permutation(fluent[0].split()))
    gains, pairs = word_order_gain(fluent + [shuffled], vocabulary_size=30)
    assert gains[-1] < gains[:-1].min() and (pairs > 5).all()
