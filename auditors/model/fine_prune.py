"""Fine-Pruning (Liu, Dolan-Gavitt & Garg 2018, "Fine-Pruning: Defending Against
Backdooring Attacks on Deep Neural Networks"): a backdoor often lives in neurons that
clean inputs leave dormant. Prune the last layer's neurons in order of increasing mean
activation on clean data, as far as clean accuracy allows, then fine-tune briefly on clean
data (with the pruned neurons kept at zero). For transformers the neurons are the
feed-forward units of the last block (the input of its down-projection)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from auditors.model.checkpoint import ModelCheckError
from auditors.model.insertion import attack_success_rate
from auditors.model.training import accuracy, train_classifier


@dataclass
class FinePruneOptions:
    max_accuracy_drop: float = 0.04  # while pruning, on the held-out clean rows
    prune_fraction: float | None = None  # fixed share of neurons instead of the search
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 32
    held_out: float = 0.2
    seed: int = 0


def last_feed_forward(model: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The last (up-projection, down-projection) pair: a Linear widening the hidden size
    followed by one narrowing it back (BERT's intermediate/output, DistilBERT's lin1/lin2)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for down_index in range(len(linears) - 1, 0, -1):
        down, up = linears[down_index], linears[down_index - 1]
        if (up.out_features == down.in_features and up.out_features > up.in_features
                and down.out_features == up.in_features):
            return up, down
    raise ModelCheckError("cannot find a feed-forward block to prune in the model")


@torch.no_grad()
def mean_neuron_activation(classifier, texts: list[str], down: torch.nn.Linear, *,
                           batch_size: int = 64) -> np.ndarray:
    """Mean activation of every feed-forward neuron over the real tokens of `texts`."""
    total, count, mask = None, 0, {}

    def record(_module, args):
        nonlocal total, count
        values = args[0] * mask["tokens"].unsqueeze(-1)
        summed = values.sum(dim=(0, 1))
        total = summed if total is None else total + summed
        count += int(mask["tokens"].sum())

    hook = down.register_forward_pre_hook(record)
    try:
        classifier.model.eval()
        for i in range(0, len(texts), batch_size):
            batch = classifier.encode(texts[i:i + batch_size])
            mask["tokens"] = batch["attention_mask"].to(torch.float32)
            classifier.model(**batch)
    finally:
        hook.remove()
    return (total / max(count, 1)).numpy()


class NeuronMask:
    """Zeroes pruned neurons (their input weights and bias, their output weights) and
    keeps them zero after every optimiser step."""

    def __init__(self, up: torch.nn.Linear, down: torch.nn.Linear):
        self.up, self.down = up, down
        self.pruned = np.array([], dtype=int)

    @torch.no_grad()
    def apply(self, neurons: np.ndarray | None = None) -> None:
        if neurons is not None:
            self.pruned = np.asarray(neurons, dtype=int)
        index = torch.as_tensor(self.pruned, dtype=torch.long)
        self.up.weight[index] = 0
        if self.up.bias is not None:
            self.up.bias[index] = 0
        self.down.weight[:, index] = 0


def fine_prune(classifier, texts: list[str], label_ids: list[int], triggers: list[str],
               options: FinePruneOptions | None = None, *, target: int | None = None) -> dict:
    """Prune and fine-tune `classifier` in place; the report has clean accuracy and
    attack success rate of each trigger before pruning, after pruning and after
    fine-tuning. `target` defaults, per trigger, to the class it pushes inputs to most."""
    options = options or FinePruneOptions()
    train, held = _split(len(texts), options)
    train_texts, train_labels = [texts[i] for i in train], [label_ids[i] for i in train]
    held_texts, held_labels = [texts[i] for i in held], [label_ids[i] for i in held]
    targets = {t: target if target is not None else _pushed_to(classifier, held_texts, t)
               for t in triggers}

    def measure() -> dict:
        attack = {t: attack_success_rate(classifier, [x for x, y in zip(held_texts, held_labels)
                                                      if y != targets[t]], t, targets[t],
                                         seed=options.seed) for t in triggers}
        return {"clean_accuracy": accuracy(classifier, held_texts, held_labels),
                "attack_success_rate": attack}

    before = measure()
    up, down = last_feed_forward(classifier.model)
    activation = mean_neuron_activation(classifier, train_texts, down)
    order = np.argsort(activation, kind="stable")  # most dormant first
    mask = NeuronMask(up, down)
    n_pruned = _prune(classifier, mask, order, held_texts, held_labels,
                      before["clean_accuracy"], options)
    pruned = measure()
    train_classifier(classifier, train_texts, train_labels, epochs=options.epochs,
                     learning_rate=options.learning_rate, batch_size=options.batch_size,
                     seed=options.seed, after_step=mask.apply)
    after = measure()
    labels = classifier.labels
    return {"neurons": int(len(order)), "pruned_neurons": n_pruned,
            "pruned_fraction": n_pruned / len(order),
            "targets": {t: labels[c] for t, c in targets.items()},
            "train_rows": len(train), "held_out_rows": len(held),
            "before": before, "after_pruning": pruned, "after_fine_tuning": after}


def _prune(classifier, mask: NeuronMask, order: np.ndarray, held_texts, held_labels,
           baseline: float, options: FinePruneOptions) -> int:
    """Prune a fixed share, or the largest share (in 5% steps) that keeps held-out clean
    accuracy within `max_accuracy_drop` of the unpruned model."""
    if options.prune_fraction is not None:
        n = int(round(options.prune_fraction * len(order)))
        mask.apply(order[:n])
        return n
    original = [p.detach().clone() for p in _pruned_parameters(mask)]
    kept = 0
    for fraction in np.arange(0.05, 0.951, 0.05):
        n = int(round(fraction * len(order)))
        mask.apply(order[:n])
        if accuracy(classifier, held_texts, held_labels) < baseline - options.max_accuracy_drop:
            break
        kept = n
    with torch.no_grad():  # undo the step that cost too much, then prune what was kept
        for parameter, saved in zip(_pruned_parameters(mask), original):
            parameter.copy_(saved)
    mask.apply(order[:kept])
    return kept


def _pruned_parameters(mask: NeuronMask) -> list[torch.Tensor]:
    return [p for p in (mask.up.weight, mask.up.bias, mask.down.weight) if p is not None]


def _pushed_to(classifier, texts: list[str], trigger: str) -> int:
    """The class that inputs carrying the trigger are most often predicted as."""
    from auditors.model.insertion import triggered_texts

    triggered, _ = triggered_texts(texts, trigger)
    return int(np.bincount(classifier.probs(triggered).argmax(axis=1),
                           minlength=len(classifier.labels)).argmax())


def _split(n: int, options: FinePruneOptions) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(options.seed).permutation(n)
    n_held = max(1, int(round(options.held_out * n)))
    if n - n_held < 1:
        raise ModelCheckError(f"need at least 2 clean rows, got {n}")
    return np.sort(order[n_held:]), np.sort(order[:n_held])
