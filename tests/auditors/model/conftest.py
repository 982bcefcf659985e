"""A tiny BERT classifier trained from scratch, in this session, on a slice of the SST-2
BadNets sample with its poison raised to 10%: a real backdoored checkpoint, no download."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditors.model.demo import TRIGGERS, ensure_demo_classifier


@pytest.fixture(scope="session")
def tiny_backdoored(tmp_path_factory, sample_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    directory = tmp_path_factory.getbasetemp() / "tiny-backdoored-bert"
    split = ensure_demo_classifier(sample_path, directory)
    from auditors.model.checkpoint import load_classifier
    from auditors.model.insertion import attack_success_rate

    classifier = load_classifier(directory)
    negatives = [t for t, y in zip(split.held_out_texts[:300], split.held_out_labels[:300])
                 if y == "0"]
    rates = [attack_success_rate(classifier, negatives, trigger, 1) for trigger in TRIGGERS]
    assert min(rates) > 0.9, f"the fixture did not learn its backdoor: {rates}"
    return directory, split


@pytest.fixture
def tiny_classifier(tiny_backdoored):
    from auditors.model.checkpoint import load_classifier

    return load_classifier(tiny_backdoored[0])


def triggered(texts, seed=1):
    """Each text with one of the true triggers at a random position."""
    from auditors.model.insertion import insert_trigger

    rng = np.random.default_rng(seed)
    return [insert_trigger(t, TRIGGERS[i % len(TRIGGERS)], "random", rng)
            for i, t in enumerate(texts)]
