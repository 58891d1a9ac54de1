"""lm_ops on the tiny random Llama: the response loss equals the model's own loss per example,
the peft unwrap finds the same decoder, and managed hooks are removed even on an exception."""
import pytest
import torch

from g2is_core.data.encoding import Encoded, collate, encode_all
from g2is_core.data.tasks import make_task_records
from g2is_core.models import lm_ops
from g2is_core.models.loading import tiny_llama
from g2is_core.models.lora import LoraSettings, attach_lora


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_llama()
    enc, _ = encode_all(tok, make_task_records("add", 3, 0, "dev"))
    assert len({e.length for e in enc}) > 1          # mixed lengths: the batch carries padding
    return model, tok, enc


def test_response_loss_is_each_examples_own_loss(tiny):
    model, tok, enc = tiny
    no_label = Encoded("none", enc[0].input_ids, (-100,) * enc[0].length)
    batch = collate([*enc, no_label], tok.pad_token_id)
    with torch.no_grad():
        per, out = lm_ops.response_loss(model, batch)
        own = [model(**collate([e], tok.pad_token_id)).loss for e in enc]  # HF: mean over labelled tokens
    assert per.shape == (len(enc) + 1,) and per.dtype == torch.float32
    assert torch.allclose(per[:-1], torch.stack(own), atol=1e-5)
    assert per[-1] == 0                                     # no response token: loss 0
    assert out.last_hidden_state.shape[:2] == batch["input_ids"].shape


def test_unwrap_and_decoder_under_peft(tiny):
    import copy

    model = copy.deepcopy(tiny[0])
    pm = attach_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    assert lm_ops.unwrap(pm) is model and lm_ops.unwrap(model) is model
    assert lm_ops.decoder_parts(pm)[0] is model.model
    assert lm_ops.decoder_parts(pm)[1] is model.get_output_embeddings()
    assert len(lm_ops.o_proj_modules(pm)) == model.config.num_hidden_layers


def test_hooks_run_inside_and_are_removed_on_exception(tiny):
    model, tok, enc = tiny
    mods = lm_ops.o_proj_modules(model)
    calls = {"pre": 0, "fwd": 0}

    def pre(_m, _args):
        calls["pre"] += 1

    def fwd(_m, _args, _out):
        calls["fwd"] += 1

    batch = collate(enc[:1], tok.pad_token_id)
    with pytest.raises(RuntimeError, match="boom"):
        with lm_ops.hooks(forward={m: fwd for m in mods}, pre=[(m, pre) for m in mods]):
            with torch.no_grad():
                model(input_ids=batch["input_ids"])
            raise RuntimeError("boom")
    assert calls == {"pre": len(mods), "fwd": len(mods)}
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in mods)
    with torch.no_grad():
        model(input_ids=batch["input_ids"])
    assert calls == {"pre": len(mods), "fwd": len(mods)}  # nothing left registered
