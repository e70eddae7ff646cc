"""End to end: pipe a script into `chorus run` as a subprocess, then check its output and the database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bots.events import Conversation
from bots.store import Store
from generation.models import ModelSpec

TERMINAL = Conversation("terminal", "local", "terminal")


def chorus(args: list[str], stdin: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")} | env
    return subprocess.run(
        [sys.executable, "-m", "chorus", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def stored_versions(db: Path) -> list[tuple[int, str, tuple[str, ...]]]:
    async def read() -> list[tuple[int, str, tuple[str, ...]]]:
        store = Store(f"sqlite+aiosqlite:///{db}")
        await store.start()
        try:
            latest = await store.latest_generation(TERMINAL)
            assert latest is not None
            return [(r.version, r.instruction, r.variants) for r in await store.versions(latest.root_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def test_piped_script_with_the_fake_model_then_history_after_restart(tmp_path: Path) -> None:
    env = {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"}
    script = "/create slogan a bookstore that is also a cafe --tone playful --n 3\ns\n/as bob\nmake it rhyme\n"
    result = chorus(["run"], script, env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert (
        out.index("── slogan · v1 of 1 ──")
        < out.index("── slogan · v2 of 2 · shorter ──")
        < out.index("bob> make it rhyme")
    )
    assert "\n1. " in out and "\n2. " in out and "\n3. " in out
    assert "[r] regenerate  [m] more like this  [s] shorter  [l] longer  [t <tone>] change tone  [+]/[-] rate" in out
    assert "Now typing as bob." in out and "── slogan · v3 of 3 · make it rhyme ──" in out

    versions = stored_versions(tmp_path / "chorus.db")
    assert [(v, i) for v, i, _ in versions] == [(1, ""), (2, "shorter"), (3, "make it rhyme")]
    assert all(len(variants) == 3 for _, _, variants in versions)

    again = chorus(["run"], "/history\n", env)
    assert again.returncode == 0, again.stderr
    assert (
        "3 versions" in again.stdout
        and "v2  shorter · you" in again.stdout
        and "v3  make it rhyme · bob" in again.stdout
    )


def test_bad_input_lines_do_not_stop_the_script(tmp_path: Path) -> None:
    env = {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"}
    result = chorus(["run"], "s\n/crate x\n/create slogan x --n 9\n/create tagline a cafe\n", env)
    assert result.returncode == 0, result.stderr
    assert "Nothing to refine yet" in result.stdout
    assert "Did you mean /create?" in result.stdout
    assert "--n must be a whole number from 1 to 5" in result.stdout
    assert "── tagline · v1 of 1 ──" in result.stdout


def test_config_with_a_wrong_type_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "chorus.toml"
    config.write_text("[limits]\nmax_variants = 'lots'\n")
    result = chorus(["--config", str(config), "run"], "", {"CHORUS_HOME": str(tmp_path)})
    assert result.returncode == 2
    assert f"{config}: [limits] max_variants = 'lots' is not allowed" in result.stderr


def test_unwritable_data_dir_exits_2_with_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = chorus(["run"], "", {"CHORUS_HOME": str(blocker / "home"), "CHORUS_MODEL__SOURCE": "fake"})
    assert result.returncode == 2
    assert str(blocker / "home") in result.stderr and "CHORUS_HOME" in result.stderr


def test_model_missing_offline_says_exactly_what_to_run(tmp_path: Path) -> None:
    result = chorus(
        ["run"],
        "",
        {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "hf", "CHORUS_MODEL__PATH": str(tmp_path / "nope")},
    )
    assert result.returncode == 2
    assert "model.path" in result.stderr and str(tmp_path / "nope") in result.stderr


def test_doctor_reports_config_store_and_model(tmp_path: Path) -> None:
    result = chorus(["doctor"], "", {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"})
    assert result.returncode == 0, result.stderr
    assert (
        "store:     ok" in result.stdout and "model:     fake" in result.stdout and "terminal:  ready" in result.stdout
    )


@pytest.mark.slow
def test_readme_script_with_the_real_embedded_model(tmp_path: Path, embedded_spec: ModelSpec) -> None:
    home = embedded_spec.path.parent.parent
    db = tmp_path / "chorus.db"
    env = {"CHORUS_HOME": str(home), "CHORUS_STORE__URL": f"sqlite+aiosqlite:///{db}"}
    result = chorus(["run"], "/create tweet launch of a tea shop\n s\n", env, timeout=300)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("── tweet · v1 of 1 ──") < out.index("── tweet · v2 of 2 · shorter ──")
    versions = stored_versions(db)
    assert [(v, i) for v, i, _ in versions] == [(1, ""), (2, "shorter")]
    first, second = versions[0][2][0], versions[1][2][0]
    assert first and second and first in out and second in out
