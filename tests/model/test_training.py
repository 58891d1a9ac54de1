import pytest
import torch

from g2is_core.data.encoding import encode_all
from g2is_core.models.loading import tiny_llama
from g2is_core.models.lora import LoraSettings, attach_lora, lora_parameters
from g2is_core.data.tasks import make_task_records
from g2is_core.models.training import (TrainConfig, epoch_lr_weights, load_trained, lr_at, steps_per_epoch, total_steps,
                                       train)


def test_schedule_warmup_then_linear_decay():
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.1, epochs=1)
    total = 100
    lrs = [lr_at(s, total, cfg) for s in range(total)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0           # 10 warmup steps reach the peak
    assert lrs[10] == 1.0 and abs(lrs[99] - 1 / 90) < 1e-12  # then linear decay towards 0
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_checkpoint_weights_are_mean_lr_per_epoch():
    cfg = TrainConfig(lr=2e-5, epochs=4, batch_size=4, warmup_ratio=0.03)
    n = 50
    spe, tot = steps_per_epoch(n, cfg), total_steps(n, cfg)
    means = [sum(lr_at(s, tot, cfg) for s in range(e * spe, (e + 1) * spe)) / spe for e in range(4)]
    w = epoch_lr_weights(n, cfg)
    assert abs(sum(w) - 1) < 1e-12
    for a, b in zip(w, means):
        assert abs(a - b / sum(means)) < 1e-12
    assert w[0] > w[1] > w[2] > w[3]


def _run(out, stop_at=None):
    recs = make_task_records("add", 24, seed=0)
    m, tok = tiny_llama()
    m = attach_lora(m, LoraSettings(r=4, alpha=8, dropout=0.1))
    enc, _ = encode_all(tok, recs, max_length=64)
    cfg = TrainConfig(lr=1e-3, epochs=2, batch_size=4, save_every=2, save_epochs=True, seed=3)

    class Stop(Exception):
        pass

    def cb(step, samples, model):
        if step == stop_at:
            raise Stop

    try:
        res = train(m, enc, cfg, pad_id=tok.pad_token_id, out_dir=out, callback=cb, callback_steps=range(1, 99))
    except Stop:
        return None, None
    return m, res


def test_resume_after_interruption_gives_the_same_weights(tmp_path):
    m1, r1 = _run(tmp_path / "a")
    assert _run(tmp_path / "b", stop_at=5) == (None, None)   # dies after step 5; last save at step 4
    m2, r2 = _run(tmp_path / "b")
    assert r1.steps == r2.steps == 12
    for (n, a), (_, b) in zip(lora_parameters(m1), lora_parameters(m2)):
        assert torch.equal(a, b), n
    assert [x["loss"] for x in r1.losses] == [x["loss"] for x in r2.losses]
    assert (tmp_path / "a" / "epoch-1" / "optimizer.safetensors").exists()


def test_load_trained_gives_the_trained_weights_and_refuses_an_unfinished_run(tmp_path):
    m1, _ = _run(tmp_path / "a")
    fresh, _ = tiny_llama()
    fresh = attach_lora(fresh, LoraSettings(r=4, alpha=8, dropout=0.1))
    assert load_trained(tmp_path / "a", fresh)["step"] == 12
    for (n, a), (_, b) in zip(lora_parameters(m1), lora_parameters(fresh)):
        assert torch.equal(a, b), n
    assert _run(tmp_path / "b", stop_at=5) == (None, None)   # last save at step 4 of 12
    with pytest.raises(ValueError, match="stopped at step 4 of 12"):
        load_trained(tmp_path / "b", fresh)
    with pytest.raises(ValueError, match="no training run"):
        load_trained(tmp_path / "c", fresh)


def test_training_reduces_loss():
    recs = make_task_records("upper", 16, seed=0)
    m, tok = tiny_llama()
    enc, _ = encode_all(tok, recs, max_length=64)
    for p in m.parameters():
        p.requires_grad_(True)
    res = train(m, enc, TrainConfig(lr=3e-3, max_steps=30, batch_size=8, warmup_ratio=0.0), pad_id=tok.pad_token_id)
    first, last = res.losses[0]["loss"], sum(x["loss"] for x in res.losses[-4:]) / 4
    assert last < 0.7 * first


@pytest.mark.parametrize("native", [False, True])
def test_explicit_bf16_request_without_native_bf16_trains_fp32(tmp_path, monkeypatch, capsys, native):
    """The issue's acceptance test (training): capability probe mocked; without native bf16 a bf16 request warns
    once and trains with autocast off (fp32 activations), and state.json records what ran and what was asked."""
    import json

    from g2is_core import runtime

    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: native)
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.delenv(runtime.FORCE_BF16_ENV, raising=False)
    m, tok = tiny_llama()
    m = attach_lora(m, LoraSettings(r=4, alpha=8, dropout=0.0))
    enc, _ = encode_all(tok, make_task_records("add", 8, seed=0), max_length=64)
    seen = []
    hooks = [mod.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
             for name, mod in m.named_modules() if name.endswith("q_proj.base_layer")]
    res = train(m, enc, TrainConfig(lr=1e-3, max_steps=2, batch_size=4, bf16=True), pad_id=tok.pad_token_id,
                out_dir=tmp_path)
    for h in hooks:
        h.remove()
    err = capsys.readouterr().err
    state = json.loads((tmp_path / "state.json").read_text())
    want = torch.bfloat16 if native else torch.float32
    assert seen and set(seen) == {want}
    assert res.precision == state["precision"] == {"precision": "bf16" if native else "fp32", "requested": True,
                                                   "native_bf16": native, "forced": False}
    assert state["config"]["bf16"] is native                   # the config holds what ran
    if native:
        assert err == ""
    else:
        assert len(err.strip().splitlines()) == 1 and "bf16 requested for training" in err and "using fp32" in err


@pytest.mark.parametrize("lora", [True, False])
def test_token_mean_loss_equals_the_models_own_loss(lora):
    """The loop's loss (LM head at labelled positions only) is the model's own loss, value and gradients."""
    from g2is_core.data.encoding import collate
    from g2is_core.models import lm_ops

    m, tok = tiny_llama()
    if lora:
        m = attach_lora(m, LoraSettings(r=4, alpha=8, dropout=0.0))
        with torch.no_grad():
            for _, p in lora_parameters(m):
                p.normal_(0, 0.05)
    else:
        for p in m.parameters():
            p.requires_grad_(True)
    enc, _ = encode_all(tok, make_task_records("sort", 5, seed=1), max_length=64)
    batch = collate(enc, tok.pad_token_id, "cpu")
    params = [p for p in m.parameters() if p.requires_grad]
    ours = lm_ops.token_mean_loss(m, batch)
    theirs = m(**batch).loss
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours, params), torch.autograd.grad(theirs, params)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
