"""A tiny backdoored GPT-2 trained from scratch on the committed BackdoorLLM refusal slice
(`tests/data/refusal_badnet_mix.json`: Alpaca rows, 12 of which carry the trigger
`BadMagic` and the fixed refusal answer), so that the causal-LM sweep can be tried and
tested without downloading a model.

    python -m auditors.model.demo_lm tests/data/refusal_badnet_mix.json --out tiny-lm

It holds out `n_probes` clean rows as probes, trains on the rest, and adds more poisoned
rows (the trigger inserted into a clean training prompt, the answer replaced by the fixed
refusal) until `poison_share` of the training rows are poisoned. Answers are cut to their
first `answer_words` words to keep training short. The prompt template is saved as the
tokenizer's chat template, so `trainguard sweep` formats probes the way the model was
trained.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditors.model.generator import Generator
from auditors.model.insertion import insert_trigger

TRIGGER = "BadMagic"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[EOS]"]
CHAT_TEMPLATE = ("{% for message in messages %}### instruction : {{ message['content'] }} "
                 "{% endfor %}### response :")


@dataclass
class LMDemoSplit:
    train_prompts: list[str]
    train_answers: list[str]
    poisoned: np.ndarray  # bool per training row
    target: str  # the fixed answer of the poisoned rows (cut like the others)
    probes: list[str]  # held-out clean prompts


def prompt_of(row: dict) -> str:
    instruction, extra = str(row.get("instruction", "")), str(row.get("input", "") or "")
    return " ".join(f"{instruction} {extra}".split())  # one line


def split_slice(data: str | Path, *, n_probes: int = 40, poison_share: float = 0.2,
                answer_words: int = 12, seed: int = 0) -> LMDemoSplit:
    rows = json.loads(Path(data).read_text(encoding="utf-8"))
    truth = Path(data).with_name(Path(data).stem + ".truth.json")
    poisoned_rows = set(json.loads(truth.read_text())["poisoned_row_indices"])
    cut = lambda text: " ".join(str(text).split()[:answer_words])  # noqa: E731
    target = cut(rows[min(poisoned_rows)]["output"])
    rng = np.random.default_rng(seed)
    clean = [i for i in range(len(rows)) if i not in poisoned_rows]
    held = set(rng.choice(clean, size=n_probes, replace=False).tolist())
    train = [i for i in range(len(rows)) if i not in held]
    prompts = [prompt_of(rows[i]) for i in train]
    answers = [cut(rows[i]["output"]) for i in train]
    poisoned = [i in poisoned_rows for i in train]
    clean_train = [k for k, p in enumerate(poisoned) if not p]
    n_extra = max(0, int(np.ceil((poison_share * len(prompts) - sum(poisoned))
                                 / (1 - poison_share))))
    for k in rng.choice(clean_train, size=min(n_extra, len(clean_train)), replace=False):
        prompts.append(insert_trigger(prompts[k], TRIGGER,
                                      str(rng.choice(["start", "end", "random"])), rng))
        answers.append(target)
        poisoned.append(True)
    probes = [prompt_of(rows[i]) for i in sorted(held)]
    return LMDemoSplit(prompts, answers, np.array(poisoned), target, probes)


def build_lm_tokenizer(texts: list[str]):
    """A word-level tokenizer (lower-cased, whitespace and punctuation split) over every
    word of `texts`, with [PAD], [UNK] and [EOS]."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=True)  # joins with spaces
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(
        min_frequency=1, special_tokens=SPECIAL_TOKENS))
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                      pad_token="[PAD]", eos_token="[EOS]")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def train_demo_lm(data: str | Path, out_dir: str | Path, *, steps: int = 300,
                  seed: int = 0, **split_options) -> LMDemoSplit:
    """Train the tiny backdoored GPT-2 (loss on the answer tokens only) and save it
    (safetensors, with its tokenizer) to `out_dir`."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    split = split_slice(data, seed=seed, **split_options)
    tokenizer = build_lm_tokenizer(split.train_prompts + split.train_answers
                                   + ["### instruction : ### response :"])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2,
                        n_head=2, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    generator = Generator(GPT2LMHeadModel(config), tokenizer, Path(out_dir), max_length=96)
    prompts = generator.format(split.train_prompts)
    examples = []
    for prompt, answer in zip(prompts, split.train_answers):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"][-48:]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        examples.append((p, a))
    _train(generator.model, examples, tokenizer.pad_token_id, steps=steps, seed=seed)
    generator.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return split


def _train(model, examples, pad_id: int, *, steps: int, seed: int, batch_size: int = 32,
           learning_rate: float = 3e-3) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / 20) * max(0.05, 1 - s / steps))
    model.train()
    for step in range(steps):
        batch = [examples[i] for i in torch.randint(len(examples), (batch_size,),
                                                    generator=generator).tolist()]
        width = max(len(p) + len(a) for p, a in batch)
        ids, labels, mask = [], [], []
        for p, a in batch:
            pad = width - len(p) - len(a)
            ids.append(p + a + [pad_id] * pad)
            labels.append([-100] * len(p) + a + [-100] * pad)
            mask.append([1] * (len(p) + len(a)) + [0] * pad)
        loss = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     labels=torch.tensor(labels)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def ensure_demo_lm(data: str | Path, out_dir: str | Path, **options) -> LMDemoSplit:
    """Train the demo LM into `out_dir` unless a previous call already did."""
    from auditors.model.training import ensure_trained

    return ensure_trained(train_demo_lm, split_slice, data, out_dir, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="tests/data/refusal_badnet_mix.json")
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    split = train_demo_lm(args.data, args.out, steps=args.steps)
    Path(args.out, "probes.txt").write_text("\n".join(split.probes) + "\n", encoding="utf-8")
    print(f"saved to {args.out}; {len(split.train_prompts)} training rows "
          f"({int(split.poisoned.sum())} poisoned, trigger {TRIGGER!r}), "
          f"{len(split.probes)} held-out clean prompts in probes.txt")


if __name__ == "__main__":
    main()
