"""The runtime switches: bf16 "auto" resolves by what the hardware runs natively."""
import pytest


def test_resolve_bf16_switch(monkeypatch):
    import torch

    from g2is_core import runtime

    # the switch's words; an explicit true is honoured as such where bf16 is native or insisted on (below: the
    # fallback where it is neither)
    monkeypatch.setenv(runtime.FORCE_BF16_ENV, "1")
    assert runtime.resolve_bf16(True) is True and runtime.resolve_bf16(False) is False
    assert runtime.resolve_bf16("bf16") is True and runtime.resolve_bf16("fp32") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert runtime.resolve_bf16("auto", device="cpu") is False   # emulated bf16 would be slower than fp32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert runtime.resolve_bf16("AUTO", device="cpu") is True
    with pytest.raises(ValueError, match="true, false or auto"):
        runtime.resolve_bf16("maybe")


@pytest.fixture
def no_native_bf16(monkeypatch):
    """The capability probe says: no native bf16 (as on an AVX2-only EPYC); the one-warning memory is fresh."""
    from g2is_core import runtime

    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: False)
    monkeypatch.setattr(runtime, "_warned", set())
    monkeypatch.delenv(runtime.FORCE_BF16_ENV, raising=False)
    return runtime


def test_explicit_bf16_without_native_bf16_warns_once_and_runs_fp32(no_native_bf16, capsys, monkeypatch):
    runtime = no_native_bf16
    p = runtime.resolve_precision(True, "cpu", what="training")
    assert p.bf16 is False and p.name == "fp32" and p.requested is True and p.native is False
    assert p.to_dict() == {"precision": "fp32", "requested": True, "native_bf16": False, "forced": False}
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1                         # ONE line that says why
    assert "bf16 requested for training" in err and runtime.cpu_model() in err and "using fp32" in err
    assert runtime.FORCE_BF16_ENV + "=1" in err
    assert runtime.resolve_bf16("bf16", "cpu") is False and runtime.resolve_bf16("true", "cpu") is False
    assert capsys.readouterr().err == ""                              # once per process and device
    # auto and false are silent and fp32
    assert runtime.resolve_precision("auto", "cpu").to_dict() == {"precision": "fp32", "requested": "auto",
                                                                  "native_bf16": False, "forced": False}
    assert runtime.resolve_precision(False, "cpu").to_dict()["native_bf16"] is None
    # G2IS_FORCE_BF16=1 insists
    monkeypatch.setenv(runtime.FORCE_BF16_ENV, "1")
    p = runtime.resolve_precision(True, "cpu")
    assert p.bf16 is True and p.forced is True and capsys.readouterr().err == ""
    assert runtime.resolve_bf16("auto", "cpu") is False               # force only keeps an explicit request


def test_native_bf16_keeps_bf16(monkeypatch, capsys):
    from g2is_core import runtime

    monkeypatch.setattr(runtime, "bf16_is_fast", lambda device=None: True)
    monkeypatch.setattr(runtime, "_warned", set())
    for v in (True, "true", "auto"):
        p = runtime.resolve_precision(v, "cpu")
        assert p.bf16 is True and p.native is True and p.name == "bf16" and not p.forced
    assert runtime.resolve_bf16(False, "cpu") is False
    assert capsys.readouterr().err == ""
