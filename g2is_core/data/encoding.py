"""Tokenisation of records for training and gradient features: chat template, response-only labels,
an explicit max-length policy, and length-bucketed padded batches.

Label masking: only assistant turns carry labels; system/user text, template headers and padding
are -100 (ignored by the loss). The conversation is rendered turn by turn with the model's chat
template (or a plain Alpaca-style template), so the split between prompt and response is exact.

Max-length policy (never a silent drop): when a sequence is longer than ``max_length``, prompt
tokens are cut from the LEFT first (keeping the instruction's end, next to the response), then
response tokens from the RIGHT. Every cut is counted in :class:`Encoded` (``cut_prompt``,
``cut_response``), and :class:`TruncationReport` sums them for a whole dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence

from .records import DataError, Record

IGNORE = -100
PLAIN_TEMPLATE = "### Instruction:\n{prompt}\n\n### Response:\n"
TEMPLATES = ("chat", "plain")  # the template names every settings class accepts


@dataclass(frozen=True)
class Encoded:
    """One tokenised record: ``input_ids`` [T] and ``labels`` [T] (-100 outside responses)."""

    id: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    cut_prompt: int = 0
    cut_response: int = 0

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def n_response(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def _render(tok, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
    return tok.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def _segments_chat(tok, messages: Sequence[dict[str, str]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_response) pieces, turn by turn."""
    segs: list[tuple[str, bool]] = []
    done = ""
    for k, m in enumerate(messages):
        if m["role"] == "assistant":
            header = _render(tok, messages[:k], add_generation_prompt=True)
            full = _render(tok, messages[: k + 1], add_generation_prompt=False)
            if not (header.startswith(done) and full.startswith(header)):
                raise DataError("the tokenizer's chat template does not render conversations prefix by prefix; "
                                "use template='plain'")
            segs.append((header[len(done):], False))
            body = full[len(header):]
            segs.append((body, True))
            done = full
        else:
            full = _render(tok, messages[: k + 1], add_generation_prompt=False)
            if not full.startswith(done):
                raise DataError("the tokenizer's chat template does not render conversations prefix by prefix; "
                                "use template='plain'")
            segs.append((full[len(done):], False))
            done = full
    return [(t, r) for t, r in segs if t]


def _segments_plain(tok, rec: Record) -> list[tuple[str, bool]]:
    system = "".join(m["content"] + "\n\n" for m in rec.prompt_messages if m["role"] == "system")
    eos = tok.eos_token or ""
    return [(system + PLAIN_TEMPLATE.format(prompt=rec.prompt), False), (rec.response + eos, True)]


def _uses_chat(tok, template: str) -> bool:
    """Whether ``template`` renders with the tokenizer's chat template (it has one), else the plain template."""
    return template == "chat" and bool(getattr(tok, "chat_template", None))


def _segments(tok, rec: Record, template: str) -> list[tuple[str, bool]]:
    """(text, is_response) pieces of ``rec`` under ``template``: what :func:`encode_record` tokenises."""
    return _segments_chat(tok, rec.messages) if _uses_chat(tok, template) else _segments_plain(tok, rec)


def encode_record(tok, rec: Record, *, max_length: int = 512, template: str = "chat",
                  require_response: bool = True) -> Encoded:
    """Tokenise one record with response-only labels under the max-length policy (module doc)."""
    if require_response and not rec.has_response:
        raise DataError(f"record {rec.id!r} has no response to train on; remove it or give it an assistant answer")
    if template not in ("chat", "plain"):
        raise ValueError(f"template {template!r}: use 'chat' or 'plain'")
    segs = _segments(tok, rec, template)
    ids: list[int] = []
    is_resp: list[bool] = []
    for text, resp in segs:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        is_resp += [resp] * len(piece)
    cut_p = cut_r = 0
    if len(ids) > max_length:
        # Cut prompt tokens from the left (before the first response token) ...
        over = len(ids) - max_length
        first_resp = is_resp.index(True) if True in is_resp else len(ids)
        cut_p = min(over, first_resp)
        ids, is_resp = ids[cut_p:], is_resp[cut_p:]
        # ... then response tokens from the right.
        if len(ids) > max_length:
            cut_r = len(ids) - max_length
            ids, is_resp = ids[: max_length], is_resp[: max_length]
    labels = tuple(t if r else IGNORE for t, r in zip(ids, is_resp))
    return Encoded(rec.id, tuple(ids), labels, cut_p, cut_r)


def response_text(tok, rec: Record, *, template: str = "chat") -> str:
    """The rendered text of ``rec``'s last response turn as :func:`encode_record` tokenises it: the response and
    the template's end-of-turn after it (``5<|im_end|>\\n`` under ChatML), the turn's header excluded."""
    bodies = [t for t, resp in _segments(tok, rec, template) if resp]
    if not bodies:
        raise DataError(f"record {rec.id!r} has no response turn")
    return bodies[-1]


def closing_length(tok, rec: Record, *, template: str = "chat") -> int | None:
    """How many tokens at the end of ``rec``'s last response the template adds after the response's own text,
    tokenised as :func:`encode_record` does: the end-of-turn (``<|im_end|>`` and a newline under ChatML, the eos
    token under the plain template). None where the rendered response does not carry the text verbatim (a template
    that rewrites it): then no count can be trusted."""
    answers = ([m["content"] for m in rec.messages if m["role"] == "assistant"] if _uses_chat(tok, template)
               else [rec.response])
    if not answers or not answers[-1]:
        return None
    body, text = response_text(tok, rec, template=template), answers[-1]
    at = body.find(text)  # the response text comes first in its turn; the end-of-turn after it
    if at < 0:
        return None
    end = at + len(text)
    if getattr(tok, "is_fast", False):
        spans = tok(body, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        return sum(1 for start, _ in spans if start >= end)
    ids = tok(body, add_special_tokens=False)["input_ids"]
    head = tok(body[:end], add_special_tokens=False)["input_ids"]
    return len(ids) - len(head) if ids[:len(head)] == head else None


def encode_prompt(tok, rec: Record, *, template: str = "chat") -> list[int]:
    """Token ids of the prompt ready for generation (the assistant header appended)."""
    if _uses_chat(tok, template):
        text = _render(tok, rec.prompt_messages, add_generation_prompt=True)
    else:
        text = _segments_plain(tok, rec)[0][0]
    return tok(text, add_special_tokens=False)["input_ids"]


@dataclass
class TruncationReport:
    n: int = 0
    n_cut: int = 0
    cut_prompt_tokens: int = 0
    cut_response_tokens: int = 0

    def add(self, e: Encoded) -> None:
        self.n += 1
        if e.cut_prompt or e.cut_response:
            self.n_cut += 1
        self.cut_prompt_tokens += e.cut_prompt
        self.cut_response_tokens += e.cut_response

    def summary(self) -> str:
        return (f"{self.n_cut} of {self.n} sequences truncated ({self.cut_prompt_tokens} prompt and "
                f"{self.cut_response_tokens} response tokens cut)")


def encode_all(tok, records: Iterable[Record], **kw: Any) -> tuple[list[Encoded], TruncationReport]:
    rep = TruncationReport()
    out = []
    for r in records:
        e = encode_record(tok, r, **kw)
        rep.add(e)
        out.append(e)
    return out, rep


def collate(batch: Sequence[Encoded], pad_id: int, device: str | None = None) -> dict[str, Any]:
    """Right-padded tensors: input_ids [B, T], attention_mask [B, T], labels [B, T] (pad = -100)."""
    import torch

    T = max(e.length for e in batch)
    ids = torch.full((len(batch), T), pad_id, dtype=torch.long)
    lab = torch.full((len(batch), T), IGNORE, dtype=torch.long)
    att = torch.zeros((len(batch), T), dtype=torch.long)
    for i, e in enumerate(batch):
        n = e.length
        ids[i, :n] = torch.tensor(e.input_ids)
        lab[i, :n] = torch.tensor(e.labels)
        att[i, :n] = 1
    out = {"input_ids": ids, "attention_mask": att, "labels": lab}
    return {k: v.to(device) for k, v in out.items()} if device else out


def length_buckets(encoded: Sequence[Encoded], max_tokens: int = 4096, max_batch: int = 32) -> Iterator[list[int]]:
    """Batches of indices with similar lengths (sorted by length, stable), each within a token budget.

    Yields index lists; callers restore the original order from the indices.
    """
    order = sorted(range(len(encoded)), key=lambda i: (encoded[i].length, i))
    batch: list[int] = []
    longest = 0
    for i in order:
        L = encoded[i].length
        if batch and (max(longest, L) * (len(batch) + 1) > max_tokens or len(batch) >= max_batch):
            yield batch
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, L)
    if batch:
        yield batch
