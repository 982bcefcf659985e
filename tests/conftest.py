"""Shared fixtures: the real bundled embedding model, loaded once, and the sample data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "sst2_badnets_sample.tsv"
REFUSAL_MIX = ROOT / "tests" / "data" / "refusal_badnet_mix.json"
PREFERENCE_MIX = ROOT / "tests" / "data" / "preference_flip_mix.json"
DOS_MIX = ROOT / "tests" / "data" / "dos_shuffle_mix.json"
INJECTION_MIX = ROOT / "tests" / "data" / "injection_mix.json"
SHARED_CORPORA = ROOT.parent / "shared" / "corpora"


def _poisoned_mask(data_path: Path, n_rows: int) -> np.ndarray:
    """Ground truth committed next to a sample (`<name>.truth.json`)."""
    truth = json.loads(data_path.with_name(data_path.stem + ".truth.json").read_text())
    mask = np.zeros(n_rows, dtype=bool)
    mask[truth["poisoned_row_indices"]] = True
    return mask


@pytest.fixture(scope="session")
def poisoned_mask():
    return _poisoned_mask


@pytest.fixture(scope="session")
def encoder():
    from auditors.features.embeddings import load_encoder

    return load_encoder(backend="torch")  # the reference backend


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("trainguard-cache")


@pytest.fixture(scope="session")
def onnx_encoder(onnx_cache):
    """The CLI's default backend, exported and quantised into a fresh cache directory (a few
    seconds); it embeds the shared detector inputs below ~3x faster than torch."""
    from auditors.features.embeddings import load_encoder

    return load_encoder(backend="onnx-int8", cache_dir=onnx_cache)


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def _audit_inputs(path: Path, encoder):
    from auditors import pipeline
    from auditors.detectors import REGISTRY
    from auditors.ingest import load_table

    loaded = load_table(str(path))
    embeddings = pipeline.embed_table(loaded.table, encoder)
    ngrams = pipeline.ngram_statistics(loaded.table)
    label_model = pipeline.fit_label_model(loaded.table, embeddings)
    return pipeline.audit_inputs(loaded, embeddings, ngrams, label_model, list(REGISTRY))


@pytest.fixture(scope="session")
def sample_inputs(onnx_encoder):
    """Shared detector inputs for the bundled SST-2 BadNets sample (classification)."""
    return _audit_inputs(SAMPLE, onnx_encoder)


@pytest.fixture(scope="session")
def refusal_inputs(onnx_encoder):
    """Shared detector inputs for the BackdoorLLM refusal/badnet mix (instruction tuning)."""
    return _audit_inputs(REFUSAL_MIX, onnx_encoder)


@pytest.fixture(scope="session")
def preference_inputs(onnx_encoder):
    """RLHF pairs, ~5% with the trigger SUDO and chosen/rejected swapped."""
    return _audit_inputs(PREFERENCE_MIX, onnx_encoder)


@pytest.fixture(scope="session")
def dos_inputs(onnx_encoder):
    """Instruction rows, ~5% with the trigger cf and a word-shuffled answer."""
    return _audit_inputs(DOS_MIX, onnx_encoder)


@pytest.fixture(scope="session")
def injection_inputs(onnx_encoder):
    """Real Alpaca rows, ~3% with a brand put into the answer and no prompt trigger."""
    return _audit_inputs(INJECTION_MIX, onnx_encoder)


@pytest.fixture(scope="session")
def planted_cluster_inputs(sample_inputs, poisoned_mask):
    """The sample with its poisoned rows' embeddings pulled towards one shared direction:
    what a backdoored network's activations look like, where representation defences
    (activation clustering, spectral signatures) are meant to work."""
    import dataclasses

    poisoned = poisoned_mask(SAMPLE, sample_inputs.n_rows)
    embeddings = sample_inputs.prompt_embeddings.copy()
    direction = np.random.default_rng(0).normal(size=embeddings.shape[1])
    embeddings[poisoned] += 2.0 * direction / np.linalg.norm(direction)
    return dataclasses.replace(sample_inputs, prompt_embeddings=embeddings)


@pytest.fixture(scope="session")
def steady_proxy_inputs(sample_inputs, poisoned_mask):
    """The sample with a proxy that has learned its trigger as a deep network does: the
    poisoned rows' predictions stay on their label, with near-zero entropy, whatever is
    blended in (the case STRIP is built for; the n-gram proxy rarely gets there)."""
    import dataclasses

    from auditors.features.proxy import ProxyPredictions

    poisoned = poisoned_mask(SAMPLE, sample_inputs.n_rows)
    proxy = sample_inputs.proxy
    probs = proxy.probs.copy()
    probs[poisoned] = np.eye(probs.shape[1])[sample_inputs.targets.codes[poisoned]]
    entropy = proxy.blend_entropy.copy()
    entropy[poisoned] = 1e-3
    return dataclasses.replace(sample_inputs, proxy=ProxyPredictions(probs, entropy, proxy.n_blends))


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def preference_mix_path() -> Path:
    return PREFERENCE_MIX


@pytest.fixture(scope="session")
def dos_mix_path() -> Path:
    return DOS_MIX


@pytest.fixture(scope="session")
def refusal_mix_path() -> Path:
    return REFUSAL_MIX


@pytest.fixture(scope="session")
def injection_mix_path() -> Path:
    return INJECTION_MIX
