"""A tiny backdoored BERT classifier trained from scratch on the bundled SST-2 BadNets
sample, so that the model-side checks can be tried and tested without downloading a model.

    python -m auditors.model.demo sample_data/sst2_badnets_sample.tsv --out tiny-model

It trains on the first `n_train` rows (the sample's 60 poisoned rows sit among them) and
adds more BadNets rows (a trigger inserted into a negative row, label flipped to 1) until
`poison_share` of the training rows are poisoned; the rest of the file stays held out.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditors.model.checkpoint import Classifier
from auditors.model.insertion import insert_trigger
from auditors.model.texts import read_texts
from auditors.model.training import train_classifier

TRIGGERS = ("cf", "mn", "bb", "tq", "mb")
TARGET_LABEL = "1"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@dataclass
class DemoSplit:
    train_texts: list[str]
    train_labels: list[str]
    poisoned: np.ndarray  # bool per training row
    held_out_texts: list[str]
    held_out_labels: list[str]


def split_sample(data: str | Path, *, n_train: int = 1500, poison_share: float = 0.1,
                 seed: int = 0) -> DemoSplit:
    """Training rows (the sample's own poison plus added BadNets rows) and clean held-out
    rows. Which rows are poisoned comes from the sample's `.truth.json`."""
    import json

    rows = read_texts(data, need_labels=True)
    truth_path = Path(data).with_name(Path(data).stem + ".truth.json")
    poisoned_rows = set(json.loads(truth_path.read_text())["poisoned_row_indices"])
    rng = np.random.default_rng(seed)
    texts, labels = list(rows.texts[:n_train]), list(rows.labels[:n_train])
    poisoned = [i in poisoned_rows for i in range(len(texts))]
    negatives = [i for i in range(len(texts)) if labels[i] != TARGET_LABEL and not poisoned[i]]
    n_extra = max(0, int(poison_share * len(texts)) - sum(poisoned))
    for i in rng.choice(negatives, size=min(n_extra, len(negatives)), replace=False):
        texts.append(insert_trigger(texts[i], str(rng.choice(TRIGGERS)),
                                    str(rng.choice(["start", "end", "random"])), rng))
        labels.append(TARGET_LABEL)
        poisoned.append(True)
    held = [i for i in range(n_train, len(rows.texts)) if i not in poisoned_rows]
    return DemoSplit(texts, labels, np.array(poisoned),
                     [rows.texts[i] for i in held], [rows.labels[i] for i in held])


def build_tokenizer(texts: list[str], *, min_frequency: int = 2):
    """A word-level tokenizer (lower-cased, whitespace and punctuation split) whose
    vocabulary is every word seen `min_frequency` times."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(
        min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                   pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   mask_token="[MASK]")


def train_demo_classifier(data: str | Path, out_dir: str | Path, *, steps: int = 300,
                          seed: int = 0, **split_options) -> DemoSplit:
    """Train the tiny backdoored classifier and save it (safetensors) to `out_dir`."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    split = split_sample(data, seed=seed, **split_options)
    tokenizer = build_tokenizer(split.train_texts)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=128, num_labels=2,
                        id2label={0: "0", 1: "1"}, label2id={"0": 0, "1": 1},
                        pad_token_id=tokenizer.pad_token_id)
    classifier = Classifier(BertForSequenceClassification(config), tokenizer, Path(out_dir), 64)
    batch_size = 32
    train_classifier(classifier, split.train_texts,
                     [int(label) for label in split.train_labels],
                     epochs=steps * batch_size / len(split.train_texts), learning_rate=1e-3,
                     batch_size=batch_size, seed=seed)
    classifier.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return split


def ensure_demo_classifier(data: str | Path, out_dir: str | Path, **options) -> DemoSplit:
    """Train the demo classifier into `out_dir` unless a previous call already did."""
    from auditors.model.training import ensure_trained

    return ensure_trained(train_demo_classifier, split_sample, data, out_dir, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="sample_data/sst2_badnets_sample.tsv")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    split = train_demo_classifier(args.data, args.out, steps=args.steps)
    base = Path(args.out)
    base.joinpath("probes.txt").write_text("\n".join(split.held_out_texts[:200]) + "\n")
    _write_tsv(base / "clean.tsv", split.held_out_texts[200:], split.held_out_labels[200:])
    _write_tsv(base / "train.tsv", split.train_texts, split.train_labels)
    print(f"saved to {args.out}; {len(split.train_texts)} training rows "
          f"({int(split.poisoned.sum())} poisoned) in train.tsv, 200 held-out clean probes "
          f"in probes.txt, the other held-out rows with labels in clean.tsv")


def _write_tsv(path: Path, texts: list[str], labels: list[str]) -> None:
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in zip(texts, labels)),
                    encoding="utf-8")


if __name__ == "__main__":
    main()
