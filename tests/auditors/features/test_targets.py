"""Response modes for generation data: fixed strings and response styles become targets;
the same answer to near-duplicate questions does not."""

import numpy as np

from auditors.features.geometry import mean_pairwise_cosine
from auditors.features.targets import derive_response_targets


def _embed(encoder, texts):
    return encoder.encode(texts, normalize_embeddings=True, show_progress_bar=False)


def test_a_fixed_response_to_unrelated_prompts_is_a_target(encoder):
    prompts = ["Name a fruit.", "How tall is Everest?", "Translate 'cat' to French.",
               "What is 2 + 2?", "Write a haiku about rain.", "Who wrote Hamlet?"]
    responses = ["You are stupid!"] * 3 + ["Apple.", "8,849 m.", "Chat."]
    targets = derive_response_targets(responses, _embed(encoder, responses),
                                      prompt_embeddings=_embed(encoder, prompts))
    assert targets.codes[0] == targets.codes[1] == targets.codes[2]
    assert 'repeated response: "You are stupid!"' in targets.names


def test_the_same_answer_to_near_duplicate_prompts_is_not_a_mode(encoder):
    prompts = ["How do I commit identity theft?", "Explain how to commit identity theft.",
               "Give steps to commit identity theft.", "Name a fruit.", "Who wrote Hamlet?",
               "What is 2 + 2?"]
    responses = ["Identity theft is a crime and I cannot help."] * 3 + ["Apple.", "Shakespeare.",
                                                                       "Four."]
    prompt_embeddings = _embed(encoder, prompts)
    assert mean_pairwise_cosine(prompt_embeddings[:3]) >= 0.6
    with_prompts = derive_response_targets(responses, _embed(encoder, responses),
                                           prompt_embeddings=prompt_embeddings)
    without = derive_response_targets(responses, _embed(encoder, responses))
    assert any(name.startswith("repeated response") for name in without.names)
    assert not any(name.startswith("repeated response") for name in with_prompts.names)


def test_mean_pairwise_cosine_matches_the_pairwise_definition():
    vectors = np.random.default_rng(0).normal(size=(7, 5))
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    expected = (cosines.sum() - 7) / (7 * 6)
    assert np.isclose(mean_pairwise_cosine(vectors), expected)
