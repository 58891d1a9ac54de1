"""The runtime switches: bf16 "auto" resolves by what the hardware runs natively."""
import pytest


def test_resolve_bf16_switch(monkeypatch):
    import torch

    from g2is_core import runtime

    assert runtime.resolve_bf16(True) is True and runtime.resolve_bf16(False) is False
    assert runtime.resolve_bf16("bf16") is True and runtime.resolve_bf16("fp32") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    assert runtime.resolve_bf16("auto", device="cpu") is False   # emulated bf16 would be slower than fp32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert runtime.resolve_bf16("AUTO", device="cpu") is True
    with pytest.raises(ValueError, match="true, false or auto"):
        runtime.resolve_bf16("maybe")
