"""The readers the Benchmarks page calls for issue 17 (app/readers.py): the interval table over a registry,
read-only registries included, and the stored selection composition as shares averaged over seeds."""
import pytest

from g2is_core.app import readers
from g2is_core.loop.registry import Registry
from g2is_core.loop.scores import load_scores, save_scores
from g2is_core.loop.study import paired_ci_table
from g2is_core.workspace import Workspace


def _cells(reg, with_scores: bool):
    ids = ["a", "b", "c", "d"]
    vals = {"random": ([0, 0, 1, 0], [0, 1, 0, 0]), "m": ([1, 1, 1, 0], [1, 0, 1, 1])}
    for method, per_seed in vals.items():
        for seed, v in enumerate(per_seed):
            key = f"{method}{seed}"
            assert reg.claim(key, "e", "t", method, 0.1, seed, {"m": method})
            if with_scores:
                save_scores(reg, key, "e", {"ids": ids, "values": {"accuracy": [float(x) for x in v]}, "weights": {}})
            comp = {"source": {"s1": 2, "s2": 2} if seed == 0 else {"s1": 4}, "task": {"x": 4}}
            reg.finish(key, metrics={"accuracy": sum(v) / 4}, timings={},
                       info={"diagnostics": {"composition": comp}} if method == "m" else None)


def test_benchmark_intervals_is_the_core_table_and_reads_a_read_only_registry(tmp_path):
    reg = Registry.open(Workspace(tmp_path / "ws"))
    _cells(reg, with_scores=True)
    want = paired_ci_table(reg.current_rows("e"), load_scores(reg, "e"), "accuracy")
    got = readers.benchmark_intervals(reg.path, "e", False, "accuracy")
    assert got.equals(want) and got.iloc[0].mean_diff == pytest.approx(0.5)  # (3/4 - 1/4 + 3/4 - 1/4) / 2
    assert got.iloc[0].basis == "questions x seeds" and got.iloc[0].n_questions == 4
    assert readers.benchmark_intervals(reg.path, "e", True, "accuracy").equals(want)


def test_a_read_only_registry_without_per_question_scores_falls_back_to_seeds(tmp_path):
    """A registry written before per-question scores were kept has no scores table; the immutable
    (read-only) open cannot create it, and the reader answers "no scores" instead of failing."""
    reg = Registry.open(Workspace(tmp_path / "ws"))
    _cells(reg, with_scores=False)
    with reg._conn() as c:
        c.execute("DROP TABLE IF EXISTS question_scores")
    ro = Registry(reg.path, read_only=True)
    assert readers.question_scores(ro, "e") == {}
    tab = readers.benchmark_intervals(reg.path, "e", True, "accuracy")
    assert list(tab.basis) == ["seeds"] and tab.iloc[0].n_seeds == 2 and tab.iloc[0].mean_diff == pytest.approx(0.5)


def test_composition_shares_average_over_seeds(tmp_path):
    reg = Registry.open(Workspace(tmp_path / "ws"))
    _cells(reg, with_scores=False)
    sh = readers.composition_shares(reg.current_rows("e"), "source")
    assert set(sh.method) == {"m"}  # cells without stored diagnostics are left out
    # seed 0: s1 2/4, s2 2/4; seed 1: s1 4/4 (s2 counts 0) -> s1 0.75, s2 0.25, largest first
    assert list(zip(sh.key, sh.share, sh.n_seeds)) == [("s1", 0.75, 2), ("s2", 0.25, 2)]
    assert list(readers.composition_shares(reg.current_rows("e"), "task").share) == [1.0]
    assert readers.composition_shares([], "source").empty
