"""`chorus pull <hub id>`: download a bigger model from the Hugging Face Hub, on request only, and prepare it once.

The download goes through huggingface_hub (so HF_ENDPOINT, HF_TOKEN and proxies work as usual) into a staging
cache under the Chorus home; the model is then verified by loading it, and saved once as a plain Hugging Face
directory beside the converted embedded model, with a marker naming the exact commit. Nothing here runs unless a
person types `chorus pull`: a running Chorus never downloads anything.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from config import Settings
from generation.models import (
    ModelSpec,
    Progress,
    _conversion_lock,
    _is_converted,
    _models_dir,
    _write_marker,
    convert_gguf,
    import_transformers,
)
from generation.types import ModelUnavailable

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# What a causal language model needs; everything else in a repository (training logs, ONNX, images) stays behind.
WANTED = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


def pull_model(
    hub_id: str,
    settings: Settings,
    *,
    revision: str | None = None,
    gguf_file: str = "",
    embedder: bool = False,
    progress: Progress = print,
) -> ModelSpec:
    """Download hub_id (at revision), verify it loads, and save it once under <home>/models; return where. With
    `embedder`, hub_id is a sentence-embedding model (sentence-transformers layout) for brainstorm themes."""
    if not _HUB_ID.match(hub_id):
        raise ModelUnavailable(
            f"{hub_id!r} is not a Hub model id; use the form owner/name, e.g. HuggingFaceTB/SmolLM2-360M-Instruct."
        )
    offline = offline_setting()
    if offline:
        raise ModelUnavailable(
            f"chorus pull downloads from the Hub, but {offline} is set (offline mode); unset it for this command, "
            f"e.g. `env -u {offline.split('=')[0]} chorus pull {hub_id}`."
        )
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError
    except ImportError:
        raise ModelUnavailable("chorus pull needs huggingface_hub: .venv/bin/pip install huggingface_hub") from None
    models = _models_dir(settings)
    staging = settings.home_dir / "hub"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    progress(f"Downloading {hub_id}{'@' + revision if revision else ''} from {endpoint} ...")
    try:
        snapshot = Path(
            snapshot_download(
                hub_id,
                revision=revision,
                cache_dir=staging,
                allow_patterns=[gguf_file] if gguf_file else WANTED,
            )
        )
    except RevisionNotFoundError:
        raise ModelUnavailable(f"{hub_id} has no revision {revision!r}.") from None
    except RepositoryNotFoundError:
        raise ModelUnavailable(
            f"{hub_id} was not found on {endpoint} (a typo, or a private/gated model: set HF_TOKEN)."
        ) from None
    except HfHubHTTPError as exc:
        raise ModelUnavailable(f"The Hub refused the download of {hub_id}: {_first_line(exc)}") from None
    except Exception as exc:  # network, disk, offline mode: one clear line instead of a traceback
        raise ModelUnavailable(f"Could not download {hub_id} from {endpoint}: {_first_line(exc)}") from None
    commit = snapshot.name
    name = hub_id.split("/", 1)[1]
    target = models / f"{name}-{commit[:12]}"
    if _is_converted(target, commit):
        progress(f"Already prepared: {target}")
        return ModelSpec(path=target, name=name)
    _verify_files(hub_id, snapshot, gguf_file)
    with _conversion_lock(target):
        if not _is_converted(target, commit):
            progress(f"Verifying and preparing {name} once ...")
            _prepare_into(snapshot, target, gguf_file, embedder=embedder)
            _write_marker(target, {"sha256": commit, "source": f"hub:{hub_id}@{commit}", "size": 0, "mtime_ns": 0})
    shutil.rmtree(staging / f"models--{hub_id.replace('/', '--')}", ignore_errors=True)
    progress(f"Model ready at {target}")
    return ModelSpec(path=target, name=name)


def offline_setting() -> str:
    """`NAME=value` of the environment variable that puts huggingface_hub or transformers offline, or ""."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        value = os.environ.get(name, "").strip()
        if value.upper() in ("1", "ON", "YES", "TRUE"):
            return f"{name}={value}"
    return ""


def _verify_files(hub_id: str, snapshot: Path, gguf_file: str) -> None:
    if gguf_file:
        path = snapshot / gguf_file
        if not path.is_file() or path.open("rb").read(4) != b"GGUF":
            raise ModelUnavailable(f"{hub_id} has no GGUF file {gguf_file!r}.")
        return
    if not (snapshot / "config.json").is_file():
        raise ModelUnavailable(f"{hub_id} has no config.json: it is not a transformers model (try --gguf-file).")
    if not any(snapshot.glob("*.safetensors")):
        raise ModelUnavailable(
            f"{hub_id} has no .safetensors weights; pick a repository that has them, or a GGUF with --gguf-file."
        )


def _prepare_into(snapshot: Path, target: Path, gguf_file: str, *, embedder: bool = False) -> None:
    """Load the download (which verifies it: a truncated or mismatched file fails here) and save it as a plain
    directory, then swap it into place so a half-written copy is never used."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        if gguf_file:
            convert_gguf(snapshot / gguf_file, work)
        else:
            transformers = import_transformers()
            auto = transformers.AutoModel if embedder else transformers.AutoModelForCausalLM
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(snapshot, local_files_only=True)
                model = auto.from_pretrained(snapshot, local_files_only=True)
            except Exception as exc:
                raise ModelUnavailable(f"The downloaded model does not load: {_first_line(exc)}") from None
            if embedder and _generates(model.config):
                raise ModelUnavailable("That is a text-generation model; --embedder takes a sentence-embedding model.")
            if not embedder and getattr(tokenizer, "chat_template", None) is None:
                raise ModelUnavailable(
                    "The downloaded model has no chat template; Chorus needs an instruct/chat model."
                )
            model.save_pretrained(work)
            tokenizer.save_pretrained(work)
            # How a sentence-transformers model pools its tokens (read by generation.embeddings.read_pooling).
            for name in ("modules.json", "1_Pooling/config.json") if embedder else ():
                if (snapshot / name).is_file():
                    (work / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(snapshot / name, work / name)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _generates(config: object) -> bool:
    """Is this a text-generation (causal LM) model rather than a sentence encoder?"""
    architectures = getattr(config, "architectures", None) or []
    return bool(getattr(config, "is_decoder", False)) or any("CausalLM" in name for name in architectures)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
