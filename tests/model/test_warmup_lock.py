"""Two processes starting the same LESS warmup together: one trains it, the other waits for it and reads its
checkpoints (two threads stand in for them: ``flock`` locks of two open files exclude each other in one process too)."""
from __future__ import annotations

import threading

from g2is_core.data import tasks
from g2is_core.data.loaders import data_hash
from g2is_core.features.warmup import WarmupConfig, warmup
from g2is_core.models.loading import load_model
from g2is_core.models.lora import LoraSettings
from g2is_core.workspace import Workspace


def test_a_warmup_started_twice_at_once_trains_once(tmp_path):
    ws = Workspace(tmp_path / "ws")
    recs = list(tasks.make_pool(0).records[:32])
    cfg = WarmupConfig(fraction=0.5, epochs=1, lr=1e-3, batch_size=4, grad_accum=1, max_length=64,
                       lora=LoraSettings(r=4, alpha=16, dropout=0.0))
    models = [load_model("tiny"), load_model("tiny")]
    said: list[list[str]] = [[], []]
    got: list = [None, None]
    errors: list = []

    def run(k: int) -> None:
        try:
            got[k] = warmup(models[k], recs, cfg, data_hash=data_hash(recs), workspace=ws,
                            progress=lambda f, m, k=k: said[k].append(m))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and all(g is not None for g in got)
    assert got[0].dir == got[1].dir and got[0].checkpoints == got[1].checkpoints
    waited = [k for k in (0, 1) if any("done by another process" in m for m in said[k])]
    trained = [k for k in (0, 1) if any("step" in m for m in said[k])]
    assert len(waited) == 1 and trained == [1 - waited[0]], (said, waited, trained)
    assert any("another process is training it; waiting" in m for m in said[waited[0]])
