"""LESS gradient features: per-example LoRA gradients, two extractors of the same function, and the store.

Method: ``shared/spec/g2is_method.md`` section 2 (LESS, Xia et al. 2024). Design choices and
measured speed: ``docs/gradients.md``. The projection and the Adam direction:
:mod:`g2is_core.features.projection`; the warmup and its checkpoints: :mod:`g2is_core.features.warmup`.

Pipeline for one example z and one warmup checkpoint i (LoRA parameters only, P of them):

    g      = d/dtheta  mean_{response tokens t of z}  CE(logits_t, y_t)              [P]
    train  : Gamma = m'/sqrt(v'+eps), m' = b1*m_i + (1-b1)*g, v' = b2*v_i + (1-b2)*g^2 (no bias
             correction, as the reference code)                                       [P]
    target : Gamma = g
    x      = R^T Gamma / ||R^T Gamma||,   R in {+-1/sqrt(d)}^{P x d}                  [d]

Two implementations of the same function:

- :func:`extract_reference` -- one example at a time with the model's own loss (full logits),
  ``loss.backward()``, the flattened ``.grad`` of every LoRA parameter, and the projection applied
  as a dense matrix generated chunk by chunk. Written for clarity; the test oracle and the
  benchmark baseline.
- :func:`extract_fast` -- length-bucketed batches; ONE backward per batch gives every example's
  LoRA gradient: for a LoRA module y = B(A x) * s, the per-example weight gradients are
  ``dL_b/dB = sum_t gy_bt (A x_bt)^T`` and ``dL_b/dA = sum_t (B^T gy_bt) x_bt^T``, built from the
  inputs kept by forward hooks and the output gradients returned by ``torch.autograd.grad``;
  logits only at positions that carry a label (:func:`g2is_core.models.lm_ops.response_loss`);
  optional bf16 autocast; and the projection applied block by block to a group of rows (never the
  whole P x d matrix in fp32; the projector keeps R's drawn bits, 1 bit per entry, so a block is
  drawn once per run, not once per group: :class:`~g2is_core.features.projection.Projector`).

Both call :meth:`~g2is_core.features.projection.Projector.block`, so they use the SAME R and their
features agree up to float rounding (tested: cosine > 0.999 per example in fp32, in practice 1 - 1e-6).
An example without response tokens has g = 0 and its feature stays the zero row.

Windows that carry no signal are refused before any work (:func:`check_windows`): a record whose
window under ``max_length`` has no response token predicted from a token before it (its gradient is 0,
its feature a zero row), and different records whose cut windows are the same tokens (their features
would be identical rows). Either makes the walk select from rows that no longer describe the records.

Head signatures (``FeatureConfig.head_signatures``; docs/bridge.md). The per-example activation
pattern of heads_method.md Eq. 2 for ONE sample, on the model the features are taken from (the
warmup checkpoint's LoRA loaded)::

    sig(z)[l, h] = | d loss(z) / d gate[z, l, h] |  at gate = 1                        [L, H]

with a scalar gate on each query head's output before ``o_proj``
(:func:`g2is_core.models.lm_ops.head_gates`, the same hooks as the activation pattern's gate route).
The gates are one more leaf of the SAME graph: the backward that gives the LoRA output gradients
gives dLoss_b/dgate[b] too (the loss is a sum over examples, so gate[b] sees example b only). At
gate = 1 the forward is bit-identical, so the features do not change. Both paths compute it (the
reference path from ``loss.backward()`` on a [1, L, H] gate); an example without response tokens
keeps the zero row, as :func:`g2is_core.heads.patterns.activation_pattern` gives it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from .. import runtime
from ..data.encoding import IGNORE, TEMPLATES, Encoded, collate, encode_record, length_buckets
from ..data.records import DataError, Record
from ..linalg import NonFiniteError, unit_rows
from ..models import lm_ops
from ..models.lora import LoraSettings, attach_lora, lora_parameters
from ..progress import Progress, no_progress
from ..settings import HALF_OPEN_UNIT, POSITIVE_FLOAT, POSITIVE_INT, check_choice, check_rules
from ..workspace import Workspace, hash_config, verify_artefact
from .projection import Projector, ProjectorConfig, adam_direction
from .warmup import Checkpoint, Warmup

if TYPE_CHECKING:  # annotations only: loading pulls in the download machinery
    from ..models.loading import LoadedModel


# What a stored head signature is, in the store's sidecar (module doc; docs/bridge.md).
SIGNATURE_VALUE = ("|d loss(z)/d gate[l,h]| at gate=1 on each query head's output before o_proj: the activation "
                   "pattern (heads_method.md Eq. 2) of the one example z, on the checkpoint's model")


# ----------------------------------------------------------------------------- configs
@dataclass(frozen=True)
class FeatureConfig:
    """How features are computed (besides the projection and the checkpoint)."""

    kind: str = "adam"           # "adam": train features (Adam direction); "sgd": target features (plain g)
    max_length: int = 512        # tokens per example (encoding's cut policy: prompt left, then response right)
    template: str = "chat"       # "chat" (the tokenizer's template) or "plain"
    bf16: bool = False           # fast path only: autocast the model's matmuls to bf16 (runtime.resolve_precision)
    batch_tokens: int = 512      # fast path: padded tokens per backward (bounds activation memory; docs)
    max_batch: int = 16          # fast path: examples per backward
    proj_rows: int = 64          # fast path: rows per projection group (one pass over R per group)
    grad_buffer_mb: int = 384    # fast path: cap on the [rows, P] fp32 gradient buffer
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    head_signatures: bool = False  # also store each example's [layer, head] activation pattern, same backward

    def __post_init__(self) -> None:
        # max_length 0 encoded every example as an empty window: identical (zero) rows, walked as if real
        check_choice(self.kind, "kind", ("adam", "sgd"))
        check_choice(self.template, "template", TEMPLATES)
        check_rules(self, {"max_length": POSITIVE_INT, "batch_tokens": POSITIVE_INT, "max_batch": POSITIVE_INT,
                           "proj_rows": POSITIVE_INT, "grad_buffer_mb": POSITIVE_INT, "beta1": HALF_OPEN_UNIT,
                           "beta2": HALF_OPEN_UNIT, "eps": POSITIVE_FLOAT})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def identity(self) -> dict[str, Any]:
        """Fields that change the numbers (batching fields do not, beyond float rounding in bf16).

        ``head_signatures`` enters only when on: a store with signatures is another artefact (another
        key), while every store made before the switch existed keeps its key."""
        d = self.to_dict()
        for k in ("proj_rows", "grad_buffer_mb"):
            d.pop(k)
        if not d["head_signatures"]:
            d.pop("head_signatures")
        return d


# ----------------------------------------------------------------------------- parameter layout
@dataclass(frozen=True)
class Layout:
    """The flattened order of the LoRA parameters: ``names[i]`` occupies ``[offsets[i], offsets[i]+numel)``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]
    total: int

    def slice(self, name: str) -> slice:
        i = self.names.index(name)
        return slice(self.offsets[i], self.offsets[i] + math.prod(self.shapes[i]))

    def to_dict(self) -> dict[str, Any]:
        return {"n_params": self.total, "n_tensors": len(self.names)}


def lora_layout(model) -> Layout:
    names, shapes, offsets, off = [], [], [], 0
    for n, p in lora_parameters(model):
        names.append(n)
        shapes.append(tuple(p.shape))
        offsets.append(off)
        off += p.numel()
    if not names:
        raise ValueError("the model has no trainable (LoRA) parameters; attach LoRA before extracting gradients")
    return Layout(tuple(names), tuple(shapes), tuple(offsets), off)


def flatten_by_name(tensors: dict[str, Any], layout: Layout, prefix: str = ""):
    """Concatenate ``tensors[prefix + name]`` in layout order -> [P] fp32 (raises on a missing name)."""
    import torch

    missing = [n for n in layout.names if prefix + n not in tensors]
    if missing:
        raise ValueError(f"the checkpoint has no {prefix}{missing[0]!r} (and {len(missing) - 1} more): it was made "
                         "with another model or LoRA configuration; extract with the warmup's own settings")
    return torch.cat([tensors[prefix + n].float().reshape(-1) for n in layout.names])



def load_checkpoint_into(model, ckpt: Checkpoint, layout: Layout) -> tuple[Any, Any]:
    """Copy the checkpoint's adapter weights into ``model`` by name; return its Adam moments (m, v) [P].

    The checkpoint folder is first checked against the sha256 its sidecar recorded at the warmup (a replaced
    or truncated adapter is refused, even one of the same shape), and its numbers must be finite."""
    import torch
    from safetensors.torch import load_file

    verify_artefact(ckpt.path, cache=True)
    weights = load_file(str(ckpt.path / "adapter.safetensors"))
    params = dict(lora_parameters(model))
    flat = flatten_by_name(weights, layout)  # raises on a name mismatch
    mom = load_file(str(ckpt.path / "optimizer.safetensors"))
    m, v = flatten_by_name(mom, layout, "exp_avg::"), flatten_by_name(mom, layout, "exp_avg_sq::")
    for name, t in (("adapter.safetensors", flat), ("optimizer.safetensors (m)", m), ("optimizer.safetensors (v)", v)):
        if not bool(torch.isfinite(t).all()):
            raise NonFiniteError(f"{ckpt.path / name.split()[0]}: the warmup checkpoint of epoch {ckpt.epoch} holds "
                                 f"NaN or inf values in {name}; the warmup diverged: run it again with a lower --lr")
    del flat
    with torch.no_grad():
        for n in layout.names:
            params[n].copy_(weights[n].to(params[n].dtype))
    return m, v



# ----------------------------------------------------------------------------- reference path
def example_gradient_reference(model, enc: Encoded, pad_id: int, layout: Layout, heads=None):
    """g [P]: gradient of this example's mean response-token loss (model's own loss, full logits).

    ``heads``: a [L, H] float32 array to fill with the example's head signature (module doc) from the
    same ``loss.backward()`` (a [1, L, H] gate leaf); left as is (zeros) without response tokens."""
    import torch

    params = dict(lora_parameters(model))
    if enc.n_response == 0:
        return torch.zeros(layout.total)
    dev = next(model.parameters()).device
    model.zero_grad(set_to_none=True)
    gate = None if heads is None else torch.ones(1, *heads.shape, device=dev, requires_grad=True)
    with lm_ops.hooks(pre=lm_ops.head_gates(model, gate) if gate is not None else ()):
        loss = model(**collate([enc], pad_id, str(dev))).loss
    loss.backward()
    g = torch.cat([params[n].grad.detach().float().reshape(-1).cpu() for n in layout.names])
    if gate is not None:
        heads[...] = gate.grad[0].abs().float().cpu().numpy()
    model.zero_grad(set_to_none=True)
    return g


def extract_reference(model, encoded: Sequence[Encoded], cfg: FeatureConfig, projector: Projector, *, pad_id: int,
                      moments: tuple[Any, Any] | None = None, heads: np.ndarray | None = None,
                      progress: Progress = no_progress) -> np.ndarray:
    """Features [N, d] fp32, one example at a time (module doc). ``moments`` = (m, v) for kind "adam".

    ``heads``: an [N, L, H] float32 array filled with the head signatures from the same backwards."""
    import torch

    layout = lora_layout(model)
    _check_kind(cfg, moments)
    _check_heads(model, heads, len(encoded))
    model.eval()  # dropout off: the feature is the gradient of the deterministic model (docs)
    out = np.zeros((len(encoded), projector.cfg.dim), dtype=np.float32)
    for i, e in enumerate(encoded):
        g = example_gradient_reference(model, e, pad_id, layout, None if heads is None else heads[i])
        if cfg.kind == "adam":
            g = adam_direction(g, moments[0], moments[1], cfg.beta1, cfg.beta2, cfg.eps)
        x = torch.zeros(projector.cfg.dim)
        for k in range(projector.n_blocks):  # R one chunk of rows at a time (dense or sparse)
            projector.add_block(x, k, g[projector.columns(k)])
        out[i] = unit_rows(x, zero="keep").numpy()  # g = 0 (no response token) stays the zero row
        progress((i + 1) / len(encoded), f"{i + 1}/{len(encoded)}")
    return out


def head_dims(model) -> tuple[int, int]:
    """(L, H): layers and query heads, the shape of one head signature."""
    cfg = lm_ops.unwrap(model).config
    return int(cfg.num_hidden_layers), int(cfg.num_attention_heads)


def _check_heads(model, heads, n: int) -> None:
    if heads is not None and (heads.shape != (n, *head_dims(model)) or heads.dtype != np.float32):
        raise ValueError(f"the head-signature buffer must be float32 {(n, *head_dims(model))}; got "
                         f"{heads.dtype} {heads.shape}")


def _check_kind(cfg: FeatureConfig, moments) -> None:
    if cfg.kind not in ("adam", "sgd"):
        raise ValueError(f"feature kind {cfg.kind!r}: use 'adam' (train features) or 'sgd' (target features)")
    if cfg.kind == "adam" and moments is None:
        raise ValueError("train features ('adam') need a checkpoint's Adam moments; give a warmup checkpoint")


# ----------------------------------------------------------------------------- fast path
class _LoraTap:
    """What the per-example gradients need from every LoRA A/B Linear, kept by forward hooks.

    For module m: ``x`` [B, T, in] (input of A), ``h`` [B, T, r] (output of A = input of B),
    ``y`` [B, T, out] (output of B, before the LoRA scaling; we differentiate the loss w.r.t. it).
    The hooks are live only inside ``with lm_ops.hooks(forward=tap.forward_hooks()):``.
    """

    def __init__(self, model, layout: Layout):
        self.mods: list[tuple[str, str, Any, Any]] = []  # (A param name, B param name, A module, B module)
        name_to_mod = dict(model.named_modules())
        names = set(layout.names)
        for n in layout.names:
            if ".lora_A." in n:
                a_mod = n[: -len(".weight")]
                b_mod = a_mod.replace(".lora_A.", ".lora_B.")
                if b_mod + ".weight" not in names:
                    raise ValueError(f"{a_mod} has no matching lora_B among the trainable parameters")
                self.mods.append((n, b_mod + ".weight", name_to_mod[a_mod], name_to_mod[b_mod]))
        covered = {a for a, *_ in self.mods} | {b for _, b, *_ in self.mods}
        if covered != names:
            extra = sorted(names - covered)[0]
            raise ValueError(f"trainable parameter {extra!r} is not a LoRA A/B weight; the fast path needs "
                             "LoRA-only training (no biases or other unfrozen weights); use the reference path")
        self.x: list[Any] = [None] * len(self.mods)
        self.h: list[Any] = [None] * len(self.mods)
        self.y: list[Any] = [None] * len(self.mods)

    def forward_hooks(self) -> list[tuple[Any, Any]]:
        """(module, hook) pairs for :func:`g2is_core.models.lm_ops.hooks`: A keeps x and h, B keeps y."""
        pairs = []
        for i, (_, _, a, b) in enumerate(self.mods):
            pairs += [(a, self._keep_a(i)), (b, self._keep_b(i))]
        return pairs

    def _keep_a(self, i: int):
        def hook(_mod, inp, out):
            self.x[i], self.h[i] = inp[0], out
        return hook

    def _keep_b(self, i: int):
        def hook(_mod, _inp, out):
            self.y[i] = out
        return hook

    def clear(self) -> None:
        n = len(self.mods)
        self.x, self.h, self.y = [None] * n, [None] * n, [None] * n


def batch_gradients(model, tap: _LoraTap, layout: Layout, batch: dict[str, Any], out, *, bf16: bool = False,
                    heads: bool = False):
    """Write each example's LoRA gradient g_b [P] into ``out[b]`` (fp32 [B, P]) with ONE backward.

    The loss is sum_b mean-loss_b, so d loss / d y_b involves example b only; padding positions get
    zero output-gradient (no label there, causal attention) and are also masked explicitly.
    ``heads``: also return the head signatures [B, L, H] (fp32, on the batch's device) from the same
    backward, the gates being one more leaf of the graph (module doc); else None.
    """
    import torch

    dev_type = batch["input_ids"].device.type
    tap.clear()
    gate = None
    if heads:
        gate = torch.ones(batch["input_ids"].shape[0], *head_dims(model), device=batch["input_ids"].device,
                          requires_grad=True)
    with lm_ops.hooks(pre=lm_ops.head_gates(model, gate) if gate is not None else ()), \
            torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
        loss = lm_ops.response_loss(model, batch)[0].sum()
    grads = torch.autograd.grad(loss, [*tap.y, gate] if gate is not None else tap.y, allow_unused=True)
    gys = grads[: len(tap.y)]
    sig = None if gate is None else grads[-1].detach().abs().float()
    mask = batch["attention_mask"].unsqueeze(-1)          # [B, T, 1]
    with torch.no_grad(), torch.autocast(device_type=dev_type, dtype=torch.bfloat16, enabled=bf16):
        for i, (a_name, b_name, _a, b_mod) in enumerate(tap.mods):
            gy = gys[i]
            if gy is None:
                out[:, layout.slice(a_name)] = 0
                out[:, layout.slice(b_name)] = 0
                continue
            x = tap.x[i] * mask.to(tap.x[i].dtype)
            h = tap.h[i]
            gy = gy * mask.to(gy.dtype)
            gh = gy @ b_mod.weight.to(gy.dtype)                            # [B, T, r]  dL/dh
            g_b = gy.transpose(1, 2) @ h.to(gy.dtype)                      # [B, out, r]
            g_a = gh.transpose(1, 2) @ x.to(gh.dtype)                      # [B, r, in]
            out[:, layout.slice(b_name)] = g_b.reshape(g_b.shape[0], -1).float()
            out[:, layout.slice(a_name)] = g_a.reshape(g_a.shape[0], -1).float()
    tap.clear()
    return sig


def project_rows(G, projector: Projector, cfg: FeatureConfig, moments=None):
    """[rows, P] gradients -> [rows, d] features: Adam direction (kind "adam") fused per block, project, normalise."""
    import torch

    x = torch.zeros(G.shape[0], projector.cfg.dim)
    for k in range(projector.n_blocks):
        cols = projector.columns(k)
        gk = G[:, cols]
        if cfg.kind == "adam":
            gk = adam_direction(gk, moments[0][cols], moments[1][cols], cfg.beta1, cfg.beta2, cfg.eps)
        projector.add_block(x, k, gk)
    return unit_rows(x, zero="keep")


def group_rows(cfg: FeatureConfig, n_params: int) -> int:
    """Rows per projection group: ``proj_rows`` capped by the gradient buffer's memory budget."""
    return max(1, min(cfg.proj_rows, (cfg.grad_buffer_mb << 20) // (4 * n_params)))


def extract_fast(model, encoded: Sequence[Encoded], cfg: FeatureConfig, projector: Projector, *, pad_id: int,
                 moments: tuple[Any, Any] | None = None, heads: np.ndarray | None = None,
                 progress: Progress = no_progress) -> np.ndarray:
    """Features [N, d] fp32 in input order (module doc). Same function as :func:`extract_reference`.

    ``heads``: an [N, L, H] float32 array filled, in input order, with the head signatures from the
    same backwards (module doc); rows without response tokens are left as they are (zeros)."""
    import torch

    layout = lora_layout(model)
    _check_kind(cfg, moments)
    _check_heads(model, heads, len(encoded))
    model.eval()
    dev = next(model.parameters()).device
    cfg = replace(cfg, bf16=runtime.resolve_bf16(cfg.bf16, dev.type, what="feature extraction"))
    tap = _LoraTap(model, layout)
    out = np.zeros((len(encoded), projector.cfg.dim), dtype=np.float32)
    with lm_ops.hooks(forward=tap.forward_hooks()):
        # Rows sorted by length, then cut into projection groups: buckets inside a group pad little.
        order = sorted(range(len(encoded)), key=lambda i: (encoded[i].length, i))
        rows = group_rows(cfg, layout.total)
        done = 0
        for s in range(0, len(order), rows):
            grp = order[s: s + rows]
            G = torch.zeros(len(grp), layout.total)
            sub = [encoded[i] for i in grp]
            for bidx in length_buckets(sub, cfg.batch_tokens, cfg.max_batch):
                live = [j for j in bidx if sub[j].n_response > 0]  # no label: g = 0 (as the reference)
                if not live:
                    continue
                batch = collate([sub[j] for j in live], pad_id, str(dev))
                gb = torch.zeros(len(live), layout.total, device=dev)
                sig = batch_gradients(model, tap, layout, batch, gb, bf16=cfg.bf16, heads=heads is not None)
                G[live] = gb.cpu()
                if sig is not None:
                    heads[[grp[j] for j in live]] = sig.cpu().numpy()
                done += len(live)
                progress(done / len(encoded), f"{done}/{len(encoded)}")
            out[grp] = project_rows(G, projector, cfg, moments).numpy()
            del G
    return out


# ----------------------------------------------------------------------------- model for extraction
def prepare_model(loaded: LoadedModel, lora: LoraSettings):
    """Attach LoRA (once) and return the peft model in eval mode (dropout off)."""
    if not hasattr(loaded.model, "peft_config"):
        loaded.model = attach_lora(loaded.model, lora)
    loaded.model.eval()
    return loaded.model


def encode_rows(tokenizer, records: Sequence[Record], cfg: FeatureConfig) -> list[Encoded]:
    return [encode_record(tokenizer, r, max_length=cfg.max_length, template=cfg.template) for r in records]


def check_windows(encoded: Iterable[Encoded], records: Sequence[Record], max_length: int) -> None:
    """Raise :class:`~g2is_core.data.records.DataError` when windows carry no signal (module doc).

    ``encoded[i]`` is ``records[i]`` encoded (any iterable: it is read once and only a 16-byte digest of
    each window is kept, so the whole pool can be checked before any work).
    Empty: no label at a position > 0 (the loss predicts token t from tokens < t, so a response token at
    position 0 trains nothing; ``max_length`` 0 or 1 leaves every window so). Identical: two records whose
    messages differ but whose cut windows (tokens and labels) are equal, so their feature rows would be
    equal (a window cut down to the same response start). Records that are themselves duplicates stay."""
    import hashlib

    empty, n = [], 0
    seen: dict[bytes, tuple[int, bool, str]] = {}  # window digest -> (first record, was it cut, its id)
    for i, e in enumerate(encoded):
        n += 1
        if not any(lab != IGNORE for lab in e.labels[1:]):
            empty.append(e.id)
            continue
        cut = bool(e.cut_prompt or e.cut_response)
        key = hashlib.blake2b(np.asarray(e.input_ids + e.labels, dtype=np.int64).tobytes(), digest_size=16).digest()
        j, cut_j, id_j = seen.setdefault(key, (i, cut, e.id))
        if j != i and (cut or cut_j) and records[j].messages != records[i].messages:
            raise DataError(f"records {id_j!r} and {e.id!r} differ but their windows of {max_length} "
                            "tokens are the same tokens (the cut removed what tells them apart), so their features "
                            "would be identical rows. Give a larger --max-length, or drop one of them")
    if empty:
        raise DataError(f"{len(empty)} of {n} records have no response token left to learn from in a "
                        f"window of {max_length} tokens (first: {', '.join(map(repr, empty[:5]))}); their features "
                        "would be zero rows. Give a larger --max-length, or drop those records")


def extract(model, tokenizer, records: Sequence[Record], cfg: FeatureConfig, projector: Projector, *,
            moments=None, method: str = "fast", heads: np.ndarray | None = None,
            progress: Progress = no_progress) -> np.ndarray:
    """Encode ``records`` and return their features [N, d] with the chosen method ("fast" | "reference").

    Windows without signal are refused before any work (:func:`check_windows`). ``heads``: an [N, L, H]
    float32 array (:func:`head_dims`) to fill with the head signatures."""
    enc = encode_rows(tokenizer, records, cfg)
    check_windows(enc, records, cfg.max_length)
    cfg = replace(cfg, bf16=runtime.resolve_bf16(cfg.bf16, next(model.parameters()).device.type,
                                                 what="feature extraction"))
    fn = {"fast": extract_fast, "reference": extract_reference}.get(method)
    if fn is None:
        raise ValueError(f"method {method!r}: use 'fast' or 'reference'")
    if method == "reference" and cfg.bf16:
        raise ValueError("the reference path runs in fp32 only; drop --bf16 or use the fast path")
    return fn(model, enc, cfg, projector, pad_id=tokenizer.pad_token_id, moments=moments, heads=heads,
              progress=progress)



def with_overrides(cfg: Any, **kw: Any) -> Any:
    """``cfg`` (a dataclass) with the fields of ``kw`` that are not None replaced (unset CLI flags keep defaults)."""
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})

# ----------------------------------------------------------------------------- into a store
def store_config(loaded: LoadedModel, warmup: Warmup, ckpt: Checkpoint, cfg: FeatureConfig,
                 proj: ProjectorConfig, method: str, dtype: str) -> dict[str, Any]:
    """The sidecar ``config`` of a store: everything that determines its numbers."""
    return {"model": loaded.identity, "model_key": loaded.key, "lora": warmup.config.lora.to_dict(),
            "checkpoint": {"warmup": warmup.key, "epoch": ckpt.epoch, "step": ckpt.step, "weight": ckpt.weight,
                           "n_checkpoints": len(warmup.checkpoints)},
            "projector": proj.to_dict(), "kind": cfg.kind, "features": cfg.identity(), "method": method,
            "dtype": dtype}


def extract_store(loaded: LoadedModel, records: Sequence[Record], warmup: Warmup, epoch: int,
                  cfg: FeatureConfig = FeatureConfig(), proj: ProjectorConfig = ProjectorConfig(), *,
                  data_hash: str, data_source: str = "", method: str = "fast", dtype: str = "fp16",
                  shard_rows: int = 128, workspace: Workspace | None = None, out_dir: str | Path | None = None,
                  progress: Progress = no_progress, wait: bool = True):
    """Features of ``records`` at one warmup checkpoint into a (resumable) :class:`~g2is_core.features.store.GradientStore`.

    The store lives at ``<workspace>/grads/<key>`` (key = hash of the config and the data hash)
    unless ``out_dir`` is given. Rows are in the order of ``records``. Returns the opened store.
    With ``cfg.head_signatures`` every shard also commits the rows' head signatures [rows, L, H]
    from the same backwards (module doc); :meth:`GradientStore.head_signatures` reads them.
    ``wait=False``: a store another process is writing raises :class:`~g2is_core.workspace.LockBusy`
    (before any work) instead of waiting for it.
    """
    import time

    from .store import write_store

    runtime.apply_thread_policy()
    if warmup.model_key != loaded.key:
        raise ValueError(f"warmup {warmup.key} was trained on another model ({warmup.model_key}) than the one "
                         f"loaded ({loaded.key}); load the warmup's model or run a new warmup")
    ckpt = warmup.checkpoint(epoch)
    model = prepare_model(loaded, warmup.config.lora)
    layout = lora_layout(model)
    moments = load_checkpoint_into(model, ckpt, layout)
    if cfg.kind == "sgd":
        moments = None
    projector = Projector(proj, layout.total)
    # The precision that RUNS is in the key (a bf16 request that falls back to fp32 keys the fp32 store);
    # what was asked for is recorded beside it, unhashed.
    precision = runtime.resolve_precision(cfg.bf16, next(model.parameters()).device.type, what="feature extraction")
    cfg = replace(cfg, bf16=precision.bf16)
    config = store_config(loaded, warmup, ckpt, cfg, proj, method, dtype)
    ws = workspace or Workspace()
    d = Path(out_dir) if out_dir else ws.dir("grads", hash_config({**config, "data_hash": data_hash,
                                                                    "shard_rows": shard_rows}))
    ids = [r.id for r in records]
    n = len(records)
    if not ws.is_complete(d):  # every window before any shard (compute checks its own again)
        try:
            check_windows((encode_record(loaded.tokenizer, r, max_length=cfg.max_length, template=cfg.template)
                           for r in records), records, cfg.max_length)
        except DataError as exc:
            raise DataError(f"gradient store {d}: {exc}") from exc
    t0, first = time.time(), [None]

    heads_shape = head_dims(model) if cfg.head_signatures else None

    def compute(rows: range) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        def inner(frac: float, _msg: str) -> None:
            done = rows.start + frac * len(rows)
            _report(done)
        sig = None if heads_shape is None else np.zeros((len(rows), *heads_shape), np.float32)
        feats = extract(model, loaded.tokenizer, [records[i] for i in rows], cfg, projector, moments=moments,
                        method=method, heads=sig, progress=inner)
        return feats if sig is None else (feats, sig)

    def _report(done: float) -> None:
        if first[0] is None:
            first[0] = done
        rate = (done - first[0]) / max(1e-9, time.time() - t0)
        progress(done / max(1, n), f"epoch {epoch}: {int(done)}/{n} rows, {rate:.2f} samples/s")

    extra = {"layout": layout.to_dict(), "precision": precision.to_dict()}
    if heads_shape is not None:
        kv = int(getattr(lm_ops.unwrap(model).config, "num_key_value_heads", None) or heads_shape[1])
        extra["head_signatures"] = {"route": "gate", "n_kv_heads": kv, "value": SIGNATURE_VALUE}
    store = write_store(d, config, ids, proj.dim, compute,
                        inputs={"data_hash": data_hash, "data": data_source, "warmup": warmup.key,
                                "n_params": layout.total},
                        dtype=dtype, shard_rows=shard_rows, extra=extra, heads_shape=heads_shape,
                        on_shard=lambda done, total, _s: _report(done), wait=wait)
    progress(1.0, f"epoch {epoch}: {n} rows in {store.dir.name}")
    return store

