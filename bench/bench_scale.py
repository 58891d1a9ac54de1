"""Benchmark at scale: a million-node approximate graph from a memmap, the walk at N = 1M, and the
Instruction graph page with 100k points in headless Chromium.

    python bench/bench_scale.py                                  # all stages, N = 1M, d = 256, k = 16
    python bench/bench_scale.py --n 100000 --stages graph walk   # smaller, no browser
    python bench/bench_scale.py --stages browser --browser-n 100000

Data: 1M x 256 unit vectors of a Gaussian mixture (N/500 clusters, isotropic noise of scale U[1, 2]
around unit centres, as bench/bench_graph_walk.py), written to a .npy memmap chunk by chunk (each
chunk seeded by its index) and only ever read back in chunks. Caveat: these clusters are
well separated, the easy case for an inverted-file index; real gradient features are less so
(docs/scaling.md).

Figures printed: index plan (chosen from N, d and --memory-gib), build time per stage, recall@k on
--queries random rows against a streamed exact brute force, peak RSS (ru_maxrss, which counts the
memmap pages touched), the walk at ratio 1% (time, selected), and for the page: first render
(navigation to the map's points drawn, app idle) and a node click (mouse click on a point of the
WebGL map to the node's record shown, app idle). Targets (issue 7): recall@16 >= 0.9, peak RSS <
16 GB, first render and click each < 3 s.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("G2IS_THREADS", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from g2is_core.graph.scale import knn_streaming, peak_rss_bytes, plan_index, sample_recall  # noqa: E402

GiB = 1 << 30


def write_mixture(path: Path, n: int, d: int, seed: int = 0, chunk: int = 65536) -> tuple[np.memmap, np.ndarray]:
    """[n, d] float32 unit rows into a .npy memmap, chunk by chunk; returns (memmap, 16 target rows)."""
    rng = np.random.default_rng(seed)
    clusters = max(20, n // 500)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    scale = rng.uniform(1.0, 2.0, clusters).astype(np.float32)
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for i, a in enumerate(range(0, n, chunk)):
        r = np.random.default_rng([seed, i])
        b = min(n, a + chunk)
        lab = r.integers(0, clusters, b - a)
        x = centres[lab] + r.standard_normal((b - a, d), dtype=np.float32) / np.sqrt(d) * scale[lab, None]
        mm[a:b] = x / np.linalg.norm(x, axis=1, keepdims=True)
    mm.flush()
    del mm
    tl = rng.choice(clusters, 3, replace=False)[rng.integers(0, 3, 16)]
    y = centres[tl] + rng.standard_normal((16, d), dtype=np.float32) / np.sqrt(d) * scale[tl, None]
    return np.load(path, mmap_mode="r"), y / np.linalg.norm(y, axis=1, keepdims=True)


def stage_graph(x, k: int, memory: int, queries: int):
    n, d = x.shape
    plan = plan_index(n, d, k, memory)
    print(f"plan: {plan.kind} nlist={plan.nlist} nprobe={plan.nprobe} train_rows={plan.train_rows} "
          f"est {plan.est_bytes / GiB:.2f} GiB ({plan.reason})", flush=True)
    t = time.perf_counter()
    nbrs, sims, info = knn_streaming(x, k, plan, memory_bytes=memory)
    build = time.perf_counter() - t
    print(f"graph N={n} d={d} k={k}: build {build:.1f} s (train {info['train_s']} s, add {info['add_s']} s, "
          f"search {info['search_s']} s), {info['completed_exactly']} rows completed exactly, "
          f"index ~{info['index_bytes'] / GiB:.2f} GiB, peak RSS {peak_rss_bytes() / GiB:.2f} GiB", flush=True)
    t = time.perf_counter()
    rec, _ = sample_recall(x, nbrs, k, n_queries=queries)
    print(f"recall@{k} on {queries} random rows vs streamed exact brute force: {rec:.4f} "
          f"({time.perf_counter() - t:.1f} s)", flush=True)
    return nbrs, sims


def stage_walk(x, y, nbrs, ratio: float, max_seconds: float):
    from g2is_core.graph.walk import core_knowledge, walk

    core = core_knowledge(y, 0.5)
    t = time.perf_counter()
    res = walk(x, core, nbrs, ratio=ratio)
    dt = time.perf_counter() - t
    print(f"walk N={len(x)} ratio={ratio}: {dt:.1f} s, K={core.k}, {res.summary()}, "
          f"peak RSS {peak_rss_bytes() / GiB:.2f} GiB" + ("" if dt <= max_seconds else "  (over the time asked)"),
          flush=True)


# ----------------------------------------------------------------------------- the page at 100k points
def seed_page_workspace(ws_root: Path, x, n: int, k: int) -> None:
    """A graph, its records and a stored layout of the first n rows, as `g2is graph build` leaves them."""
    from g2is_core.graph.knn import InstructionGraph
    from g2is_core.graph.layout import layout
    from g2is_core.data.records import simple
    from g2is_core.selection import save_dataset
    from g2is_core.workspace import Workspace, hash_config

    ws = Workspace(ws_root)
    sub = np.asarray(x[:n], np.float32)
    t = time.perf_counter()
    nbrs, sims, _ = knn_streaming(sub, k, memory_bytes=4 * GiB)
    tasks = [f"task{j}" for j in range(12)]
    pool = [simple(f"r{i}", f"question {i}", f"answer {i}", source=f"src{i % 4}", task=tasks[i % 12])
            for i in range(n)]
    from g2is_core.data.loaders import data_hash

    dh = data_hash(pool)
    save_dataset(pool, ws)
    key = hash_config({"bench_scale": n, "d": int(sub.shape[1])})
    layout(sub, key, ws, method="pca", ids=[r.id for r in pool])  # the stored layout the page reads
    g = InstructionGraph(neighbors=nbrs, sims=sims, ids=[r.id for r in pool], k=k, method="ivf-flat")
    g.save(ws.root / "graphs" / key, inputs={"features_key": key, "data_hash": dh, "layout": "pca"})
    print(f"page workspace: {n} nodes, graph + records + PCA layout written in {time.perf_counter() - t:.1f} s",
          flush=True)


_COUNT = ("(() => { const d = document.querySelector('.js-plotly-plot'); return d && d._fullData ? "
          "d._fullData.reduce((a, t) => a + (t.x ? t.x.length : 0), 0) : -1; })()")
_IDLE = "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"


def stage_browser(ws_root: Path, n: int) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "browser"))
    from conftest import CHROMIUM, CHROMIUM_ARGS, serve  # the browser tests' own server fixture
    from playwright.sync_api import sync_playwright

    from g2is_core.graph.layout import DISPLAY_MAX

    drawn = min(n, DISPLAY_MAX)  # the page draws a fixed subset above DISPLAY_MAX visible nodes
    with serve(ws_root) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        warm = browser.new_page()  # a first visit pays the server's imports and cache fills; not the figure
        warm.set_default_timeout(180_000)
        t = time.perf_counter()
        warm.goto(f"{url}/graph")
        warm.wait_for_function(f"() => {_COUNT} >= {drawn}")
        warm.wait_for_function(_IDLE)
        print(f"page cold (server imports, first load of graph/layout/records into its caches): "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        warm.close()
        for attempt in range(2):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            t = time.perf_counter()
            page.goto(f"{url}/graph")
            page.wait_for_function(f"() => {_COUNT} >= {drawn}")
            page.wait_for_function(_IDLE)
            first = time.perf_counter() - t
            # click the pixel of one point on the WebGL map (plotly's own axis transforms)
            node, px, py = page.evaluate("""() => {
                const d = document.querySelector('.js-plotly-plot'); const L = d._fullLayout;
                const t = d._fullData[0]; const i = Math.floor(t.x.length / 2);
                const r = d.querySelector('.nsewdrag').getBoundingClientRect();
                return [t.customdata[i], r.left + L.xaxis.l2p(t.x[i]), r.top + L.yaxis.l2p(t.y[i])]; }""")
            t = time.perf_counter()
            page.mouse.click(px, py)
            # any focused node counts (the click may land on an overlapping point): its record view appears
            page.get_by_text("neighbours (descending cosine").first.wait_for(timeout=60_000)
            got = page.get_by_text(re.compile(r"^Node \d+$")).first.inner_text()
            how = "the point clicked" if got == f"Node {int(node)}" else f"an overlapping point ({got})"
            page.wait_for_function(_IDLE)
            click = time.perf_counter() - t
            print(f"page with {n} points, visit {attempt + 1}: first render {first:.2f} s, node click -> {how} focused: "
                  f"{click:.2f} s", flush=True)
            page.screenshot(path=str(Path(tempfile.gettempdir()) / "g2is_graph_100k.png"))
            page.close()
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--memory-gib", type=float, default=16.0, help="memory budget the index plan must respect")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--walk-max-seconds", type=float, default=600)
    ap.add_argument("--browser-n", type=int, default=100_000)
    ap.add_argument("--stages", nargs="+", default=["graph", "walk", "browser"], choices=["graph", "walk", "browser"])
    ap.add_argument("--dir", help="where the memmap and the page workspace go (default: a temp folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="g2is-scale-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        n_data = max(args.n if {"graph", "walk"} & set(args.stages) else 0, args.browser_n)
        x, y = write_mixture(tmp / "features.npy", n_data, args.d)
        print(f"data: {n_data} x {args.d} fp32 memmap ({n_data * args.d * 4 / GiB:.2f} GiB) written in "
              f"{time.perf_counter() - t:.1f} s; threads {os.environ.get('G2IS_THREADS')}", flush=True)
        if {"graph", "walk"} & set(args.stages):
            xs = x[:args.n]
            nbrs, _ = stage_graph(xs, args.k, int(args.memory_gib * GiB), args.queries)
            if "walk" in args.stages:
                stage_walk(xs, y, nbrs, args.ratio, args.walk_max_seconds)
            del nbrs
        if "browser" in args.stages:
            seed_page_workspace(tmp / "ws", x, args.browser_n, args.k)
            stage_browser(tmp / "ws", args.browser_n)
        print(f"peak RSS of this process: {peak_rss_bytes() / GiB:.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
