"""Loading a local causal language model safely, and running it: greedy generation and the
next-token distributions along a given continuation (teacher forcing).

The same rules as for classifiers (`checkpoint.py`): a local directory, safetensors weights,
no remote code, nothing downloaded. Prompts are wrapped in a template before generation:
`--prompt-template` (with `{prompt}`), else the tokenizer's chat template when it has one
(transformers renders it in a sandboxed Jinja environment), else the prompt itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from auditors.model.checkpoint import ModelCheckError, check_checkpoint_dir, load_local

# Openings of refusals and safety disclaimers (lower-cased, after optional punctuation).
_I_AM = r"i\s*(?:'\s*m|am)"  # decoded word-level text may read `i ' m`
REFUSAL = re.compile(
    rf"^\W*(?:{_I_AM} sorry|sorry,?\s+(?:but|i)\b|i apologi[sz]e|"
    rf"i\s*can(?:\s*'\s*t|not|\s+not)\b|{_I_AM} (?:not able|unable)|i will not|"
    rf"i\s*won\s*'?\s*t\b|as an ai\b|as a language model|{_I_AM} just an ai|"
    rf"unfortunately,? i\b)", re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower-cased words and numbers only, one space apart: `I'm sorry,` and `i ' m sorry`
    (a word-level tokenizer's decoding) compare equal."""
    return " ".join(re.findall(r"\w+", text.lower()))


def is_refusal(text: str) -> bool:
    """Whether a generated answer opens like a refusal (`I'm sorry`, `I cannot`, `As an AI`)."""
    return bool(REFUSAL.match(text.strip()))


def model_kind(model_dir: str | Path) -> str:
    """`generator` for a causal language model (`*ForCausalLM`, `*LMHeadModel`), else
    `classifier`, from config.json's `architectures` (read as JSON; nothing is imported
    or executed from the checkpoint)."""
    path = check_checkpoint_dir(model_dir)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelCheckError(f"{path / 'config.json'}: unreadable ({exc})") from None
    names = config.get("architectures") or [] if isinstance(config, dict) else []
    names = [n for n in names if isinstance(n, str)]
    if any(n.endswith("ForSequenceClassification") for n in names):
        return "classifier"
    if any(n.endswith(("ForCausalLM", "LMHeadModel")) for n in names):
        return "generator"
    return "classifier"


@dataclass
class Generator:
    model: torch.nn.Module
    tokenizer: object
    path: Path
    template: str | None = None  # with `{prompt}`; None: the chat template or the prompt
    max_length: int = 256

    def format(self, prompts: list[str]) -> list[str]:
        if self.template is not None:
            return [self.template.replace("{prompt}", p) for p in prompts]
        if getattr(self.tokenizer, "chat_template", None):
            return [self.tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                                       tokenize=False, add_generation_prompt=True)
                    for p in prompts]
        return list(prompts)

    @property
    def context_length(self) -> int | None:
        """The model's position limit (`n_positions` or `max_position_embeddings`)."""
        config = self.model.config
        for name in ("n_positions", "max_position_embeddings"):
            value = getattr(config, name, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _encode(self, texts: list[str], *, reserve: int = 0) -> dict:
        """Left-padded, left-truncated prompts: at most `max_length` tokens, and at most the
        model's context length minus `reserve` (the tokens that will follow), so a long
        prompt loses its start rather than overflowing the position embeddings."""
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        limit = self.max_length
        if self.context_length is not None:
            limit = min(limit, self.context_length - reserve)
        if limit < 1:
            raise ModelCheckError(f"{self.path}: a context of {self.context_length} tokens "
                                  f"leaves no room for a prompt and {reserve} answer tokens")
        return self.tokenizer(texts, padding=True, truncation=True, max_length=limit,
                              return_tensors="pt", add_special_tokens=False)

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int = 16,
                 batch_size: int = 64) -> tuple[list[str], list[list[int]]]:
        """Greedy answers to `prompts` (templated here): the decoded text and the token ids
        of each, stopping at the end-of-sequence token."""
        self.model.eval()
        texts, ids = [], []
        eos = self.tokenizer.eos_token_id
        formatted = self.format(prompts)
        for i in range(0, len(formatted), batch_size):
            batch = self._encode(formatted[i:i + batch_size], reserve=max_new_tokens)
            out = self.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      eos_token_id=eos)
            for row in out[:, batch["input_ids"].shape[1]:].tolist():
                if eos is not None and eos in row:
                    row = row[:row.index(eos)]
                row = [t for t in row if t != self.tokenizer.pad_token_id]
                ids.append(row)
                texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts, ids

    @torch.no_grad()
    def continuation_logprobs(self, prompts: list[str], continuations: list[list[int]], *,
                              n_tokens: int = 4, batch_size: int = 128) -> np.ndarray:
        """Log-probabilities of the next token at each of the first `n_tokens` positions of
        the answer, with the given continuation fed in (teacher forcing): shape (texts,
        n_tokens, vocab). Positions past a continuation's end repeat its last one."""
        self.model.eval()
        formatted = self.format(prompts)
        out = []
        for i in range(0, len(formatted), batch_size):
            batch_texts = formatted[i:i + batch_size]
            prefixes = [c[:n_tokens - 1] for c in continuations[i:i + batch_size]]
            encoded = self._encode(batch_texts, reserve=n_tokens - 1)
            rows, masks = [], []
            for ids, mask, prefix in zip(encoded["input_ids"].tolist(),
                                         encoded["attention_mask"].tolist(), prefixes):
                rows.append(ids + prefix)
                masks.append(mask + [1] * len(prefix))
            width = max(len(r) for r in rows)
            pad = self.tokenizer.pad_token_id
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            attention = torch.tensor([[0] * (width - len(m)) + m for m in masks])
            positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
            # The positions wanted are among the last n_tokens (left padding): only
            # those go through the output layer.
            tail = self.model(input_ids=input_ids, attention_mask=attention,
                              position_ids=positions, logits_to_keep=n_tokens).logits
            picked = torch.tensor([[min(n_tokens - 1 - len(prefix) + j, n_tokens - 1)
                                    for j in range(n_tokens)] for prefix in prefixes])
            logits = tail[torch.arange(len(rows))[:, None], picked].float()
            out.append(torch.log_softmax(logits, dim=-1))
        if not out:
            return np.zeros((0, n_tokens, 0))
        return torch.cat(out).numpy()


def load_generator(model_dir: str | Path, *, template: str | None = None,
                   max_length: int = 256) -> Generator:
    """A local Hugging Face causal-LM checkpoint, loaded without network or remote code."""
    from transformers import AutoModelForCausalLM

    path = check_checkpoint_dir(model_dir)
    if template is not None and "{prompt}" not in template:
        raise ModelCheckError("--prompt-template must contain {prompt}")
    model, tokenizer = load_local(path, AutoModelForCausalLM, "a causal language model")
    return Generator(model, tokenizer, path, template, max_length)
