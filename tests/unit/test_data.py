"""Loaders: real files from every family in shared/data (known counts and answers), and every kind of
bad input on tiny hand-made files (the error names the file and the line)."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from g2is_core.data.loaders import (FORMATS, bbh_cot_exemplars, data_hash, detect_format, export_chat, export_original,
                            iter_records, load_bbh_cot_prompt, load_records, read_records_jsonl,
                            save_records_jsonl)
from g2is_core.data.records import DataError, Record, simple

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture(scope="module")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data folder {SHARED} is absent")
    return SHARED


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    p.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    return p


def jl(*objs) -> str:
    return "".join(json.dumps(o) + "\n" for o in objs)


# ============================================================================ real data
@pytest.mark.parametrize("rel, fmt, n", [
    ("gsm8k/train.jsonl.gz", "gsm8k", 7473),
    ("gpteacher/codegen-instruct.json.gz", "alpaca", 4535),
    ("dolly_hhrlhf_small/dolly_hhrlhf_train_small.jsonl", "prompt_completion", 1000),
    ("oasst_en100/en_100_tree.jsonl", "oasst_tree", 100),
    ("oasst_en100/en_100_message.jsonl", "oasst_message", 100),
    ("oasst_en100/prompt_lottery_en_250_text.jsonl", "text_lines", 250),
    ("self_instruct/seed_tasks.jsonl", "self_instruct", 175),
    ("self_instruct/user_oriented_instructions.jsonl", "self_instruct", 252),
    ("bbh/bbh/boolean_expressions.json", "bbh", 250),
    ("bbh/bbh/penguins_in_a_table.json", "bbh", 146),
    ("tydiqa_goldp/dev/english_tydiqa_dev.json", "tydiqa", 440),
    ("llm_adapters_tasks/ARC-Easy/test.json", "llm_adapters", 2376),
    ("llm_adapters_tasks/boolq/test.json", "llm_adapters", 3270),
    ("mosaic_eval_gauntlet/winogrande.jsonl", "foundry_eval", 1267),
    ("mosaic_eval_gauntlet/svamp.jsonl", "foundry_eval", 300),
    ("mosaic_eval_gauntlet/copa.jsonl", "foundry_eval", 100),
    ("flan_v2_cot/gsm8k_train.tsv.gz", "flan_cot", 7473),
    ("flan_v2_cot/creak_train.tsv.gz", "flan_cot", 6915),
    ("t0_train_50k/data_per_template/adversarial_qa_dbert_based_on.jsonl.gz", "t0", 200),
    ("mmlu/data/dev/abstract_algebra_dev.csv", "mmlu", 5),
])
def test_real_file_loads_with_known_count(shared, rel, fmt, n):
    path = shared / rel
    assert detect_format(path) == fmt
    res = load_records(path)
    assert res.report.fmt == fmt and res.report.n_loaded == n == len(res.records) and not res.report.skipped
    assert len({r.id for r in res.records}) == n
    assert all(r.fmt == fmt and r.messages[0]["content"].strip() for r in res.records)
    if fmt != "text_lines":
        assert all(r.has_response for r in res.records)


def test_gsm8k_answer_and_source(shared):
    r = load_records(shared / "gsm8k" / "train.jsonl.gz", limit=2).records
    assert r[0].answer == "72" and r[0].source == "gsm8k" and r[0].task == "gsm8k"
    assert r[0].id == "gsm8k:train:1" and r[0].response.endswith("#### 72")
    assert r[0].prompt.startswith("Natalia sold clips")


def test_code_alpaca_has_two_empty_outputs(shared):
    path = shared / "code_alpaca" / "code_alpaca_2k.json"
    with pytest.raises(DataError, match=r"code_alpaca_2k\.json, line \d+, field 'output'"):
        load_records(path)
    res = load_records(path, lenient=True)
    assert res.report.n_read == 2017 and res.report.n_loaded == 2015
    assert len(res.report.skipped) == 2 and all("'output'" in why for _, why in res.report.skipped)
    ids = {r.id for r in res.records}
    assert "code_alpaca:code_alpaca_2k:0" in ids and "code_alpaca:code_alpaca_2k:237" not in ids


def test_gpteacher_response_key(shared):
    r = load_records(shared / "gpteacher" / "roleplay-simple-deduped-roleplay-instruct.json.gz", limit=1).records[0]
    assert r.source == "gpteacher" and r.response and r.raw["response"] == r.response


def test_mmlu_dev_folder(shared):
    res = load_records(shared / "mmlu" / "data" / "dev")
    assert res.report.n_loaded == 285 and len(res.report.files) == 57
    first = res.records[0]  # abstract_algebra_dev.csv, row 1: "Find all c in Z_3 ...", answer B
    assert first.task == "mmlu" and first.subtask == "abstract_algebra"
    assert first.choices == ("0", "1", "2", "3") and first.gold == 1 and first.answer == "B" == first.response
    assert first.prompt.rstrip().endswith("Answer:") and "D. 3" in first.prompt
    assert {r.subtask for r in res.records} >= {"high_school_european_history", "world_religions"}


def test_mmlu_crlf_files_and_multiline_fields(shared):
    # moral_disputes_dev.csv has CRLF row ends; high_school_european_history has quoted multi-line questions.
    for name in ("moral_disputes_dev.csv", "high_school_european_history_dev.csv"):
        res = load_records(shared / "mmlu" / "data" / "dev" / name)
        assert res.report.n_loaded == 5
        assert all("\r" not in c for r in res.records for c in r.choices)


def test_bbh_folder_and_cot_prompt(shared):
    res = load_records(shared / "bbh" / "bbh")
    assert res.report.n_loaded == 5333 and len(res.report.files) == 22
    r = res.records[0]
    assert r.task == "bbh" and r.subtask == "boolean_expressions" and r.answer == r.response == "False"
    prompt = load_bbh_cot_prompt("boolean_expressions")
    assert "canary" not in prompt and not prompt.startswith("-----")
    assert prompt.startswith("Evaluate the result of a random Boolean expression.\n\nQ:")
    assert load_bbh_cot_prompt(shared / "bbh" / "cot-prompts" / "boolean_expressions.txt") == prompt
    ex = bbh_cot_exemplars("boolean_expressions")
    assert len(ex) == 3 and ex[0].answer == "False" and ex[0].prompt == "not ( ( not not True ) ) is"
    with pytest.raises(DataError, match="no BBH CoT prompt"):
        load_bbh_cot_prompt("no_such_task")


def test_tydiqa(shared):
    res = load_records(shared / "tydiqa_goldp" / "dev")
    assert res.report.n_loaded == 5077
    en = [r for r in res.records if r.subtask == "english"]
    assert len(en) == 440
    r = en[0]
    assert r.id.startswith("english-") and "Passage:" in r.prompt and r.answer == r.response
    assert r.metadata["answers"][0] == r.answer


def test_tydiqa_dev_train_overlap_is_reported(shared):
    # Surprise in the real data: 4 questions (2 Korean, 2 Swahili) are in both dev and train.
    with pytest.raises(DataError, match="duplicate id"):
        load_records(shared / "tydiqa_goldp")
    res = load_records(shared / "tydiqa_goldp", lenient=True)
    assert len(res.report.skipped) == 4 and res.report.n_loaded == 5077 + 8076 - 4


def test_llm_adapters_choices(shared):
    arc = load_records(shared / "llm_adapters_tasks" / "ARC-Easy" / "test.json", limit=1).records[0]
    assert arc.task == "arc_easy" and arc.answer == "answer1" and arc.gold == 0 and len(arc.choices) == 4
    assert arc.choices[0] == "Sunlight is the source of energy for nearly all ecosystems."
    boolq = load_records(shared / "llm_adapters_tasks" / "boolq" / "test.json", limit=1).records[0]
    assert boolq.choices == ("true", "false") and boolq.gold == 1 and boolq.answer == "false"
    allres = load_records(shared / "llm_adapters_tasks")
    assert allres.report.n_loaded == 1119 + 2251 + 2376 + 9427 + 3270 + 4957 + 500
    assert all(r.gold is not None and r.choices[r.gold] for r in allres.records)


def test_foundry_eval_shapes(shared):
    g = shared / "mosaic_eval_gauntlet"
    wino = load_records(g / "winogrande.jsonl", limit=1).records[0]
    assert wino.gold == 1 and wino.prompt == wino.choices[1] and wino.response == "always got the easier cases."
    sv = load_records(g / "svamp.jsonl", limit=1).records[0]
    assert sv.answer == "1" and sv.response.endswith("So the answer is 1")
    copa = load_records(g / "copa.jsonl", limit=1).records[0]
    assert copa.gold == 1 and copa.response == "water flowed from the spout."
    assert load_records(g).report.n_loaded == 1221 + 100 + 1838 + 1954 + 1267 + 300 + 245


def test_flan_cot(shared):
    res = load_records(shared / "flan_v2_cot" / "aqua_train.tsv.gz", limit=1)
    r = res.records[0]
    assert r.subtask == "aqua" and r.answer == "(C)" and "\\n" not in r.prompt and "\nOptions:\n(A) 300" in r.prompt
    assert r.response.endswith(" So the answer is (C)")
    # The folder: the six CoT files load; the metadata table is skipped (no prompt column) and reported.
    folder = load_records(shared / "flan_v2_cot")
    assert folder.report.n_loaded == 33443
    assert [Path(f).name for f, _ in folder.report.skipped_files] == ["flan_collection_info.csv"]


def test_flan_collection_info_table(shared):
    path = shared / "flan_v2_cot" / "flan_collection_info.csv"
    with pytest.raises(DataError, match=r"no prompt column.*'Specific Task Category'.*columns="):
        load_records(path)
    res = load_records(path, columns={"prompt": "Specific Task Category", "task": "Dataset"})
    assert res.report.n_loaded == 1945  # 1,946 rows with the header
    r = res.records[0]
    assert r.task == "cot_gsm8k" and r.metadata["prompt_only"] and not r.has_response
    with pytest.raises(DataError, match=r"missing column\(s\) 'nope'"):
        load_records(path, columns={"prompt": "nope"})


def test_t0_folder_empty_trec_completions(shared):
    folder = shared / "t0_train_50k" / "data_per_template"
    with pytest.raises(DataError, match=r"trec_.*line 1, field 'completion'"):
        load_records(folder)
    res = load_records(folder, lenient=True)
    assert res.report.n_read == 55185 and len(res.report.files) == 283
    assert len(res.report.skipped) == 1400 and res.report.n_loaded == 55185 - 1400
    r = res.records[0]
    assert r.task == "t0" and r.subtask == "adversarial_qa_dbert_answer_the_following_q"
    assert r.metadata["dataset"] == "adversarial_qa" and not r.response.endswith("<|endoftext|>")
    assert r.source == "t0_train_50k"


def test_dolly_alpaca_wrapper_is_unwrapped(shared):
    r = load_records(shared / "dolly_hhrlhf_small" / "dolly_hhrlhf_train_small.jsonl", limit=1).records[0]
    assert r.prompt == "what is kangen water?" and r.metadata["template"] == "alpaca"
    assert r.raw["prompt"].startswith("Below is an instruction")


def test_oasst_best_ranked_chain(shared):
    tree = load_records(shared / "oasst_en100" / "en_100_tree.jsonl").records
    first = tree[0]
    assert first.id == "054e1df3-35e0-4bb8-a585-607dbdcd24e0"
    assert [m["role"] for m in first.messages] == ["user", "assistant"]
    assert first.response.startswith("The first step is to research your options")  # the rank-0 reply
    assert all(r.messages[-1]["role"] == "assistant" for r in tree)
    text = load_records(shared / "oasst_en100" / "en_100_text.jsonl").records
    assert text[0].metadata["prompt_only"] and text[0].response == ""


# ============================================================================ synthetic formats
def test_alpaca_jsonl_prompt_join(tmp_path):
    p = write(tmp_path, "a.jsonl", jl({"instruction": "Add", "input": "1+1", "output": "2"},
                                      {"instruction": "Say hi", "input": "", "output": "hi"},
                                      {"instruction": "Say hi", "input": None, "output": "hi"}))
    recs = load_records(p).records
    assert [r.prompt for r in recs] == ["Add\n\n1+1", "Say hi", "Say hi"]
    assert recs[0].id == f"{tmp_path.name}:a:1" and recs[1].id.endswith(":a:2")


def test_chat_openai_and_sharegpt(tmp_path):
    p = write(tmp_path, "c.jsonl", jl(
        {"id": "x1", "messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                           {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}))
    a, b = load_records(p).records
    assert a.id == "x1" and a.messages[0]["role"] == "system" and a.response == "hello"
    assert b.prompt == "q2" and b.response == "a2" and len(b.messages) == 4


def test_generic_csv_tsv_and_mapped(tmp_path):
    c = write(tmp_path, "t.csv", 'question,answer,id\r\n"multi\r\nline",42,q1\r\n')
    r = load_records(c).records[0]  # columns guessed from the header names
    assert r.prompt == "multi\nline" and r.response == "42" and r.id == "q1"
    t = write(tmp_path, "t.tsv", "q\ta\textra\nwhat\tthat\tmeta\n")
    r = load_records(t, columns={"prompt": "q", "response": "a"}).records[0]
    assert (r.prompt, r.response, r.metadata) == ("what", "that", {"extra": "meta"})
    m = write(tmp_path, "m.jsonl", jl({"q": "x", "a": "y"}))
    assert load_records(m, "mapped", columns={"prompt": "q", "response": "a"}).records[0].response == "y"


def test_self_instruct_multi_instance(tmp_path):
    p = write(tmp_path, "s.jsonl", jl({"id": "t0", "instruction": "Do", "instances": [
        {"input": "a", "output": "b"}, {"input": "", "output": "c"}]}))
    recs = load_records(p).records
    assert [r.id for r in recs] == ["t0#0", "t0#1"] and recs[0].prompt == "Do\n\na"
    assert recs[1].raw["instances"] == [{"input": "", "output": "c"}]


def test_gzip_by_magic_bom_crlf(tmp_path):
    body = jl({"question": "q", "answer": "work\n#### 1,234"}).replace("\n", "\r\n")
    p = write(tmp_path, "g.jsonl", b"")
    p.write_bytes(gzip.compress(b"\xef\xbb\xbf" + body.encode()))  # gzip without a .gz name
    r = load_records(p).records[0]
    assert r.answer == "1234" and r.fmt == "gsm8k"
    q = write(tmp_path, "g2.json.gz", "\ufeff" + json.dumps([{"instruction": "i", "output": "o"}]))
    assert load_records(q).records[0].response == "o"


def test_limit_and_streaming(tmp_path):
    p = write(tmp_path, "a.jsonl", jl(*({"instruction": f"i{k}", "output": "o"} for k in range(10))))
    res = load_records(p, limit=3)
    assert len(res.records) == 3 and res.report.truncated
    it = iter_records(p)
    assert next(it).prompt == "i0"
    it.close()
    assert load_records(p, source="mine", task="t").records[0].id == "mine:a:1"
    assert load_records(p, source="mine", task="t").records[0].task == "t"


# ============================================================================ bad input
def _fails(path: Path, line: int | None, match: str, **kw) -> DataError:
    with pytest.raises(DataError) as ei:
        load_records(path, **kw)
    msg = str(ei.value)
    assert str(path) in msg, msg
    if line is not None:
        assert f"line {line}" in msg, msg
    assert match in msg, msg
    return ei.value


GOOD = {"instruction": "i", "output": "o"}


def test_malformed_json_line(tmp_path):
    p = write(tmp_path, "a.jsonl", jl(GOOD) + '{"instruction": "i", "output": \n' + jl(GOOD))
    e = _fails(p, 2, "not valid JSON")
    assert e.line == 2 and e.path == str(p)
    res = load_records(p, lenient=True)
    assert res.report.n_loaded == 2 and res.report.n_read == 3 and res.report.skipped[0][0] == 2
    assert "line 2" in res.report.skipped[0][1]


def test_missing_field_and_wrong_type(tmp_path):
    p = write(tmp_path, "a.jsonl", jl(GOOD, {"instruction": "i"}))
    _fails(p, 2, "missing field 'output' or 'response'", fmt="alpaca")
    q = write(tmp_path, "b.jsonl", jl(GOOD, {"instruction": ["i"], "output": "o"}))
    e = _fails(q, 2, "expected text", fmt="alpaca")
    assert e.field == "instruction"
    r = write(tmp_path, "c.jsonl", jl(GOOD, [1, 2]))
    _fails(r, 2, "expected a JSON object", fmt="alpaca")


def test_empty_response(tmp_path):
    p = write(tmp_path, "a.jsonl", jl(GOOD, {"instruction": "i", "output": "  "}))
    e = _fails(p, 2, "field is empty")
    assert e.field == "output"


def test_invalid_utf8(tmp_path):
    p = write(tmp_path, "a.jsonl", jl(GOOD).encode() + b'{"instruction": "\xff", "output": "o"}\n' + jl(GOOD).encode())
    _fails(p, 2, "invalid UTF-8")
    assert load_records(p, lenient=True).report.n_loaded == 2
    j = write(tmp_path, "a.json", b'[\n{"instruction": "i", "output": "o"},\n{"instruction": "\xff", "output": "o"}]')
    _fails(j, 3, "invalid UTF-8", fmt="alpaca")


def test_json_list_error_names_element_line(tmp_path):
    p = write(tmp_path, "a.json", '[\n  {"instruction": "i", "output": "o"},\n  {"instruction": "i"}\n]')
    _fails(p, 3, "missing field", fmt="alpaca")
    q = write(tmp_path, "b.json", '[\n  {"instruction": "i", "output": "o"},\n  {"instruction": "i",,}\n]')
    _fails(q, 3, "not valid JSON", fmt="alpaca", lenient=True)  # a broken JSON document is fatal


def test_duplicate_ids(tmp_path):
    p = write(tmp_path, "c.jsonl", jl(*({"id": "same", "messages": [{"role": "user", "content": "u"},
                                                                   {"role": "assistant", "content": "a"}]},) * 2))
    _fails(p, 2, "duplicate id 'same' (first seen at c.jsonl line 1)")
    res = load_records(p, lenient=True)
    assert res.report.n_loaded == 1 and "duplicate" in res.report.skipped[0][1]


def test_zero_records(tmp_path):
    _fails(write(tmp_path, "empty.jsonl", ""), None, "empty", fmt="alpaca")
    _fails(write(tmp_path, "empty2.jsonl", "\n\n"), None, "no records were loaded", fmt="alpaca")
    bad = write(tmp_path, "allbad.jsonl", jl({"instruction": "i"}))
    _fails(bad, None, "no records were loaded", fmt="alpaca", lenient=True)
    _fails(write(tmp_path, "empty.json", "[]"), None, "empty")


def test_csv_errors(tmp_path):
    p = write(tmp_path, "m_dev.csv", "q,a,b,c,d,B\nq2,a,b,c,d,E\n")
    _fails(p, 2, "expected one of A, B, C, D")
    q = write(tmp_path, "t.csv", "prompt,response\nx,y,z\n")
    _fails(q, 2, "the row has 3 fields but the header has 2")
    r = write(tmp_path, "u.csv", 'prompt,response\n"x,y\n')
    _fails(r, 2, "malformed CSV row")


def test_chat_errors(tmp_path):
    p = write(tmp_path, "c.jsonl", jl({"messages": [{"role": "robot", "content": "x"}]}))
    _fails(p, 1, "role 'robot'")
    q = write(tmp_path, "d.jsonl", jl({"messages": [{"role": "user", "content": "x"}]}))
    _fails(q, 1, "no non-empty assistant message")


def test_structure_surprises_become_data_errors(tmp_path):
    p = write(tmp_path, "f.jsonl", jl({"query": "q", "choices": ["a"], "gold": 3}))
    _fails(p, 1, "out of range")
    q = write(tmp_path, "o.jsonl", jl({"message_tree_id": "t", "prompt": {"role": "prompter", "text": "hi",
                                                                         "replies": "nope"}}))
    _fails(q, 1, "replies that are not a list")
    r = write(tmp_path, "tydi.json", json.dumps({"data": [{"title": "t", "paragraphs": [
        {"context": "c", "qas": [{"id": "english-1", "question": "q", "answers": []}]}]}]}))
    _fails(r, None, "question english-1: has no answer text")


def test_unknown_format_and_undetectable(tmp_path):
    p = write(tmp_path, "x.jsonl", jl({"foo": 1}))
    _fails(p, None, "cannot tell the format")
    _fails(p, None, "unknown format 'nope'", fmt="nope")
    with pytest.raises(DataError, match="no such file"):
        load_records(tmp_path / "missing.jsonl")


def test_corrupt_gzip(tmp_path):
    p = tmp_path / "a.jsonl.gz"
    p.write_bytes(gzip.compress(jl(GOOD).encode() * 50)[:40])
    with pytest.raises(DataError, match="could not read the file"):
        load_records(p, fmt="alpaca")


# ============================================================================ save / export / hash
def _recs() -> list[Record]:
    return [simple("a", "p1", "r1", source="s", task="t", answer="1", choices=("x", "y"), gold=0,
                   metadata={"k": [1]}, raw={"instruction": "p1", "output": "r1"}, fmt="alpaca"),
            simple("b", "p2", "r2", source="s", task="t", system="sys", raw={"instruction": "p2", "output": "r2"})]


@pytest.mark.parametrize("name", ["recs.jsonl", "recs.jsonl.gz"])
def test_save_and_read_round_trip(tmp_path, name):
    recs = _recs()
    path = save_records_jsonl(recs, tmp_path / name)
    assert read_records_jsonl(path) == recs
    assert detect_format(path) == "records" and load_records(path).records == recs


def test_export_original_and_chat(tmp_path):
    recs = _recs()
    orig = export_original(recs, tmp_path / "orig.jsonl")
    assert load_records(orig).records[0].prompt == "p1"
    chat = export_chat(recs, tmp_path / "chat.jsonl")
    back = load_records(chat).records
    assert [r.messages for r in back] == [r.messages for r in recs] and back[1].id == "b"
    with pytest.raises(DataError, match="no original object"):
        export_original([simple("z", "p", "r", source="s", task="t")], tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()  # atomic: nothing half-written


def test_data_hash():
    a, b = _recs()
    assert data_hash([a, b]) == data_hash(list(_recs()))
    assert data_hash([a, b]) != data_hash([b, a])
    assert data_hash([a]) != data_hash([simple("a", "p1", "r1 ", source="s", task="t")])
    import dataclasses
    assert data_hash([a]) == data_hash([dataclasses.replace(a, metadata={"other": 1})])


def test_every_format_is_documented():
    assert set(FORMATS) >= {"alpaca", "llm_adapters", "prompt_completion", "chat", "csv", "tsv", "gsm8k", "bbh",
                            "mmlu", "tydiqa", "flan_cot", "t0", "foundry_eval", "oasst_tree", "oasst_message",
                            "text_lines", "self_instruct"}
    assert all(f.doc for f in FORMATS.values())


# ============================================================================ naming data: DataSpec
import dataclasses  # noqa: E402
import random  # noqa: E402

from g2is_core.data import tasks as T  # noqa: E402
from g2is_core.data.spec import GRAMMAR, KINDS, OPTIONS, DataSpec  # noqa: E402

BBH_PROMPT = ("BIG-Bench Hard canary GUID 0000\n-----\nCount the things.\n\nQ: How many apples in 'apple apple'?\n"
              "A: Let's think step by step. Two apples. So the answer is 2.\n\nQ: How many pears in 'pear'?\n"
              "A: One pear. So the answer is 1.\n")


def _old_resolve_data(spec: str, fmt=None, seed: int = 0, limit: int = 0):
    """cli/grads.resolve_data before DataSpec, verbatim but for the imports: the reference route."""
    if spec.startswith("builtin:"):
        parts = spec.split(":")
        if parts[1] == "pool" and len(parts) == 2:
            recs = list(T.make_pool(seed).records)
        elif parts[1] == "targets":
            tg = T.make_targets(seed)
            recs = list(tg[parts[2]]) if len(parts) == 3 else [r for name in sorted(tg) for r in tg[name]]
        else:
            raise AssertionError("not an old CLI spelling")
        desc = f"{spec} (seed {seed})"
    else:
        recs = list(load_records(spec, fmt).records)
        desc = spec
    if limit > 0:
        recs = recs[:limit]
        desc += f" (first {limit})"
    return recs, data_hash(recs), desc


def _old_resolve(path: str) -> Path:
    from g2is_core.workspace import PROJECT_ROOT, shared_data_root

    if path.startswith("shared:"):
        return shared_data_root() / path.split(":", 1)[1]
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p


def _old_load_target(select: str, n: int, seed: int = 0):
    """loop/experiment.load_target before DataSpec: the reference route."""
    if select.startswith("builtin:"):
        return T.make_targets(seed=seed, n_per_target=n)[select.split(":", 1)[1]]
    if select.startswith("bbh-cot:"):
        return bbh_cot_exemplars(_old_resolve("shared:bbh/cot-prompts") / f"{select.split(':', 1)[1]}.txt")[:n]
    path, lo, hi = select, None, None
    if select.endswith("]") and "[" in select:
        path, rng = select[:-1].rsplit("[", 1)
        a, _, b = rng.partition(":")
        lo, hi = (int(a) if a else None), (int(b) if b else None)
    recs = load_records(_old_resolve(path), lenient=True).records[lo:hi]
    if len(recs) > n:
        recs = random.Random(seed).sample(recs, n)
    return recs


def _old_load_pool(pool: dict):
    if "builtin" in pool:
        return list(T.make_pool(**(pool["builtin"] or {})).records)
    rng = random.Random(pool.get("seed", 0))
    out = []
    for f in pool["files"]:
        recs = load_records(_old_resolve(f), lenient=True).records
        k = pool.get("per_file")
        if k and len(recs) > k:
            recs = rng.sample(recs, k)
        out += recs
    return out


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch) -> Path:
    """A hand-made shared data root: a JSONL of 12 Alpaca rows (1 bad line) and a BBH CoT prompt."""
    root = tmp_path / "shared"
    rows = [{"instruction": f"Say {i}", "input": "", "output": str(i)} for i in range(12)]
    (root / "alpaca" / "x").mkdir(parents=True)
    write(root / "alpaca" / "x", "rows.jsonl", jl(*rows[:5]) + "{bad\n" + jl(*rows[5:]))
    (root / "bbh" / "cot-prompts").mkdir(parents=True)
    (root / "bbh" / "cot-prompts" / "counting.txt").write_text(BBH_PROMPT)
    monkeypatch.setenv("G2IS_SHARED_DATA", str(root))
    return root


@pytest.mark.parametrize("text, kind, name, canonical", [
    ("builtin:pool", "pool", "", "builtin:pool"),
    ("builtin:targets", "targets", "", "builtin:targets"),
    ("builtin:targets:add_reverse", "targets", "add_reverse", "builtin:targets:add_reverse"),
    ("builtin:add_reverse", "targets", "add_reverse", "builtin:targets:add_reverse"),   # the spec files' spelling
    ("builtin:task:count_letter?n=7&split=test", "task", "count_letter", "builtin:task:count_letter?n=7&split=test"),
    ("bbh-cot:object_counting", "bbh-cot", "object_counting", "bbh-cot:object_counting"),
    ("shared:gsm8k/train.jsonl.gz[0:6000]", "shared", "gsm8k/train.jsonl.gz", "shared:gsm8k/train.jsonl.gz[0:6000]"),
    ("  data/x.jsonl?limit=3&fmt=alpaca ", "file", "data/x.jsonl", "data/x.jsonl?fmt=alpaca&limit=3"),
    ("/abs/t.csv[-5:]?columns=prompt:q,response:a&lenient=yes", "file", "/abs/t.csv",
     "/abs/t.csv[-5:]?lenient=true&columns=prompt:q,response:a"),
    ("odd?name.jsonl", "file", "odd?name.jsonl", "odd?name.jsonl"),      # a '?' without key=value is the path's
    ("builtin:pool?seed=3&per_task=5&distractors=0&tasks=add,sort&limit=0", "pool", "",
     "builtin:pool?seed=3&per_task=5&distractors=0&tasks=add,sort"),   # limit=0 means all: nothing to print
])
def test_dataspec_parses_every_form_and_round_trips(text, kind, name, canonical):
    s = DataSpec.parse(text)
    assert (s.kind, s.name, str(s)) == (kind, name, canonical)
    assert DataSpec.parse(str(s)) == s and hash(DataSpec.parse(str(s))) == hash(s)


def test_dataspec_fields_and_describe():
    s = DataSpec.parse("shared:a/b.tsv[2:]?fmt=tsv&columns=prompt:q,response:a&lenient=false&limit=4")
    assert (s.rows, s.fmt, s.columns, s.lenient, s.limit) == ((2, None), "tsv", (("prompt", "q"), ("response", "a")),
                                                               False, 4)
    assert s.describe() == "shared:a/b.tsv[2:] (first 4)"
    assert DataSpec.parse("builtin:pool").describe() == "builtin:pool (seed 0)"
    assert DataSpec.parse("builtin:targets:sort_desc?seed=2&limit=5").describe() == \
        "builtin:targets:sort_desc (seed 2) (first 5)"
    # --fmt/--data-seed/--limit fill what the text leaves unset, only where the kind takes them; the text wins
    f = DataSpec.parse("x.jsonl?limit=2").fill(fmt="alpaca", seed=7, limit=9)
    assert (f.fmt, f.seed, f.limit) == ("alpaca", None, 2)
    assert DataSpec.parse("builtin:pool").fill(fmt="csv", seed=7, limit=0) == DataSpec(kind="pool", seed=7)
    assert set(KINDS) == {"pool", "targets", "task", "bbh-cot", "shared", "file"}
    # every option is a field and every field but the source is an option: the registry drives the grammar
    assert [f.name for f in dataclasses.fields(DataSpec)][3:] == list(OPTIONS)


@pytest.mark.parametrize("text, says", [
    ("", "no data named; give builtin:pool"),
    ("builtin:nope", "unknown built-in data; use builtin:pool, builtin:targets, builtin:targets:<composite> or "
                     "builtin:task:<task>"),
    ("builtin:add", "name its records builtin:task:add"),                 # a basic task is not a target...
    ("builtin:add", "builtin:add is also the name of its evaluation"),    # ...and the eval of the same name is said
    ("builtin:targets:<script>", "no such target '<script>'; use one of add_reverse, lookup_add, sort_desc"),
    ("builtin:targets:add", "no such target 'add'"),
    ("builtin:task:nope", "unknown built-in task 'nope'; use one of add"),
    ("builtin:pool?fmt=csv", "option fmt= does not apply to builtin:pool; it takes seed, per_task"),
    ("x.jsonl?seed=1", "option seed= does not apply to <path>"),
    ("x.jsonl?colour=red", "unknown option 'colour'; options are seed, n, split"),
    ("x.jsonl?limit=-1", "option limit=: -1 is below 0"),
    ("x.jsonl?limit=1&limit=2", "option limit= is given twice"),
    ("x.jsonl?lenient=maybe", "'maybe' is not true or false"),
    ("x.jsonl?fmt=nope", "unknown format 'nope'; use one of"),
    ("x.csv?columns=prompt", "is not key:column"),
    ("builtin:targets?split=train", "targets never come from the pool's train split"),
    ("builtin:task:add?split=val", "split 'val' is not one of train, dev, test"),
    ("builtin:pool?tasks=add,nope", "unknown task(s) nope in tasks="),
    ("shared:", "shared:<relative path>[a:b]: the name is missing"),
])
def test_dataspec_errors_are_sentences_that_say_what_is_accepted(text, says):
    with pytest.raises(DataError) as exc:
        DataSpec.parse(text)
    assert says in str(exc.value)


def test_dataspec_missing_path_and_mistyped_kind(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file or folder; check the path"):
        DataSpec.parse(str(tmp_path / "none.jsonl")).load()
    with pytest.raises(DataError, match=r"if you meant built-in or shared data, name it as builtin:pool"):
        DataSpec.parse("builtins:pool").load(base=tmp_path)
    monkeypatch.setenv("G2IS_SHARED_DATA", str(tmp_path / "absent"))
    for text in ("shared:gsm8k", "bbh-cot:object_counting"):
        with pytest.raises(DataError, match="needs the shared data folder"):
            DataSpec.parse(text).load()
    with pytest.raises(DataError, match="no records to use"):
        write(tmp_path, "one.jsonl", jl({"instruction": "a", "input": "", "output": "b"}))
        DataSpec.parse(str(tmp_path / "one.jsonl") + "[5:]").load()
    assert "README.md, 'Naming data'" in GRAMMAR


@pytest.mark.parametrize("text, seed, limit", [
    ("builtin:pool", 0, 0), ("builtin:pool", 1, 50), ("builtin:targets", 0, 0), ("builtin:targets", 2, 30),
    ("builtin:targets:add_reverse", 0, 0), ("builtin:targets:lookup_add", 3, 5)])
def test_dataspec_loads_what_the_old_cli_route_loaded(text, seed, limit):
    new = DataSpec.parse(text).fill(seed=seed, limit=limit).load()
    recs, dh, desc = _old_resolve_data(text, seed=seed, limit=limit)
    assert new.records == recs and new.data_hash == dh and new.description == desc and new.report is None


def test_dataspec_file_loads_what_the_old_cli_route_loaded(tmp_path, monkeypatch):
    p = write(tmp_path, "d.jsonl", jl(*({"instruction": f"q{i}", "input": "", "output": f"a{i}"} for i in range(9))))
    monkeypatch.chdir(tmp_path)  # the CLI reads relative paths from the current directory
    for fmt, limit in ((None, 0), ("alpaca", 4)):
        new = DataSpec.parse("d.jsonl").fill(fmt=fmt, limit=limit).load()
        recs, dh, desc = _old_resolve_data("d.jsonl", fmt, limit=limit)
        assert (new.records, new.data_hash, new.description) == (recs, dh, desc)
        assert new.report.n_loaded == 9 and new.report.fmt == "alpaca"
    assert DataSpec.parse(str(p) + "?fmt=alpaca&limit=4").load().records == recs


@pytest.mark.parametrize("select, n, seed", [
    ("builtin:add_reverse", 16, 0), ("builtin:sort_desc", 5, 1), ("builtin:targets:lookup_add", 16, 0),
    ("bbh-cot:counting", 3, 0), ("bbh-cot:counting", 1, 0),
    ("shared:alpaca/x/rows.jsonl", 4, 0), ("shared:alpaca/x/rows.jsonl[0:6]", 4, 2),
    ("shared:alpaca/x/rows.jsonl[6:]", 50, 0), ("shared:alpaca", 3, 1)])
def test_dataspec_targets_equal_the_old_experiment_route(shared_tmp, select, n, seed):
    from g2is_core.loop.experiment import load_target

    old = _old_load_target(select.replace("builtin:targets:", "builtin:"), n, seed)
    assert load_target(select, n, seed) == old and len(old) == min(n, len(old))


def test_dataspec_pools_equal_the_old_experiment_route(shared_tmp, tmp_path):
    from g2is_core.loop.experiment import load_pool

    for pool in ({"builtin": {"seed": 0, "per_task": 6, "distractors": 12}}, {"builtin": None},
                 {"builtin": {"seed": 1, "per_task": 3, "distractors": 0, "per_composite": 1, "tasks": ["add", "sort"]}},
                 {"files": ["shared:alpaca/x/rows.jsonl", "shared:alpaca"], "per_file": 5, "seed": 3},
                 {"files": [str(shared_tmp / "alpaca")]}):
        assert load_pool(pool) == _old_load_pool(pool)
    assert load_pool("builtin:pool?per_task=6&distractors=12") == _old_load_pool(
        {"builtin": {"per_task": 6, "distractors": 12}})
    with pytest.raises(DataError, match=r"pool builtin: unknown key\(s\) \['fmt'\]"):
        load_pool({"builtin": {"fmt": "x"}})
    with pytest.raises(DataError, match="pool must be a data spec"):
        load_pool({"nothing": 1})


def test_pool_exclude_drops_the_named_records_after_the_draw(shared_tmp):
    from g2is_core.loop.experiment import load_pool

    pool = {"files": ["shared:alpaca/x/rows.jsonl"], "per_file": 8, "seed": 3}
    drawn = load_pool(pool)
    drop = [drawn[1].id, drawn[5].id]
    assert load_pool({**pool, "exclude": drop}) == [r for i, r in enumerate(drawn) if i not in (1, 5)]
    with pytest.raises(DataError, match=r"pool exclude: 1 id\(s\) are not in the drawn pool \(first: \['nope'\]\)"):
        load_pool({**pool, "exclude": [drawn[0].id, "nope"]})
    with pytest.raises(DataError, match="pool exclude: a list of record ids"):
        load_pool({**pool, "exclude": "nope"})


def test_dataspec_builtin_task_equals_the_suite():
    s = DataSpec.parse("builtin:task:upper?n=9&split=dev&seed=4")
    assert s.load().records == T.make_task_records("upper", 9, 4, "dev")
    assert DataSpec.parse("builtin:task:add").load().records == T.make_task_records("add", 100, 0, "train")
    pool = DataSpec.parse("builtin:pool?seed=2&per_task=4&distractors=8&per_composite=1&tasks=add,add_reverse")
    assert pool.load().records == list(T.make_pool(2, 4, 8, per_composite=1, tasks=["add", "add_reverse"]).records)


def test_the_readme_documents_every_kind_and_option():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Naming data", 1)[1].split("\n## ", 1)[0]
    for kind, (text, _) in KINDS.items():
        assert f"`{text.split('[')[0]}" in section, kind
    for opt in OPTIONS:
        assert f"`{opt}`" in section, opt
