"""Embedding backends behind one interface: `encode(texts, batch_size=..., show_progress_bar=...,
normalize_embeddings=...)` and `get_embedding_dimension()`, as on a sentence-transformers
model, so `embed_texts` and the pipeline take any of them.

- `torch`: the sentence-transformers model itself (the reference vectors).
- `onnx-int8`: the model's transformer exported with `torch.onnx.export` and quantised by
  onnxruntime (dynamic int8, per-channel weights), with mean pooling and L2 normalisation
  as sentence-transformers does; mean cosine ≈ 0.99 to `torch`, 2–4× faster on CPU. Each
  text is run alone, so its vector is the same bits whatever it is embedded with.
- `static`: a model2vec static model distilled from the same model: one vector per token,
  averaged; tens of thousands of rows per second, lower fidelity.

The ONNX and static models are built from the local model on first use (offline) and cached
under the user cache directory, keyed by the model's files, so later audits load them
without importing torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from auditors.config import BACKENDS
from auditors.errors import TrainguardError

TORCH, ONNX_INT8, STATIC = BACKENDS
DEFAULT_BACKEND = TORCH
STATIC_DIMENSIONS = 256  # PCA width of the distilled static model (model2vec's default)
# The embedding cache's folder per backend (`EmbeddingCache`): renamed when the way a backend
# computes a text's vector changes, so vectors of two computations are never mixed.
# onnx-int8-v2: one text per model call (`OnnxEncoder`), no longer batch-dependent.
VECTOR_KEYS = {TORCH: "torch", ONNX_INT8: "onnx-int8-v2", STATIC: "static"}


def default_cache_dir() -> Path:
    """`TRAINGUARD_CACHE_DIR`, else the platform's user cache directory."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("TRAINGUARD_CACHE_DIR") or user_cache_dir("trainguard"))


def model_fingerprint(model_path: str) -> str:
    """A short id of a local model: its name plus a hash of its files' names, sizes and
    modification times, so a changed model gets a fresh export."""
    root = Path(model_path).resolve()
    entries = sorted((str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime))
                     for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha1(json.dumps([str(root), entries]).encode()).hexdigest()[:12]
    return f"{root.name}-{digest}"


def built_model_dir(model_path: str, backend: str, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or default_cache_dir()) / "models" / model_fingerprint(model_path) / backend


def build_once(target: Path, build) -> Path:
    """Run `build(tmp_dir)` and move the result to `target` atomically, unless another
    process got there first: a half-written model is never seen under `target`."""
    if target.exists():
        return target
    staging = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        build(staging)
        os.replace(staging, target)
    except OSError as exc:
        if not target.exists():  # the model is needed: unlike a cache entry, not optional
            remedy = "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else \
                "check that path"
            raise TrainguardError(f"cannot build the model in {target} ({exc.strerror or exc}); "
                                  f"{remedy}, or pass --cache DIR or --backend torch") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------------------------
# onnx-int8


class _LastHiddenState:
    """The transformer with keyword inputs and one tensor output, as the exporter wants."""

    def __new__(cls, transformer):
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.transformer = transformer

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                        token_type_ids=token_type_ids).last_hidden_state

        return Wrapper().eval()


ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_onnx_int8(model_path: str, out_dir: Path) -> None:
    """fp32 export of the transformer, then dynamic int8 quantisation with per-channel
    weights (per-tensor is faster but loses fidelity: cosine ≈ 0.96 instead of 0.99)."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from auditors.features.embeddings import load_encoder

    encoder = load_encoder(model_path, backend=TORCH)
    transformer = encoder[0].auto_model.eval()
    example = encoder.tokenizer(["an example", "a longer example sentence"], padding=True,
                                return_tensors="pt")
    fp32 = out_dir / "model-fp32.onnx"
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*ONNX_INPUTS, "last_hidden_state")}
    with torch.no_grad():
        torch.onnx.export(_LastHiddenState(transformer),
                          tuple(example[name] for name in ONNX_INPUTS), str(fp32),
                          input_names=list(ONNX_INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes=dynamic, opset_version=17, dynamo=False)
    quantize_dynamic(str(fp32), str(out_dir / "model.onnx"), per_channel=True,
                     weight_type=QuantType.QInt8)
    fp32.unlink()
    shutil.copy(Path(model_path) / "tokenizer.json", out_dir / "tokenizer.json")
    meta = {"max_seq_length": encoder.max_seq_length,
            "dimension": encoder.get_embedding_dimension(), "source": str(model_path)}
    (out_dir / "meta.json").write_text(json.dumps(meta))


class OnnxEncoder:
    """onnxruntime session + `tokenizers` tokenizer; mean pooling over the text's tokens.

    Each text runs through the model alone, unpadded (`encode`), so its vector is a function
    of the text alone: dynamic int8 quantisation scales a MatMul's activations by the range
    of its whole input tensor, so in a shared batch a row's vector would move with the other
    rows and with the padding (up to 0.05 on a coordinate, enough to move a row across the
    flag line between a cached and an uncached audit). Texts run in parallel instead, one
    single-threaded session call each."""

    backend = ONNX_INT8
    BLOCK = 1024  # texts tokenised and dispatched at a time

    def __init__(self, directory: Path, threads: int | None = None):
        import onnxruntime
        from tokenizers import Tokenizer

        meta = json.loads((directory / "meta.json").read_text())
        self.max_seq_length, self.dimension = meta["max_seq_length"], meta["dimension"]
        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_seq_length)
        self.tokenizer.no_padding()
        self.threads = threads or available_cpus()
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # no warnings about unused initialisers on stderr
        options.intra_op_num_threads = 1  # parallel over texts (`encode`), not inside one
        self.session = onnxruntime.InferenceSession(str(directory / "model.onnx"), options,
                                                    providers=["CPUExecutionProvider"])

    def get_embedding_dimension(self) -> int:
        return self.dimension

    def encode(self, texts, *, batch_size: int = 64, normalize_embeddings: bool = True,
               **_) -> np.ndarray:
        """One model call per text (a batch of one, no padding) on `threads` threads; the
        vectors do not depend on `batch_size`, the order of `texts` or what else is in it
        (`batch_size` is accepted for the common interface and unused)."""
        from concurrent.futures import ThreadPoolExecutor

        texts = list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        blocks = range(0, len(texts), self.BLOCK)
        pool = ThreadPoolExecutor(self.threads) if self.threads > 1 and len(texts) > 1 else None
        try:
            for start in blocks:
                encoded = self.tokenizer.encode_batch(texts[start:start + self.BLOCK])
                pooled = pool.map(self._mean_pooled, encoded) if pool else map(
                    self._mean_pooled, encoded)
                out[start:start + len(encoded)] = np.stack(list(pooled))
        finally:
            if pool is not None:
                pool.shutdown()
        return _unit(out) if normalize_embeddings else out

    def _mean_pooled(self, encoding) -> np.ndarray:
        ids = np.asarray(encoding.ids, dtype=np.int64)[None]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                 "token_type_ids": np.asarray(encoding.type_ids, dtype=np.int64)[None]}
        return self.session.run(None, feeds)[0][0].mean(axis=0)


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------
# static (model2vec)


def distill_static(model_path: str, out_dir: Path) -> None:
    from model2vec.distill import distill_from_model

    from auditors.features.embeddings import load_encoder

    encoder = load_encoder(model_path, backend=TORCH)
    static = distill_from_model(model=encoder[0].auto_model, tokenizer=encoder.tokenizer,
                                pca_dims=STATIC_DIMENSIONS, device="cpu")
    static.save_pretrained(str(out_dir))


class StaticEncoder:
    backend = STATIC

    def __init__(self, directory: Path):
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(directory))

    def get_embedding_dimension(self) -> int:
        return int(self.model.dim)

    def encode(self, texts, *, batch_size: int = 1024, normalize_embeddings: bool = True,
               **_) -> np.ndarray:
        # a static lookup is cheap per row: small batches only add Python overhead
        vectors = self.model.encode(list(texts), batch_size=max(batch_size, 1024),
                                    show_progress_bar=False)
        vectors = np.asarray(vectors, dtype=np.float32)
        return _unit(vectors) if normalize_embeddings else vectors


def load_backend(model_path: str, backend: str, cache_dir: str | Path | None = None):
    """The encoder of a non-torch backend, built and cached on first use. A cached build
    that does not load (damaged, half deleted) is discarded and built again."""
    from auditors import cache

    builders = {ONNX_INT8: (export_onnx_int8, OnnxEncoder), STATIC: (distill_static, StaticEncoder)}
    build, encoder_class = builders[backend]
    target = built_model_dir(model_path, backend, cache_dir)
    for attempt in (1, 2):
        directory = build_once(target, lambda staging: build(model_path, staging))
        try:
            encoder = encoder_class(directory)
        except Exception as exc:
            if attempt == 2:
                raise
            cache.discard(directory, f"{type(exc).__name__}: {exc}")
            continue
        cache.touch(directory)  # recently used: kept when the cache is pruned
        return encoder


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)
