"""The eval registry: :class:`EvalSpec`, :data:`EVALS` and the families of target evals in it.

A family is a loader (data root -> records, in file order), optionally a ``prepare`` (few-shot
prompts), the options of a multiple-choice item or the scorer of a completion, and one
:func:`register_eval` call per eval. :func:`eval_records` gives the examples an eval scores.

Prompts. The records' prompt is the user turn of the model's chat template (``template="chat"``,
as in training) or the plain Alpaca template (``"plain"``). Few-shot exemplars are prepended
inside that one user turn (as open-instruct does for chat models):

* MMLU: the k dev questions of the same subject in the Hendrycks format (default k = 5)::

      The following are multiple choice questions (with answers) about {subject}.\\n\\n
      {q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n   (k times)
      {q}\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:

  and the scored options are the letters "A".."D" (the assistant turn; no leading space).
* BBH: the task description and the first k of its 3 chain-of-thought exemplars
  (:func:`g2is_core.data.loaders.load_bbh_cot_prompt`), then ``Q: {input}\\nA: Let's think step by
  step.`` (default k = 3; k = 0 asks the question alone and takes the first line as the answer).
* GSM8K: k worked solutions from the head of the train file (calculator annotations removed),
  default k = 0.

Held-out data. The GSM8K test split and the ARC-Challenge test split are not in shared/data and
must not be fetched from elsewhere. ``gsm8k`` therefore evaluates on the LAST 1,000 rows of the
train file (lines 6,474-7,473; GSM8K few-shot exemplars come from the head of the file) and
``arc_challenge`` on its train split: both are dev sets, not the official test numbers. Note that
flan_v2_cot/gsm8k_train holds the same questions, so a candidate pool built from it must drop the
``gsm8k`` eval questions (:func:`eval_records` gives them). Nothing here is fitted to the data.

Subsets. ``limit`` takes a deterministic subset (``seed``) in the file order; for MMLU it is
stratified over the 57 subjects. Built-in evals draw 200 test-split records per task (suite seed
0, disjoint from every pool; all of them for a task with fewer distinct test prompts, such as
``upper``'s 158) and subset those.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ...data import tasks
from ...data.records import Record
from ...workspace import shared_data_root
from .metrics import EvalError, bbh_score, builtin_score, number_score, subset, text_score
from .evalspec import EvalSpec, Loader, Prepare
from .protocols import PROTOCOLS, same_options

EVALS: dict[str, EvalSpec] = {}


def register_eval(spec: EvalSpec) -> EvalSpec:
    """Add an eval to :data:`EVALS` (the app, the CLI and the contract tests list it from there)."""
    if spec.name in EVALS:
        raise ValueError(f"eval {spec.name!r} is registered twice")
    if spec.protocol not in PROTOCOLS:
        raise ValueError(f"eval {spec.name!r}: protocol {spec.protocol!r} is not one of {tuple(PROTOCOLS)}")
    EVALS[spec.name] = spec
    return spec


def _with_prompt(rec: Record, text: str) -> Record:
    """The record with its last user message replaced by ``text``."""
    msgs = list(rec.messages)
    k = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[k] = {"role": "user", "content": text}
    return replace(rec, messages=tuple(msgs))


def _load(path: Path, fmt: str | None = None) -> list[Record]:
    from ...data.loaders import load_records
    return load_records(path, fmt).records


def _need(root: Path | None) -> Path:
    assert root is not None  # eval_records() checks needs_data before loading
    return root


# ---- built-in suite
BUILTIN_TEST_N = 200


def _builtin_loader(task: str) -> Loader:
    # at_most: a task with fewer distinct test prompts (upper: 158) is evaluated on all it has
    return lambda root: tasks.make_task_records(task, BUILTIN_TEST_N, seed=0, split="test", at_most=True)


for _t in tasks.task_names():
    register_eval(EvalSpec(f"builtin:{_t}", f"Built-in {tasks.TASKS[_t].kind} task {_t!r}: {BUILTIN_TEST_N} test-split "
                           "records, or all the task has where fewer (suite seed 0), exact match after "
                           "tasks.extract_answer.", "exact_match",
                           _builtin_loader(_t), needs_data=False, score=builtin_score, max_new_tokens=16))


# ---- GSM8K (train file only; the test split is held out)
GSM8K_EVAL_ROWS = 1000
_CALC = re.compile(r"<<[^>]*>>")


def _gsm8k_all(root: Path) -> list[Record]:
    return _load(root / "gsm8k" / "train.jsonl.gz", "gsm8k")


def _gsm8k_loader(root: Path | None) -> list[Record]:
    return _gsm8k_all(_need(root))[-GSM8K_EVAL_ROWS:]


def _gsm8k_prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
    if not shots:
        return records
    head = _gsm8k_all(_need(root))[:shots]
    prefix = "".join(f"Question: {r.prompt}\nAnswer: {_CALC.sub('', r.response)}\n\n" for r in head)
    return [_with_prompt(r, f"{prefix}Question: {r.prompt}\nAnswer:") for r in records]


register_eval(EvalSpec("gsm8k", f"GSM8K dev: the last {GSM8K_EVAL_ROWS} rows of the TRAIN file (the test split is held "
                       "out), greedy generation, final-number exact match.", "exact_match", _gsm8k_loader,
                       max_shots=8, prepare=_gsm8k_prepare, score=number_score, max_new_tokens=256))


# ---- BIG-Bench Hard (22 of 27 tasks; 5 held out)
BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "disambiguation_qa", "dyck_languages", "formal_fallacies",
    "hyperbaton", "logical_deduction_five_objects", "logical_deduction_seven_objects",
    "logical_deduction_three_objects", "movie_recommendation", "multistep_arithmetic_two", "object_counting",
    "penguins_in_a_table", "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
)


def _bbh_prepare_for(task: str) -> Prepare:
    def prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
        if not shots:
            return records
        from ...data.loaders import bbh_cot_exemplars, load_bbh_cot_prompt
        full = load_bbh_cot_prompt(task)
        description = full[: full.index("Q:")].strip()
        ex = bbh_cot_exemplars(task)[:shots]
        prefix = (description + "\n\n" if description else "") + "".join(
            f"Q: {e.prompt}\nA: {e.response}\n\n" for e in ex)
        return [_with_prompt(r, f"{prefix}Q: {r.prompt}\nA: Let's think step by step.") for r in records]
    return prepare


for _t in BBH_TASKS:
    register_eval(EvalSpec(f"bbh:{_t}", f"BBH {_t}: its 250 (or fewer) examples, chain-of-thought with the task's "
                           "3-shot prompt, answer after 'So the answer is'.", "exact_match",
                           (lambda t: lambda root: _load(_need(root) / "bbh" / "bbh" / f"{t}.json", "bbh"))(_t),
                           shots=3, max_shots=3, prepare=_bbh_prepare_for(_t), score=bbh_score, max_new_tokens=256))


# ---- MMLU (test split for evaluation, dev split for the k shots)
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering", "elementary_mathematics",
    "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_european_history", "high_school_geography", "high_school_government_and_politics",
    "high_school_macroeconomics", "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history", "high_school_world_history",
    "human_aging", "human_sexuality", "international_law", "jurisprudence", "logical_fallacies", "machine_learning",
    "management", "marketing", "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy", "virology",
    "world_religions",
)
_LETTERS = ("A", "B", "C", "D")


def mmlu_block(question: str, choices: Sequence[str], answer: str | None = None) -> str:
    """One question in the Hendrycks layout; with ``answer`` it ends "Answer: X\\n\\n" (a shot)."""
    s = question + "".join(f"\n{k}. {c}" for k, c in zip(_LETTERS, choices)) + "\nAnswer:"
    return s + f" {answer}\n\n" if answer is not None else s


def mmlu_header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def _mmlu_loader(subjects: Sequence[str]) -> Loader:
    def load(root: Path | None) -> list[Record]:
        d = _need(root) / "mmlu" / "data" / "test"
        return [r for s in subjects for r in _load(d / f"{s}_test.csv", "mmlu")]
    return load


def _mmlu_prepare(records: list[Record], shots: int, root: Path | None) -> list[Record]:
    dev: dict[str, list[Record]] = {}
    out = []
    for r in records:
        s = r.subtask or ""
        if shots and s not in dev:
            dev[s] = _load(_need(root) / "mmlu" / "data" / "dev" / f"{s}_dev.csv", "mmlu")
        shot_text = "".join(mmlu_block(d.metadata["question"].strip(), d.choices or (), d.answer)
                            for d in dev.get(s, [])[:shots])
        block = mmlu_block(r.metadata["question"].strip(), r.choices or ())
        out.append(_with_prompt(r, mmlu_header(s) + shot_text + block))
    return out


def _letter_options(rec: Record) -> list[tuple[Record, str]]:
    return [(rec, k) for k in _LETTERS[: len(rec.choices or ())]]


register_eval(EvalSpec("mmlu", "MMLU test split, all 57 subjects, 5-shot from each subject's dev split (Hendrycks "
                       "format), letter log-likelihood; `limit` is spread evenly over subjects.", "mc",
                       _mmlu_loader(MMLU_SUBJECTS), shots=5, max_shots=5, prepare=_mmlu_prepare,
                       options=_letter_options, stratify=True))
for _s in MMLU_SUBJECTS:
    register_eval(EvalSpec(f"mmlu:{_s}", f"MMLU {_s.replace('_', ' ')}: test split, 5-shot from its dev split, letter "
                           "log-likelihood.", "mc", _mmlu_loader((_s,)), shots=5, max_shots=5, prepare=_mmlu_prepare,
                           options=_letter_options))


# ---- ARC / BoolQ / OpenBookQA (LLM-Adapters files)
_ADAPTER_Q = re.compile(r"^Please choose the correct answer to the question:\s*(.*?)\s*\n\s*\nAnswer1:", re.S)


def _cloze_options(rec: Record) -> list[tuple[Record, str]]:
    """Harness-style cloze: "Question: {q}\\nAnswer:" -> each option's text (the listed options and the
    answerN labels of the LLM-Adapters prompt are dropped, so the score is about the content)."""
    m = _ADAPTER_Q.match(rec.prompt)
    q = m.group(1) if m else rec.prompt
    p = _with_prompt(rec, f"Question: {q}\nAnswer:")
    return [(p, c) for c in rec.choices or ()]


def _adapters(rel: str) -> Loader:
    return lambda root: _load(_need(root) / "llm_adapters_tasks" / rel, "llm_adapters")


register_eval(EvalSpec("arc_easy", "ARC-Easy test split (2,376), option-text log-likelihood given the question "
                       "(length-normalised).", "mc", _adapters("ARC-Easy/test.json"), options=_cloze_options,
                       mc_primary="norm"))
register_eval(EvalSpec("arc_challenge", "ARC-Challenge TRAIN split (1,119; the test split is held out), option-text "
                       "log-likelihood given the question (length-normalised).", "mc",
                       _adapters("ARC-Challenge/train.json.gz"), options=_cloze_options, mc_primary="norm"))
register_eval(EvalSpec("boolq", "BoolQ validation split (3,270; LLM-Adapters 'test', question only, no passage), "
                       "log-likelihood of 'true' vs 'false' after the original prompt.", "mc",
                       _adapters("boolq/test.json"), options=same_options))
register_eval(EvalSpec("openbookqa", "OpenBookQA test split (500), option-text log-likelihood given the question "
                       "(length-normalised).", "mc", _adapters("openbookqa/test.json"), options=_cloze_options,
                       mc_primary="norm"))


# ---- llm-foundry eval gauntlet sets
def _foundry(stem: str) -> Loader:
    return lambda root: _load(_need(root) / "mosaic_eval_gauntlet" / f"{stem}.jsonl", "foundry_eval")


def _schema_options(rec: Record) -> list[tuple[Record, str]]:
    """WinoGrande partial scoring: the same continuation after each context option."""
    cont = rec.metadata["continuation"]
    return [(_with_prompt(rec, c), cont) for c in rec.choices or ()]


for _stem, _desc, _primary in (("commonsense_qa", "CommonsenseQA dev (1,221), lettered options", "sum"),
                               ("siqa", "Social IQa dev (1,954), lettered options", "sum"),
                               ("piqa", "PIQA validation (1,838), solution text", "norm"),
                               ("copa", "COPA (100), option text", "norm")):
    register_eval(EvalSpec(f"foundry:{_stem}", f"{_desc}: option log-likelihood after the query (llm-foundry file).",
                           "mc", _foundry(_stem), options=same_options, mc_primary=_primary))
register_eval(EvalSpec("foundry:winogrande", "WinoGrande dev (1,267): log-likelihood of the shared continuation after "
                       "each filled-in context (partial scoring).", "mc", _foundry("winogrande"),
                       options=_schema_options))
register_eval(EvalSpec("foundry:svamp", "SVAMP (300): greedy generation, final-number exact match.", "exact_match",
                       _foundry("svamp"), score=number_score, max_new_tokens=128))
register_eval(EvalSpec("foundry:aqua", "AQuA (245): greedy generation, the text after 'the answer is' must equal the "
                       "answer (case and spacing ignored).", "exact_match", _foundry("aqua"), score=text_score,
                       max_new_tokens=256))


# ---- TyDi QA GoldP
TYDIQA_LANGS = ("arabic", "bengali", "english", "finnish", "indonesian", "korean", "russian", "swahili", "telugu")


def _tydiqa_loader(lang: str) -> Loader:
    # LESS uses the first dev question of each language as the target; the rest is the eval set.
    return lambda root: _load(_need(root) / "tydiqa_goldp" / "dev" / f"{lang}_tydiqa_dev.json", "tydiqa")[1:]


for _l in TYDIQA_LANGS:
    register_eval(EvalSpec(f"tydiqa:{_l}", f"TyDi QA GoldP {_l} dev minus its first question (the LESS target), greedy "
                           "answer, SQuAD EM/F1.", "f1", _tydiqa_loader(_l), max_new_tokens=50))


# ---- looking evals up
def eval_names(protocol: str | None = None) -> tuple[str, ...]:
    """Registered eval names (those whose primary protocol is ``protocol``, if given)."""
    return tuple(n for n, s in EVALS.items() if protocol is None or s.protocol == protocol)


def _names_sentence() -> str:
    shown = [n for n in EVALS if not n.startswith("mmlu:")]
    return ", ".join(shown) + f", and mmlu:<subject> for the {len(MMLU_SUBJECTS)} MMLU subjects"


# ---- an eval named by a data spec (README "Naming data"): the user's own evaluation file, no code
_DATA_EVALS: dict[str, EvalSpec] = {}


def data_eval(text: str) -> EvalSpec | None:
    """The eval of a data spec naming a file or folder (``shared:<path>``, or a path: relative to the project
    root, or absolute, anywhere on disk), or None when ``text`` names no such data. Its records are scored
    by ``mc`` (option log-likelihood, ``accuracy`` and ``gold_logprob``) when every record has options and a
    gold index (MMLU/ARC-style files), else by ``loglik`` (the gold response's NLL). No few-shot prompts."""
    from ...data.records import DataError
    from ...data.spec import DataSpec
    from ...workspace import PROJECT_ROOT

    if text in _DATA_EVALS:
        return _DATA_EVALS[text]
    try:
        ds = DataSpec.parse(text)
    except DataError:
        return None
    if not ds.is_path or (ds.kind == "file" and not ds.path(PROJECT_ROOT).exists()):
        return None
    recs = ds.load(base=PROJECT_ROOT).records  # a bad file fails here, naming it (at spec load, not mid-run)
    mc = all(r.gold is not None and len(r.choices or ()) >= 2 for r in recs)
    load = lambda root: ds.load(base=PROJECT_ROOT).records  # noqa: E731
    spec = EvalSpec(text, f"Records of {ds.describe()} ({len(recs)}), " + (
        "option log-likelihood (the options and gold index of each record)." if mc else
        "log-likelihood of each record's response."), "mc" if mc else "loglik", load, needs_data=False,
        options=same_options if mc else None)
    _DATA_EVALS[text] = spec
    return spec


def get_spec(eval_name: str | EvalSpec) -> EvalSpec:
    if isinstance(eval_name, EvalSpec):
        return eval_name
    if eval_name in EVALS:
        return EVALS[eval_name]
    from_data = data_eval(str(eval_name))
    if from_data is not None:
        return from_data
    close = difflib.get_close_matches(str(eval_name), list(EVALS), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(f"unknown eval {eval_name!r}.{hint} Valid evals: {_names_sentence()}; or a data file by path "
                     "(shared:<path>, or a path from the project root or absolute).")


def _root_for(spec: EvalSpec) -> Path | None:
    root = shared_data_root()
    if spec.needs_data and root is None:
        raise EvalError(f"the eval {spec.name!r} needs the shared data folder ../shared/data beside the checkout "
                        "(or G2IS_SHARED_DATA pointing at it), which is not there; the built-in evals "
                        "(builtin:<task>) work without it")
    return root


def eval_records(eval_name: str | EvalSpec, *, limit: int | None = None, seed: int = 0,
                 shots: int | None = None) -> list[Record]:
    """The examples :func:`evaluate` would score, with their few-shot prompts, in order."""
    spec = get_spec(eval_name)
    root = _root_for(spec)
    k = spec.shots if shots is None else shots
    if k < 0 or k > spec.max_shots:
        raise EvalError(f"the eval {spec.name!r} takes 0 to {spec.max_shots} few-shot exemplars, not {k}")
    records = spec.load(root)
    keep = subset(len(records), limit, seed, key=spec.name,
                  groups=[r.subtask or "" for r in records] if spec.stratify else None)
    records = [records[i] for i in keep]
    return spec.prepare(records, k, root) if spec.prepare is not None else records
