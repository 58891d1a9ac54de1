"""Section e of bench/gpu_check.py: the study's closed loop on the device (issue 17's cells, on a GPU).

What a cell of bench/specs/study.yaml does after its selection is fine-tuning (the study's own ``train`` settings,
read from the spec through the project's parser) and scoring by log-likelihood; section e measures both on the
device and checks them against the CPU, then runs a whole ``g2is bench run`` there:

  e1. equality: the same few optimizer steps (models.training.train, fp32) on the CPU and on the device from the
      same LoRA init: relative L2 of the trained LoRA weights, the loss curves' largest difference;
      log-probs of the same sequences (loop.evaluation.scoring.sequence_logprobs) on both: largest |difference|.
  e2. rates: training records/s at the study's 5% size (206 records of 64-128 tokens, batch 4) in fp32 and in the
      precision ``bf16: auto`` picks, with the share of the roofline (bench/flops.py); scoring tokens/s of
      few-shot-length sequences (512 tokens, 32 scored) in both precisions.
  e3. the loop: ``g2is bench run`` of a study-shaped spec (the study's train, selection and eval sections; the
      built-in pool; methods random, less, g2is at 5%) in a temporary workspace: every cell must finish and record
      the device it ran on (registry ``info.machine``); its per-phase timings are the rows.

The model is SmolLM2-135M's architecture with random weights (the real weights cannot travel); its tokenizer is
the default model's when the workspace holds it (cache/models/.../tokenizer.json), else the tiny byte tokenizer.
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from gpu_check import ROOT, Timeout, build_model, log, random_examples, sync

STUDY_SPEC = ROOT / "bench" / "specs" / "study.yaml"
TRAIN_REL_TOL = 1e-3   # e1: trained LoRA weights, device fp32 vs CPU fp32 (Adam's 1/sqrt(v) magnifies float rounding)
LOGP_ABS_TOL = 1e-3    # e1: per-token log-probs, device fp32 vs CPU fp32 (nats)
LOOP_METHODS = ("random", "less", "g2is")


def study_settings():
    """The study spec as the runner reads it (its train, selection and eval sections are what e measures)."""
    from g2is_core.loop.spec import load_spec

    return load_spec(STUDY_SPEC)


def lora_model(fields: dict[str, Any], lora, device: str):
    from g2is_core.models.lora import attach_lora

    return attach_lora(build_model(fields), lora).to(device)


def lora_state(model) -> dict[str, Any]:
    from g2is_core.models.lora import lora_parameters

    return {n: p.detach().float().cpu().clone() for n, p in lora_parameters(model)}


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    """Largest |difference| of two per-sequence lists of log-probs (as ``sequence_logprobs`` returns them)."""
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def tokenizer_dir(dest: Path, vocab_size: int) -> str:
    """Save a tokenizer into ``dest``: the default model's (its files copied) when the workspace has them and the
    model's vocabulary holds it, else the tiny byte tokenizer. Returns a description."""
    from g2is_core.models.loading import default_model_dir, tiny_tokenizer

    src = default_model_dir()
    if (src / "tokenizer.json").exists() and vocab_size >= json.loads((src / "config.json").read_text())["vocab_size"]:
        for f in src.iterdir():
            if f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "chat_template.jinja"):
                shutil.copy2(f, dest / f.name)
        return f"the default model's tokenizer ({src / 'tokenizer.json'})"
    tiny_tokenizer().save_pretrained(str(dest))
    return "the tiny byte tokenizer (no default model in the workspace)"


def section_e(ctx) -> None:
    import torch

    from flops import example_flops, forward_flops
    from g2is_core import runtime
    from g2is_core.models.training import train

    rep, dev, s = ctx.rep, ctx.dev, ctx.sizes
    study = study_settings()
    lora = study.train.lora
    auto_bf16 = bool(runtime.resolve_bf16("auto", dev))
    precs = ["fp32"] + (["bf16"] if auto_bf16 else [])
    log(f"e: the study's loop on {dev}; its train settings {study.train.as_written()}; bf16 auto -> {auto_bf16}")

    # e1: equality of training and scoring, CPU fp32 vs device fp32
    enc = random_examples(s.n_train_equal, int(ctx.fields["vocab_size"]), s.train_min_len, study.train.max_length,
                          seed=1)
    steps = s.n_train_equal // study.train.batch_size
    cfg = study.train.train_config(0, bf16=False)
    states, curves = {}, {}
    for where, device in (("reference", "cpu"), ("device", dev)):
        m = lora_model(ctx.fields, lora, device)
        t = time.perf_counter()
        res = train(m, enc, cfg, pad_id=ctx.pad_id, device=device)
        sync(dev)
        states[where], curves[where] = lora_state(m), [x["loss"] for x in res.losses]
        if where == "reference":
            rep.add("e", "train fp32 on the CPU (reference): wall", time.perf_counter() - t, "s", "",
                    f"{steps} optimizer steps of {study.train.batch_size}; {ctx.header_threads} threads")
        del m
    ref_state, dev_state = states["reference"], states["device"]
    num = sum(float((dev_state[k] - ref_state[k]).norm() ** 2) for k in ref_state) ** 0.5
    den = sum(float(v.norm() ** 2) for v in ref_state.values()) ** 0.5
    rel = num / max(den, 1e-30)
    dloss = max(abs(a - b) for a, b in zip(curves["reference"], curves["device"]))
    rep.add("e", f"train fp32 on {dev} vs CPU: LoRA weights relative L2", rel, "",
            "PASS" if rel <= TRAIN_REL_TOL else "FAIL",
            f"{steps} steps of the study's training (lr {cfg.lr:g}, LoRA r {lora.r}) from one init; "
            f"<= {TRAIN_REL_TOL:g}; largest loss difference {dloss:.2e}")

    from g2is_core.loop.evaluation.scoring import sequence_logprobs
    from g2is_core.models.loading import LoadedModel

    seqs = [(e.input_ids, e.labels) for e in random_examples(
        s.n_score, int(ctx.fields["vocab_size"]), s.score_len, s.score_len, seed=2)]
    seqs = [(x, [-100] * (len(x) - s.score_labels) + list(x[-s.score_labels:])) for x, _ in seqs]
    base_cpu, base_dev = build_model(ctx.fields), build_model(ctx.fields).to(dev)
    ref = sequence_logprobs(LoadedModel(base_cpu, ctx.tok, {}), seqs[:s.n_score_equal])
    got = sequence_logprobs(LoadedModel(base_dev, ctx.tok, {}), seqs[:s.n_score_equal])
    diff = max_abs_diff(got, ref)
    rep.add("e", f"log-probs fp32 on {dev} vs CPU: max |diff|", diff, "nats", "PASS" if diff <= LOGP_ABS_TOL else "FAIL",
            f"{s.n_score_equal} sequences of {s.score_len} tokens, {s.score_labels} scored each; <= {LOGP_ABS_TOL:g}")
    del base_cpu

    # e2: rates at the study's sizes on the device
    peak = {p: ctx.peak.get(p) for p in precs}
    if any(v is None for v in peak.values()):
        from flops import gemm_peak

        for p in precs:
            peak[p] = peak[p] or gemm_peak(p, dev, n=s.gemm_n, reps=10 if dev.startswith("cuda") else 3)
            ctx.peak[p] = peak[p]
    big = random_examples(s.n_train, int(ctx.fields["vocab_size"]), s.train_min_len, study.train.max_length, seed=3)
    mcfg = ctx.config
    n_lora = sum(v.numel() for v in ref_state.values())
    train_flops = sum(example_flops(mcfg, n_lora, 0, e.length, 0, full_logits=True)["total"] for e in big)
    for p in precs:
        m = lora_model(ctx.fields, lora, dev)
        warm = study.train.train_config(0, bf16=p == "bf16")
        train(m, big[:2 * study.train.batch_size], replace(warm, max_steps=2), pad_id=ctx.pad_id, device=dev)
        m = lora_model(ctx.fields, lora, dev)
        limit = max(10.0, min(ctx.left() * 0.2, 90.0))
        t = time.perf_counter()
        try:
            train(m, big, warm, pad_id=ctx.pad_id, device=dev, progress=ctx.deadline_cb(limit, f"train {p}"))
        except Timeout as exc:
            rep.add("e", f"train {p} on {dev}", None, "records/s", "TIMEOUT", str(exc))
            continue
        sync(dev)
        el = time.perf_counter() - t
        share = 100 * train_flops / el / peak[p]
        rep.add("e", f"train {p} on {dev}", len(big) / el, "records/s", "",
                f"{share:.2f}% of the {p} roofline; {len(big)} records of {s.train_min_len}-{study.train.max_length} "
                f"tokens (the study's 5%), batch {study.train.batch_size}, {el:.1f} s; the CPU here: see "
                "`g2is bench plan`'s training note")
        del m
    score_flops = sum(forward_flops(mcfg, len(x), s.score_labels) for x, _ in seqs)
    for p in precs:
        # bf16 as the runner scores in it: the weights cast to bf16 (loop/runner.py), not an autocast
        lm = LoadedModel(base_dev if p == "fp32" else copy.deepcopy(base_dev).to(torch.bfloat16), ctx.tok, {})
        if p == "bf16":
            low = sequence_logprobs(lm, seqs[:s.n_score_equal])
            rep.add("e", f"log-probs bf16 on {dev} vs fp32 on the CPU: max |diff|",
                    max_abs_diff(low, ref), "nats", "",
                    "the weights in bf16, as `eval: {dtype: auto}` scores where bf16 is native; for scale, not a check")
        sequence_logprobs(lm, seqs[:8])
        sync(dev)
        t = time.perf_counter()
        sequence_logprobs(lm, seqs)
        sync(dev)
        el = time.perf_counter() - t
        share = 100 * score_flops / el / peak[p]
        rep.add("e", f"score {p} on {dev}", len(seqs) * s.score_len / el, "tokens/s", "",
                f"{share:.2f}% of the {p} roofline; {len(seqs)} sequences of {s.score_len} tokens ({s.score_labels} "
                f"scored), batch 8, {el:.2f} s" + ("; weights cast to bf16 as the runner does" if p == "bf16" else ""))
        del lm
    del base_dev
    if dev.startswith("cuda"):
        torch.cuda.empty_cache()

    # e3: the whole loop through the CLI
    loop(ctx, study)


def loop(ctx, study) -> None:
    import os

    import torch
    import yaml

    from g2is_core import cli
    from g2is_core.loop.registry import Registry
    from g2is_core.workspace import Workspace

    rep, dev, s = ctx.rep, ctx.dev, ctx.sizes
    if ctx.left() < 30:
        rep.add("e", "g2is bench run on the device", None, "s", "SKIPPED", "out of time")
        return
    model_dir = ctx.tmp / "smollm2-arch-random"
    model_dir.mkdir(parents=True, exist_ok=True)
    build_model(ctx.fields).save_pretrained(str(model_dir))
    tok_note = tokenizer_dir(model_dir, int(ctx.fields["vocab_size"]))
    spec = {"name": "gpu-check-loop", "model": str(model_dir),
            "pool": {"builtin": {"seed": 0, "per_task": s.loop_per_task, "distractors": s.loop_distractors}},
            "targets": [{"name": "add_reverse", "eval_limit": s.loop_eval, "n_select": 4}],
            "methods": list(LOOP_METHODS), "ratios": [0.05], "seeds": [0],
            "train": study.train.as_written(), "selection": study.selection.as_written(),
            "eval": study.eval.as_written()}
    path = ctx.tmp / "gpu-check-loop.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = ctx.tmp / "loop-ws"
    old = os.environ.get("G2IS_WORKSPACE")
    os.environ["G2IS_WORKSPACE"] = str(ws)
    log(f"e3: g2is bench run {path.name} on {dev} (model: SmolLM2-135M's architecture, random weights; {tok_note})")
    t = time.perf_counter()
    try:
        code = cli.main(["bench", "run", str(path)])
    finally:
        if old is None:
            os.environ.pop("G2IS_WORKSPACE", None)
        else:
            os.environ["G2IS_WORKSPACE"] = old
    el = time.perf_counter() - t
    rows = Registry.open(Workspace(ws)).current_rows("gpu-check-loop")
    done = [r for r in rows if r["status"] == "done"]
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    where = {((r["info"] or {}).get("machine") or {}).get("start", {}).get("device") for r in done}
    ok = code == 0 and len(done) == len(rows) and rows and where == {name}
    rep.add("e", "g2is bench run on the device: wall", el, "s", "PASS" if ok else "FAIL",
            f"exit {code}; {len(done)} of {len(rows)} cells done; devices recorded {sorted(map(str, where))} "
            f"(want {name!r}); pool {s.loop_per_task} x 9 tasks + {s.loop_distractors} distractors; {tok_note}"
            + ("" if dev.startswith("cuda") else "; on the CPU (smoke)"))
    in_cells = 0.0
    for r in sorted(done, key=lambda r: (r["ratio"] is None, r["method"])):
        tm = {k: v for k, v in (r["timings"] or {}).items() if k.endswith("_s") and isinstance(v, (int, float))}
        in_cells += sum(tm.values())
        rep.add("e", f"cell {r['method']} (ratio {r['ratio']}): wall", sum(tm.values()), "s", "",
                ", ".join(f"{k[:-2]} {v:.1f}" for k, v in sorted(tm.items()))
                + f"; n_train {(r['metrics'] or {}).get('n_train')}")
    rep.add("e", "the run outside its cells", el - in_cells, "s", "",
            "the LESS warmup and the gradient stores (shared by less and g2is), model loads, the registry")
