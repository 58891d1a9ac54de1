"""Experiment specs: typed settings read from a YAML/TOML file, every field with its help text and default.

A spec names a pool, targets, methods, ratios, seeds, a model, and training/eval settings; the
runner (:mod:`.runner`) turns each (target, method, ratio, seed) cell into one row of the run
registry. Each setting is a dataclass field whose metadata carries its help text (as the selection
methods' options do); its default is written there once, or read from the config it feeds
(:class:`~g2is_core.models.training.TrainConfig`, :class:`~g2is_core.features.warmup.WarmupConfig`,
:class:`~g2is_core.loop.evaluation.EvalSettings`). :func:`load_spec` reads a file: an unknown key or a
value of the wrong type fails with a sentence naming the file and the field (``train.lr``).

Example (YAML)::

    name: builtin-demo
    model: default                 # default | tiny | a model directory | a .gguf file
    pool: {builtin: {seed: 0}}     # or {files: [path, ...], per_file: 500, seed: 0, exclude: [id, ...]}
    targets:
      - {name: add_reverse, select: "builtin:add_reverse", eval: "builtin:add_reverse", eval_limit: 64}
    methods: [g2is, less, bm25, embedding]
    ratios: [0.05]
    seeds: [0, 1]
    train: {lr: 2.0e-4, epochs: 2, batch_size: 8, max_length: 256, lora: {r: 8, alpha: 32, dropout: 0.0}}
    selection: {}                  # features: {...} for g2is/less, and <method>: {options} per method
    eval: {loglik: true}           # evaluate() settings; loglik: also score the gold answer's NLL; dtype: bf16;
                                   # head_pattern: 8 keeps each cell's head pattern of the target (docs/bridge.md)
    full_seeds: [0]                # optional: train the full-data baseline with fewer seeds (it costs the most)

A target may override its eval's protocol (``protocol: loglik`` scores the gold answer of a generative
eval instead of generating) and few-shot count (``shots: 0``).

Run identity. A cell's registry key hashes the train / selection / eval settings AS THE FILE WROTE
THEM (:meth:`SpecPart.as_written`), not their resolved defaults: a row keeps its key when a default
moves, and rows written before these settings were typed still match.
"""
from __future__ import annotations

import copy
import dataclasses
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..data.records import DataError
from ..features.projection import PROJ_KINDS, ProjectorConfig
from ..features.warmup import WarmupConfig
from ..models.lora import SFT_LORA, SMALL_LORA, LoraSettings
from ..runtime import resolve_bf16
from ..settings import NON_NEGATIVE_INT, POSITIVE_INT, SettingError, check_rules  # noqa: F401 (SettingError: re-exported)
from .evaluation import EvalSettings, get_spec
from ..models.training import TrainConfig

BASELINES = ("random", "full")
BASE = "base"  # the model before any fine-tuning
# The shipped demo spec (`g2is demo`, the Runs page's benchmark forms): one path for both.
DEMO_SPEC = Path(__file__).resolve().parent.parent / "specs" / "demo.yaml"

_TRAIN = TrainConfig()
_WARMUP = WarmupConfig()
_PROJ = ProjectorConfig()
# The LoRA adapters a selection is fine-tuned with, when a spec names none (models/lora.py's preset).
TRAIN_LORA = SFT_LORA


def _opt(default: Any, help: str, **meta: Any) -> Any:
    """A settings field: its default and its help text (mutable defaults are copied per instance)."""
    if type(default).__hash__ is None:  # list / dict / unfrozen dataclass: one copy per instance
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def _required(help: str) -> Any:
    return field(metadata={"help": help})


def _bf16_switch(value: bool | str, name: str) -> None:
    """Check a true / false / auto switch without resolving "auto" (that asks the hardware, at run time)."""
    if isinstance(value, str) and value.strip().lower() != "auto":
        try:
            resolve_bf16(value)
        except ValueError as exc:
            raise SettingError(name, str(exc)) from None


class SpecPart:
    """A part of a spec that remembers the mapping it was read from (see "Run identity" above)."""

    def as_written(self) -> dict[str, Any]:
        """The part as the spec file wrote it. A part built in code (or changed with ``dataclasses.replace``)
        has no file form: it is then every field's value."""
        written = self.__dict__.get("_written")
        return copy.deepcopy(written) if written is not None else asdict(self)  # type: ignore[call-overload]


# ----------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class TrainSettings(SpecPart):
    """Fine-tuning on a selection (:func:`~g2is_core.models.training.train`); each cell's seed is the training seed."""

    lr: float = _opt(2e-4, "peak learning rate (AdamW; linear warmup, then linear decay to 0)")
    epochs: int = _opt(2, "passes over the selected examples")
    batch_size: int = _opt(_TRAIN.batch_size, "examples per optimizer step (before grad_accum)")
    save_every: int = _opt(20, "resume checkpoint every N optimizer steps")
    max_steps: int = _opt(_TRAIN.max_steps, "> 0: stop after this many optimizer steps (epochs then only order data)")
    grad_accum: int = _opt(_TRAIN.grad_accum, "micro-batches accumulated per optimizer step")
    warmup_ratio: float = _opt(_TRAIN.warmup_ratio, "fraction of the steps with a linear learning-rate warmup")
    weight_decay: float = _opt(_TRAIN.weight_decay, "AdamW weight decay")
    betas: tuple[float, float] = _opt(_TRAIN.betas, "AdamW betas")
    eps: float = _opt(_TRAIN.eps, "AdamW epsilon")
    max_grad_norm: float = _opt(_TRAIN.max_grad_norm, "gradient-norm clip")
    save_epochs: bool = _opt(_TRAIN.save_epochs, "keep a named checkpoint (weights + Adam moments) at each epoch end")
    bf16: bool | str = _opt(_TRAIN.bf16, "autocast the matmuls to bf16: true, false or auto (where bf16 is native)")
    max_length: int = _opt(256, "tokens per training example (the prompt is cut from the left, then the response "
                                "from the right)")
    full: bool = _opt(False, "fine-tune every weight instead of LoRA adapters")
    lora: LoraSettings = _opt(TRAIN_LORA, "LoRA adapters {r, alpha, dropout, targets}; a mapping that gives only some "
                                          "fields takes the others from LoraSettings (r 128, alpha 512, dropout 0.1)")

    def __post_init__(self) -> None:
        _bf16_switch(self.bf16, "bf16")
        POSITIVE_INT.check(self.max_length, "max_length")
        self.train_config(0, bf16=False)  # TrainConfig's rules (lr, epochs, batch_size, ...): the same field names

    def train_config(self, seed: int, bf16: bool | None = None) -> TrainConfig:
        """The loop's config for one cell (``bf16`` resolved here, where the training runs)."""
        kw = {f.name: getattr(self, f.name) for f in fields(TrainConfig) if f.name not in ("seed", "bf16")}
        return TrainConfig(**kw, seed=seed, bf16=resolve_bf16(self.bf16, what="training") if bf16 is None else bf16)


@dataclass(frozen=True)
class WarmupSettings:
    """The LESS warmup of the gradient features (:class:`~g2is_core.features.warmup.WarmupConfig`)."""

    fraction: float = _opt(_WARMUP.fraction, "fraction of the pool the warmup trains on (LESS: 5%)")
    epochs: int = _opt(_WARMUP.epochs, "warmup epochs; one feature checkpoint after each")
    lr: float = _opt(_WARMUP.lr, "peak learning rate of the warmup")
    warmup_ratio: float = _opt(_WARMUP.warmup_ratio, "fraction of the steps with a linear learning-rate warmup")
    batch_size: int = _opt(_WARMUP.batch_size, "examples per micro-batch")
    grad_accum: int = _opt(_WARMUP.grad_accum, "micro-batches per optimizer step")
    max_length: int = _opt(_WARMUP.max_length, "tokens per warmup example")
    template: str = _opt(_WARMUP.template, "prompt template: chat or plain")
    seed: int = _opt(_WARMUP.seed, "seed of the warmup subset, the data order and the LoRA init")
    bf16: bool | str = _opt(_WARMUP.bf16, "autocast the warmup to bf16: true, false or auto")
    lora: LoraSettings = _opt(SMALL_LORA, "the warmup's LoRA adapters {r, alpha, dropout, targets}")

    def __post_init__(self) -> None:
        _bf16_switch(self.bf16, "bf16")
        self.config(bf16=False)  # WarmupConfig's rules (fraction, epochs, lr, ...): the same field names

    def config(self, bf16: bool | None = None) -> WarmupConfig:
        return WarmupConfig(**{f.name: getattr(self, f.name) for f in fields(self)}
                            | {"bf16": resolve_bf16(self.bf16, what="the warmup") if bf16 is None else bf16})


@dataclass(frozen=True)
class FeatureSettings:
    """The gradient features of the spec's g2is / less cells: warmup, projection, extraction."""

    warmup: WarmupSettings = _opt(WarmupSettings(), "the LESS warmup whose checkpoints the features are taken at")
    dim: int = _opt(_PROJ.dim, "projection dimension d of the gradient features")
    proj_seed: int = _opt(_PROJ.seed, "seed of the random projection (the same for pool and target features)")
    projector: str = _opt(_PROJ.kind, "dense (the LESS projection) or sparse (a sparse JL transform, cheaper at "
                                      "large dim; its features are comparable only with sparse ones)")
    max_length: int | None = _opt(None, "tokens per example for the features (None: the warmup's max_length)")
    bf16: bool | str = _opt(False, "autocast the feature pass to bf16: true, false or auto")

    def __post_init__(self) -> None:
        _bf16_switch(self.bf16, "bf16")
        if self.projector not in PROJ_KINDS:
            raise SettingError("projector", f"{self.projector!r} is not one of {', '.join(PROJ_KINDS)}")
        check_rules(self, {"dim": POSITIVE_INT, "max_length": POSITIVE_INT}, optional=("max_length",))

    def projector_config(self) -> ProjectorConfig:
        return dataclasses.replace(_PROJ, dim=self.dim, seed=self.proj_seed, kind=self.projector)


@dataclass(frozen=True)
class SelectionSettings(SpecPart):
    """Selection settings: the gradient ``features`` and, beside them, ``<method>: {option: value}`` per method."""

    features: FeatureSettings = _opt(FeatureSettings(), "gradient features of the g2is and less cells")
    options: dict[str, dict[str, Any]] = _opt({}, "per-method options, written as `<method>: {...}` beside "
                                                  "`features`; checked against the method's options dataclass",
                                              file=False)

    def method_options(self, method: str) -> dict[str, Any]:
        return dict(self.options.get(method, {}))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], path: str, where: str) -> SelectionSettings:
        from ..selection import METHODS

        options = {}
        for k, v in raw.items():
            if k == "features":
                continue
            if k not in METHODS:
                raise DataError(f"unknown field {k!r}: write features: {{...}} or a selection method's name with its "
                                f"options ({', '.join(sorted(METHODS))})", path=path, field=where)
            if v is None:
                continue
            if not isinstance(v, Mapping):
                raise DataError(f"must be a mapping of {k}'s options, not {v!r}", path=path, field=f"{where}.{k}")
            try:
                METHODS[k].make_options(**v)
            except (TypeError, ValueError) as exc:
                raise DataError(str(exc), path=path, field=f"{where}.{k}") from None
            options[k] = dict(v)
        features = raw.get("features")
        return cls(features=FeatureSettings() if features is None
                   else parse_settings(FeatureSettings, features, path, f"{where}.features"), options=options)


@dataclass(frozen=True)
class EvalOptions(SpecPart, EvalSettings):
    """How every target is evaluated: :class:`~g2is_core.loop.evaluation.EvalSettings` and these."""

    loglik: bool = _opt(False, "also score the gold answer's log-likelihood (nll, ppl) where the eval's protocol "
                               "is not loglik: it moves even when a small model's exact match stays at 0")
    dtype: bool | str = _opt(False, "score with bf16 weights: true (or bf16), false (or fp32), or auto")
    protocol: str | None = _opt(None, "every target's protocol instead of its eval's own (a target's wins)")
    shots: int | None = _opt(None, "few-shot exemplars of every target (None: each eval's default; a target's wins)")
    head_pattern: int = _opt(0, "the closed loop (docs/bridge.md): measure the target's attention-head activation "
                                "pattern [layer, head] of every cell's model, the base model included, on the first "
                                "N of the target's selection examples (the same N for every cell) and keep it in "
                                "the row; 0 = off. A few examples suffice (8); it costs one forward and backward "
                                "per example and cell")

    def __post_init__(self) -> None:
        EvalSettings.__post_init__(self)  # batch_size, template, max_length, max_new_tokens
        _bf16_switch(self.dtype, "dtype")
        NON_NEGATIVE_INT.check(self.shots, "shots", optional=True)
        NON_NEGATIVE_INT.check(self.head_pattern, "head_pattern")


@dataclass(frozen=True)
class TargetSpec:
    """One target task: where its selection examples come from and the eval that scores it."""

    name: str = _required("the target's name (a table column)")
    select: str | None = _opt(None, "where the target (selection) examples come from: builtin:<composite>, "
                                    "bbh-cot:<task>, or a data file/folder (shared: prefix, optional [a:b] rows); "
                                    "default builtin:<name>")
    eval: str | None = _opt(None, "the eval that scores the target: a name in the eval registry, or a data file "
                                  "by path (shared:<path>, or a path from the project root or absolute; scored by "
                                  "mc when its records have options and a gold index, else by loglik); default "
                                  "builtin:<name>")
    eval_limit: int | None = _opt(None, "examples evaluated (a seeded subset; None: all)")
    n_select: int = _opt(32, "target examples used for selection")
    protocol: str | None = _opt(None, "override the eval's primary protocol (e.g. loglik for a generative eval)")
    shots: int | None = _opt(None, "override the eval's default number of few-shot exemplars")

    def __post_init__(self) -> None:
        check_rules(self, {"eval_limit": POSITIVE_INT, "n_select": POSITIVE_INT, "shots": NON_NEGATIVE_INT},
                    optional=("eval_limit", "shots"))
        for k in ("select", "eval"):
            if getattr(self, k) is None:
                object.__setattr__(self, k, f"builtin:{self.name}")
        try:
            spec = get_spec(self.eval)
        except ValueError as exc:
            raise SettingError("eval", str(exc)) from None
        if self.protocol is not None and self.protocol not in spec.protocols:
            raise SettingError("protocol", f"the eval {spec.name!r} supports the protocols "
                                           f"{', '.join(spec.protocols)}, not {self.protocol!r}")

    def config(self) -> dict[str, Any]:
        """What identifies the target in a cell's config (unset overrides left out, so older rows keep their keys)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None or f.name not in ("protocol", "shots")}


@dataclass(frozen=True)
class MethodVariant:
    """A selection method run with other options under a name of its own (a column of its own in every table)."""

    method: str = _required("the registered selection method it runs")
    options: dict[str, Any] = _opt({}, "the method's options (its options dataclass checks them)")


@dataclass
class ExperimentSpec:
    name: str = _required("the experiment's name: its rows in the run registry are filed under it")
    model: str = _opt("default", "default, tiny, a model directory or a .gguf file")
    pool: dict[str, Any] | str = _opt({"builtin": {"seed": 0}}, "the candidate pool: a data spec (README.md, "
                                      "'Naming data'), {builtin: {seed, per_task, distractors}} or {files: [spec, "
                                      "...], per_file, seed, exclude: [id, ...]}")
    targets: list[TargetSpec] = _opt([], "the target tasks (at least one)")
    methods: list[str] = _opt([], "selection methods by name, or variants {name, method, options}; the baselines "
                                  "random and full, and the untrained base model, are always added")
    ratios: list[float] = _opt([0.05], "fractions of the pool to select, each in (0, 1]")
    seeds: list[int] = _opt([0], "training seeds (one row per seed; also the draw of the random baseline)")
    full_seeds: list[int] | None = _opt(None, "training seeds of the full-data baseline (None: seeds); it costs "
                                              "the most")
    train: TrainSettings = _opt(TrainSettings(), "fine-tuning on each selection")
    selection: SelectionSettings = _opt(SelectionSettings(), "gradient features and per-method options")
    eval: EvalOptions = _opt(EvalOptions(), "how every target is evaluated")
    source: str | None = _opt(None, "the file the spec was read from", file=False)
    variants: dict[str, MethodVariant] = _opt({}, "the method variants among methods, by name", file=False)

    def __post_init__(self) -> None:
        self.ratios = [float(r) for r in self.ratios]  # a ratio is hashed as a float (1 -> 1.0), as it always was
        if not self.targets:
            raise SettingError("targets", "no targets; list at least one under 'targets'")
        for r in self.ratios:
            if not 0 < r <= 1:
                raise SettingError("ratios", f"ratio {r!r} must be a number in (0, 1]")
        for name in ("ratios", "seeds", "full_seeds"):
            v = getattr(self, name)
            if v is not None and not v:
                raise SettingError(name, f"is empty; list at least one (or leave '{name}' out for the default)")

    def base_method(self, name: str) -> str:
        """The selection method a (possibly variant) method name runs."""
        return self.variants[name].method if name in self.variants else name

    def all_methods(self) -> list[str]:
        out = [BASE]
        for m in list(BASELINES) + list(self.methods):
            if m not in out:
                out.append(m)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "pool": self.pool,
                "targets": [t.config() for t in self.targets],
                "methods": [{"name": m, **asdict(self.variants[m])} if m in self.variants else m
                            for m in self.methods],
                "ratios": self.ratios, "seeds": self.seeds, "train": self.train.as_written(),
                "selection": self.selection.as_written(), "eval": self.eval.as_written(),
                **({"full_seeds": self.full_seeds} if self.full_seeds is not None else {})}


# ----------------------------------------------------------------------------- reading
def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate a YAML or TOML spec; errors name the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such experiment spec")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)  # YAML errors draw a caret over several lines; say it in one
        why = (f"{getattr(exc, 'problem', None) or 'syntax error'} at line {mark.line + 1}, column {mark.column + 1}"
               if mark is not None else " ".join(str(exc).split()))
        raise DataError(f"not valid {'TOML' if p.suffix == '.toml' else 'YAML'}: {why}", path=str(p)) from exc
    return spec_from_dict(raw, str(p))


def spec_from_dict(raw: Any, where: str) -> ExperimentSpec:
    """A spec from its mapping (a parsed file, or ``ExperimentSpec.to_dict()`` stored in an artefact);
    ``where`` names it in errors (the file, or the artefact and its field)."""
    p = Path(where)
    if not isinstance(raw, dict):
        raise DataError("the spec must be a mapping with at least 'name' and 'targets'", path=where)
    if not raw.get("name"):
        raise DataError("missing 'name'", path=where, field="name")
    names, variants = _methods(raw.get("methods") or [], p)
    body = {k: v for k, v in raw.items() if k != "methods"}
    return parse_settings(ExperimentSpec, body, where, "",
                          given={"methods": names, "variants": variants, "source": where})


def _methods(entries: list, p: Path) -> tuple[list[str], dict[str, MethodVariant]]:
    """Spec methods: names (``g2is``), or variants ``{name: g2is-centred, method: g2is, options: {...}}``
    that run a method with other options under their own name (a column of their own in every table)."""
    from ..selection import METHODS

    known = sorted(set(METHODS) | set(BASELINES))
    names: list[str] = []
    variants: dict[str, MethodVariant] = {}
    if not isinstance(entries, list):
        raise DataError(f"must be a list of method names or variants, not {entries!r}", path=str(p), field="methods")
    for e in entries:
        if isinstance(e, dict):
            name, method, options = e.get("name"), e.get("method"), e.get("options") or {}
            extra = set(e) - {"name", "method", "options"}
            if not name or not method or extra or not isinstance(options, dict):
                raise DataError(f"a method variant needs 'name', 'method' and optionally 'options' (a mapping); got "
                                f"{e!r}", path=str(p), field="methods")
            if method not in METHODS:
                raise DataError(f"variant {name!r}: unknown method {method!r}; known: {sorted(METHODS)}",
                                path=str(p), field="methods")
            if name in METHODS or name in BASELINES or name == BASE:
                raise DataError(f"variant name {name!r} is a method's own name; give it a name of its own",
                                path=str(p), field="methods")
            try:
                METHODS[method].make_options(**options)
            except (TypeError, ValueError) as exc:
                raise DataError(f"variant {name!r}: {exc}", path=str(p), field="methods") from exc
            variants[str(name)] = MethodVariant(str(method), dict(options))
            name = str(name)
        else:
            name = str(e)
            if name not in METHODS and name not in BASELINES:
                raise DataError(f"unknown method {name!r}; known: {known}", path=str(p), field="methods")
        if name in names:
            raise DataError(f"method {name!r} is listed twice", path=str(p), field="methods")
        names.append(name)
    return names, variants


def file_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that a spec file may set."""
    return [f for f in fields(cls) if f.init and f.metadata.get("file", True)]


def parse_settings(cls: type, raw: Any, path: str, where: str, given: dict[str, Any] | None = None) -> Any:
    """A settings dataclass from a spec file's mapping: unknown keys and values of the wrong type fail with a
    :class:`DataError` naming ``path`` and the field (``where`` is the dotted place of ``raw`` in the file).
    A null value means the field's default. ``given``: fields already read by the caller."""
    here = where or None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise DataError(f"must be a mapping of settings, not {raw!r}", path=path, field=here)
    if hasattr(cls, "from_mapping"):
        obj = cls.from_mapping(raw, path, where)
    else:
        ff = {f.name: f for f in file_fields(cls)}
        unknown = sorted(set(raw) - set(ff))
        if unknown:
            raise DataError(f"unknown field(s) {unknown}; known: {sorted(ff)}", path=path, field=here)
        hints = typing.get_type_hints(cls)
        kw = {k: _value(hints[k], v, path, _join(where, k)) for k, v in raw.items() if v is not None}
        for k in ff:  # an absent part is written as {} (its identity), not as its defaults
            if k not in kw and isinstance(hints[k], type) and issubclass(hints[k], SpecPart):
                kw[k] = parse_settings(hints[k], {}, path, _join(where, k))
        missing = [n for n, f in ff.items() if n not in kw and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise DataError(f"missing {', '.join(repr(m) for m in missing)}", path=path, field=here)
        try:
            obj = cls(**kw, **(given or {}))
        except SettingError as exc:
            raise DataError(str(exc), path=path, field=_join(where, exc.field)) from None
    if isinstance(obj, SpecPart):
        object.__setattr__(obj, "_written", copy.deepcopy(dict(raw)))
    return obj


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


_KIND = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
         list: "a list", tuple: "a list", dict: "a mapping", type(None): "null"}


def _value(tp: Any, v: Any, path: str, where: str) -> Any:
    """``v`` checked against the annotation ``tp`` (lists become tuples where a tuple is asked for)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        opts = typing.get_args(tp)
        for o in opts:
            try:
                return _value(o, v, path, where)
            except DataError:
                continue
        kinds = " or ".join(_KIND.get(typing.get_origin(o) or o, getattr(o, "__name__", str(o))) for o in opts)
        raise DataError(f"must be {kinds}, not {v!r}", path=path, field=where)
    if dataclasses.is_dataclass(tp):
        return parse_settings(tp, v, path, where)
    if origin in (list, tuple):
        if not isinstance(v, (list, tuple)):
            raise DataError(f"must be a list, not {v!r}", path=path, field=where)
        args = typing.get_args(tp)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            out = [_value(args[0], x, path, f"{where}[{i}]") for i, x in enumerate(v)]
        else:
            if len(v) != len(args):
                raise DataError(f"must be a list of {len(args)} values, not {v!r}", path=path, field=where)
            out = [_value(a, x, path, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v))]
        return out if origin is list else tuple(out)
    if origin is dict or tp is dict:
        if not isinstance(v, Mapping):
            raise DataError(f"must be a mapping, not {v!r}", path=path, field=where)
        args = typing.get_args(tp)
        return {k: _value(args[1], x, path, f"{where}.{k}") for k, x in v.items()} if args else dict(v)
    ok = (isinstance(v, bool) if tp is bool
          else isinstance(v, (int, float)) and not isinstance(v, bool) if tp is float
          else isinstance(v, int) and not isinstance(v, bool) if tp is int
          else isinstance(v, tp))
    if not ok:
        raise DataError(f"must be {_KIND.get(tp, tp.__name__)}, not {v!r}", path=path, field=where)
    return v  # a whole number stays one where a float is allowed: configs hash what the file wrote (1, not 1.0)
