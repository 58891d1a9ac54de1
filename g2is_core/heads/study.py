"""HeadStudy: SFT runs per task with activation patterns measured along the way, and the paper's
application (a data mix weighted by the composition regression).

One study = for each task and seed: load the base model, measure accuracy (exact match, greedy
generation) and the activation pattern (AP) on fixed held-apart samples, fine-tune for a fixed step
budget with the project's one SFT loop (:func:`g2is_core.models.training.train`), measuring the AP at
chosen steps through its callback, then measure accuracy again. The AP samples are the task's
"dev" split with seed 0 for every run (the same samples before, during and after, and across
seeds); accuracy uses the "test" split; training uses the "train" split with the run's seed.

Layout (``<workspace>/heads/<key>/``, key = hash of the config and the model identity)::

    study.json                          config, model shape, task kinds and ingredients
    base/<task>.npy  [N, L, H]          per-sample AP of the base model (shared by all seeds)
    base/<task>.json                    base accuracy and predictions
    runs/<task>__s<seed>/patterns.npy   [S, L, H]  AP at each measured step (S = len(measure_at))
    runs/<task>__s<seed>/per_sample.npy [S, N, L, H] float32 per-sample scores
    runs/<task>__s<seed>/run.json       steps, samples seen, accuracy before/after, loss curve,
                                        relative parameter change per module kind, timings
    sidecar.json                        written last: the study is complete

Runs finished before an interruption are kept; the same command resumes with the next run.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import analysis as ha
from ..data.encoding import encode_all
from .patterns import activation_pattern
from ..progress import Progress, no_progress
from ..settings import POSITIVE_FLOAT, POSITIVE_INT, check_choice, check_rules
from ..data.tasks import SUITE_V1, TASKS, get_task, is_correct, make_task_records
from ..models.lora import HEAD_STUDY_LORA
from ..workspace import Workspace, read_json, read_sidecar, write_json, write_npy, write_sidecar

KIND = "heads"
MIX_KIND = "heads-mix"


@dataclass(frozen=True)
class StudyConfig:
    """Settings of a head study (defaults: the documented default study, sized for a 2-core CPU)."""

    model: str = "default"                   # load_model spec: "default", "tiny", a directory, a .gguf
    tasks: tuple[str, ...] = SUITE_V1        # built-in task names (default: the nine of docs/heads.md)
    seeds: tuple[int, ...] = (0, 1)          # SFT seeds (training data draw and order); 2+ give a noise floor
    steps: int = 40                          # optimizer steps per SFT run
    measure_at: tuple[int, ...] = (0, 10, 20, 40)  # steps at which the AP is measured (0 = before SFT)
    method: str = "full"                     # "full" fine-tuning or "lora"
    lr: float = 5e-5                         # peak learning rate (linear warmup 10%, linear decay)
    batch_size: int = 2                      # samples per optimizer step
    n_pattern: int = 12                      # held-apart dev samples for the AP
    n_eval: int = 24                         # test samples for exact-match accuracy
    max_new_tokens: int = 12                 # greedy generation budget for accuracy
    lora_r: int = HEAD_STUDY_LORA.r          # method "lora": rank (dropout 0, models/lora.py)
    lora_alpha: int = HEAD_STUDY_LORA.alpha
    bf16: bool | str = "auto"                # bf16 autocast for the SFT steps: true/false/auto (runtime.resolve_precision;
                                             # the AP is always fp32). "auto": bf16 only where it is native

    def __post_init__(self):
        check_rules(self, {"steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "n_pattern": POSITIVE_INT,
                           "n_eval": POSITIVE_INT, "max_new_tokens": POSITIVE_INT, "lora_r": POSITIVE_INT,
                           "lr": POSITIVE_FLOAT, "lora_alpha": POSITIVE_FLOAT})
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ValueError(f"unknown task(s) {', '.join(bad)}; choose from {', '.join(TASKS)}")
        if self.method not in ("full", "lora"):
            raise ValueError(f"method {self.method!r}: use 'full' or 'lora'")
        if not self.tasks or not self.seeds:
            raise ValueError("a study needs at least one task and one seed")
        if self.steps < 1 or any(s < 0 or s > self.steps for s in self.measure_at):
            raise ValueError(f"measure steps {list(self.measure_at)} must lie in 0..{self.steps}")

    @property
    def measure_steps(self) -> tuple[int, ...]:
        """Sorted, with 0 (before) and the final step always included."""
        return tuple(sorted(set(self.measure_at) | {0, self.steps}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_config(self, seed: int, steps: int | None = None):
        from ..models.training import TrainConfig

        return TrainConfig(lr=self.lr, max_steps=self.steps if steps is None else steps, batch_size=self.batch_size, warmup_ratio=0.1,
                           seed=seed, bf16=self.bf16, save_every=10 ** 9)


# ----------------------------------------------------------------------------- model helpers
def _load(cfg: StudyConfig, workspace: Workspace, train: bool):
    """A fresh base model (full: all parameters trainable; lora: adapters attached)."""
    from ..models.loading import load_model
    from ..models.lora import attach_lora

    lm = load_model(cfg.model, workspace=workspace)
    model = lm.model
    if train and cfg.method == "lora":
        model = attach_lora(model, replace(HEAD_STUDY_LORA, r=cfg.lora_r, alpha=cfg.lora_alpha))
    elif train:
        for p in model.parameters():
            p.requires_grad_(True)
    return lm, model


def exact_match(model, tok, records, *, max_new_tokens: int = 16) -> tuple[float, list[str]]:
    """(accuracy, predictions): greedy generation (do_sample=False), scored by
    :func:`g2is_core.data.tasks.is_correct`. ``model`` may be a peft wrapper."""
    from types import SimpleNamespace

    from ..models.generation import greedy_answers

    preds = greedy_answers(SimpleNamespace(model=model, tokenizer=tok), records, max_new_tokens=max_new_tokens)
    acc = float(np.mean([is_correct(r.task, p, r.answer) for r, p in zip(records, preds)])) if records else float("nan")
    return acc, preds


def _module_kind(name: str) -> str:
    """Group parameter names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj,
    embed_tokens, lm_head, norm."""
    parts = [p for p in name.split(".") if p not in ("weight", "bias", "base_layer", "default")]
    last = parts[-1] if parts else name
    return "norm" if "norm" in last else last


def weight_snapshot(model) -> dict[str, np.ndarray]:
    """Effective weight matrices by parameter name (LoRA deltas merged in), fp32 copies."""
    snap: dict[str, np.ndarray] = {}
    for name, mod in model.named_modules():
        if hasattr(mod, "get_delta_weight") and hasattr(mod, "base_layer"):   # a peft LoRA layer
            w = mod.base_layer.weight.detach().float()
            for a in getattr(mod, "active_adapters", ["default"]):
                if a in getattr(mod, "lora_A", {}):
                    w = w + mod.get_delta_weight(a).detach().float()
            snap[name.replace("base_model.model.", "") + ".weight"] = w.cpu().numpy().copy()
    for name, p in model.named_parameters():
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        if "lora_" in name or key in snap:
            continue
        snap[key] = p.detach().float().cpu().numpy().copy()
    return snap


def relative_change_by_module(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, float]:
    """||dW|| / ||W|| per module kind (all layers together) and "all"."""
    kinds: dict[str, list[str]] = {}
    for k in before:
        kinds.setdefault(_module_kind(k), []).append(k)
    out = {kind: ha.relative_change({k: before[k] for k in ks}, {k: after[k] for k in ks}) for kind, ks in kinds.items()}
    out["all"] = ha.relative_change(before, after)
    return out


# ----------------------------------------------------------------------------- the study
def study_dir(cfg: StudyConfig, workspace: Workspace | None = None) -> Path:
    ws = workspace or Workspace()
    return ws.artefact_dir(KIND, {"study": cfg.to_dict(), "code": 1})


def run_study(cfg: StudyConfig, workspace: Workspace | None = None, *, progress: Progress = no_progress,
              log=print) -> "HeadStudy":
    """Run (or resume) a head study; returns it loaded from disk.

    The bf16 switch is resolved first (:func:`g2is_core.runtime.resolve_precision`) and the study is keyed by
    what RUNS: "auto" or a true that falls back to fp32 finds the same study as an explicit false.
    """
    from .. import runtime

    ws = workspace or Workspace()
    precision = runtime.resolve_precision(cfg.bf16, what="the head study's SFT")
    cfg = replace(cfg, bf16=precision.bf16)
    out = study_dir(cfg, ws)
    if ws.is_complete(out):
        progress(1.0, f"study already complete at {out}")
        return HeadStudy.load(out)
    lm, _ = _load(cfg, ws, train=False)
    tok = lm.tokenizer
    meta = {"config": cfg.to_dict(), "model": {"spec": cfg.model, "identity": lm.identity, "key": lm.key,
                                               "n_layers": lm.n_layers, "n_heads": lm.n_heads,
                                               "n_kv_heads": lm.n_kv_heads},
            "measure_steps": list(cfg.measure_steps), "precision": precision.to_dict(),
            "tasks": {t: {"kind": TASKS[t].kind, "ingredients": list(TASKS[t].ingredients)} for t in cfg.tasks}}
    write_json(out / "study.json", meta)
    total = len(cfg.tasks) * len(cfg.seeds)
    k = 0
    t_start = time.time()
    for task in cfg.tasks:
        pat_recs = make_task_records(task, cfg.n_pattern, 0, "dev")
        pat_enc, _ = encode_all(tok, pat_recs)
        eval_recs = make_task_records(task, cfg.n_eval, 0, "test")
        base_npy, base_json = out / "base" / f"{task}.npy", out / "base" / f"{task}.json"
        if not base_json.exists():
            t0 = time.time()
            ap = activation_pattern(lm.model, pat_enc, pad_id=tok.pad_token_id)
            acc, preds = exact_match(lm.model, tok, eval_recs, max_new_tokens=cfg.max_new_tokens)
            write_npy(base_npy, ap.per_sample)
            write_json(base_json, {"accuracy": acc, "predictions": preds[:8], "answers": [r.answer for r in eval_recs[:8]],
                                   "seconds": time.time() - t0})
            log(f"[{task}] base accuracy {acc:.3f}")
        base_per = np.load(base_npy)
        base_acc = read_json(base_json)["accuracy"]
        for seed in cfg.seeds:
            run_dir = out / "runs" / f"{task}__s{seed}"
            if (run_dir / "run.json").exists():
                k += 1
                continue
            msg = f"{task} seed {seed} ({k + 1}/{total})"
            progress(k / total, msg)
            _run_one(cfg, ws, task, seed, pat_enc, base_per, base_acc, eval_recs, run_dir,
                     lambda f, m: progress((k + f) / total, f"{msg}: {m}"), log)
            k += 1
            el = time.time() - t_start
            log(f"[{task} s{seed}] done; {k}/{total} runs, {el / 60:.1f} min elapsed")
    write_sidecar(out, KIND, cfg.to_dict(), inputs={"model": lm.identity},
                  extra={"seconds": time.time() - t_start})
    progress(1.0, f"study complete at {out}")
    return HeadStudy.load(out)


def _run_one(cfg, ws, task, seed, pat_enc, base_per, base_acc, eval_recs, run_dir: Path, progress, log) -> None:
    from ..models.training import train

    t0 = time.time()
    lm, model = _load(cfg, ws, train=True)
    tok = lm.tokenizer
    train_recs = make_task_records(task, cfg.steps * cfg.batch_size, seed, "train")
    train_enc, _ = encode_all(tok, train_recs)
    before = weight_snapshot(model)
    steps = cfg.measure_steps
    pats: dict[int, np.ndarray] = {0: base_per}
    seen: dict[int, int] = {0: 0}
    t_ap = [0.0]

    def on_step(step: int, samples: int, m) -> None:
        if step == 0:
            return   # the base pattern is shared by all seeds (same model, same samples)
        t = time.time()
        pats[step] = activation_pattern(m, pat_enc, pad_id=tok.pad_token_id).per_sample
        seen[step] = samples
        t_ap[0] += time.time() - t

    res = train(model, train_enc, cfg.train_config(seed), pad_id=tok.pad_token_id, callback=on_step,
                callback_steps=[s for s in steps if s > 0], progress=progress)
    after = weight_snapshot(model)
    pchange = relative_change_by_module(before, after)
    del before, after
    acc, preds = exact_match(model, tok, eval_recs, max_new_tokens=cfg.max_new_tokens)
    per = np.stack([pats[s] for s in steps]).astype(np.float32)          # [S, N, L, H]
    run_dir.mkdir(parents=True, exist_ok=True)
    write_npy(run_dir / "per_sample.npy", per)
    write_npy(run_dir / "patterns.npy", per.astype(np.float64).mean(1))
    write_json(run_dir / "run.json", {
        "task": task, "seed": seed, "steps": list(steps), "samples_seen": [seen[s] for s in steps],
        "accuracy_before": base_acc, "accuracy_after": acc, "predictions": preds[:8],
        "answers": [r.answer for r in eval_recs[:8]], "losses": res.losses, "param_change": pchange,
        "seconds": time.time() - t0, "seconds_patterns": t_ap[0]})
    log(f"[{task} s{seed}] accuracy {base_acc:.3f} -> {acc:.3f}; loss {res.losses[0]['loss']:.3f} -> "
        f"{res.losses[-1]['loss']:.3f}; {time.time() - t0:.0f} s")


# ----------------------------------------------------------------------------- loading and findings
@dataclass
class HeadStudy:
    """A stored head study (see the module docstring for the layout)."""

    dir: Path
    meta: dict[str, Any]
    runs: dict[tuple[str, int], dict[str, Any]]
    complete: bool = False

    @classmethod
    def load(cls, directory: str | Path) -> "HeadStudy":
        d = Path(directory)
        if not (d / "study.json").exists():
            raise FileNotFoundError(f"{d}: not a head study (no study.json); run `g2is heads study` first")
        runs = {}
        for rj in sorted((d / "runs").glob("*/run.json")):
            r = read_json(rj)
            runs[(r["task"], int(r["seed"]))] = r
        return cls(d, read_json(d / "study.json"), runs, (d / "sidecar.json").exists())

    # ---- shape and labels
    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    @property
    def shape(self) -> tuple[int, int, int]:
        m = self.meta["model"]
        return m["n_layers"], m["n_heads"], m["n_kv_heads"]

    @property
    def tasks(self) -> list[str]:
        return [t for t in self.config["tasks"] if any(k[0] == t for k in self.runs)]

    @property
    def seeds(self) -> list[int]:
        return sorted({s for _, s in self.runs})

    @property
    def steps(self) -> list[int]:
        return list(self.meta["measure_steps"])

    def kind(self, task: str) -> str:
        return self.meta["tasks"][task]["kind"]

    def ingredients(self, task: str) -> list[str]:
        return list(self.meta["tasks"][task]["ingredients"])

    # ---- arrays
    def patterns(self, task: str, seed: int) -> np.ndarray:
        """[step, layer, head] AP at each measured step."""
        return np.load(self.dir / "runs" / f"{task}__s{seed}" / "patterns.npy")

    def per_sample(self, task: str, seed: int) -> np.ndarray:
        """[step, sample, layer, head] per-sample absolute scores."""
        return np.load(self.dir / "runs" / f"{task}__s{seed}" / "per_sample.npy")

    def before(self, task: str, seed: int | None = None) -> np.ndarray:
        return self.patterns(task, self._seed(task, seed))[0]

    def after(self, task: str, seed: int | None = None) -> np.ndarray:
        return self.patterns(task, self._seed(task, seed))[-1]

    def _seed(self, task: str, seed: int | None) -> int:
        if seed is not None:
            return seed
        seeds = sorted(s for t, s in self.runs if t == task)
        if not seeds:
            raise ValueError(f"the study has no finished run for task {task!r}")
        return seeds[0]

    def mean_pattern(self, task: str, which: str = "change", *, normalised: bool = False) -> np.ndarray:
        """[layer, head] before / after / change, averaged over seeds (sum-1 first if normalised)."""
        out = []
        for s in (s for t, s in self.runs if t == task):
            P = self.patterns(task, s)
            b, a = P[0], P[-1]
            if normalised:
                b, a = ha.normalise(b), ha.normalise(a)
            out.append({"before": b, "after": a, "change": a - b}[which])
        if not out:
            raise ValueError(f"the study has no finished run for task {task!r}")
        return np.mean(out, 0)

    # ---- findings (numbers computed here from the stored arrays, never typed in)
    def findings(self, *, n_perm: int = 1000, k: int = 10, seed: int = 0) -> dict[str, Any]:
        return study_findings(self, n_perm=n_perm, k=k, seed=seed)


def study_findings(st: HeadStudy, *, n_perm: int = 1000, k: int = 10, seed: int = 0) -> dict[str, Any]:
    """Findings 1-3 with their nulls, as plain JSON-able numbers (see docs/heads.md)."""
    tasks = st.tasks
    # "order" fixes the rows/columns of the similarity matrices (JSON objects may come back key-sorted).
    out: dict[str, Any] = {"order": list(tasks), "tasks": {}, "n_perm": n_perm, "k": k}
    # Finding 1: per task concentration and change.
    for t in tasks:
        rows = []
        for s in (s for tt, s in st.runs if tt == t):
            P = st.patterns(t, s)
            rows.append(ha.task_summary(P[0], P[-1]))
        runs = [st.runs[(t, s)] for s in st.seeds if (t, s) in st.runs]
        summ = {key: float(np.mean([r[key] for r in rows])) for key in rows[0]}
        summ.update({"kind": st.kind(t), "accuracy_before": runs[0]["accuracy_before"],
                     "accuracy_after": float(np.mean([r["accuracy_after"] for r in runs])),
                     "loss_first": float(np.mean([r["losses"][0]["loss"] for r in runs])),
                     "loss_last": float(np.mean([r["losses"][-1]["loss"] for r in runs])),
                     "top_change_heads": [[l, h, v] for l, h, v in ha.top_heads(st.mean_pattern(t, "change", normalised=True), k)]})
        out["tasks"][t] = summ
    # Finding 1b: task specificity on normalised changes, with noise floors.
    changes = {t: st.mean_pattern(t, "change", normalised=True) for t in tasks}
    out["similarity"] = {m: ha.similarity_matrix(changes, m, k=k).tolist() for m in ("pearson", "spearman", "jaccard")}
    reps = {t: [ha.change(st.patterns(t, s)[0], st.patterns(t, s)[-1], normalised=True)
                for s in st.seeds if (t, s) in st.runs] for t in tasks}
    floors: dict[str, Any] = {}
    if any(len(v) > 1 for v in reps.values()):
        for m in ("pearson", "spearman", "jaccard"):
            nf = ha.noise_floor(reps, m, k=k)
            floors[f"seeds_{m}"] = {"within": nf.within, "within_mean": nf.within_mean, "between": nf.between}
    halves = {}
    for t in tasks:
        s0 = st._seed(t, None)
        X = st.per_sample(t, s0).astype(np.float64)        # [S, N, L, H]
        n = X.shape[1] // 2
        if n >= 1:
            halves[t] = [ha.change(X[0, :n].mean(0), X[-1, :n].mean(0), normalised=True),
                         ha.change(X[0, n:2 * n].mean(0), X[-1, n:2 * n].mean(0), normalised=True)]
    if halves:
        for m in ("pearson", "spearman", "jaccard"):
            nf = ha.noise_floor(halves, m, k=k)
            floors[f"halves_{m}"] = {"within": nf.within, "within_mean": nf.within_mean, "between": nf.between}
    out["noise_floor"] = floors
    # Finding 2: composition of each composite from the basics and controls (controls marked).
    predictors = [t for t in tasks if st.kind(t) in ("basic", "control")]
    comp = {}
    for t in (t for t in tasks if st.kind(t) == "composite"):
        if not predictors:
            break
        entry = {"ingredients": st.ingredients(t), "controls": [p for p in predictors if st.kind(p) == "control"]}
        for space, get in (("change_norm", lambda x: st.mean_pattern(x, "change", normalised=True)),
                           ("change_raw", lambda x: st.mean_pattern(x, "change")),
                           ("after_raw", lambda x: st.mean_pattern(x, "after"))):
            y = get(t)
            X = {p: get(p) for p in predictors}
            for method in ("ols", "nnls"):
                fit = ha.fit_composition(y, X, method)
                null = ha.permutation_null(y, X, method, n_perm=n_perm, seed=seed)
                entry[f"{space}_{method}"] = {**fit.as_dict(), "null_mean": null.null_mean,
                                              "null_q95": null.quantile(0.95), "p_value": null.p_value}
        comp[t] = entry
    out["composition"] = comp
    # Finding 3: convergence of the AP against samples seen; parameter change.
    conv = {}
    for t in tasks:
        curves = []
        for s in (s for tt, s in st.runs if tt == t):
            c = ha.convergence(st.patterns(t, s), normalised=True)
            curves.append({"seed": s, "samples_seen": st.runs[(t, s)]["samples_seen"], "corr": c["corr"].tolist(),
                           "mse_x1e6": c["mse"].tolist(), "param_change": st.runs[(t, s)]["param_change"]})
        conv[t] = curves
    out["convergence"] = conv
    out["steps"] = st.steps
    return out


def list_studies(workspace: Workspace | None = None, *, include_partial: bool = True) -> list[Path]:
    """Study directories, newest first (partial ones too when asked: they show finished runs)."""
    ws = workspace or Workspace()
    base = ws.root / KIND
    if not base.is_dir():
        return []
    dirs = [d for d in base.iterdir() if (d / "study.json").exists() and (include_partial or (d / "sidecar.json").exists())
            and any((d / "runs").glob("*/run.json"))]
    return sorted(dirs, key=lambda d: (d / "study.json").stat().st_mtime, reverse=True)


# ----------------------------------------------------------------------------- the application
@dataclass(frozen=True)
class MixConfig:
    """The paper's application (heads_method.md 2.4): a basic-task mix weighted by the composition
    regression, then scarce target data; against target-only SFT and a random basic mix."""

    target: str = "add_reverse"
    n_target: int = 16            # scarce composite training samples
    mix_steps: int = 30           # stage 1 steps on the basic mix
    target_steps: int = 20        # stage 2 steps on the target data
    space: str = "change_norm"    # which regression gives the weights (NNLS coefficients)
    seed: int = 0
    n_eval: int = 64

    def __post_init__(self) -> None:
        check_rules(self, {"n_target": POSITIVE_INT, "mix_steps": POSITIVE_INT, "target_steps": POSITIVE_INT,
                           "n_eval": POSITIVE_INT})
        check_choice(self.space, "space", ("change_norm", "change_raw", "after_raw"))


def mix_weights(study: HeadStudy, target: str, space: str = "change_norm", *, n_perm: int = 0) -> dict[str, float]:
    """NNLS coefficients of ``target`` on the basic and control tasks, normalised to sum 1
    (uniform over the basics when every coefficient is 0)."""
    if target not in study.tasks or study.kind(target) != "composite":
        raise ValueError(f"{target!r} is not a composite task of this study; choose one of "
                         + ", ".join(t for t in study.tasks if study.kind(t) == "composite"))
    which = {"change_norm": ("change", True), "change_raw": ("change", False), "after_raw": ("after", False)}[space]
    preds = [t for t in study.tasks if study.kind(t) in ("basic", "control")]
    fit = ha.fit_composition(study.mean_pattern(target, which[0], normalised=which[1]),
                             {p: study.mean_pattern(p, which[0], normalised=which[1]) for p in preds}, "nnls")
    w = np.clip(fit.coef, 0, None)
    if w.sum() <= 0:
        basics = [p for p in preds if study.kind(p) == "basic"]
        return {p: (1.0 / len(basics) if p in basics else 0.0) for p in preds}
    return dict(zip(preds, map(float, w / w.sum())))


def _mix_records(weights: dict[str, float], n: int, seed: int):
    counts = {t: int(round(w * n)) for t, w in weights.items()}
    recs = []
    for t, c in counts.items():
        if c > 0:
            recs += make_task_records(t, c, seed + 1000, "train")   # disjoint stream from the study's runs
    return recs, counts


def run_mix(study: HeadStudy, mcfg: MixConfig, workspace: Workspace | None = None, *,
            progress: Progress = no_progress, log=print) -> dict[str, Any]:
    """Compare target-only SFT, random basic mix -> target, and regression-weighted mix -> target
    on the target's test accuracy. Writes ``<workspace>/heads-mix/<key>/mix.json``."""
    from ..models.training import train

    ws = workspace or Workspace()
    cfg = StudyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in study.config.items()})
    out = ws.artefact_dir(MIX_KIND, {"study": study.dir.name, "mix": asdict(mcfg)})
    if ws.is_complete(out):
        return read_json(out / "mix.json")
    wts = mix_weights(study, mcfg.target, mcfg.space)
    rng = np.random.default_rng(mcfg.seed)
    rnd = rng.dirichlet(np.ones(len(wts)))
    rnd_w = dict(zip(wts, map(float, rnd)))
    n_mix = mcfg.mix_steps * cfg.batch_size
    eval_recs = make_task_records(mcfg.target, mcfg.n_eval, 0, "test")
    tgt_recs = make_task_records(mcfg.target, mcfg.n_target, mcfg.seed, "train")
    conditions = [("base", None), ("target_only", None), ("random_mix", rnd_w), ("weighted_mix", wts)]
    results: dict[str, Any] = {"config": asdict(mcfg), "weights": wts, "random_weights": rnd_w, "conditions": {}}
    for i, (name, w) in enumerate(conditions):
        progress(i / len(conditions), name)
        lm, model = _load(cfg, ws, train=name != "base")
        tok = lm.tokenizer
        info: dict[str, Any] = {}
        if w is not None:
            recs, counts = _mix_records(w, n_mix, mcfg.seed)
            enc, _ = encode_all(tok, recs)
            r = train(model, enc, cfg.train_config(mcfg.seed, mcfg.mix_steps), pad_id=tok.pad_token_id)
            info["mix_counts"], info["mix_loss_last"] = counts, r.losses[-1]["loss"]
        if name != "base":
            enc, _ = encode_all(tok, tgt_recs)
            r = train(model, enc, cfg.train_config(mcfg.seed, mcfg.target_steps), pad_id=tok.pad_token_id)
            info["target_loss_last"] = r.losses[-1]["loss"]
        acc, preds = exact_match(model, tok, eval_recs, max_new_tokens=cfg.max_new_tokens)
        info.update({"accuracy": acc, "predictions": preds[:6]})
        results["conditions"][name] = info
        log(f"[mix {mcfg.target}] {name}: accuracy {acc:.3f}")
    write_json(out / "mix.json", results)
    write_sidecar(out, MIX_KIND, asdict(mcfg), inputs={"study": str(study.dir)})
    return results
