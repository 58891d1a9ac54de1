import pytest

from g2is_core.data.encoding import (IGNORE, closing_length, collate, encode_all, encode_prompt, encode_record,
                                    length_buckets)
from g2is_core.models.loading import tiny_tokenizer
from g2is_core.data.records import DataError, Record, simple

TOK = tiny_tokenizer()


def _label_text(e):
    return TOK.decode([t for t in e.labels if t != IGNORE])


def test_labels_cover_exactly_the_response():
    r = simple("a", "Add 2 and 3.", "5", source="t", task="add")
    e = encode_record(TOK, r)
    assert _label_text(e) == "5<|im_end|>\n"
    assert TOK.decode(e.input_ids) == "<|im_start|>user\nAdd 2 and 3.<|im_end|>\n<|im_start|>assistant\n5<|im_end|>\n"
    # the prompt part of the sequence is exactly what generation starts from
    p = encode_prompt(TOK, r)
    assert list(e.input_ids[: len(p)]) == p and all(x == IGNORE for x in e.labels[: len(p)])


def test_multi_turn_labels_every_assistant_turn_only():
    r = Record("b", "s", "t", ({"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "yo"}, {"role": "user", "content": "again"},
                               {"role": "assistant", "content": "ok"}))
    e = encode_record(TOK, r)
    assert _label_text(e) == "yo<|im_end|>\nok<|im_end|>\n"


def test_plain_template():
    r = simple("a", "Say hi.", "hi", source="t", task="x")
    e = encode_record(TOK, r, template="plain")
    assert TOK.decode(e.input_ids) == "### Instruction:\nSay hi.\n\n### Response:\nhi<|im_end|>"
    assert _label_text(e) == "hi<|im_end|>"


def test_truncation_cuts_prompt_left_then_response_right_and_counts():
    r = simple("a", "x" * 100, "yz", source="t", task="x")
    full = encode_record(TOK, r, max_length=10_000)
    e = encode_record(TOK, r, max_length=40)
    assert e.length == 40 and e.cut_prompt == full.length - 40 and e.cut_response == 0
    assert e.input_ids == full.input_ids[-40:] and e.labels == full.labels[-40:]
    long_resp = simple("b", "q", "w" * 80, source="t", task="x")
    full = encode_record(TOK, long_resp, max_length=10_000)
    e = encode_record(TOK, long_resp, max_length=30)
    n_prompt = sum(1 for x in full.labels if x == IGNORE)
    assert e.cut_prompt == n_prompt and e.cut_response == full.length - n_prompt - 30
    assert e.n_response == 30
    _, rep = encode_all(TOK, [r, long_resp, simple("c", "q", "a", source="t", task="x")], max_length=40)
    assert rep.n == 3 and rep.n_cut == 2 and "2 of 3" in rep.summary()


@pytest.mark.parametrize("template, closing", [("chat", "<|im_end|>\n"), ("plain", "<|im_end|>")])
def test_closing_length_counts_the_end_of_turn_after_the_answer(template, closing):
    """The last closing_length response tokens are the template's end-of-turn, the rest the answer's own text;
    in a multi-turn record, of the last turn."""
    for r in (simple("a", "Add 2 and 3.", "5 apples", source="t", task="add"),
              Record("b", "s", "t", ({"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo\n"},
                                     {"role": "user", "content": "again"}, {"role": "assistant", "content": "5 apples"}))):
        if template == "plain" and r.id == "b":
            continue  # the plain template has one turn
        e = encode_record(TOK, r, template=template)
        c = closing_length(TOK, r, template=template)
        resp = [t for t in e.labels if t != IGNORE]
        assert TOK.decode(resp[len(resp) - c:]) == closing and TOK.decode(resp[:len(resp) - c]).endswith("5 apples")


def test_closing_length_is_none_where_the_template_rewrites_the_answer():
    class Stripping:  # a chat template that trims the assistant's text: the rendered turn lacks it verbatim
        chat_template = "x"
        is_fast = True

        def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
            text = "".join(f"<{m['role']}>{m['content'].strip()}</s>" for m in messages)
            return text + ("<assistant>" if add_generation_prompt else "")

        def __call__(self, text, add_special_tokens=False, return_offsets_mapping=False):
            return {"input_ids": list(range(len(text))), "offset_mapping": [(i, i + 1) for i in range(len(text))]}

    r = simple("a", "q", " 5 ", source="t", task="x")
    assert closing_length(Stripping(), r) is None
    assert closing_length(Stripping(), simple("b", "q", "5", source="t", task="x")) == len("</s>")


def test_prompt_only_record_is_refused_for_training():
    r = simple("p", "a question", None, source="t", task="x")
    with pytest.raises(DataError, match="no response"):
        encode_record(TOK, r)


def test_collate_pads_right_and_masks_padding():
    es, _ = encode_all(TOK, [simple("a", "q", "a", source="t", task="x"),
                             simple("b", "a longer question", "b", source="t", task="x")])
    b = collate(es, TOK.pad_token_id)
    assert b["input_ids"].shape == b["labels"].shape == (2, max(e.length for e in es))
    short = min(range(2), key=lambda i: es[i].length)
    assert (b["labels"][short, es[short].length:] == IGNORE).all()
    assert b["attention_mask"][short].sum() == es[short].length


def test_length_buckets_partition_and_respect_budget():
    recs = [simple(str(i), "q" * (i * 7 % 50), "a", source="t", task="x") for i in range(40)]
    es, _ = encode_all(TOK, recs)
    batches = list(length_buckets(es, max_tokens=300, max_batch=8))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(40))
    for b in batches:
        assert len(b) <= 8 and (len(b) == 1 or max(es[i].length for i in b) * len(b) <= 300)
