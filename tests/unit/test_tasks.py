"""The built-in task suite: determinism, correct answers (checked independently), disjoint splits,
the declared ground truth and the scoring normaliser."""
from __future__ import annotations

import re

import pytest

from g2is_core.data import tasks as T
from g2is_core.data.records import Record


# ---- independent oracles: parse the prompt text and recompute the answer without tasks.py code

def _nums(prompt: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", prompt)]


def _seq(prompt: str) -> list[str]:
    m = re.search(r":\s*([^.]*)\.\s*Answer", prompt)
    assert m, prompt
    return m.group(1).split()


def _table(prompt: str) -> dict[str, int]:
    m = re.match(r"Table: (.*?)\. ", prompt)
    assert m, prompt
    return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split(", "))}


def _oracle(task: str, prompt: str) -> str:
    if task == "add":
        a, b = _nums(prompt)
        return str(a + b)
    if task == "add_reverse":
        a, b = _nums(prompt)
        return "".join(reversed(str(a + b)))
    if task == "reverse":
        return " ".join(_seq(prompt)[::-1])
    if task == "sort":
        return " ".join(sorted(_seq(prompt), key=int))
    if task == "sort_desc":
        return " ".join(sorted(_seq(prompt), key=int)[::-1])
    if task == "lookup":
        key = re.search(r"value of (\w)\?", prompt).group(1)
        return str(_table(prompt)[key])
    if task == "lookup_add":
        k1, k2 = re.search(r"values of (\w) and (\w)\.", prompt).groups()
        tab = _table(prompt)
        return str(tab[k1] + tab[k2])
    if task == "upper":
        return re.search(r'"([^"]+)"', prompt).group(1).upper()
    if task == "count_letter":
        letter, word = re.findall(r'"([^"]+)"', prompt)
        return str(sum(1 for c in word if c == letter))
    if task in ("first", "last", "first_last"):
        words = re.search(r"this list: ([a-z ]+)\.", prompt).group(1).split()
        return {"first": words[0], "last": words[-1], "first_last": f"{words[0]} {words[-1]}"}[task]
    raise AssertionError(f"no oracle for {task}")


# ---- the registry and its ground truth

def test_suite_shape():
    assert len(T.task_names("basic")) + len(T.task_names("control")) >= 6
    assert len(T.task_names("control")) >= 2
    assert len(T.task_names("composite")) >= 3
    assert {"add", "reverse", "sort", "lookup"} <= set(T.task_names("basic"))
    assert {"upper", "count_letter"} <= set(T.task_names("control"))


def test_ingredients_are_basic_and_controls_unused():
    used = set()
    for t in T.TASKS.values():
        assert t.kind in T.KINDS
        if t.kind == "composite":
            assert len(t.ingredients) >= 2
            for i in t.ingredients:
                assert T.TASKS[i].kind == "basic", (t.name, i)
            used |= set(t.ingredients)
        else:
            assert t.ingredients == ()
    assert not used & set(T.task_names("control"))
    assert T.TASKS["add_reverse"].ingredients == ("add", "reverse")
    assert T.TASKS["lookup_add"].ingredients == ("lookup", "add")
    assert T.TASKS["sort_desc"].ingredients == ("sort", "reverse")


@pytest.mark.parametrize("task", list(T.TASKS))
def test_answers_match_independent_oracle(task):
    for split in T.SPLITS:
        for r in T.make_task_records(task, 60, seed=3, split=split):
            assert r.answer == r.response == _oracle(task, r.prompt), r.prompt
            assert T.is_correct(task, r.response, r.answer)
            assert len(r.prompt) <= 120   # short prompts: well under 64 tokens for a 135M model


def test_add_reverse_has_no_leading_zero():
    for r in T.make_task_records("add_reverse", 200, seed=0):
        assert not r.answer.startswith("0")


# ---- records

def test_record_fields():
    recs = T.make_task_records("lookup_add", 5, seed=7, split="dev")
    for i, r in enumerate(recs):
        assert isinstance(r, Record)
        assert r.id == f"builtin:lookup_add:dev:{i}"
        assert (r.source, r.task, r.subtask) == ("builtin", "lookup_add", None)
        assert [m["role"] for m in r.messages] == ["user", "assistant"]
        assert r.messages[-1]["content"] == r.answer
        assert r.metadata == {"kind": "composite", "ingredients": ["lookup", "add"], "seed": 7, "split": "dev"}
    assert Record.from_json(recs[0].to_json()) == recs[0]


def test_determinism_and_seed_dependence():
    for task in T.TASKS:
        a = [r.to_json() for r in T.make_task_records(task, 30, seed=11)]
        b = [r.to_json() for r in T.make_task_records(task, 30, seed=11)]
        c = [r.to_json() for r in T.make_task_records(task, 30, seed=12)]
        assert a == b
        assert [x["messages"] for x in a] != [x["messages"] for x in c]
    p1, p2 = T.make_pool(seed=5, per_task=20, distractors=30), T.make_pool(seed=5, per_task=20, distractors=30)
    assert [r.to_json() for r in p1] == [r.to_json() for r in p2]
    assert [r.prompt for r in p1] != [r.prompt for r in T.make_pool(seed=6, per_task=20, distractors=30)]


def test_prefix_stability():
    """A larger n extends a smaller one: adding data never reshuffles what came before."""
    small = T.make_task_records("sort", 10, seed=2)
    big = T.make_task_records("sort", 40, seed=2)
    assert [r.to_json() for r in big[:10]] == [r.to_json() for r in small]


def test_no_duplicates_within_a_split():
    for task in T.TASKS:
        prompts = [r.prompt for r in T.make_task_records(task, 100, seed=0)]
        assert len(set(prompts)) == len(prompts)


def test_splits_disjoint_across_seeds():
    for task in T.TASKS:
        by_split = {s: set() for s in T.SPLITS}
        for seed in (0, 1):
            for s in T.SPLITS:
                recs = T.make_task_records(task, 40, seed=seed, split=s)
                assert all(T.split_of(task, r.prompt) == s for r in recs)
                by_split[s] |= {r.prompt for r in recs}
        assert not by_split["train"] & by_split["dev"]
        assert not by_split["train"] & by_split["test"]
        assert not by_split["dev"] & by_split["test"]


def test_unknown_split_and_exhaustion_are_clear_errors():
    with pytest.raises(ValueError, match="unknown split"):
        T.make_task_records("add", 1, split="validation")
    with pytest.raises(ValueError, match="fewer"):
        T.make_distractor_records(5000)
    with pytest.raises(KeyError, match="unknown built-in task"):
        T.make_task_records("nope", 1)


# ---- pool, targets, relevance

def test_default_pool_and_targets():
    pool = T.make_pool()
    assert 1000 <= len(pool) <= 2000
    ids = [r.id for r in pool]
    assert len(set(ids)) == len(ids)
    counts = pool.counts()
    assert set(counts) == set(T.SUITE_V1) | {"distractor"}   # the default pool keeps the first suite's data
    assert len(pool) == 1440
    dis = [r for r in pool if r.task == "distractor"]
    assert {r.subtask for r in dis} == set(T.DISTRACTORS)
    assert all(r.answer and r.response == r.answer for r in dis)
    assert all(r.metadata["kind"] == "distractor" for r in dis)

    targets = T.make_targets()   # the first suite's composites; a later one by name
    assert set(targets) == {n for n in T.task_names("composite") if n in T.SUITE_V1}
    assert set(T.make_targets(tasks=["first_last"])) == {"first_last"}
    pool_prompts = {r.prompt for r in pool}
    for name, recs in targets.items():
        assert 16 <= len(recs) <= 32
        assert all(r.task == name and r.metadata["split"] == "dev" for r in recs)
        assert not pool_prompts & {r.prompt for r in recs}


def test_pool_options():
    pool = T.make_pool(seed=1, per_task=10, distractors=7, per_composite=3, tasks=["add", "reverse", "add_reverse"])
    assert pool.counts() == {"add": 10, "reverse": 10, "add_reverse": 3, "distractor": 7}


def test_relevance_follows_rule():
    pool = T.make_pool(seed=0, per_task=15, distractors=20)
    for target in pool.targets:
        ing = set(T.TASKS[target].ingredients)
        rel = pool.relevance(target)
        assert set(rel) == {r.id for r in pool}
        for r in pool:
            expected = 2 if r.task == target else 1 if r.task in ing else 0
            assert rel[r.id] == expected, (target, r.id)
        assert pool.relevant_ids(target) == {r.id for r in pool if r.task == target or r.task in ing}
    rel = pool.relevance("add_reverse")
    by_task = {}
    for r in pool:
        by_task.setdefault(r.task, set()).add(rel[r.id])
    assert by_task == {"add_reverse": {2}, "add": {1}, "reverse": {1}, "sort": {0}, "lookup": {0},
                       "upper": {0}, "count_letter": {0}, "lookup_add": {0}, "sort_desc": {0},
                       "distractor": {0}}
    with pytest.raises(ValueError, match="not a composite"):
        pool.relevance("add")


def test_describe_suite():
    rows = T.describe_suite()
    assert [r["name"] for r in rows] == list(T.TASKS)
    for r in rows:
        assert set(r) == {"name", "kind", "ingredients", "description", "example_prompt", "example_answer"}
        assert r["example_answer"] == _oracle(r["name"], r["example_prompt"])
    assert rows == T.describe_suite()


# ---- scoring

@pytest.mark.parametrize("task,text,expected", [
    ("add", "  122\n", "122"),
    ("add", "122.", "122"),
    ("add", "Answer: 122", "122"),
    ("add", "The answer is 1,234.", "1234"),
    ("add", '"122"', "122"),
    ("add", "122\nBecause 37 + 85 = 122.", "122"),
    ("add", "\n\n 99 ", "99"),
    ("add", "", ""),
    ("add", None, ""),
    ("sort", "2, 4, 7, 9", "2 4 7 9"),
    ("sort", "2  4 7 9.", "2 4 7 9"),
    ("reverse", "M A T Q K", "m a t q k"),
    ("upper", "RED CUP.", "RED CUP"),
    ("upper", "red cup", "red cup"),
    ("count_letter", "3!", "3"),
    ("distractor", "Paris.", "paris"),
    ("capital", "  Mexico City", "mexico city"),
])
def test_extract_answer(task, text, expected):
    assert T.extract_answer(task, text) == expected


def test_is_correct():
    assert T.is_correct("add", "Answer: 122.", "122")
    assert not T.is_correct("add", "121", "122")
    assert not T.is_correct("add", "1 22", "122")
    assert T.is_correct("sort_desc", "9, 7, 4, 2", "9 7 4 2")
    assert not T.is_correct("sort_desc", "9742", "9 7 4 2")
    assert T.is_correct("upper", "RED CUP", "RED CUP")
    assert not T.is_correct("upper", "Red cup", "RED CUP")
    assert T.is_correct("reverse", "m a t q k", "M A T Q K")
    assert T.is_correct("distractor", "The old man wrote a letter", "The old man wrote a letter.")


def test_at_most_takes_what_a_small_split_has():
    """upper's test split has fewer distinct prompts than 200: strict draws refuse, at_most returns them all,
    the same ones each time, and a smaller request is a prefix (the evals' builtin:upper relies on it)."""
    with pytest.raises(ValueError, match="fewer than 200 distinct test prompts"):
        T.make_task_records("upper", 200, seed=0, split="test")
    got = T.make_task_records("upper", 200, seed=0, split="test", at_most=True)
    assert 100 < len(got) < 200 and len({r.prompt for r in got}) == len(got)
    assert [r.id for r in got] == [r.id for r in T.make_task_records("upper", 200, seed=0, split="test", at_most=True)]
    assert [r.prompt for r in T.make_task_records("upper", 50, seed=0, split="test")] == [r.prompt for r in got[:50]]
    assert len(T.make_task_records("add", 200, seed=0, split="test", at_most=True)) == 200
