"""Data: load the built-in task suite or a file, look at the records, validate them.

Every source is named by one data spec (g2is_core.data.spec.DataSpec; README.md, "Naming data"): the
caption shows it, so the same data can be pasted into `g2is ... --data` or an experiment spec."""
from __future__ import annotations

import json

import plotly.express as px
import streamlit as st

from g2is_core.app import kit as appkit
from g2is_core.data import tasks
from g2is_core.data.limits import input_limits
from g2is_core.data.loaders import FORMATS
from g2is_core.data.records import DataError
from g2is_core.data.spec import DataSpec
from g2is_core.workspace import Workspace
from pages import _ui

BUILTIN, UPLOAD, PATH = "Built-in task suite", "Upload a file", "Path on this machine"


# ----------------------------------------------------------------------------- cached calls
# Everything below is keyed by content (a file's sha256, or the built-in spec's text), so a rerun
# that changes only a widget further down the page does not reload or re-tokenise anything.
@st.cache_data(show_spinner="Building the built-in records…", max_entries=8)
@st.cache_data(show_spinner=False)
def demo_pool_spec() -> DataSpec:
    """The demo spec's pool as a data spec (so the page finds the stores `g2is demo` made of it)."""
    from g2is_core.loop.experiment import builtin_pool_spec
    from g2is_core.loop.spec import DEMO_SPEC, load_spec

    return builtin_pool_spec(load_spec(DEMO_SPEC).pool)


def builtin_records(spec_text: str):
    d = DataSpec.parse(spec_text).load()
    return d.records, d.data_hash


@st.cache_data(show_spinner=False, max_entries=64)
def file_content_key(stamp: tuple) -> str:
    return appkit.content_key(stamp[0])


# max_entries=2: each entry is a pickled copy of a whole load (up to the loader's caps, g2is_core.data.limits),
# so the server keeps at most two besides the one on screen.
@st.cache_data(show_spinner="Loading and validating the file…", max_entries=2)
def file_records(content: str, fmt: str | None, lenient: bool, columns_json: str, spec_text: str):
    # The page's widgets fill what the typed spec leaves unset (a typed ?fmt= wins over auto-detect).
    columns = tuple(json.loads(columns_json).items()) if columns_json else None
    d = DataSpec.parse(spec_text).fill(fmt=fmt, lenient=lenient or None, columns=columns).load()
    return d.records, d.report, d.data_hash


@st.cache_resource(max_entries=2, show_spinner="Loading the tokenizer…")
def tokenizer(ws_root: str, model_ready: bool):
    return appkit.load_tokenizer(Workspace(ws_root))


@st.cache_data(show_spinner="Tokenising…", max_entries=16)
def lengths(data_key: str, tok_desc: str, max_length: int, cap: int, _records, _tok):
    return appkit.token_stats(_tok, _records[:cap], max_length)


# ----------------------------------------------------------------------------- layout
st.title("Data")
ws = _ui.user_workspace()
source = st.radio("Data source", [BUILTIN, UPLOAD, PATH], horizontal=True)

records = report = None
if source == BUILTIN:
    c1, c2, c3, c4 = st.columns(4)
    mode = c1.selectbox("Records", ["demo", "pool", "one task"],
                        format_func={"demo": "The demo's pool", "pool": "Candidate pool", "one task": "One task"}.get,
                        help="the demo's pool (what `g2is demo` computes features of); a pool of every task of the "
                             "first suite with distractor instructions, sized here; or one task")
    seed = int(c2.number_input("Seed", value=0, min_value=0, step=1, disabled=mode == "demo",
                               help="the demo's pool has its own seed (0)" if mode == "demo" else None))
    task, n, split, per_task, distractors = tasks.task_names()[0], 100, "train", 120, 360
    if mode == "pool":
        per_task = int(c3.number_input("Records per task", value=120, min_value=1, max_value=5000, step=10))
        distractors = int(c4.number_input("Distractors", value=360, min_value=0, max_value=20000, step=40))
    else:
        task = c3.selectbox("Task", tasks.task_names())
        n = int(c4.number_input("Records", value=100, min_value=1, max_value=5000, step=10))
        split = st.selectbox("Split", list(tasks.SPLITS))
    if mode == "demo":
        spec = demo_pool_spec()
        label = "the demo's pool (g2is_core/specs/demo.yaml)"
    elif mode == "pool":
        spec = DataSpec(kind="pool", seed=seed, per_task=per_task, distractors=distractors)
        label = f"built-in pool (seed {seed}, {per_task} per task, {distractors} distractors)"
    else:
        spec = DataSpec(kind="task", name=task, n=n, seed=seed, split=split)
        label = f"built-in task {task} ({split}, seed {seed})"
    records, dhash = builtin_records(str(spec))
    with st.expander("About the built-in suite"):
        st.dataframe(tasks.describe_suite(seed), hide_index=True, width="stretch")
        st.caption("Composites are built from their ingredients; controls are used by no composite, so a "
                   "selection or a head pattern can be checked against a known answer.")
else:
    path = spec = None
    if source == UPLOAD:
        up = st.file_uploader("Instruction data (JSONL, JSON, CSV, TSV; .gz accepted)", key="data-upload",
                              help=appkit.limits_help(input_limits()))
        if up is not None:
            memo = st.session_state.setdefault("uploads", {})
            if up.file_id not in memo:
                # the file object, copied in chunks: no second in-memory copy of the upload (up.getvalue())
                memo[up.file_id] = str(appkit.save_upload(up.name, up, ws))
            path = memo[up.file_id]
            spec = DataSpec(kind="file", name=path)
            st.caption(f"Saved as `{path}`")
    else:
        roots = ", ".join(f"`{r}`" for r in appkit.allowed_roots(ws))
        typed = st.text_input("File or folder", placeholder="e.g. gsm8k, shared:gsm8k or uploads/mydata.jsonl",
                              help=f"A data spec (README, 'Naming data'): relative paths are looked up under "
                                   f"{roots}; shared:PATH under the shared data folder; builtin:... works too.")
        st.caption(f"Readable folders: {roots}. {appkit.limits_help(input_limits())}")
        if typed:
            try:
                spec = appkit.resolve_data_spec(typed, ws)
                path = str(spec.path()) if spec.is_path else None
            except ValueError as exc:
                st.error(str(exc))
    if spec is not None and not spec.is_path:  # a built-in spec typed into the box: no file settings
        try:
            records, dhash = builtin_records(str(spec))
        except DataError as exc:
            st.error(f"Could not load the data: {exc}")
            st.stop()
        label = spec.describe()
    elif path is None:
        st.info("Choose a file to see its records; the built-in suite needs nothing.")
        st.stop()
    else:
        c1, c2, c3 = st.columns([2, 1, 3])
        fmt = c1.selectbox("Format", ["auto-detect", *FORMATS],
                           help="auto-detect reads the extension and the first record")
        lenient = c2.toggle("Lenient", value=False, help="skip bad lines and list them instead of stopping at the first")
        columns_json = ""
        if fmt in ("csv", "tsv", "mapped"):
            columns_json = c3.text_input("Column mapping (JSON)",
                                         placeholder='{"prompt": "question", "response": "answer"}')
        try:
            records, report, dhash = file_records(file_content_key(appkit.file_stamp(path)),
                                                  None if fmt == "auto-detect" else fmt, lenient, columns_json,
                                                  str(spec))
        except DataError as exc:
            st.error(f"Could not load the data: {exc}")
            # A cap on bytes or records is not about one bad line: Lenient would not help.
            if not lenient and getattr(exc, "limit", "max_line_bytes") == "max_line_bytes":
                st.info("Turn on Lenient to skip bad lines and list them in the validation report.")
            st.stop()
        label = path

# ---- overview
m1, m2, m3, m4 = st.columns(4)
m1.metric("Records", f"{len(records):,}")
m2.metric("Sources", len({r.source for r in records}))
m3.metric("Tasks", len({r.task for r in records}))
m4.metric("Format", report.fmt if report else "built-in")
named = f" · data spec `{spec}`" if str(spec) != label else ""  # what to paste into --data or a spec
st.caption(f"{label}{named} · data hash `{dhash[:16]}`")

st.subheader("Records")
st.dataframe(appkit.records_table(records), hide_index=True, width="stretch", height=360)

c1, c2 = st.columns(2)
for col, by in ((c1, "source"), (c2, "task")):
    counts = appkit.count_by(records, by)
    col.plotly_chart(px.bar(counts, x=by, y="records", title=f"Records by {by}"), width="stretch")

# ---- tokens
st.subheader("Token lengths")
status = appkit.model_status(ws)
tok, tok_desc = tokenizer(str(ws.root), status.ready)
c1, c2 = st.columns(2)
max_length = int(c1.number_input("Max length (tokens)", value=512, min_value=16, max_value=32768, step=64))
cap = int(c2.number_input("Tokenise at most (records)", value=5000, min_value=100, max_value=200000, step=1000,
                          help="the first records of the data; tokenising is cached per data and settings"))
stats = lengths(dhash, tok_desc, max_length, cap, records, tok)
st.caption(f"Tokenised with {tok_desc}, chat template; {stats.n:,} of {len(records):,} records.")
fig = px.histogram(x=list(stats.lengths), nbins=60, labels={"x": "tokens per record"}, title="Token length")
fig.add_vline(x=max_length, line_dash="dash", annotation_text=f"max length {max_length}")
st.plotly_chart(fig, width="stretch")

# ---- validation
st.subheader("Validation report")
if stats.n_cut:
    st.warning(f"At max length {max_length}: {stats.summary}. Prompts are cut from the left, then responses "
               "from the right.")
else:
    st.success(f"At max length {max_length}: {stats.summary}.")
if report is None:
    st.write("The built-in suite is generated in code: nothing skipped.")
else:
    st.write(f"Read {report.n_read:,} units from {len(report.files) or 1} file(s); loaded {report.n_loaded:,} records; "
             f"skipped {len(report.skipped):,}." + (" Stopped early at the record limit." if report.truncated else ""))
    if report.skipped:
        st.dataframe(appkit.skipped_table(report.skipped), hide_index=True, width="stretch")

# ---- gradient stores
st.subheader("Gradient stores for this data")
stores = appkit.stores_for_data(ws, dhash)
if stores.empty:
    _ui.empty_state("No gradient store for this data yet. On the Runs page, start “LESS warmup (LoRA)”, then "
                    "“Extract gradient features” with this data spec (`g2is warmup --help`, `g2is grads --help`).")
else:
    st.dataframe(stores, hide_index=True, width="stretch")
