"""Machine unlearning of a text corpus by GRACE-style gradient ascent (Zhao et al., "Deciphering the
Impact of Pretraining Data on Large Language Models through Machine Unlearning", ACL Findings 2024).

The method, as implemented here (one function, :func:`grace_unlearn`):

1. Thresholds, all measured on the ORIGINAL model before the first update (never typed in):
   ``retain_original`` = its loss on a held-out set of non-target chunks; ``target_stop`` = its loss
   on a chunk-shuffled copy of the target probe (:func:`shuffle_chunks`: the text cut into random
   runs of 5 to 15 words, the runs shuffled). ``target_original`` (its loss on the target probe) is
   recorded for the curves.
2. Each step: one gradient-ASCENT step on a batch of target chunks (minimise -NLL). Then the
   held-out non-target loss is measured; whenever it is above ``retain_original`` one gradient-
   DESCENT step on the next batch of non-target chunks follows (the paper's alternation that keeps
   the rest of the model's knowledge). Then the target probe loss is measured.
3. Stop as soon as the target probe loss exceeds ``target_stop``: the model now finds the target
   text no more predictable than a word-salad of the same words, i.e. the corpus is "forgotten".
   ``max_steps`` bounds the run; a run that hits it records ``reason="max_steps"`` (not forgotten).

The measurement is injectable (``measure(model, which)`` with which in "target", "shuffled",
"retain"), so the alternation and the stopping rule are tested on a tiny model with a forced loss
sequence. The default measures the token-weighted mean NLL of fixed probe chunks (:func:`mean_loss`).

Optimiser: one AdamW with a constant learning rate shared by ascent and descent steps, gradient
clipping at ``max_grad_norm`` (the project's conventions from :mod:`g2is_core.models.training`, without a
schedule: a run stops at a loss threshold, so its length is not known in advance). Which parameters
move is the caller's choice (all of them for full fine-tuning; :mod:`g2is_core.impact.study` does that).

Text corpora: a corpus is plain text; every token is a training target (labels = input_ids), cut
into chunks of at most ``max_tokens`` tokens (:func:`encode_texts`). Instruction records become text
as their messages joined by blank lines (:func:`record_text`).
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..settings import POSITIVE_FLOAT, POSITIVE_INT, check_rules
from ..data.encoding import Encoded, collate
from ..progress import Progress, no_progress
from ..data.records import Record

PROBES = ("target", "shuffled", "retain")
Measure = Callable[[Any, str], float]   # (model, probe name) -> mean token NLL (nats)


# ----------------------------------------------------------------------------- text
def shuffle_chunks(text: str, rng: random.Random, lo: int = 5, hi: int = 15) -> str:
    """The paper's randomised baseline text: cut ``text`` into consecutive runs of ``lo``..``hi``
    words (each length drawn uniformly; the last run takes what is left) and shuffle the runs.

    Same words, same count, local order kept inside a run, global order destroyed. Words are
    whitespace-separated and re-joined with single spaces. A text of at most ``lo`` words is one run
    and comes back unchanged (up to whitespace).
    """
    if lo < 1 or hi < lo:
        raise ValueError(f"chunk lengths need 1 <= lo <= hi, got lo={lo}, hi={hi}")
    words = text.split()
    runs: list[list[str]] = []
    i = 0
    while i < len(words):
        n = rng.randint(lo, hi)
        runs.append(words[i:i + n])
        i += n
    rng.shuffle(runs)
    return " ".join(w for run in runs for w in run)


def record_text(rec: Record) -> str:
    """A record as plain text: its messages' contents joined by blank lines (prompt then response)."""
    return "\n\n".join(m["content"].strip() for m in rec.messages if m["content"].strip())


def text_paragraphs(text: str, min_chars: int = 20) -> list[str]:
    """Plain text split into paragraphs at blank lines (short fragments dropped)."""
    parts = [" ".join(p.split()) for p in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in parts if len(p) >= min_chars]


def encode_texts(tok, texts: Iterable[str], *, max_tokens: int = 64, min_tokens: int = 8,
                 chunks_per_text: int = 1, ids: Sequence[str] | None = None) -> list[Encoded]:
    """Plain-text chunks for language modelling: ``input_ids`` [T <= max_tokens], labels = input_ids
    (every token is a target). Each text gives its first ``chunks_per_text`` windows of
    ``max_tokens`` tokens; windows shorter than ``min_tokens`` are dropped."""
    out: list[Encoded] = []
    for k, t in enumerate(texts):
        toks = tok(t, add_special_tokens=False)["input_ids"]
        for c in range(chunks_per_text):
            w = tuple(toks[c * max_tokens:(c + 1) * max_tokens])
            if len(w) < min_tokens:
                break
            name = ids[k] if ids is not None else str(k)
            out.append(Encoded(f"{name}#{c}", w, w))
    return out


def shuffled_copy(tok, chunks: Sequence[Encoded], rng: random.Random, *, lo: int = 5, hi: int = 15) -> list[Encoded]:
    """The chunk-shuffled baseline of ``chunks``: decode each, :func:`shuffle_chunks` its words,
    re-encode, cut to the original chunk's length (so both sides score the same number of tokens)."""
    out = []
    for e in chunks:
        text = shuffle_chunks(tok.decode(list(e.input_ids)), rng, lo, hi)
        w = tuple(tok(text, add_special_tokens=False)["input_ids"][: e.length])
        out.append(Encoded(e.id + ":shuffled", w, w))
    return out


# ----------------------------------------------------------------------------- losses
def mean_loss(model, chunks: Sequence[Encoded], pad_id: int, *, batch_size: int = 8) -> float:
    """Token-weighted mean NLL (nats) of the labelled tokens of ``chunks`` (eval mode, no grad)."""
    import torch

    if not chunks:
        raise ValueError("no chunks to measure the loss on")
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for b in range(0, len(chunks), batch_size):
                batch = collate(chunks[b:b + batch_size], pad_id, str(dev))
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                lab = batch["labels"][:, 1:]
                lp = torch.log_softmax(logits[:, :-1].float(), -1)
                mask = lab != -100
                nll = -lp.gather(-1, lab.clamp(min=0).unsqueeze(-1)).squeeze(-1)
                total += float(nll[mask].sum())
                count += int(mask.sum())
    finally:
        model.train(was)
    return total / max(1, count)


def probe_measure(probes: dict[str, Sequence[Encoded]], pad_id: int, batch_size: int = 8) -> Measure:
    """The default ``measure``: :func:`mean_loss` on the named probe set."""
    def measure(model, which: str) -> float:
        return mean_loss(model, probes[which], pad_id, batch_size=batch_size)
    return measure


# ----------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class UnlearnConfig:
    """GRACE settings (defaults sized for full fine-tuning of the 135M default model on a CPU)."""

    lr: float = 3e-5              # constant AdamW learning rate for ascent and descent steps
    max_steps: int = 8            # cap on ascent steps (a run that hits it is marked "max_steps")
    batch_size: int = 2           # target chunks per ascent step
    retain_batch_size: int = 2    # non-target chunks per descent step
    max_grad_norm: float = 1.0
    seed: int = 0                 # batch order of target and non-target chunks

    def __post_init__(self) -> None:
        check_rules(self, {"lr": POSITIVE_FLOAT, "max_steps": POSITIVE_INT, "batch_size": POSITIVE_INT,
                           "retain_batch_size": POSITIVE_INT, "max_grad_norm": POSITIVE_FLOAT})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Thresholds:
    """Losses of the ORIGINAL model (nats/token) that drive the loop."""

    target_original: float        # on the target probe (the starting point of the target curve)
    target_stop: float            # on the chunk-shuffled target probe: stop once the target loss exceeds it
    retain_original: float        # on the held-out non-target probe: descend whenever above it


@dataclass
class UnlearnResult:
    """What a run did. ``curve``: one dict per step (0 = before): step, target, retain (after the
    ascent step), ascent_loss (the target batch's loss before its update), descent (bool),
    descent_loss (the non-target batch's loss before its update, or None)."""

    steps: int
    forgotten: bool
    reason: str                   # "target_above_shuffled" | "max_steps" | "baseline_not_above_original"
    thresholds: Thresholds
    curve: list[dict[str, Any]] = field(default_factory=list)
    n_descent: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "forgotten": self.forgotten, "reason": self.reason,
                "thresholds": asdict(self.thresholds), "curve": self.curve, "n_descent": self.n_descent,
                "seconds": self.seconds}


def _cycle(n: int, seed: int, key: str):
    """Indices 0..n-1 in a fresh seeded permutation per pass, forever."""
    p = 0
    while True:
        order = list(range(n))
        random.Random(f"{key}:{seed}:{p}").shuffle(order)
        yield from order
        p += 1


def compute_thresholds(model, measure: Measure) -> Thresholds:
    """The three losses of the original model, in the order target, shuffled, retain."""
    return Thresholds(target_original=measure(model, "target"), target_stop=measure(model, "shuffled"),
                      retain_original=measure(model, "retain"))


def grace_unlearn(model, target: Sequence[Encoded], retain: Sequence[Encoded], cfg: UnlearnConfig, *, pad_id: int,
                  measure: Measure, thresholds: Thresholds | None = None,
                  progress: Progress = no_progress) -> UnlearnResult:
    """Unlearn ``target`` from ``model`` in place (its trainable parameters move); see the module doc.

    target: chunks to ascend on; retain: non-target chunks to descend on when the held-out
    non-target loss rises above the original's. ``measure(model, which)`` gives the probe losses;
    ``thresholds`` (default: measured now with ``measure``) must come from the original model.
    """
    import torch

    if not target:
        raise ValueError("the target corpus has no chunks to unlearn; give it more or longer texts")
    if not retain:
        raise ValueError("unlearning needs non-target chunks to keep the rest of the model; add another corpus")
    t_start = time.time()
    dev = str(next(model.parameters()).device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    thr = thresholds or compute_thresholds(model, measure)
    curve: list[dict[str, Any]] = [{"step": 0, "target": thr.target_original, "retain": thr.retain_original,
                                    "ascent_loss": None, "descent": False, "descent_loss": None}]
    if thr.target_stop <= thr.target_original:
        # The original model already finds the shuffled text as likely as the real one: nothing to forget.
        return UnlearnResult(0, False, "baseline_not_above_original", thr, curve, 0, time.time() - t_start)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    tgt_order, ret_order = _cycle(len(target), cfg.seed, "target"), _cycle(len(retain), cfg.seed, "retain")

    def step_on(chunks: Sequence[Encoded], sign: float) -> float:
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = model(**collate(chunks, pad_id, dev)).loss
        (sign * loss).backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    n_desc, reason, step = 0, "max_steps", 0
    for step in range(1, cfg.max_steps + 1):
        up = step_on([target[next(tgt_order)] for _ in range(min(cfg.batch_size, len(target)))], -1.0)
        ret = measure(model, "retain")
        row: dict[str, Any] = {"step": step, "ascent_loss": up, "retain": ret, "descent": False, "descent_loss": None}
        if ret > thr.retain_original:
            row["descent"] = True
            row["descent_loss"] = step_on([retain[next(ret_order)] for _ in range(min(cfg.retain_batch_size,
                                                                                     len(retain)))], 1.0)
            n_desc += 1
        row["target"] = measure(model, "target")
        curve.append(row)
        progress(step / cfg.max_steps, f"step {step}/{cfg.max_steps} target {row['target']:.3f} "
                 f"(stop > {thr.target_stop:.3f}) retain {ret:.3f}{' +descent' if row['descent'] else ''}")
        if row["target"] > thr.target_stop:
            reason = "target_above_shuffled"
            break
    model.eval()
    return UnlearnResult(step, reason == "target_above_shuffled", reason, thr, curve, n_desc, time.time() - t_start)
