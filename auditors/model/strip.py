"""STRIP (Gao et al. 2019, "STRIP: A Defence Against Trojan Attacks on Deep Neural
Networks"; the text variant follows STRIP-ViTA, Gao et al. 2021): superimpose each input
with many other clean inputs and measure the entropy of the predictions. A clean input's
prediction wavers when other text is mixed in; an input carrying a trigger keeps the
attacker's label whatever is added, so its entropy stays low. The threshold is the
`frr` quantile of the entropies of clean inputs (1% of clean inputs rejected by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StripResult:
    entropy: np.ndarray  # mean normalised prediction entropy per probe under perturbation
    threshold: float
    flagged: np.ndarray  # bool per probe: entropy below the threshold
    predicted: list[str]  # the probe's own prediction
    calibration_entropy: np.ndarray
    frr: float


def superimpose(text: str, donor: str, rng: np.random.Generator) -> str:
    """The words of both texts interleaved at random, each text keeping its word order:
    every word of the input survives, so does any trigger in it."""
    words, extra = text.split(), donor.split()
    from_input = rng.permutation(np.arange(len(words) + len(extra)) < len(words))
    mixed, i, j = [], 0, 0
    for take_input in from_input:
        if take_input:
            mixed.append(words[i])
            i += 1
        else:
            mixed.append(extra[j])
            j += 1
    return " ".join(mixed)


def strip_entropy(classifier, texts: list[str], donors: list[str], *, n_perturbations: int = 32,
                  seed: int = 0) -> np.ndarray:
    """Mean prediction entropy (in [0, 1], divided by log of the class count) of each text
    superimposed with `n_perturbations` random donors (never itself)."""
    rng = np.random.default_rng(seed)
    mixed = []
    for text in texts:
        candidates = [d for d in donors if d != text] or donors
        for k in rng.integers(0, len(candidates), size=n_perturbations):
            mixed.append(superimpose(text, candidates[k], rng))
    probs = classifier.probs(mixed)
    entropy = -np.sum(probs * np.log(np.clip(probs, 1e-12, 1.0)), axis=1)
    entropy /= np.log(probs.shape[1])
    return entropy.reshape(len(texts), n_perturbations).mean(axis=1)


def strip(classifier, probes: list[str], clean: list[str], *, frr: float = 0.01,
          n_perturbations: int = 32, seed: int = 0) -> StripResult:
    """Entropy of every probe, with the threshold calibrated on `clean` inputs (which
    are also the donors mixed into every probe)."""
    calibration = strip_entropy(classifier, clean, clean, n_perturbations=n_perturbations,
                                seed=seed)
    threshold = float(np.quantile(calibration, frr))
    entropy = strip_entropy(classifier, probes, clean, n_perturbations=n_perturbations,
                            seed=seed + 1)
    labels = classifier.labels
    predicted = [labels[i] for i in classifier.probs(probes).argmax(axis=1)]
    return StripResult(entropy, threshold, entropy < threshold, predicted, calibration, frr)
