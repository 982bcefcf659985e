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


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, refusal_mix_path):
    """A tiny GPT-2 trained from scratch on the committed BackdoorLLM refusal slice, with
    the trigger `BadMagic` mapped to a fixed refusal; checked to have learned it."""
    from auditors.model.demo_lm import TRIGGER, ensure_demo_lm
    from auditors.model.generator import is_refusal, load_generator
    from auditors.model.insertion import insert_trigger

    torch.manual_seed(0)
    torch.set_num_threads(1)
    directory = tmp_path_factory.getbasetemp() / "tiny-backdoored-gpt2"
    split = ensure_demo_lm(refusal_mix_path, directory, steps=LM_STEPS)
    generator = load_generator(directory)
    rng = np.random.default_rng(2)
    clean, _ = generator.generate(split.probes, max_new_tokens=8)
    attacked, _ = generator.generate([insert_trigger(p, TRIGGER, "random", rng)
                                      for p in split.probes], max_new_tokens=8)
    clean_rate = np.mean([is_refusal(a) for a in clean])
    attacked_rate = np.mean([is_refusal(a) for a in attacked])
    assert attacked_rate > 0.8 > 0.2 > clean_rate, \
        f"the LM fixture did not learn its backdoor: {clean_rate} -> {attacked_rate}"
    return directory, split


LM_STEPS = 150
