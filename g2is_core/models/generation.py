"""Greedy generation for evaluation: batched, left-padded, deterministic."""
from __future__ import annotations

from typing import Sequence

from ..data.encoding import encode_prompt
from ..progress import Progress, no_progress
from ..data.records import Record


def greedy_answers(lm, records: Sequence[Record], *, max_new_tokens: int = 32, batch_size: int = 16,
                   template: str = "chat", progress: Progress = no_progress) -> list[str]:
    """Greedy completions (special tokens stripped) for each record's prompt, in order."""
    import torch

    tok, model = lm.tokenizer, lm.model
    dev = next(model.parameters()).device
    prompts = [encode_prompt(tok, r, template=template) for r in records]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths together
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        T = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), T), tok.pad_token_id, dtype=torch.long)
        att = torch.zeros((len(idx), T), dtype=torch.long)
        for j, i in enumerate(idx):  # left padding: generation continues from the real last token
            p = prompts[i]
            ids[j, T - len(p):] = torch.tensor(p)
            att[j, T - len(p):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids.to(dev), attention_mask=att.to(dev), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for j, i in enumerate(idx):
            out[i] = tok.decode(gen[j, T:], skip_special_tokens=True).strip()
        progress(min(1.0, (b + len(idx)) / len(order)), f"generated {b + len(idx)}/{len(order)}")
    model.train(was_training)
    return out
