"""The ONNX int8 and static backends against the torch vectors, on real sample rows. Both
are built from the bundled model, offline."""

import numpy as np
import pandas as pd
import pytest

from auditors.errors import TrainguardError
from auditors.features.backends import STATIC_DIMENSIONS, built_model_dir, default_cache_dir
from auditors.features.embeddings import embed_texts, load_encoder, resolve_model_path

SEMANTIC_TRIPLE = ["a wonderful film", "a marvellous movie", "tax law reform"]


@pytest.fixture(scope="session")
def sample_texts(sample_path) -> list[str]:
    table = pd.read_csv(sample_path, sep="\t", quoting=3)
    return table.iloc[:300, 0].astype(str).tolist()


@pytest.fixture(scope="session")
def static_encoder():
    """Distilling takes a minute or two on 2 cores, so this uses the user cache directory
    (TRAINGUARD_CACHE_DIR when set), as audits do: built once per machine."""
    return load_encoder(backend="static")


def test_onnx_int8_vectors_match_torch(onnx_encoder, encoder, sample_texts):
    fast = embed_texts(onnx_encoder, sample_texts)
    reference = embed_texts(encoder, sample_texts)
    assert fast.shape == reference.shape == (len(sample_texts), 384)
    np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, rtol=1e-4)
    cosines = (fast * reference).sum(axis=1)
    assert cosines.mean() >= 0.95
    assert cosines.min() >= 0.85


def test_onnx_vectors_do_not_depend_on_the_batch(onnx_encoder, sample_texts):
    """Dynamic int8 scales activations by the range of a whole batch, so each text runs
    alone: its vector is the same bits in any batch size, order or company."""
    one_by_one = np.stack([onnx_encoder.encode([t])[0] for t in sample_texts[:20]])
    batched = onnx_encoder.encode(sample_texts[:20], batch_size=8)
    reordered = onnx_encoder.encode(sample_texts[19::-1] + sample_texts[20:40])[19::-1]
    np.testing.assert_array_equal(batched, one_by_one)
    np.testing.assert_array_equal(reordered, one_by_one)


def test_onnx_export_is_cached_and_reused(onnx_encoder, onnx_cache, sample_texts):
    directory = built_model_dir(resolve_model_path(None), "onnx-int8", onnx_cache)
    model_file = directory / "model.onnx"
    before = model_file.stat().st_mtime_ns
    again = load_encoder(backend="onnx-int8", cache_dir=onnx_cache)
    assert model_file.stat().st_mtime_ns == before
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]  # no staging left
    np.testing.assert_array_equal(again.encode(sample_texts[:5]), onnx_encoder.encode(sample_texts[:5]))


@pytest.mark.slow  # distils the static model on a fresh machine (1-2 min)
def test_static_backend_shape_and_similarity_ordering(static_encoder, sample_texts):
    vectors = embed_texts(static_encoder, SEMANTIC_TRIPLE + sample_texts)
    assert vectors.shape == (3 + len(sample_texts), STATIC_DIMENSIONS)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert embed_texts(static_encoder, []).shape == (0, STATIC_DIMENSIONS)
    assert (default_cache_dir() / "models").exists()


@pytest.mark.slow  # distils the static model on a fresh machine (1-2 min)
def test_static_neighbours_agree_with_torch_more_than_chance(static_encoder, encoder, sample_texts):
    """Lower fidelity, but the same geometry: each row's nearest neighbour under the static
    model is among its ten nearest under torch far more often than by chance."""
    static = embed_texts(static_encoder, sample_texts)
    reference = embed_texts(encoder, sample_texts)
    def neighbours(vectors, k):
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        return np.argsort(-similarity, axis=1)[:, :k]
    nearest, top10 = neighbours(static, 1)[:, 0], neighbours(reference, 10)
    agreement = np.mean([n in row for n, row in zip(nearest, top10)])
    assert agreement > 5 * 10 / len(sample_texts)  # five times chance


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(TrainguardError, match="unknown embedding backend 'tpu'"):
        load_encoder(backend="tpu")
