"""Benchmarks: scores of models fine-tuned on selections, beside random, full-data and base baselines."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from g2is_core.app import kit as appkit
from g2is_core.app import readers
from g2is_core.loop import plan as study_plan
from g2is_core.loop import study
from g2is_core.loop import tables as benchmarks
from g2is_core.loop.registry import row_is_live
from g2is_core.loop.stats import BootstrapSettings
from pages import _ui

st.title("Benchmarks")
st.caption("Every method's score is read beside the untrained base model, a random selection of the same "
           "budget, and training on the full pool. Mean and spread are over seeds.")

ws = _ui.workspace()
_ui.pack_banner()
reg = readers.registry(ws)
if reg is None:
    _ui.empty_state("No benchmark results yet. Run the demo chain (built-in pool, composite targets, default "
                    "model) or an experiment spec; results land in the run registry.",
                    commands=["g2is demo", "g2is bench run bench/specs/real_data.yaml"],
                    note="Both can be started from the Runs page: “Demo: the whole chain on the embedded default” and "
                         "“Benchmark: run an experiment spec”.")
    st.stop()


@st.cache_data(ttl=5, show_spinner=False)
def _rows(path: str, experiment: str | None, read_only: bool) -> list[dict]:
    return readers.benchmark_rows(path, experiment, read_only)  # the latest spec version only


@st.cache_data(ttl=5, show_spinner=False)
def _version(path: str, experiment: str, read_only: bool) -> dict:
    return readers.benchmark_version(path, experiment, read_only)


exps = reg.experiments()
if not exps:
    _ui.empty_state("The run registry is empty. Run the demo (or start “Demo: the whole chain on the embedded "
                    "default” on the Runs page).", commands=["g2is demo"])
    st.stop()
exp = st.selectbox("Experiment", exps)
rows = _rows(str(reg.path), exp, reg.read_only)
version = _version(str(reg.path), exp, reg.read_only)
if version["n_versions"] > 1 or version["hidden"]:
    st.info(f"Spec version {version['version']} of {version['n_versions']} of “{exp}” (the one run last, "
            f"{pd.Timestamp(version['created'], unit='s'):%Y-%m-%d %H:%M} UTC): the spec was edited and run again under "
            f"the same name, so only this version's rows are shown; {version['hidden']} finished row(s) of earlier "
            "versions are kept in the registry but neither averaged nor compared with these. Run an earlier spec "
            "again to show it instead.")
metrics = benchmarks.available_metrics(rows)
first = benchmarks.default_metric(rows)
metric = st.selectbox("Metric", metrics, index=metrics.index(first) if first in metrics else 0, help="accuracy / em / f1: higher is better; nll / ppl (the gold answer's "
                      "negative log-likelihood): lower is better") if metrics else None
table = benchmarks.summary_table(rows, metric)
n_fail = sum(r["status"] == "failed" for r in rows)
n_run = sum(r["status"] == "running" for r in rows)
n_live = sum(row_is_live(r) for r in rows)
c1, c2, c3 = st.columns(3)
c1.metric("finished rows", int((pd.Series([r["status"] for r in rows]) == "done").sum()))
c2.metric("running", n_live, help=f"{n_run - n_live} more row(s) were claimed by a process that is gone (killed): "
                                  "the next `g2is bench run` of the spec redoes them" if n_run > n_live else None)
c3.metric("failed", n_fail)


@st.cache_data(ttl=5, show_spinner=False)
def _plan(path: str, experiment: str, read_only: bool):
    p, why = readers.benchmark_plan(path, experiment, read_only)
    return (None if p is None else (p.n_done, p.n_cells, len(p.running), len(p.missing), study_plan.plan_table(p, 2),
                                    p.all_notes(), p.cost_phrase())), why


left, why_no_plan = _plan(str(reg.path), exp, reg.read_only)
if left is not None and left[3]:
    n_done, n_cells, n_running, n_missing, left_tab, left_notes, priced = left
    with st.expander(f"What is left: {n_missing} of the spec's {n_cells} cells, {priced}"):
        st.caption(f"{n_done} cells finished, {n_running} running now. Process-hours per ratio and method at the "
                   "rates the finished cells measured (the table `g2is bench plan SPEC --processes 2` prints): "
                   + "; ".join(left_notes) + ". Start the rest from the Runs page (“Benchmark: run an experiment "
                   "spec”), or narrow it with --methods/--targets/--ratios/--seeds.")
        st.dataframe(left_tab, hide_index=True, column_config={
            c: st.column_config.NumberColumn(format="%.2f") for c in study_plan.HOUR_COLUMNS})
elif why_no_plan:
    st.caption(f"What is left cannot be priced: {why_no_plan}.")
if table.empty:
    _ui.empty_state("No finished rows in this experiment yet.")
    st.stop()

st.subheader("Results")
shown = appkit.with_noise_marks(table)
if (table["n_seeds"] < 2).any():
    st.caption("With one seed there is no spread: std is left blank, no error bar is drawn, and a difference "
               "between methods may be noise (run more seeds to tell).")
cut_note = benchmarks.truncation_note(table)
if cut_note:
    st.warning("Truncated prompts: " + cut_note + " (column n_cut).")
st.dataframe(shown.style.format({"mean": "{:.3f}", "std": "{:.3f}", "vs_random": "{:+.3f}", "vs_full": "{:+.3f}",
                                 "vs_base": "{:+.3f}", "ratio": "{:.3g}"}, na_rep="–"),
             hide_index=True, width="stretch")
st.download_button("Download the table as CSV", table.to_csv(index=False).encode(), file_name=f"{exp}_results.csv",
                    mime="text/csv")


# One stamp per set of finished rows: the bootstrap (n_boot replicates per line) and the overlaps (a file read per
# cell) rerun only when a cell finishes, not on every redraw.
done_stamp = tuple(sorted((str(r.get("config_hash")), r.get("finished") or 0) for r in rows if r["status"] == "done"))


@st.cache_data(show_spinner="Bootstrapping the intervals…", max_entries=32)
def _intervals(path: str, experiment: str, read_only: bool, metric: str | None, stamp: tuple) -> pd.DataFrame:
    return readers.benchmark_intervals(path, experiment, read_only, metric)


ci = _intervals(str(reg.path), exp, reg.read_only, metric, done_stamp)
if not ci.empty:
    st.markdown(f"**Seed-matched differences to random and to LESS, with bootstrap 95% intervals** (method minus "
                "reference at the same training seed and question, so their share of the noise cancels; the interval "
                f"is a percentile bootstrap over questions and seeds, {BootstrapSettings().n_boot:,} replicates; `*` "
                "marks an interval that excludes zero, *better* / *worse* in the metric's own direction; “(pooled)”: "
                "the mean of the targets' differences on the same metric, over the n_targets a method ran on). The same table as "
                f"`g2is bench show {exp} --ci`.")
    notes = []
    if ((ci["n_seeds"] == 1) & (ci["basis"] == "questions x seeds")).any():
        notes.append("with one seed the interval is over questions alone (run more seeds to include the "
                     "seed-to-seed spread)")
    if (ci["basis"] == "seeds").any():
        notes.append("rows recorded without per-question scores are resampled over seeds alone (basis “seeds”), "
                     "and from one seed they have no interval")
    if notes:
        text = "; ".join(notes)
        st.caption(text[0].upper() + text[1:] + ".")
    for ref, part in ci.groupby("reference", sort=False):
        shown = part.drop(columns=["experiment", "reference", "sig", "mark"]).assign(
            basis=[("questions (1 seed)" if b == "questions x seeds" and n == 1 else b)
                   for b, n in zip(part["basis"], part["n_seeds"])],
            excludes_zero=[f"{m} {s}".strip() for m, s in zip(part["mark"], part["sig"])])
        st.markdown(f"vs **{ref}**")
        st.dataframe(shown.style.format({"mean_diff": "{:+.4f}", "ci_low": "{:+.4f}", "ci_high": "{:+.4f}",
                                         "ratio": "{:.3g}"}, na_rep="–"),
                     hide_index=True, width="stretch")
    st.download_button("Download the intervals as CSV", ci.to_csv(index=False).encode(),
                       file_name=f"{exp}_intervals.csv", mime="text/csv")
    power = study.power_from_intervals(ci, rows)
    if not power.empty:
        st.markdown("**What this experiment can tell apart** (read off the intervals to random above: per target "
                    "and ratio, the median and widest half-width over the methods, a difference smaller than it "
                    "cannot be told from zero; `detectable_80`: the difference found in 80% of such runs, 1.43 "
                    "median half-widths, a normal approximation; `reference_minus_base`: how far random's training "
                    "moved the metric from the base model, for scale)")
        st.dataframe(power.style.format({"ratio": "{:.3g}", "half_width_median": "{:.4f}", "half_width_max": "{:.4f}",
                                         "detectable_80": "{:.4f}", "reference_minus_base": "{:+.4f}"}, na_rep="–"),
                     hide_index=True, width="stretch")

st.subheader("Method x target")
for target, sub in table.groupby("target", sort=False):
    fig = go.Figure()
    for ratio, part in sub.groupby(sub["ratio"].fillna(-1), sort=False):
        label = "no selection" if ratio < 0 else f"ratio {ratio:g}"
        spread = part["n_seeds"] >= 2  # one seed has no spread: no error bar rather than a bar of 0
        fig.add_bar(x=part["method"], y=part["mean"], name=label,
                    error_y={"type": "data", "array": part["std"].where(spread), "visible": bool(spread.any())})
    metric = sub["metric"].iloc[0]
    fig.update_layout(title=f"{target} ({metric})", barmode="group", height=320, margin={"t": 40, "b": 20},
                      yaxis_title=metric)
    st.plotly_chart(fig, width="stretch")

st.subheader("Diagnostics")
st.caption("Why the selections look the way they do, stored with every cell (selection/diagnostics.py) and "
           "averaged over seeds: the most frequent source and its share; walk fill (selected / budget) and fallbacks "
           "(re-anchorings) for walks; for methods that build the kNN graph, its in-degree Gini (0 = every record "
           "equally often a neighbour), the share of in-edges into the top 1% of records (0.01 without hubs) and "
           "the share of the selection among those hubs. The same table as "
           f"`g2is bench show {exp} --diagnostics`.")


@st.cache_data(show_spinner=False, max_entries=32)
def _overlap(path: str, experiment: str, read_only: bool, stamp: tuple) -> pd.DataFrame:
    return study.overlap_by_cell(readers.benchmark_rows(path, experiment, read_only))


diag = study.diagnostics_table(rows)
if diag.empty:
    st.info("No selection diagnostics stored in this experiment (baselines only, or rows recorded before they "
            "were kept).")
else:
    st.dataframe(diag.drop(columns=["experiment"]).style.format(
        {"ratio": "{:.3g}", "top_source_share": "{:.2f}", "n_sources": "{:.1f}", "fill": "{:.2f}",
         "fallbacks": "{:.1f}", "in_degree_gini": "{:.3f}", "top1_in_share": "{:.3f}",
         "selected_top1_share": "{:.2f}"}, na_rep="–"), hide_index=True, width="stretch")
    diag_by = st.radio("Composition of the selections by", ["source", "task"], horizontal=True, key="diag_by")
    shares = readers.composition_shares(rows, diag_by)
    if not shares.empty:
        # the 8 keys with the largest total share keep a column each; the rest are summed as "other"
        top = shares.groupby("key")["share"].sum().sort_values(ascending=False).index[:8]
        shares["key"] = shares["key"].where(shares["key"].isin(top), "other")
        wide = (shares.pivot_table(index=["target", "method", "ratio"], columns="key", values="share",
                                   aggfunc="sum", fill_value=0.0)
                .reindex(columns=[*top, *(["other"] if "other" in set(shares["key"]) else [])]).reset_index())
        st.markdown(f"**Share of each selection by {diag_by}** (mean over seeds)")
        st.dataframe(wide.style.format({c: "{:.2f}" for c in wide.columns if c not in ("target", "method", "ratio")}
                                       | {"ratio": "{:.3g}"}), hide_index=True, width="stretch")
ov = _overlap(str(reg.path), exp, reg.read_only, done_stamp)
if not ov.empty:
    st.markdown("**Overlap between methods** (Jaccard of the selected ids at the same target, ratio and seed, "
                "mean over seeds)")
    st.dataframe(ov.drop(columns=["experiment"]).style.format({"ratio": "{:.3g}", "jaccard": "{:.2f}"}),
                 hide_index=True, width="stretch")

st.subheader("Drill-down")
frame = benchmarks.rows_frame(rows)
sel_rows = frame[frame["selection"].notna()]
if sel_rows.empty:
    st.info("No selection runs in this experiment (only baselines without a selection).")
else:
    t = st.selectbox("Target", sorted(sel_rows["target"].unique()))
    part = sel_rows[sel_rows["target"] == t]
    ratio = st.selectbox("Ratio", sorted(part["ratio"].dropna().unique()))
    seed = st.selectbox("Seed", sorted(part["seed"].unique()))
    part = part[(part["ratio"] == ratio) & (part["seed"] == seed)]

    @st.cache_data(show_spinner=False)
    def _scores(sel_dir: str) -> pd.DataFrame:
        return readers.selection_scores(sel_dir)

    by = st.radio("Composition by", ["source", "task"], horizontal=True)
    comp = []
    picks: dict[str, list[str]] = {}
    for r in part.itertuples():
        sc = _scores(r.selection)
        chosen = sc[sc["selected"]]
        picks[r.method] = chosen["id"].astype(str).tolist()
        counts = chosen[by].value_counts()
        comp += [{"method": r.method, by: k, "count": int(v)} for k, v in counts.items()]
    if comp:
        cdf = pd.DataFrame(comp)
        fig = go.Figure()
        for key, g in cdf.groupby(by):
            fig.add_bar(x=g["method"], y=g["count"], name=str(key))
        fig.update_layout(barmode="stack", height=340, title=f"Selected records by {by}", margin={"t": 40})
        st.plotly_chart(fig, width="stretch")
    if len(picks) > 1:
        st.markdown("**Overlap between methods** (Jaccard of the selected ids)")
        st.dataframe(benchmarks.overlap_matrix(picks).style.format("{:.2f}"), width="stretch")

st.subheader("Loss curves")
curves = []
for r in frame[frame["train_dir"].notna()].itertuples():
    for x in readers.training_losses(r.train_dir) or []:
        curves.append({"run": f"{r.target}/{r.method}/{r.ratio}/{r.seed}", "samples": x["samples"], "loss": x["loss"]})
if curves:
    cdf = pd.DataFrame(curves).drop_duplicates()
    fig = go.Figure()
    for run, g in cdf.groupby("run"):
        fig.add_scatter(x=g["samples"], y=g["loss"], mode="lines", name=run)
    fig.update_layout(height=360, xaxis_title="samples seen", yaxis_title="training loss", margin={"t": 20})
    st.plotly_chart(fig, width="stretch")
else:
    st.info("No training runs with a loss curve in this experiment.")

st.subheader("Heads: what training changed")
st.caption("The closed loop of the bridge (docs/bridge.md): each trained model's activation pattern of the target "
           "[layer x head], measured on the same few target examples as the untrained base model's, minus the "
           "base model's. Beside it, questions over the target's cells with a selection: does a selection whose "
           "head signature looks like the target's pattern score better (and more so than one whose gradients "
           "point the target's way), and does one that moves the heads the way training on the full pool does?")
hl_targets = readers.head_loop_targets(rows)
if not hl_targets:
    st.info("These rows carry no head patterns: they were run without the closed loop. Set eval.head_pattern "
            "(e.g. 8 target examples) in the experiment spec and run it again to see what training changed in the "
            "target's attention heads.")
else:
    hl_target = (st.selectbox("Target of the head patterns", hl_targets, key="heads_loop_target")
                 if len(hl_targets) > 1 else hl_targets[0])
    hl_metric = table.loc[table["target"] == hl_target, "metric"]
    hl = readers.head_loop(rows, hl_target, hl_metric.iloc[0] if len(hl_metric) else None)
    for note in hl.notes:
        st.caption(note)
    if hl.changes:
        from plotly.subplots import make_subplots

        n_layers, n_heads = hl.shape
        labels = list(hl.changes)
        n_cols = min(len(labels), 4)
        n_rows = -(-len(labels) // n_cols)
        fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=labels, shared_yaxes=True,
                            horizontal_spacing=0.03, vertical_spacing=0.12)
        for i, lab in enumerate(labels):
            fig.add_trace(go.Heatmap(z=hl.changes[lab], x=list(range(n_heads)), y=list(range(n_layers)),
                                     coloraxis="coloraxis", name=lab,
                                     hovertemplate="L%{y}H%{x}: %{z:.3g}<extra>" + lab + "</extra>"),
                          row=i // n_cols + 1, col=i % n_cols + 1)
        zmax = hl.zmax or 1.0
        fig.update_layout(coloraxis={"colorscale": "RdBu", "reversescale": True, "cmin": -zmax, "cmax": zmax,
                                     "colorbar": {"title": "change"}},
                          height=120 + 260 * n_rows, margin={"t": 50, "b": 20},
                          title=f"Change of the target's head pattern from the base model ({hl_target})")
        fig.update_xaxes(title_text="head", dtick=max(1, n_heads // 6))
        fig.update_yaxes(dtick=max(1, n_layers // 8))
        fig.update_yaxes(title_text="layer", col=1)
        st.plotly_chart(fig, width="stretch")
        st.caption("One colour scale for every panel (red: the head's activation rose, blue: it fell); each panel is "
                   "the mean over the seeds of a method. The base model's own change is zero by definition.")
    import math

    from g2is_core.loop import bridge as hl_bridge

    lower = hl.metric in benchmarks.LOWER_IS_BETTER
    for i, x in enumerate(hl_bridge.X_LABELS):  # head vs gradient similarity side by side: item 6's comparison
        if i % 2 == 0:
            cols = st.columns(2)
        col = cols[i % 2]
        pts = hl.points.dropna(subset=[x, "score"])
        if pts.empty:
            col.info(f"No cell has a {hl_bridge.X_LABELS[x]}.")
            continue
        pe, sp = hl.tests[x]["pearson"], hl.tests[x]["spearman"]
        fig = go.Figure()
        for m, g in pts.groupby("method", sort=False):
            fig.add_scatter(x=g[x], y=g["score"], mode="markers", name=str(m), marker={"size": 10},
                            text=[f"ratio {r:g}, seed {s}" for r, s in zip(g["ratio"], g["seed"])],
                            hovertemplate="%{text}<br>x %{x:.3f}, score %{y:.3f}")
        stat = ("too few cells for a correlation (3 or more with distinct values)" if math.isnan(pe.r) else
                f"Pearson r = {pe.r:+.2f} (p = {pe.p:.3g}), Spearman ρ = {sp.r:+.2f} (p = {sp.p:.3g}), n = {pe.n}")
        fig.update_layout(title={"text": f"{hl_bridge.X_LABELS[x]}<br><sup>{stat}</sup>"}, height=380,
                          xaxis_title={hl_bridge.X_HEADS: "head similarity (cosine)",
                                       hl_bridge.X_GRAD: "gradient similarity (cosine)",
                                       hl_bridge.X_CHANGE: "change similarity (cosine)"}[x],
                          yaxis_title=f"{hl.metric}" + (" (lower is better)" if lower else ""),
                          margin={"t": 70, "b": 20})
        col.plotly_chart(fig, width="stretch")
    st.caption(f"p: two-sided permutation p-value ({hl_bridge.N_PERM} seeded shuffles of the scores over the cells; "
               "(1 + shuffles with |r| at least the observed) / (1 + shuffles)). With a handful of cells only a "
               "large |r| can be told from chance." + (f" {hl.metric} is lower-is-better: a negative r means the x "
                                                      "goes with a better score." if lower else ""))
    vs = hl.versus.get("pearson")
    if vs is not None and not math.isnan(vs.lo):
        st.markdown(f"**Head vs gradient similarity** (the same {vs.n} distinct selections; a deterministic "
                    f"method's seeds are one): |r head| − |r gradient| = "
                    f"{vs.d:+.2f}, 95% bootstrap interval [{vs.lo:+.2f}, {vs.hi:+.2f}] over the selections "
                    f"(Pearson; Spearman {hl.versus['spearman'].d:+.2f} [{hl.versus['spearman'].lo:+.2f}, "
                    f"{hl.versus['spearman'].hi:+.2f}]): "
                    + ("head similarity goes with the score more strongly." if vs.lo > 0 else
                       "gradient similarity goes with the score more strongly." if vs.hi < 0 else
                       "the interval holds zero: neither goes with the score more strongly than the other here."))
