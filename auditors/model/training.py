"""A small supervised training loop for sequence classifiers (fine-pruning's clean
fine-tuning, and the tiny demo model). Deterministic for a given seed."""

from __future__ import annotations

import numpy as np
import torch


def train_classifier(classifier, texts: list[str], label_ids: list[int], *, epochs: float = 1.0,
                     learning_rate: float = 5e-5, batch_size: int = 32, seed: int = 0,
                     after_step=None) -> list[float]:
    """Train `classifier.model` in place with AdamW on shuffled mini-batches for `epochs`
    passes (fractions allowed); `after_step()` runs after every optimiser step (fine-pruning
    uses it to keep pruned weights at zero). Returns the loss of every step; 0 epochs train
    nothing (a fraction rounds to at least one step)."""
    if epochs <= 0:
        return []
    model = classifier.model
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=learning_rate)
    labels = torch.tensor(label_ids, dtype=torch.long)
    n_steps = max(1, int(round(epochs * len(texts) / batch_size)))
    order = torch.cat([torch.randperm(len(texts), generator=generator)
                       for _ in range(int(np.ceil(n_steps * batch_size / len(texts))) + 1)])
    losses = []
    model.train()
    for step in range(n_steps):
        batch = order[step * batch_size:(step + 1) * batch_size].tolist()
        inputs = classifier.encode([texts[i] for i in batch])
        loss = model(**inputs, labels=labels[batch]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_trained(train, split, data, out_dir, **options):
    """`train(data, out_dir, **options)` unless `out_dir` already holds the trained weights
    from an earlier call; then only `split(data, **options)` (deterministic) is recomputed."""
    from pathlib import Path

    if (Path(out_dir) / "model.safetensors").is_file():
        return split(data, **{k: v for k, v in options.items() if k != "steps"})
    return train(data, out_dir, **options)


def accuracy(classifier, texts: list[str], label_ids: list[int]) -> float:
    if not texts:
        return float("nan")
    predicted = classifier.probs(texts).argmax(axis=1)
    return float(np.mean(predicted == np.asarray(label_ids)))
