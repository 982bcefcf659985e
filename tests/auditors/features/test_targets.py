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


def test_copies_of_a_row_do_not_make_a_response_mode():
    """Two rows sharing an opening, each upsampled three times, are two rows, not a mode
    of six (their phrases then looked like triggers of it)."""
    responses = [f"Answer number {i} is about topic {i}." for i in range(60)]
    responses += ["The title of the song is High Hopes."] * 3
    responses += ["The title of the book is Dune."] * 3
    keys = [f"row{i}" for i in range(60)] + ["song"] * 3 + ["book"] * 3
    embeddings = np.eye(66)[:, :8]  # no clusters needed: the openings decide
    by_rows = derive_response_targets(responses, embeddings)
    by_ids = derive_response_targets(responses, embeddings, row_keys=keys)
    assert any("title of the" in name.lower() for name in by_rows.names)
    assert not any("title of the" in name.lower() for name in by_ids.names)


def test_a_candidate_counts_each_distinct_row_once():
    from auditors.detectors.trigger import distinct_rows

    keys = np.array(["a", "b", "a", "c", "a"])
    assert distinct_rows(np.array([0, 2, 4, 3]), keys).tolist() == [0, 3]
    assert distinct_rows(np.array([0, 2]), None).tolist() == [0, 2]
