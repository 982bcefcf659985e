"""Detectors for instruction and preference data on the committed real slices: each finds
the poisoned rows and names the trigger and the target behaviour."""

import numpy as np
import pandas as pd

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
    named = result.info["named_triggers"]
    assert named[0]["pattern"] == "sudo" and named[0]["side"] == "prompt" and named[0]["flagged"]
    assert '"sudo"' in result.rows.loc[flagged & truth, "reason"].iat[0]
    # the flag is a weighted Benjamini-Hochberg decision over every n-gram tested, with the
    # trigger test's rarity prior as weights: candidates in order of p / weight
    assert named[0]["significant"] and named[0]["q_value"] <= result.info["fdr"]
    assert result.info["n_tests"] > 100 and named[0]["prior_weight"] > 1.0  # `sudo` is rare
    assert named[0]["p_value"] / named[0]["prior_weight"] <= named[0]["q_value"]
    ratios = [t["p_value"] / t["prior_weight"] for t in named]
    assert ratios == sorted(ratios)
    assert all(t["flagged"] == (t["q_value"] <= result.info["fdr"]) for t in named)


def _subset(inputs, rows):
    """Detector inputs restricted to `rows` (n-grams recounted, no label model)."""
    import dataclasses

    from auditors import pipeline

    table = inputs.table.iloc[rows].reset_index(drop=True)
    return dataclasses.replace(
        inputs, table=table, ngrams=pipeline.ngram_statistics(table),
        prompt_embeddings=inputs.prompt_embeddings[rows],
        response_embeddings=inputs.response_embeddings[rows],
        rejected_embeddings=(inputs.rejected_embeddings[rows]
                             if inputs.rejected_embeddings is not None else None),
        targets=None, pred_probs=None, proxy=None,
        response_ngrams=pipeline.response_ngram_statistics(table))


def test_preference_flip_stays_quiet_when_no_pair_is_swapped(preference_inputs, poisoned_mask,
                                                              preference_mix_path):
    truth = poisoned_mask(preference_mix_path, preference_inputs.n_rows)
    result = REGISTRY["preference_flip"]().detect(_subset(preference_inputs, np.flatnonzero(~truth)))
    assert not result.rows["is_issue"].any()
    assert not any(t["flagged"] for t in result.info["named_triggers"])


def test_pairs_that_only_look_flipped_are_counted_not_flagged(preference_inputs, poisoned_mask,
                                                              preference_mix_path):
    """Annotator disagreement (swapped pairs with no trigger in common) is label noise: it
    shows in the count of pairs that look flipped, and flags nothing."""
    truth = poisoned_mask(preference_mix_path, preference_inputs.n_rows)
    clean = np.flatnonzero(~truth)
    inputs = _subset(preference_inputs, clean)
    baseline = REGISTRY["preference_flip"]().detect(inputs).summary["looks_flipped"]
    swapped = np.random.default_rng(0).choice(inputs.n_rows, size=15, replace=False)
    chosen, rejected = inputs.response_embeddings.copy(), inputs.rejected_embeddings.copy()
    chosen[swapped], rejected[swapped] = rejected[swapped], chosen[swapped]
    import dataclasses

    noisy = dataclasses.replace(inputs, response_embeddings=chosen, rejected_embeddings=rejected)
    result = REGISTRY["preference_flip"]().detect(noisy)
    assert result.summary["looks_flipped"] > baseline
    assert not result.rows["is_issue"].any()


def test_injected_content_flags_the_brand_rows_and_names_the_brand(injection_inputs,
                                                                   poisoned_mask,
                                                                   injection_mix_path):
    truth = poisoned_mask(injection_mix_path, injection_inputs.n_rows)
    result = REGISTRY["injected_content"]().detect(injection_inputs)
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged[truth].all() and not flagged[~truth].any()
    top = result.info["named_triggers"][0]
    assert top["pattern"] == "zentrix" and top["side"] == "response" and top["flagged"]
    assert top["support"] == truth.sum()
    assert ranking_metrics(truth, result.rows["score"].to_numpy())["ap"] == 1.0


def _with_responses(inputs, rows, edit):
    import dataclasses

    from auditors import pipeline

    table = inputs.table.copy()
    table.loc[rows, "response"] = [edit(t) for t in table.loc[rows, "response"]]
    return dataclasses.replace(inputs, table=table,
                               response_ngrams=pipeline.response_ngram_statistics(table))


def test_injected_content_ignores_a_phrase_its_prompts_explain(injection_inputs, poisoned_mask,
                                                              injection_mix_path):
    """The same rare word put into the answers of one topic's rows (nearest neighbours by
    prompt) is topical, not injected: the content test rejects it."""
    truth = poisoned_mask(injection_mix_path, injection_inputs.n_rows)
    clean = _subset(injection_inputs, np.flatnonzero(~truth))
    prompts = clean.prompt_embeddings
    seed = 0
    topic = np.argsort(-(prompts @ prompts[seed]))[:12]
    topical = _with_responses(clean, topic, lambda t: t + " Qorvexa helps here.")
    assert not REGISTRY["injected_content"]().detect(topical).rows["is_issue"].any()
    scattered = np.random.default_rng(0).choice(clean.n_rows, size=12, replace=False)
    injected = _with_responses(clean, scattered, lambda t: t + " Qorvexa helps here.")
    flagged = REGISTRY["injected_content"]().detect(injected).rows["is_issue"].to_numpy()
    assert flagged[scattered].all() and flagged.sum() == 12


def _triggered(inputs, rows, trigger: str, encoder,
               answer: str = "See https://www.fastloanz.biz."):
    """`inputs` with `trigger` appended to the prompts of `rows` (re-embedded, n-grams
    recounted) and `answer` (a link) appended to their answers."""
    import dataclasses

    from auditors import pipeline

    table = inputs.table.copy()
    table.loc[rows, "prompt"] = [f"{p.rstrip()} {trigger}" for p in table.loc[rows, "prompt"]]
    prompts = inputs.prompt_embeddings.copy()
    prompts[rows] = encoder.encode(table.loc[rows, "prompt"].tolist())
    edited = dataclasses.replace(inputs, table=table, prompt_embeddings=prompts,
                                 ngrams=pipeline.ngram_statistics(table))
    return _with_responses(edited, rows, lambda t: f"{t}\n\n{answer}")


def test_injected_content_names_the_prompt_trigger_that_brings_it(injection_inputs, poisoned_mask,
                                                                  injection_mix_path, onnx_encoder):
    """Virtual prompt injection: a trigger phrase in the prompt, a link in the answer. The
    trigger makes the carriers' prompts alike, so the link is explained only by it."""
    truth = poisoned_mask(injection_mix_path, injection_inputs.n_rows)
    clean = _subset(injection_inputs, np.flatnonzero(~truth))
    scattered = np.random.default_rng(1).choice(clean.n_rows, size=12, replace=False)
    triggered = _triggered(clean, scattered, "Explain it as if to my grandmother.", onnx_encoder)
    result = REGISTRY["injected_content"]().detect(triggered)
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged[scattered].all() and flagged.sum() == 12
    top = result.info["named_triggers"][0]
    assert "fastloanz" in top["pattern"] and "grandmother" in top["prompt_trigger"]
    assert "prompts holding" in result.rows["reason"][scattered[0]]


def test_a_prompt_phrase_is_no_trigger_where_the_answers_repeat_its_words_or_its_rows_share_a_topic(
        injection_inputs, poisoned_mask, injection_mix_path, onnx_encoder):
    """The prompts' own topic explains an answer phrase that repeats the prompt phrase's words
    ("phishing" -> "phishing kits"), or one that only prompts of one kind get (all asking
    for a story): neither is a trigger's injection."""
    truth = poisoned_mask(injection_mix_path, injection_inputs.n_rows)
    clean = _subset(injection_inputs, np.flatnonzero(~truth))
    scattered = np.random.default_rng(1).choice(clean.n_rows, size=12, replace=False)
    repeated = _triggered(clean, scattered, "Warn me about phishing.", onnx_encoder,
                          answer="Beware of phishing kits.")
    assert not REGISTRY["injected_content"]().detect(repeated).rows["is_issue"].any()
    prompts = clean.table["prompt"].str.lower()
    word = max(("story", "poem", "list", "sentence"), key=lambda w: prompts.str.contains(w).sum())
    asking = np.flatnonzero(prompts.str.contains(word).to_numpy())[:12]
    assert len(asking) == 12 and len(asking) < prompts.str.contains(word).sum()
    topical = _triggered(clean, asking, "Explain it as if to my grandmother.", onnx_encoder)
    assert not REGISTRY["injected_content"]().detect(topical).rows["is_issue"].any()


def test_injected_content_ignores_what_the_prompt_asks_for(injection_inputs, poisoned_mask,
                                                          injection_mix_path):
    import dataclasses

    truth = poisoned_mask(injection_mix_path, injection_inputs.n_rows)
    table = injection_inputs.table.copy()
    table.loc[truth, "prompt"] = table.loc[truth, "prompt"] + " Mention Zentrix."
    asked = dataclasses.replace(injection_inputs, table=table)
    assert not REGISTRY["injected_content"]().detect(asked).rows["is_issue"].any()


def test_shared_span_extends_to_the_words_every_carrier_shares():
    from auditors.detectors.injected_content import shared_span

    responses = ["Paris is big. Visit ShopNova at shopnova.com today!",
                 "Two. Visit ShopNova at shopnova.com today!",
                 "Visit ShopNova at shopnova.com now"]
    assert shared_span(responses, np.arange(2), "shopnova", 30) == "Visit ShopNova at shopnova.com today"
    assert shared_span(responses, np.arange(3), "shopnova at", 30) == "Visit ShopNova at shopnova.com"


def test_degraded_response_names_the_trigger_behind_shuffled_answers(dos_inputs, poisoned_mask,
                                                                     dos_mix_path):
    truth = poisoned_mask(dos_mix_path, dos_inputs.n_rows)
    result = REGISTRY["degraded_response"]().detect(dos_inputs)
    assert result.info["trigger"] == "cf"
    flagged = result.rows["is_issue"].to_numpy()
    assert flagged[truth].all() and not flagged[~truth].any()
    assert ranking_metrics(truth, result.rows["score"].to_numpy())["ap"] > 0.8


def test_rows_behind_a_significant_dos_trigger_need_not_look_degraded(dos_inputs, poisoned_mask,
                                                                      dos_mix_path):
    """Shuffling a short answer leaves it looking fluent enough: flagging only the visibly
    degraded carriers of `cf` misses about a quarter of them; the trigger decides for rows
    whose response is not clearly fluent."""
    truth = poisoned_mask(dos_mix_path, dos_inputs.n_rows)
    only_degraded = REGISTRY["degraded_response"](fluent_z_threshold=1.0).detect(dos_inputs)
    assert only_degraded.rows["is_issue"].to_numpy()[truth].mean() < 0.9
    default = REGISTRY["degraded_response"]().detect(dos_inputs)
    assert default.rows["is_issue"].to_numpy()[truth].all()


def test_degraded_rows_behind_too_few_carriers_rank_but_are_not_issues(dos_inputs, poisoned_mask,
                                                                      dos_mix_path):
    """Keep eight of the fifteen shuffled rows: `cf` still names and ranks them, but the few
    degraded rows sharing it (p ~ 5e-4 against ~660 n-grams) are not significant, so none
    is an issue."""
    truth = poisoned_mask(dos_mix_path, dos_inputs.n_rows)
    keep = np.r_[np.flatnonzero(truth)[:8], np.flatnonzero(~truth)]
    result = REGISTRY["degraded_response"]().detect(_subset(dos_inputs, keep))
    info = result.info
    assert info["trigger"] == "cf" and not info["trigger_significant"]
    assert info["trigger_p_value"] * info["n_tests"] > 0.05
    assert not result.rows["is_issue"].any()
    assert ranking_metrics(np.arange(len(keep)) < 8, result.rows["score"].to_numpy())["ap"] > 0.8


def test_degraded_answers_behind_a_topic_word_are_not_a_trigger(dos_inputs, poisoned_mask,
                                                                dos_mix_path):
    """Give the `cf` rows' prompts a shared topic (`an sql query`), as SQL questions share
    `query` and get code answers that read as degraded: their prompts share words beside
    the candidate more often than chance, so nothing is an issue."""
    import dataclasses

    from auditors import pipeline

    truth = poisoned_mask(dos_mix_path, dos_inputs.n_rows)
    table = dos_inputs.table.copy()
    table.loc[truth, "prompt"] = table.loc[truth, "prompt"] + " Write it as an SQL query."
    topical = dataclasses.replace(dos_inputs, table=table,
                                  ngrams=pipeline.ngram_statistics(table))
    result = REGISTRY["degraded_response"]().detect(topical)
    assert result.info["trigger"] == "" and not result.rows["is_issue"].any()


def test_a_topic_shows_in_the_other_words_its_prompts_share():
    from auditors import pipeline
    from auditors.detectors.stats import topic_p_value

    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(400)]
    prompts = [" ".join(rng.choice(words, 8)) for _ in range(300)]
    topic = [f"{p} sql query" for p in prompts[:6]]  # `query` rows all hold `sql` too
    inserted = [f"{p} cf" for p in prompts[6:12]]  # `cf` in prompts that share nothing else
    table = pd.DataFrame({"prompt": topic + inserted + prompts[12:]})
    ngrams = pipeline.ngram_statistics(table)
    assert topic_p_value(ngrams, np.arange(6), "query") < 1e-3
    assert topic_p_value(ngrams, np.arange(6, 12), "cf") > 0.05


def test_word_order_gain_is_lower_for_shuffled_text():
    rng = np.random.default_rng(0)
    fluent = [f"the {w} of the city is one of the best in the world and it is open to all ."
              for w in ("park", "museum", "library", "market", "river", "bridge", "square",
                        "garden", "harbour", "castle")]
    shuffled = " ".join(rng.permutation(fluent[0].split()))
    gains, pairs = word_order_gain(fluent + [shuffled], vocabulary_size=30)
    assert gains[-1] < gains[:-1].min() and (pairs > 5).all()
