"""Property tests for the loaders: generated files round-trip; junk never escapes as anything but DataError."""
from __future__ import annotations

import json
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from g2is_core.data.loaders import FORMATS, load_records
from g2is_core.data.records import DataError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that survives as a field: non-blank (empty prompts/responses are errors by design), no lone surrogates.
text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda s: s.strip())
maybe_text = st.one_of(st.just(""), text)


_DIR: list[Path] = []
_COUNT = itertools.count()


@pytest.fixture(autouse=True, scope="module")
def _scratch(tmp_path_factory):
    _DIR.append(tmp_path_factory.mktemp("props"))
    yield
    _DIR.pop()


def _write(lines: list[str] | bytes, name: str) -> Path:
    d = _DIR[-1] / f"ex{next(_COUNT)}"  # a fresh folder per example: ids use the folder name as source
    d.mkdir()
    p = d / name
    p.write_bytes(lines if isinstance(lines, bytes) else "".join(l + "\n" for l in lines).encode("utf-8"))
    return p


@SETTINGS
@given(st.lists(st.tuples(text, maybe_text, text, st.booleans()), min_size=1, max_size=8))
def test_alpaca_round_trip(rows):
    objs = [{"instruction": i, "input": x, ("output" if o else "response"): r} for i, x, r, o in rows]
    p = _write([json.dumps(o) for o in objs], "gen.jsonl")
    recs = load_records(p, "alpaca").records
    assert len(recs) == len(rows)
    for rec, (i, x, r, _) in zip(recs, rows):
        assert rec.prompt == (i + "\n\n" + x if x.strip() else i) and rec.response == r


@SETTINGS
@given(st.lists(st.lists(st.tuples(text, text), min_size=1, max_size=3), min_size=1, max_size=6),
       st.booleans())
def test_chat_round_trip(convs, sharegpt):
    objs = []
    for k, turns in enumerate(convs):
        msgs = [m for u, a in turns for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
        if sharegpt:
            msgs = [{"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in msgs]
        objs.append({"id": f"c{k}", ("conversations" if sharegpt else "messages"): msgs})
    p = _write([json.dumps(o, ensure_ascii=False) for o in objs], "gen.jsonl")
    recs = load_records(p).records
    assert [r.id for r in recs] == [f"c{k}" for k in range(len(convs))]
    for rec, turns in zip(recs, convs):
        assert [m["content"] for m in rec.messages] == [t for pair in turns for t in pair]
        assert rec.response == turns[-1][1]


@SETTINGS
@given(st.lists(st.tuples(text, text, st.booleans()), min_size=1, max_size=8))
def test_prompt_completion_round_trip(rows):
    objs = [{"prompt": p, "completion": c + "<|endoftext|>"} if eot else {"prompt": p, "response": c}
            for p, c, eot in rows]
    p = _write([json.dumps(o) for o in objs], "gen.jsonl")
    recs = load_records(p, "prompt_completion").records
    assert [(r.prompt, r.response) for r in recs] == [(p_, c) for p_, c, _ in rows]


junk_line = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"{", b"[", b"]", b"null", b"1", b'"x"', b"{}", b"[[[[", b'{"instruction": 1}',
                     b'{"messages": "x"}', b'{"prompt": "p", "completion": ""}', b"\xef\xbb\xbf{}", b"\r",
                     b'{"query": "q", "choices": [], "gold": 0}', b'{"instances": [1], "instruction": "i"}',
                     b'{"examples": [1]}', b'{"data": [{"paragraphs": [{"qas": [1], "context": "c"}]}]}',
                     b'{"message_tree_id": 1, "prompt": {"replies": [null]}}', b"a,b\n1", b"x\ty\tz",
                     b'{"instruction": "i", "output": "o"}']),
)


@SETTINGS
@given(st.lists(junk_line, max_size=6), st.sampled_from([None, *FORMATS]), st.booleans(),
       st.sampled_from(["j.jsonl", "j.json", "j.csv", "j.tsv", "j.txt"]))
def test_junk_only_raises_data_error(lines, fmt, lenient, name):
    p = _write(b"\n".join(lines), name)
    try:
        res = load_records(p, fmt, lenient=lenient, columns={"prompt": "a"} if fmt == "mapped" else None)
    except DataError:
        return
    assert res.report.n_loaded == len(res.records) > 0


# ============================================================================ naming data: DataSpec
from g2is_core.data import tasks as _tasks  # noqa: E402
from g2is_core.data.spec import DataSpec  # noqa: E402

_path_char = st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp"), blacklist_characters="?[]")
_path = st.text(_path_char, min_size=1, max_size=30).filter(
    lambda s: not s.startswith(("builtin:", "bbh-cot:", "shared:")))
_maybe = lambda strat: st.one_of(st.none(), strat)  # noqa: E731
_n = st.integers(1, 10_000)
_rows = _maybe(st.tuples(_maybe(st.integers(-99, 99)), _maybe(st.integers(-99, 99))))
_col = st.text(st.characters(whitelist_categories=("L", "N")), min_size=1, max_size=8)


@st.composite
def dataspecs(draw) -> DataSpec:
    """Any valid DataSpec, every kind and option in range."""
    kind = draw(st.sampled_from(["pool", "targets", "task", "bbh-cot", "shared", "file"]))
    limit = draw(_maybe(st.integers(1, 10_000)))
    if kind == "pool":
        return DataSpec(kind, seed=draw(_maybe(st.integers(-5, 10**6))), per_task=draw(_maybe(st.integers(0, 500))),
                        distractors=draw(_maybe(st.integers(0, 500))), per_composite=draw(_maybe(st.integers(0, 50))),
                        tasks=draw(_maybe(st.lists(st.sampled_from(list(_tasks.TASKS)), min_size=1, max_size=3)
                                          .map(tuple))), limit=limit)
    if kind in ("targets", "task"):
        names = _tasks.task_names("composite") if kind == "targets" else tuple(_tasks.TASKS)
        splits = ["dev", "test"] if kind == "targets" else list(_tasks.SPLITS)
        name = draw(st.sampled_from(([""] if kind == "targets" else []) + list(names)))
        return DataSpec(kind, name, seed=draw(_maybe(st.integers(0, 99))), n=draw(_maybe(_n)),
                        split=draw(_maybe(st.sampled_from(splits))), limit=limit)
    if kind == "bbh-cot":
        return DataSpec(kind, draw(st.from_regex(r"[a-z_]{1,20}", fullmatch=True)), limit=limit)
    return DataSpec(kind, draw(_path), rows=draw(_rows), fmt=draw(_maybe(st.sampled_from(list(FORMATS)))),
                    lenient=draw(_maybe(st.booleans())),
                    columns=draw(_maybe(st.lists(st.tuples(_col, _col), min_size=1, max_size=3).map(tuple))),
                    limit=limit)


@SETTINGS
@given(dataspecs())
def test_every_dataspec_round_trips_through_its_text(spec):
    assert DataSpec.parse(str(spec)) == spec
    assert DataSpec.parse(f"  {spec}  ") == spec
    assert str(DataSpec.parse(str(spec))) == str(spec)


@SETTINGS
@given(st.one_of(st.text(max_size=60),
                 st.builds(lambda a, b: a + b, st.sampled_from(["builtin:", "builtin:targets:", "builtin:task:",
                                                                "shared:", "bbh-cot:", "x?", "x[", "x?limit="]),
                           st.text(max_size=30))))
def test_parsing_any_text_gives_a_spec_or_a_data_error(text):
    try:
        spec = DataSpec.parse(text)
    except DataError as exc:
        assert str(exc)  # a sentence, never a bare KeyError/IndexError/TypeError
        return
    assert DataSpec.parse(str(spec)) == spec
