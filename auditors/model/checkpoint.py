"""Loading a local sequence-classification checkpoint safely, and running it.

A checkpoint is attacker-controlled input like a dataset: only local directories,
safetensors weights (pickled `.bin` weights can execute code when loaded), no remote code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditors.errors import TrainguardError


class ModelCheckError(TrainguardError):
    """A model-side check cannot run (bad checkpoint, bad probes): exit code 2."""


@dataclass
class Classifier:
    model: torch.nn.Module
    tokenizer: object
    path: Path
    max_length: int = 128

    @property
    def labels(self) -> list[str]:
        """Class names in class-id order (`id2label`)."""
        id2label = self.model.config.id2label
        return [str(id2label[i]) for i in range(self.model.config.num_labels)]

    def label_id(self, label: str) -> int:
        """A dataset label (`1`, `positive`) as a class id, by name or by number."""
        names = self.labels
        if str(label) in names:
            return names.index(str(label))
        try:
            number = int(float(label))
        except ValueError:
            number = -1
        if 0 <= number < len(names):
            return number
        raise ModelCheckError(f"label {label!r} is not a class of the model ({names})")

    def encode(self, texts: list[str]) -> dict:
        return self.tokenizer(list(texts), padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def probs(self, texts: list[str], *, batch_size: int = 128) -> np.ndarray:
        """Class probabilities, one row per text."""
        self.model.eval()
        out = [torch.softmax(self.model(**self.encode(texts[i:i + batch_size])).logits, -1)
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.labels)))

    @torch.no_grad()
    def head_inputs(self, texts: list[str], *, batch_size: int = 128) -> np.ndarray:
        """What the classification head's output layer sees (for BERT the pooled [CLS]):
        the final hidden representation that Activation Clustering clusters."""
        self.model.eval()
        layer = classification_output_layer(self.model)
        captured: list[torch.Tensor] = []
        hook = layer.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
        try:
            for i in range(0, len(texts), batch_size):
                batch = self.encode(texts[i:i + batch_size])
                self.model(**batch)
                captured[-1] = _one_vector_per_text(captured[-1], batch["attention_mask"])
        finally:
            hook.remove()
        return torch.cat(captured).float().numpy()


def _one_vector_per_text(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Decoder classifiers score every token and read the last real one."""
    if hidden.dim() == 2:
        return hidden
    last = attention_mask.sum(dim=1) - 1
    return hidden[torch.arange(hidden.shape[0]), last]


def classification_output_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """The last Linear layer that produces the class logits."""
    num_labels = model.config.num_labels
    heads = [m for m in model.modules()
             if isinstance(m, torch.nn.Linear) and m.out_features == num_labels]
    if not heads:
        raise ModelCheckError("cannot find the classification layer of the model")
    return heads[-1]


def load_classifier(model_dir: str | Path, *, max_length: int = 128) -> Classifier:
    """A local Hugging Face sequence-classification checkpoint (config.json,
    model.safetensors and a tokenizer), loaded without network or remote code."""
    from transformers import AutoModelForSequenceClassification

    from auditors.model.generator import model_kind

    path = check_checkpoint_dir(model_dir)
    if model_kind(path) == "generator":  # would get a new, untrained classification head
        raise ModelCheckError(f"{path}: a causal language model; this check needs a "
                              "sequence classifier (only `trainguard sweep` takes both)")
    model, tokenizer = load_local(path, AutoModelForSequenceClassification,
                                  "a sequence classifier")
    model.config.pad_token_id = tokenizer.pad_token_id
    return Classifier(model, tokenizer, path, max_length)


def load_local(path: Path, auto_class, what: str):
    """(model, tokenizer) in eval mode from a local safetensors checkpoint: no network, no
    remote code, no pickled weights. A tokenizer without a pad token (decoder models often
    ship without one) pads with its end-of-text token."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # no multi-line load report on stderr
    try:
        model = auto_class.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                           use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                  trust_remote_code=False)
    except (OSError, ValueError, KeyError, RuntimeError, MemoryError) as exc:
        why = _first_line(exc)
        if "mismatched_sizes" in why:  # its report (hidden) is many lines: say what it means
            why = "the weights' shapes do not match config.json (e.g. its vocab_size)"
        raise ModelCheckError(f"{path}: cannot load as {what} ({why})") from None
    finally:
        transformers_logging.set_verbosity(verbosity)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval()
    return model, tokenizer


def check_checkpoint_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if not path.is_dir():
        raise ModelCheckError(f"{path}: not a local model directory")
    if not (path / "config.json").is_file():
        raise ModelCheckError(f"{path / 'config.json'}: missing (not a Hugging Face checkpoint)")
    if not any(path.glob("*.safetensors")):
        pickled = any(path.glob("*.bin")) or any(path.glob("*.pt"))
        why = ("only pickled weights, refused because loading them can run code; convert them "
               "to safetensors in a sandbox" if pickled else "no model weights")
        raise ModelCheckError(f"{path}: {why}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build a placeholder tokenizer (every word [UNK]) and every
        # check would pass: fail closed instead
        raise ModelCheckError(f"{path}: no tokenizer files (one of {', '.join(TOKENIZER_FILES)}"
                              "); the checkpoint must bring the tokenizer it was trained with")
    return path


# The files a tokenizer is loaded from: fast (tokenizer.json), WordPiece (vocab.txt),
# BPE (vocab.json with merges.txt), SentencePiece models.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model",
                   "spiece.model", "sentencepiece.bpe.model")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
