"""``g2is warmup`` and ``g2is grads``: the LESS warmup and gradient-feature extraction into stores.

Data (``--data``): a data spec, :class:`g2is_core.data.spec.DataSpec` (README.md, "Naming data"): a file
or folder, ``builtin:pool``, ``builtin:targets[:<composite>]``, ``builtin:task:<task>``, ``shared:<path>``;
``--fmt``, ``--data-seed`` and ``--limit`` fill the options the spec's text leaves unset.
"""
from __future__ import annotations

import argparse
from typing import Any

from ._common import add_backend_args, check_model, fraction, non_negative_int, out_dir, positive_float, positive_int

COMMANDS = {"warmup": "LESS warmup: LoRA training on a random fraction of a pool, one checkpoint (weights + Adam "
                      "moments by name) per epoch",
            "grads": "per-example LoRA gradient features (LESS) into a resumable GradientStore"}


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="'default' (SmolLM2-135M-Instruct), 'tiny', a directory or a .gguf")
    p.add_argument("--data", required=True, help="data spec: a file/folder, builtin:pool, builtin:targets[:NAME], "
                                                  "shared:PATH, ... (README 'Naming data')")
    p.add_argument("--fmt", help="loader format name (default: detected)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the built-in suite")
    p.add_argument("--limit", type=non_negative_int, default=0, help="use only the first N records (0 = all)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")


def _run_warmup(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..data.spec import DataSpec
    from ..features.extract import with_overrides
    from ..features.warmup import LESS_WARMUP, WarmupConfig, warmup
    from ..models.loading import load_model
    from ..models.lora import LoraSettings
    from ..progress import cli_progress

    check_model(args.model)
    base = LESS_WARMUP if args.preset == "less" else WarmupConfig()
    lora = base.lora
    if args.r or args.alpha:
        lora = LoraSettings(r=args.r or lora.r, alpha=args.alpha or (4 * (args.r or lora.r)), dropout=lora.dropout,
                            targets=lora.targets, seed=lora.seed)
    cfg = with_overrides(base, fraction=args.fraction, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                           grad_accum=args.grad_accum, max_length=args.max_length, seed=args.seed)
    cfg = replace(cfg, lora=lora, bf16=bool(args.bf16))
    d = DataSpec.parse(args.data).fill(fmt=args.fmt, seed=args.data_seed, limit=args.limit).load()
    recs, dh, desc = d.records, d.data_hash, d.description
    with cli_progress("warmup") as prog:
        loaded = load_model(args.model, device=args.device, progress=prog)
        w = warmup(loaded, recs, cfg, data_hash=dh, out_dir=args.out, progress=prog)
    print(f"warmup {w.key} on {desc}: {len(w.meta['inputs']['subset_ids'])} of {len(recs)} records, "
          f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha}")
    print(f"directory: {w.dir}")
    for c in w.checkpoints:
        print(f"  epoch {c.epoch}: step {c.step}, weight {c.weight:.4f}  ({c.path})")
    return 0


def _epochs(spec: str) -> list[int] | None:
    if spec in ("all", ""):
        return None
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"--checkpoint {spec!r}: give 'all' or epoch numbers like 1,2,4") from None


def _run_grads(args: argparse.Namespace) -> int:
    from ..data.spec import DataSpec
    from ..features.backends import extract_checkpoints
    from ..features.extract import FeatureConfig
    from ..features.projection import ProjectorConfig
    from ..features.ray_backend import RayConfig
    from ..features.warmup import find_warmup
    from ..progress import cli_progress

    d = DataSpec.parse(args.data).fill(fmt=args.fmt, seed=args.data_seed, limit=args.limit).load()
    w = find_warmup(args.warmup)
    check_model(args.model)
    cfg = FeatureConfig(kind="adam" if args.kind == "train" else "sgd", max_length=args.max_length,
                        template=args.template, bf16=bool(args.bf16), batch_tokens=args.batch_tokens,
                        max_batch=args.max_batch, head_signatures=bool(args.head_signatures))
    with cli_progress(f"grads ({args.kind})") as prog:
        stores = extract_checkpoints(args.model, d.records, w, _epochs(args.checkpoint), cfg,
                                     ProjectorConfig(dim=args.dim, seed=args.proj_seed,
                                                     kind=args.projector), data_hash=d.data_hash,
                                     data_source=d.description, out_dir=args.out, device=args.device,
                                     backend=getattr(args, "backend", "local"),
                                     ray_config=RayConfig(address=args.ray_address, workers=args.ray_workers),
                                     method=args.method, dtype=args.dtype, shard_rows=args.shard_rows, progress=prog)
    print(f"{args.kind} features of {d.description}: {len(d.records)} rows x {args.dim} ({args.dtype}), warmup {w.key}"
          + (f", head signatures {' x '.join(map(str, stores[0].head_signatures().shape[1:]))} (layer x head)"
             if cfg.head_signatures and stores else ""))
    for s in stores:
        print(f"  epoch {s.config['checkpoint']['epoch']} (weight {s.weight:.4f}): {s.dir}")
    return 0


def register(sub: Any) -> None:
    from ..features.extract import FeatureConfig
    from ..features.projection import ProjectorConfig
    from ..features.warmup import LESS_WARMUP, WarmupConfig
    from ..models.lora import LESS_LORA, SMALL_LORA

    p = sub.add_parser("warmup", help=COMMANDS["warmup"],
                       description="Train LoRA on a random fraction of the pool (LESS section 2.1). Defaults are "
                       f"scaled down for the ~135M default model (r={SMALL_LORA.r}, alpha={SMALL_LORA.alpha}); --preset "
                       f"less uses the paper's r={LESS_LORA.r}, alpha={LESS_LORA.alpha}, batch {LESS_WARMUP.batch_size} x "
                       f"{LESS_WARMUP.grad_accum} accumulation.")
    _add_common(p)
    p.add_argument("--preset", choices=["small", "less"], default="small", help="default settings to start from")
    p.add_argument("--fraction", type=fraction, help=f"fraction of the pool to train on (default {WarmupConfig.fraction})")
    p.add_argument("--epochs", type=positive_int, help=f"epochs = checkpoints (default {WarmupConfig.epochs})")
    p.add_argument("--lr", type=positive_float, help=f"peak learning rate (default {WarmupConfig.lr})")
    p.add_argument("--r", type=positive_int, help=f"LoRA rank (default {SMALL_LORA.r}; LESS {LESS_LORA.r})")
    p.add_argument("--alpha", type=positive_int, help="LoRA alpha (default 4*r)")
    p.add_argument("--batch-size", type=positive_int,
                   help=f"examples per forward/backward (default {WarmupConfig.batch_size}; less {LESS_WARMUP.batch_size})")
    p.add_argument("--grad-accum", type=positive_int,
                   help=f"backward passes per optimizer step (default {WarmupConfig.grad_accum})")
    p.add_argument("--max-length", type=positive_int, help=f"tokens per example (default {WarmupConfig.max_length})")
    p.add_argument("--seed", type=int, help=f"subset draw, data order and LoRA init (default {WarmupConfig.seed})")
    p.add_argument("--bf16", action="store_true",
                   help="bf16 autocast during training (fp32 with a warning where bf16 is not native; "
                        "G2IS_FORCE_BF16=1 insists)")
    p.add_argument("--out", type=out_dir, help="output directory (default: <workspace>/warmup/<key>)")
    p.set_defaults(func=_run_warmup)

    q = sub.add_parser("grads", help=COMMANDS["grads"],
                       description="Extract projected, normalised gradient features at warmup checkpoints: "
                       "train features in the Adam direction, target features as plain gradients. One store "
                       "per checkpoint; rerun the same command to resume an interrupted extraction.")
    _add_common(q)
    q.add_argument("--warmup", required=True, help="warmup directory or key (from `g2is warmup`)")
    q.add_argument("--checkpoint", default="all", help="'all' or comma-separated epochs")
    q.add_argument("--kind", choices=["train", "target"], default="train",
                   help="train: Adam-direction features (pool); target: plain gradients")
    q.add_argument("--dim", type=positive_int, default=ProjectorConfig.dim, help=f"projection dimension d (default {ProjectorConfig.dim})")
    q.add_argument("--proj-seed", type=int, default=ProjectorConfig.seed, help="projection seed (must match across compared stores)")
    q.add_argument("--projector", choices=["dense", "sparse"], default=ProjectorConfig.kind,
                   help=f"dense: the LESS Rademacher R (default); sparse: {ProjectorConfig.s} non-zeros per parameter, "
                        "far cheaper at large --dim, a different matrix (stores of the two kinds are not comparable)")
    q.add_argument("--method", choices=["fast", "reference"], default="fast",
                   help="fast: batched per-example gradients; reference: one backward per example (slow, for checks)")
    q.add_argument("--bf16", action="store_true",
                   help="fast path: bf16 autocast (fp32 with a warning where bf16 is not native; G2IS_FORCE_BF16=1 "
                        "insists)")
    q.add_argument("--dtype", choices=["fp16", "fp32"], default="fp16", help="stored feature dtype")
    q.add_argument("--head-signatures", action="store_true", default=FeatureConfig.head_signatures,
                   help="also store each record's [layer x head] activation pattern (the head signature), taken "
                        "in the same backward pass as its features (docs/bridge.md; local backend only)")
    q.add_argument("--max-length", type=positive_int, default=FeatureConfig.max_length,
                   help=f"tokens per example (default {FeatureConfig.max_length}; longer ones are cut)")
    q.add_argument("--template", choices=["chat", "plain"], default=FeatureConfig.template,
                   help=f"chat: the tokenizer's chat template; plain: prompt and response as text (default "
                        f"{FeatureConfig.template})")
    q.add_argument("--shard-rows", type=positive_int, default=128, help="rows per committed shard")
    q.add_argument("--batch-tokens", type=positive_int, default=FeatureConfig.batch_tokens, help="padded tokens per backward (memory: ~1.2 MB per token on the default model)")
    q.add_argument("--max-batch", type=positive_int, default=FeatureConfig.max_batch, help="examples per backward")
    q.add_argument("--out", type=out_dir, help="output directory (default: <workspace>/grads/<key>)")
    add_backend_args(q)
    q.set_defaults(func=_run_grads)
