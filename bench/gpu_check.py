"""GPU check (issue 15, deliverable 5): the gradient-feature path and the kNN graph on a CUDA device, one table.

    bash bench/gpu_check.sh --out DIR          # on a CUDA machine: about 7 minutes (--budget-s, default 420)
    python bench/gpu_check.py --cpu-smoke      # every section on the CPU at tiny sizes (< 60 s); GPU unmeasured

Sections (each in its own try block, each followed by a partial write of the JSON and markdown, so a
timeout or an error still leaves what was measured):

  a. equality: the fast extractor (g2is_core.features.extract.extract_fast) on the device in fp32 and in
     bf16 against the same extractor on the CPU in fp32, same examples, same warmup checkpoint, same
     projector: max / mean |diff|, min cosine, max relative L2 of the features; fp32 passes at relative
     L2 <= 1e-4, bf16 at min cosine >= 0.99 (docs/gradients.md's bf16 bound).
  b. throughput: the GEMM peak measured on the device (n^3 matmuls, CUDA events), the FLOPs per example
     (bench/flops.py: bench_gradients.py's formula at each example's own length), the fast path's
     examples/s in fp32 and bf16 and its share of the matching roofline; the gradient part alone
     (batch_gradients on the device, no projection) at the default batch and at a GPU-sized batch; and a
     sketch (NOT the project's code) with the projection R held on the device, to size what moving the
     projection there would give.
  c. a 10k-example extraction into a store (extract_store, built-in task records, temp dir) at the
     precision that ``bf16: auto`` picks on the device: wall time and examples/s. When the rate measured
     in b says 10k will not fit in the time left, fewer examples run and the row says so.
  d. the exact kNN graph (g2is_core.graph.knn.build_knn) of 100k random unit rows x 1024, k=32: wall
     time, whether the GPU did the work (its peak memory), and recall against numpy on 200 rows.
  e. the study's closed loop on the device (bench/gpu_check_loop.py): training with bench/specs/study.yaml's
     settings and log-likelihood scoring, each equal to the CPU's in fp32, their rates at the study's sizes, and
     one `g2is bench run` of a study-shaped spec there (every cell done, its device recorded). Alone:
     `bash bench/gpu_check.sh --sections e --out DIR` (about 2 minutes on an H200).

The model is SmolLM2-135M-Instruct's ARCHITECTURE (bench/smollm2_135m_config.json) with random, seeded
weights: the real weights cannot travel to a GPU machine without network, and speed depends on the shapes
only. LoRA is the warmup default (r=8, alpha=32 on q,k,v,o) with random A, B and Adam moments written as a
warmup checkpoint (adapter.safetensors, optimizer.safetensors) and read back with the project's loader.
Examples for a and b: random token ids, lengths uniform in [64, 256], the last 10-40% of each a response.

Only torch, transformers, peft, numpy, safetensors, tokenizers and pandas/pyarrow (the store) are
imported: none of faiss, umap, bm25s, pyvis, streamlit, gguf (tests/e2e/test_gpu_check.py runs it with them
hidden). Run from the repository root; the script puts the root on sys.path itself.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(BENCH))

sys.modules.setdefault("gpu_check", sys.modules[__name__])  # gpu_check_loop imports this module by name: one copy
COLUMNS = ("section", "what", "value", "unit", "check", "note")
FP32_REL_TOL = 1e-4      # a: max per-example ||x_dev - x_cpu|| / ||x_cpu|| for fp32 (features are unit rows)
BF16_MIN_COS = 0.99      # a: min per-example cosine of bf16 on the device vs fp32 on the CPU (docs/gradients.md)
KNN_MIN_RECALL = 0.999   # d: exact search vs numpy on sampled rows (float rounding may swap near-ties)
MODEL_CONFIG = BENCH / "smollm2_135m_config.json"
# --cpu-smoke: the same architecture family, tiny (head_dim = hidden / heads, GQA 2:1 as SmolLM2's 3:1).
SMOKE_MODEL = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 512, "max_position_embeddings": 512}


@dataclass(frozen=True)
class Sizes:
    """How big each section is: the GPU run's defaults (:data:`FULL`) and the CPU smoke's (:data:`SMOKE`)."""

    n_equal: int = 8             # a: examples compared device vs CPU (one projection group)
    n_bench: int = 128           # b: examples timed per precision on the fast path (two projection groups of 64)
    n_grad: int = 256            # b: examples timed for the gradient-only and sketch rows (no CPU projection)
    n_store: int = 10_000        # c: examples extracted into a store
    graph_n: int = 100_000       # d: nodes of the kNN graph
    graph_d: int = 1024          # d: feature dimension
    k: int = 32                  # d: neighbours per node (the CLI's default)
    dim: int = 2048              # projection d (the project's default, features.projection.DEFAULT_DIM)
    min_len: int = 64            # a, b: shortest example, tokens
    max_len: int = 256           # a, b: longest example, tokens
    gemm_n: int = 8192           # b: n of the n^3 GEMM that measures the device's peak
    big_batch_tokens: int = 16384  # b: a GPU-sized batch for the gradient-only timing (default: 512)
    big_max_batch: int = 64      # b: examples per backward in that batch (default: 16)
    budget_s: float = 420.0      # the whole run; sections shrink or skip to stay inside it
    n_train_equal: int = 16      # e: examples of the CPU-vs-device training equality (4 steps of the study's batch)
    n_train: int = 206           # e: records timed for training (the study's 5% of its 4,124-record pool)
    train_min_len: int = 64      # e: shortest training example (the longest is the study's max_length)
    n_score: int = 64            # e: sequences timed for scoring
    n_score_equal: int = 4       # e: sequences of the CPU-vs-device scoring equality
    score_len: int = 512         # e: tokens per scored sequence (a few-shot prompt and its answer)
    score_labels: int = 32       # e: scored tokens per sequence
    loop_per_task: int = 40      # e: built-in pool of the loop run: records per task (x 9 tasks) ...
    loop_distractors: int = 120  # e: ... plus distractors (480 records, 5% = 24 trained)
    loop_eval: int = 40          # e: evaluated questions of the loop run's target


FULL = Sizes()
SMOKE = Sizes(n_equal=4, n_bench=16, n_grad=16, n_store=300, graph_n=2000, graph_d=64, dim=256, min_len=16, max_len=48,
              gemm_n=256, big_batch_tokens=1024, big_max_batch=32, budget_s=180.0, n_train_equal=8, n_train=16,
              train_min_len=16, n_score=8, n_score_equal=2, score_len=64, score_labels=8, loop_per_task=6,
              loop_distractors=10, loop_eval=6)


class Timeout(Exception):
    """A section's time box ran out (raised from a progress callback)."""


# ----------------------------------------------------------------------------- report
def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0 or math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if 0.99 <= a < 1:  # cosines and recalls: the digits that matter are the last ones
            return f"{v:.7f}"
        return f"{v:.3e}" if a < 1e-3 or a >= 1e6 else f"{v:.4g}"
    return str(v)


class Report:
    """The one table (rows of :data:`COLUMNS`) plus a header; written as JSON and markdown after each section."""

    def __init__(self, out: Path, header: dict[str, Any]):
        self.out, self.header, self.rows = out, header, []
        self.sections: dict[str, str] = {}
        self.t0 = time.perf_counter()
        out.mkdir(parents=True, exist_ok=True)

    def add(self, section: str, what: str, value: Any, unit: str = "", check: str = "", note: str = "") -> None:
        row = {"section": section, "what": what, "value": value, "unit": unit, "check": check, "note": note}
        self.rows.append(row)
        log(f"  {section} | {what} | {_fmt(value)} {unit}" + (f" | {check}" if check else "")
            + (f" | {note}" if note else ""))

    def ordered(self) -> list[dict[str, Any]]:
        """Rows by section (a, b, c, d, then the rest), in the order measured within a section."""
        rank = {k: i for i, k in enumerate(["setup"] + list("abcde"))}
        return sorted(self.rows, key=lambda r: rank.get(r["section"], 99))

    def markdown(self) -> str:
        h = self.header
        lines = [f"# GPU check: {h.get('device_name')}", ""]
        lines += [f"- {k}: {v}" for k, v in h.items()]
        lines += [f"- sections: {', '.join(f'{k} {v}' for k, v in self.sections.items())}", ""]
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for r in self.ordered():
            lines.append("| " + " | ".join(_fmt(r[c]).replace("|", "\\|") for c in COLUMNS) + " |")
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        """The table as aligned text (what the log's tail shows)."""
        cells = [list(COLUMNS)] + [[_fmt(r[c]) for c in COLUMNS] for r in self.ordered()]
        widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS) - 1)] + [0]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)

    def write(self, status: str) -> None:
        doc = {"status": status, "elapsed_s": round(time.perf_counter() - self.t0, 1),
               "gpu_measured": str(self.header.get("device", "")).startswith("cuda"), "header": self.header,
               "sections": self.sections, "columns": list(COLUMNS), "rows": self.ordered()}
        for name, body in (("gpu_check.json", json.dumps(doc, indent=1, default=str)),
                           ("gpu_check.md", self.markdown())):
            tmp = self.out / f".{name}.tmp"
            tmp.write_text(body)
            os.replace(tmp, self.out / name)


_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:6.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except Exception:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except Exception:
        pass
    return platform.processor() or "unknown"


def machine_header(dev: str, threads: int, smoke: bool, sizes: Sizes) -> dict[str, Any]:
    import numpy as np
    import torch
    import transformers

    h: dict[str, Any] = {"device": dev}
    if dev.startswith("cuda"):
        p = torch.cuda.get_device_properties(dev)
        h["device_name"] = torch.cuda.get_device_name(dev)
        h["gpu"] = f"{p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}"
        h["gpu_figures"] = "measured"
    else:
        h["device_name"] = "CPU only (no CUDA device)"
        h["gpu_figures"] = ("UNMEASURED: --cpu-smoke ran every section on the CPU at tiny sizes; the 'device' rows "
                            "below are CPU figures, not GPU ones")
    try:
        import peft
        peft_v = peft.__version__
    except Exception:
        peft_v = "absent"
    h.update({"torch": torch.__version__, "cuda": torch.version.cuda or "none",
              "transformers": transformers.__version__, "peft": peft_v, "numpy": np.__version__,
              "python": platform.python_version(), "cpu": _cpu_model(), "cpu_cores": os.cpu_count(),
              "torch_threads": threads, "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
              "fp32_matmul_precision": torch.get_float32_matmul_precision(),
              "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
              "mode": "cpu-smoke" if smoke else "full", "sizes": asdict(sizes)})
    import g2is_core

    h["g2is_core"] = str(Path(g2is_core.__file__).resolve().parent)
    try:
        h["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, timeout=10).stdout.strip() or "unknown"
    except Exception:
        h["commit"] = "unknown"
    return h


def sync(dev: str) -> None:
    import torch

    if dev.startswith("cuda"):
        torch.cuda.synchronize(dev)


# ----------------------------------------------------------------------------- the model, checkpoint, data
def build_model(fields: dict[str, Any], seed: int = 0):
    """A LlamaForCausalLM of ``fields`` (config.json keys) with seeded random weights, fp32, eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    kw = {k: v for k, v in fields.items() if not k.startswith("_")}
    try:
        config = LlamaConfig(**kw)
    except TypeError:  # an older transformers without rope_parameters: rope only changes values, not speed
        kw.pop("rope_parameters", None)
        config = LlamaConfig(**kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()


def write_checkpoint(model, directory: Path, seed: int = 0):
    """Random LoRA weights (B non-zero) and Adam moments saved as a warmup checkpoint of the project's format."""
    import torch
    from safetensors.torch import save_file

    from g2is_core.models.lora import lora_parameters
    from g2is_core.workspace import write_sidecar

    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    weights, moments = {}, {}
    for name, p in lora_parameters(model):
        weights[name] = (torch.randn(p.shape, generator=g) * 0.02).contiguous()
        moments[f"exp_avg::{name}"] = (torch.randn(p.shape, generator=g) * 1e-4).contiguous()
        moments[f"exp_avg_sq::{name}"] = (torch.rand(p.shape, generator=g) * 1e-7).contiguous()
    save_file(weights, str(directory / "adapter.safetensors"))
    save_file(moments, str(directory / "optimizer.safetensors"))
    # the loader checks a checkpoint against the checksums its sidecar records, as it does a warmup's epochs
    write_sidecar(directory, "warmup-checkpoint", {"random_lora_seed": seed})


def random_examples(n: int, vocab: int, min_len: int, max_len: int, seed: int = 0) -> list:
    """``n`` Encoded examples of random ids, lengths uniform in [min_len, max_len], the last 10-40% labelled."""
    import numpy as np

    from g2is_core.data.encoding import IGNORE, Encoded

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        T = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(3, vocab, size=T).tolist()
        n_resp = max(1, int(round(T * rng.uniform(0.1, 0.4))))
        labels = [IGNORE] * (T - n_resp) + ids[T - n_resp:]
        out.append(Encoded(f"rand:{i}", tuple(ids), tuple(labels)))
    return out


def builtin_records(n: int) -> list:
    """``n`` built-in task records (the default pool, cycled with fresh ids when n exceeds it)."""
    from g2is_core.data.tasks import make_pool

    pool = list(make_pool(seed=0))
    return [replace(pool[i % len(pool)], id=f"{pool[i % len(pool)].id}#{i // len(pool)}") for i in range(n)]


class Context:
    """What the sections share: both models, the checkpoint, moments, projector, examples, sizes, clock."""

    def __init__(self, args, sizes: Sizes, dev: str, tmp: Path, rep: Report):
        import torch

        from g2is_core.features.extract import FeatureConfig, load_checkpoint_into, lora_layout
        from g2is_core.features.projection import Projector, ProjectorConfig
        from g2is_core.features.warmup import Checkpoint, Warmup, WarmupConfig
        from g2is_core.models.loading import LoadedModel, tiny_tokenizer
        from g2is_core.models.lora import attach_lora

        self.args, self.sizes, self.dev, self.tmp, self.rep = args, sizes, dev, tmp, rep
        self.deadline = _T0 + sizes.budget_s
        self.smoke = args.cpu_smoke
        fields = json.loads(MODEL_CONFIG.read_text())
        if self.smoke and not args.real_shapes:
            fields.update(SMOKE_MODEL)
        self.fields = fields
        self.tok = tiny_tokenizer()
        self.pad_id = int(self.tok.pad_token_id)
        wcfg = WarmupConfig()  # the warmup's default LoRA (SMALL_LORA: r=8, alpha=32 on q,k,v,o)
        log(f"building the model ({fields['num_hidden_layers']} layers, hidden {fields['hidden_size']}, "
            f"vocab {fields['vocab_size']}) twice: a CPU copy and a {dev} copy")
        self.model_cpu = attach_lora(build_model(fields), wcfg.lora).eval()
        self.model_dev = attach_lora(build_model(fields), wcfg.lora).to(dev).eval()
        self.config = self.model_cpu.get_base_model().config
        ck_dir = tmp / "warmup" / "epoch-1"
        write_checkpoint(self.model_cpu, ck_dir)
        self.layout = lora_layout(self.model_cpu)
        self.loaded = LoadedModel(self.model_dev, self.tok, {"name": "smollm2-135m-architecture-random-weights",
                                                             "config": fields, "seed": 0})
        self.ckpt = Checkpoint(epoch=1, step=1, weight=1.0, path=ck_dir)
        self.warmup = Warmup(tmp / "warmup", wcfg, self.loaded.key, [self.ckpt])
        self.moments = load_checkpoint_into(self.model_cpu, self.ckpt, self.layout)
        load_checkpoint_into(self.model_dev, self.ckpt, lora_layout(self.model_dev))
        self.proj_cfg = ProjectorConfig(dim=sizes.dim)
        self.projector = Projector(self.proj_cfg, self.layout.total)
        n = max(sizes.n_equal, sizes.n_bench, sizes.n_grad)
        self.examples = random_examples(n, int(fields["vocab_size"]), sizes.min_len, sizes.max_len)
        self.fcfg = FeatureConfig(kind="adam", max_length=sizes.max_len, bf16=False)
        self.rates: dict[str, float] = {}          # b: the fast path's examples/s by precision (c plans with it)
        self.peak: dict[str, float] = {}          # b: GEMM FLOP/s on the device by precision
        self.flops_ex = 0.0                        # b: FLOPs per example (a, b examples)
        self.a_out: dict[str, Any] = {}           # a: the device's features by precision (the sketch checks against bf16)
        self.header_threads = int(os.environ.get("G2IS_THREADS", "1"))
        n_params = sum(p.numel() for p in self.model_cpu.parameters())
        log(f"model ready: {n_params / 1e6:.1f}M parameters, LoRA P = {self.layout.total:,}, projection d = "
            f"{sizes.dim}, {n} examples of {sizes.min_len}-{sizes.max_len} tokens; torch sees "
            f"{torch.get_num_threads()} threads")

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def deadline_cb(self, limit: float, label: str) -> Callable[[float, str], None]:
        """A progress callback that prints now and then and raises :class:`Timeout` after ``limit`` seconds."""
        stop = time.perf_counter() + limit
        last = [0.0]

        def cb(frac: float, msg: str) -> None:
            now = time.perf_counter()
            if now - last[0] > 10:
                last[0] = now
                log(f"    {label}: {msg} ({100 * frac:.0f}%)")
            if now > stop:
                raise Timeout(f"{label}: stopped at its time box of {limit:.0f} s ({msg})")
        return cb


# ----------------------------------------------------------------------------- sections
def compare(x, ref) -> dict[str, float]:
    """Per-example agreement of features x and ref ([n, d], unit rows)."""
    import numpy as np

    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    diff = np.abs(x - ref)
    nx, nr = np.linalg.norm(x, axis=1), np.linalg.norm(ref, axis=1)
    cos = (x * ref).sum(1) / np.maximum(nx * nr, 1e-30)
    rel = np.linalg.norm(x - ref, axis=1) / np.maximum(nr, 1e-30)
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()), "min_cos": float(cos.min()),
            "max_rel_l2": float(rel.max())}


def section_a(ctx: Context) -> None:
    from g2is_core.features.extract import extract_fast

    rep, enc, dev = ctx.rep, ctx.examples[:ctx.sizes.n_equal], ctx.dev
    kw = {"pad_id": ctx.pad_id, "moments": ctx.moments}
    log(f"a: fast path fp32 on the CPU, {len(enc)} examples (the reference)")
    t = time.perf_counter()
    ref = extract_fast(ctx.model_cpu, enc, ctx.fcfg, ctx.projector, **kw)
    t_cpu = time.perf_counter() - t
    rep.add("a", "CPU fp32 (reference): wall", t_cpu, "s", "", f"{len(enc)} examples, fast path, "
            f"{ctx.header_threads} threads")
    for prec in ("fp32", "bf16"):
        log(f"a: fast path {prec} on {dev}, same examples")
        t = time.perf_counter()
        x = extract_fast(ctx.model_dev, enc, replace(ctx.fcfg, bf16=prec == "bf16"), ctx.projector, **kw)
        sync(dev)
        el = time.perf_counter() - t
        ctx.a_out[prec] = x
        c = compare(x, ref)
        who = f"{prec} on {dev} vs fp32 on CPU"
        rep.add("a", f"{who}: max |diff|", c["max_abs"], "abs", "", f"wall {el:.1f} s (first call: warm-up)")
        rep.add("a", f"{who}: mean |diff|", c["mean_abs"], "abs")
        if prec == "fp32":
            ok = c["max_rel_l2"] <= FP32_REL_TOL
            rep.add("a", f"{who}: min cosine", c["min_cos"], "")
            rep.add("a", f"{who}: max relative L2", c["max_rel_l2"], "", "PASS" if ok else "FAIL",
                    f"equal within tolerance: relative L2 <= {FP32_REL_TOL:g} per example")
        else:
            ok = c["min_cos"] >= BF16_MIN_COS
            rep.add("a", f"{who}: max relative L2", c["max_rel_l2"], "")
            rep.add("a", f"{who}: min cosine", c["min_cos"], "", "PASS" if ok else "FAIL",
                    f"equal within tolerance: cosine >= {BF16_MIN_COS:g} per example")


def _grad_only(ctx: Context, enc, bf16: bool, batch_tokens: int, max_batch: int) -> float:
    """Seconds for the per-example LoRA gradients of ``enc`` on the device (no projection), after a warm-up batch."""
    import torch

    from g2is_core.data.encoding import collate, length_buckets
    from g2is_core.features.extract import _LoraTap, batch_gradients, lora_layout
    from g2is_core.models import lm_ops

    model, dev = ctx.model_dev, ctx.dev
    layout = lora_layout(model)
    tap = _LoraTap(model, layout)
    batches = [b for b in length_buckets(enc, batch_tokens, max_batch)]
    with lm_ops.hooks(forward=tap.forward_hooks()):
        def run(bidx):
            batch = collate([enc[j] for j in bidx], ctx.pad_id, dev)
            gb = torch.zeros(len(bidx), layout.total, device=dev)
            batch_gradients(model, tap, layout, batch, gb, bf16=bf16)
            return gb
        run(batches[-1])  # warm-up: kernels, autocast, allocator (the longest batch)
        sync(dev)
        t = time.perf_counter()
        for b in batches:
            run(b)
        sync(dev)
        return time.perf_counter() - t


def guarded(ctx: Context, section: str, what: str, fn: Callable[[], None]) -> None:
    """Run one measurement; an exception becomes an ERROR row and the section goes on."""
    try:
        fn()
    except Exception as exc:
        traceback.print_exc()
        ctx.rep.add(section, what, None, "", "ERROR", f"{type(exc).__name__}: {exc}"[:400])


def section_b(ctx: Context) -> None:
    from flops import batch_flops, gemm_peak

    from g2is_core.features.extract import extract_fast

    rep, dev, s = ctx.rep, ctx.dev, ctx.sizes
    on_gpu = dev.startswith("cuda")
    for prec in ("fp32", "bf16"):
        ctx.peak[prec] = gemm_peak(prec, dev, n=s.gemm_n, reps=10 if on_gpu else 3)
        rep.add("b", f"GEMM peak {prec} on {dev}", ctx.peak[prec] / 1e12, "TFLOP/s", "",
                f"best of {10 if on_gpu else 3} {s.gemm_n}^3 matmuls" + (", CUDA events" if on_gpu else ""))
    if on_gpu:
        cpu_peak = gemm_peak("fp32", "cpu", n=2048, reps=3)
        rep.add("b", "GEMM peak fp32 on the CPU", cpu_peak / 1e12, "TFLOP/s", "",
                f"{ctx.header_threads} threads, 2048^3 (the projection runs on the CPU when the code puts it there)")
    enc = ctx.examples[:s.n_bench]
    fl = batch_flops(ctx.config, ctx.layout.total, s.dim, enc)
    n = len(enc)
    ctx.flops_ex = fl["total"] / n
    ctx.flops_grad = (fl["model"] + fl["lora"]) / n
    mean_T = sum(e.length for e in enc) / n
    rep.add("b", "FLOPs per example", ctx.flops_ex / 1e9, "GFLOP", "",
            f"model {fl['model'] / n / 1e9:.2f} + LoRA {fl['lora'] / n / 1e9:.3f} + projection "
            f"{fl['projection'] / n / 1e9:.3f}; mean {mean_T:.0f} tokens; bench/flops.py")
    kw = {"pad_id": ctx.pad_id, "moments": ctx.moments}
    full_t: dict[str, float] = {}
    for prec in ("fp32", "bf16"):
        limit = max(10.0, min(ctx.left() * 0.25, 120.0))
        log(f"b: fast path {prec} on {dev}, {n} examples (time box {limit:.0f} s)")
        t = time.perf_counter()
        try:
            extract_fast(ctx.model_dev, enc, replace(ctx.fcfg, bf16=prec == "bf16"), ctx.projector,
                         progress=ctx.deadline_cb(limit, f"fast {prec}"), **kw)
        except Timeout as exc:
            rep.add("b", f"fast path {prec} on {dev}", None, "examples/s", "TIMEOUT", str(exc))
            continue
        sync(dev)
        el = time.perf_counter() - t
        full_t[prec] = el
        ctx.rates[prec] = n / el
        share = 100 * ctx.rates[prec] * ctx.flops_ex / ctx.peak[prec]
        rep.add("b", f"fast path {prec} on {dev}", ctx.rates[prec], "examples/s", "",
                f"{share:.2f}% of the {prec} roofline; {n} examples in {el:.1f} s; default batching "
                f"({ctx.fcfg.batch_tokens} tokens, {ctx.fcfg.max_batch} examples), projection as the code does it")
    genc = ctx.examples[:s.n_grad]
    gfl = batch_flops(ctx.config, ctx.layout.total, s.dim, genc)
    ctx.flops_grad = (gfl["model"] + gfl["lora"]) / len(genc)
    ctx.flops_grad_total = gfl["total"] / len(genc)
    batchings = [("default batch", ctx.fcfg.batch_tokens, ctx.fcfg.max_batch),
                 ("GPU-sized batch", s.big_batch_tokens, s.big_max_batch)]
    for prec in ("fp32", "bf16"):
        for label, bt, mb in batchings:
            what = f"gradients only {prec}, {label}"
            if ctx.left() < 40:
                rep.add("b", what, None, "examples/s", "SKIPPED", "out of time")
                continue

            def one(prec=prec, label=label, bt=bt, mb=mb, what=what) -> None:
                el = _grad_only(ctx, genc, prec == "bf16", bt, mb)
                rate = len(genc) / el
                share = 100 * rate * ctx.flops_grad / ctx.peak[prec]
                note = (f"{share:.2f}% of the {prec} roofline (model + LoRA FLOPs, "
                        f"{ctx.flops_grad / 1e9:.2f} GFLOP/ex); {len(genc)} examples, {bt} tokens / {mb} examples "
                        "per backward; no projection")
                if label == "default batch" and prec in ctx.rates:
                    note += (f"; the projection and the rest take {100 * (1 - ctx.rates[prec] / rate):.0f}% "
                             "of the fast path's time")
                rep.add("b", what, rate, "examples/s", "", note)
            guarded(ctx, "b", what, one)
    what = "sketch: bf16, projection on the device"
    if ctx.left() > 70:
        guarded(ctx, "b", what, lambda: device_projection_sketch(ctx, genc))
    else:
        rep.add("b", what, None, "examples/s", "SKIPPED", "out of time")


def device_projection_sketch(ctx: Context, enc) -> None:
    """NOT the project's code: the same features with R built once and kept on the device, the Adam direction
    and the projection done there, at the GPU-sized batch in bf16 autocast (fp32 R, fp32 accumulation).
    Checked against the fast path's own features; says what moving the projection to the device would give."""
    import torch

    from g2is_core.data.encoding import collate, length_buckets
    from g2is_core.features.extract import _LoraTap, batch_gradients, extract_fast, lora_layout
    from g2is_core.features.projection import adam_direction
    from g2is_core.linalg import unit_rows
    from g2is_core.models import lm_ops

    rep, dev, s, cfg = ctx.rep, ctx.dev, ctx.sizes, ctx.fcfg
    pr = ctx.projector
    log(f"b: sketch: R [{ctx.layout.total:,} x {s.dim}] built once on {dev} (fp32, "
        f"{ctx.layout.total * s.dim * 4 / 2**30:.2f} GiB)")
    t = time.perf_counter()
    R = torch.empty(ctx.layout.total, s.dim, device=dev)
    for k in range(pr.n_blocks):
        R[pr.columns(k)] = pr.block(k).to(dev)
    sync(dev)
    t_r = time.perf_counter() - t
    m, v = (x.to(dev) for x in ctx.moments)
    model = ctx.model_dev
    layout = lora_layout(model)
    tap = _LoraTap(model, layout)
    out = torch.zeros(len(enc), s.dim, device=dev)
    batches = list(length_buckets(enc, s.big_batch_tokens, s.big_max_batch))

    def run(bidx):
        batch = collate([enc[j] for j in bidx], ctx.pad_id, dev)
        gb = torch.zeros(len(bidx), layout.total, device=dev)
        batch_gradients(model, tap, layout, batch, gb, bf16=True)
        gamma = adam_direction(gb, m, v, cfg.beta1, cfg.beta2, cfg.eps)
        out[torch.as_tensor(bidx, device=dev)] = gamma @ R

    with lm_ops.hooks(forward=tap.forward_hooks()):
        run(batches[-1])
        sync(dev)
        t = time.perf_counter()
        for b in batches:
            run(b)
        sync(dev)
        el = time.perf_counter() - t
    x = unit_rows(out.cpu(), zero="keep").numpy()
    ref = ctx.a_out.get("bf16")
    if ref is None:  # section a did not run: the fast path's own bf16 features
        ref = extract_fast(model, enc[:s.n_equal], replace(cfg, bf16=True), pr, pad_id=ctx.pad_id,
                           moments=ctx.moments)
    c = compare(x[:len(ref)], ref)
    rate = len(enc) / el
    share = 100 * rate * ctx.flops_grad_total / ctx.peak["bf16"]
    rep.add("b", "sketch: bf16, projection on the device", rate, "examples/s", "",
            f"{share:.2f}% of the bf16 roofline (all FLOPs); {len(enc)} examples, GPU-sized batch; R on the device "
            f"built once in {t_r:.1f} s; min cosine {c['min_cos']:.5f} to the fast path bf16 on {len(ref)} "
            "examples; NOT the project's code")


def section_c(ctx: Context) -> None:
    import numpy as np

    from g2is_core import runtime
    from g2is_core.features.extract import FeatureConfig, extract_store
    from g2is_core.workspace import Workspace

    rep, dev, s = ctx.rep, ctx.dev, ctx.sizes
    try:
        bf16 = bool(runtime.resolve_bf16("auto", dev))
    except Exception:  # the precision API changed: the device's own answer
        bf16 = dev.startswith("cuda")
    prec = "bf16" if bf16 else "fp32"
    cfg = FeatureConfig(kind="adam", bf16=bf16)
    shard = 128
    limit = ctx.left() - 15
    n = s.n_store
    rate = ctx.rates.get(prec)
    note = ""
    if rate and n / rate > 0.8 * limit:
        n = max(shard, int(rate * 0.8 * limit) // shard * shard)
        note = (f"PARTIAL: at the fast path's measured {rate:.2f} examples/s ({prec}, b), {s.n_store:,} would take "
                f"about {s.n_store / rate:.0f} s, more than the {limit:.0f} s left; ran {n:,}")
    if limit < 20:
        rep.add("c", f"{s.n_store:,}-example extraction", None, "s", "SKIPPED", "out of time")
        return
    records = builtin_records(n)
    log(f"c: extract_store of {n:,} built-in records on {dev} in {prec} (bf16: auto), time box {limit:.0f} s")
    t = time.perf_counter()
    try:
        store = extract_store(ctx.loaded, records, ctx.warmup, 1, cfg, ctx.proj_cfg, data_hash=f"gpu-check-{n}",
                              data_source="builtin pool, cycled", shard_rows=shard,
                              workspace=Workspace(ctx.tmp / "ws"), out_dir=ctx.tmp / "store",
                              progress=ctx.deadline_cb(limit, "store"))
    except Timeout as exc:
        el = time.perf_counter() - t
        done = sum(1 for _ in (ctx.tmp / "store").rglob("shard-*.npy")) * shard
        rep.add("c", f"{n:,}-example extraction", el, "s", "TIMEOUT",
                f"{exc}; about {done} rows committed ({done / el:.2f} examples/s)")
        return
    sync(dev)
    el = time.perf_counter() - t
    feats = np.asarray(store.features[:min(len(store), 1024)], np.float32)
    norms = np.linalg.norm(feats, axis=1)
    ok = bool(np.isfinite(feats).all()) and float(np.abs(norms - 1).max()) < 1e-2 and len(store) == n
    from g2is_core.features.extract import encode_rows

    sample = encode_rows(ctx.tok, records[:200], cfg)
    enc_len = sum(e.length for e in sample) / len(sample)
    rep.add("c", f"{n:,}-example extraction: wall", el, "s", ("PARTIAL" if n < s.n_store else "PASS") if ok else "FAIL",
            note or f"extract_store, {prec} (bf16: auto), built-in records (tiny byte tokenizer, "
                    f"mean {enc_len:.0f} tokens), store of [{len(store):,}, {store.dim}] fp16 rows, unit norm")
    rep.add("c", f"{n:,}-example extraction: rate", n / el, "examples/s", "",
            "including tokenising, the store's shard writes and the projection as the code does it")


def section_d(ctx: Context) -> None:
    import numpy as np
    import torch

    from g2is_core.graph.knn import build_knn, estimate_recall

    rep, dev, s = ctx.rep, ctx.dev, ctx.sizes
    rng = np.random.default_rng(0)
    x = rng.standard_normal((s.graph_n, s.graph_d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    on_gpu = dev.startswith("cuda")
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    log(f"d: exact kNN of {s.graph_n:,} x {s.graph_d} unit rows, k={s.k}, device auto (expect {dev})")
    t = time.perf_counter()
    nbrs, sims = build_knn(x, s.k, "exact", device="auto" if on_gpu else "cpu")
    el = time.perf_counter() - t
    if on_gpu:
        peak = torch.cuda.max_memory_allocated(dev) - base
        used = peak >= x.nbytes
        where = f"GPU used: {'yes' if used else 'NO'} (peak {peak / 2**20:.0f} MiB on the device)"
        check = "PASS" if used else "FAIL"
    else:
        where, check = "on the CPU (no CUDA device)", ""
    rep.add("d", f"kNN exact {s.graph_n:,} x {s.graph_d}, k={s.k}: wall", el, "s", check,
            f"build_knn(method='exact', device='auto', block=4096, fp32); {where}")
    recall = estimate_recall(x, nbrs, n_sample=200)
    rep.add("d", "kNN recall vs numpy on 200 rows", recall, "", "PASS" if recall >= KNN_MIN_RECALL else "FAIL",
            f"exact search; >= {KNN_MIN_RECALL} expected (float rounding may swap near-ties)")


# ----------------------------------------------------------------------------- main
def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out",
                    help="folder for gpu_check.json and gpu_check.md (default: $OUT if set, else ./gpu_check_out)")
    ap.add_argument("--cpu-smoke", action="store_true",
                    help="run every section on the CPU at tiny sizes (under a minute); GPU figures stay unmeasured")
    ap.add_argument("--real-shapes", action="store_true",
                    help="with --cpu-smoke: keep SmolLM2-135M's shapes (slow on a CPU; checks the real sizes' code paths)")
    ap.add_argument("--budget-s", type=float, help="seconds for the whole run (default 420; smoke 180)")
    ap.add_argument("--n-store", type=int, help="examples in the store of section c (default 10000)")
    ap.add_argument("--graph-n", type=int, help="nodes of the kNN graph of section d (default 100000)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: all cores on a CUDA machine, 1 in smoke)")
    ap.add_argument("--sections", default="abdec",
                    help="which sections to run, in this order (default abdec: c, the store, takes the time left; e: the study's loop, bench/gpu_check_loop.py)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    sizes = SMOKE if args.cpu_smoke else FULL
    over = {k: v for k, v in (("budget_s", args.budget_s), ("n_store", args.n_store), ("graph_n", args.graph_n))
            if v is not None}
    sizes = replace(sizes, **over)
    out = Path(args.out)
    import torch

    has_cuda = torch.cuda.is_available()
    if args.cpu_smoke:
        dev = "cpu"
    elif has_cuda:
        dev = "cuda"
    else:
        msg = ("no CUDA device here: the GPU figures are UNMEASURED. Run this on a CUDA machine, or add "
               "--cpu-smoke to run every section on the CPU at tiny sizes.")
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_check.json").write_text(json.dumps({"status": "unmeasured", "reason": msg}, indent=1))
        print(msg, flush=True)
        return 2
    threads = args.threads or ((os.cpu_count() or 1) if dev.startswith("cuda") else 1)
    os.environ["G2IS_THREADS"] = str(threads)  # extract_store and build_knn apply the project's thread policy
    from g2is_core import runtime

    runtime.apply_thread_policy(threads)
    header = machine_header(dev, threads, args.cpu_smoke, sizes)
    rep = Report(out, header)
    log(f"GPU check on {header['device_name']} ({dev}); torch {header['torch']}, CUDA {header['cuda']}; "
        f"CPU {header['cpu']} x {header['cpu_cores']}, load {header['load_avg_at_start']}; out {out.resolve()}")
    if not dev.startswith("cuda"):
        log("NOTE: " + header["gpu_figures"])
    rep.write("running")
    failed = False
    with tempfile.TemporaryDirectory(prefix="g2is-gpu-check-") as tmp:
        try:
            ctx = Context(args, sizes, dev, Path(tmp), rep)
        except Exception as exc:
            traceback.print_exc()
            rep.add("setup", "model, checkpoint and examples", None, "", "ERROR", f"{type(exc).__name__}: {exc}")
            rep.write("failed in setup")
            print(rep.text(), flush=True)
            return 1
        from gpu_check_loop import section_e

        fns = {"a": section_a, "b": section_b, "c": section_c, "d": section_d, "e": section_e}
        for name in args.sections:
            fn = fns.get(name)
            if fn is None:
                continue
            t = time.perf_counter()
            log(f"section {name} starts ({ctx.left():.0f} s of the budget left)")
            try:
                fn(ctx)
                ctx.rep.sections[name] = f"done in {time.perf_counter() - t:.1f} s"
            except Exception as exc:
                failed = True
                traceback.print_exc()
                rep.add(name, "section failed", None, "", "ERROR", f"{type(exc).__name__}: {exc}"[:400])
                ctx.rep.sections[name] = f"ERROR after {time.perf_counter() - t:.1f} s"
            header["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
            rep.write("running")
    if not dev.startswith("cuda"):
        rep.add("-", "GPU figures", "unmeasured", "", "", "no CUDA device: this run measured the CPU only (--cpu-smoke)")
    failed = failed or any(r["check"] in ("FAIL", "ERROR") for r in rep.rows)
    rep.write("done" + (" with failures" if failed else ""))
    print(flush=True)
    print(f"GPU check: {header['device_name']}; torch {header['torch']}, CUDA {header['cuda']}; CPU {header['cpu']}, "
          f"load {header['load_avg_at_start']} -> {header.get('load_avg_at_end', '?')}; "
          f"{time.perf_counter() - _T0:.0f} s in all", flush=True)
    if not dev.startswith("cuda"):
        print("GPU figures: UNMEASURED (no CUDA device; --cpu-smoke measured the CPU at tiny sizes)", flush=True)
    print(rep.text(), flush=True)
    print(f"written: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
