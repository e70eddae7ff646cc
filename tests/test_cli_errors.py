"""Every bad setting or unreachable dependency: one line naming what is wrong and where it came from, exit status 2,
without waiting on a timeout longer than the one configured."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from chorus.cli import main
from generation.fake import FakeGenerator
from generation.remote import RemoteGenerator
from generation.serve import build_app
from generation.types import ChatMessage, GenerationError, GenerationRequest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No CHORUS_* from the outside; a fresh home; the scripted model."""
    for key in list(os.environ):
        if key.startswith("CHORUS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CHORUS_MODEL__SOURCE", "fake")
    return monkeypatch


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel completes the handshake) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def _fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    return err


def test_a_config_file_that_is_not_utf8(clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    config = tmp_path / "chorus.toml"
    config.write_bytes(b'[terminal]\nuser = "caf\xe9"\n')  # Latin-1, as an old editor saves it
    line = _fails_in_one_line(capsys, ["--config", str(config), "doctor"])
    assert str(config) in line and "not UTF-8" in line


@pytest.mark.parametrize("command", ["run", "doctor", "serve", "prepare-model"])
def test_the_config_file_may_follow_the_command(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys, command: str
) -> None:
    # docs/slack.md says `chorus run --config chorus.toml`, which argparse refused as "unrecognized arguments".
    config = tmp_path / "chorus.toml"
    config.write_bytes(b'[terminal]\nuser = "caf\xe9"\n')
    line = _fails_in_one_line(capsys, [command, "--config", str(config)])
    assert str(config) in line and "not UTF-8" in line


def test_a_list_in_the_environment_that_is_not_json(clean_env: pytest.MonkeyPatch, capsys) -> None:
    clean_env.setenv("CHORUS_TONES", "playful")
    line = _fails_in_one_line(capsys, ["doctor"])
    assert "environment variable CHORUS_TONES" in line and """CHORUS_TONES='["playful"]'""" in line


def test_a_store_url_without_an_async_driver(clean_env: pytest.MonkeyPatch, capsys) -> None:
    clean_env.setenv("CHORUS_STORE__URL", "sqlite:///chorus.db")
    line = _fails_in_one_line(capsys, ["run"])
    assert "environment variable CHORUS_STORE__URL" in line and "sqlite+aiosqlite" in line


def test_a_port_out_of_range(clean_env: pytest.MonkeyPatch, capsys) -> None:
    line = _fails_in_one_line(capsys, ["serve", "--port", "99999"])
    assert "--port 99999" in line


def test_a_generation_url_that_is_not_a_url(clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    config = tmp_path / "chorus.toml"
    config.write_text("[generation]\nurl = '::::'\n")
    line = _fails_in_one_line(capsys, ["--config", str(config), "doctor"])
    assert f"{config}: [generation] url = '::::' is not allowed" in line


def test_a_misspelt_section_in_the_environment(clean_env: pytest.MonkeyPatch, capsys) -> None:
    clean_env.setenv("CHORUS_STROE__URL", "postgresql+asyncpg://chorus@db/chorus")
    line = _fails_in_one_line(capsys, ["run"])
    assert "environment variable CHORUS_STROE__URL" in line and "CHORUS_STORE__" in line


def test_a_store_host_that_never_answers(clean_env: pytest.MonkeyPatch, silent_port: int, capsys) -> None:
    clean_env.setenv("CHORUS_STORE__URL", f"postgresql+asyncpg://chorus:pw@127.0.0.1:{silent_port}/chorus")
    clean_env.setenv("CHORUS_STORE__CONNECT_TIMEOUT_S", "0.5")
    line = _fails_in_one_line(capsys, ["run"])
    assert "no answer within 0.5 s" in line and "environment variable CHORUS_STORE__URL" in line
    assert "pw" not in line


def test_doctor_reports_a_store_that_never_answers(clean_env: pytest.MonkeyPatch, silent_port: int, capsys) -> None:
    clean_env.setenv("CHORUS_STORE__URL", f"postgresql+asyncpg://chorus@127.0.0.1:{silent_port}/chorus")
    clean_env.setenv("CHORUS_STORE__CONNECT_TIMEOUT_S", "0.5")
    assert main(["doctor"]) == 2
    assert "store:     FAILED — Cannot open the store" in capsys.readouterr().out


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_doctor_reports_an_embedding_service_that_is_down(
    clean_env: pytest.MonkeyPatch, closed_port: int, capsys
) -> None:
    clean_env.setenv("CHORUS_BRAINSTORM__EMBEDDING_URL", f"http://127.0.0.1:{closed_port}/v1")
    # Before: doctor did not look at brainstorm.embedding_url and said everything was fine.
    assert main(["doctor"]) == 2
    out = capsys.readouterr().out
    assert f"embedding: FAILED — The embedding service at http://127.0.0.1:{closed_port}/v1/embeddings" in out


def test_doctor_says_when_the_discord_token_file_is_missing(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    missing = tmp_path / "secrets" / "discord-token"
    clean_env.setenv("CHORUS_DISCORD__TOKEN_FILE", str(missing))
    clean_env.delenv("CHORUS_DISCORD_TOKEN", raising=False)
    main(["doctor"])
    # Before: "discord: token set", and `chorus run` then failed on the missing file.
    assert f"discord.token_file {missing} not found" in capsys.readouterr().out


def test_the_module_entry_point_exits_2_from_the_repository_root(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(tmp_path), "CHORUS_TONES": "playful"}
    result = subprocess.run(
        [sys.executable, "-m", "chorus", "doctor"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "CHORUS_TONES" in result.stderr


async def test_a_generation_server_that_never_answers_costs_one_time_budget(silent_port: int) -> None:
    """The model-name lookup of a first request used to wait 120 s before the budget even started."""
    generator = RemoteGenerator(f"http://127.0.0.1:{silent_port}/v1", timeout_s=120.0)
    request = GenerationRequest(messages=(ChatMessage("user", "hi"),), time_budget_s=0.5)
    try:
        with pytest.raises(GenerationError, match=r"did not answer within 0.5 s"):
            # The outer bound only keeps a regression from hanging the suite.
            await asyncio.wait_for(anext(generator.stream(request)), timeout=60)
    finally:
        await generator.close()


@pytest.fixture
async def keyed_server() -> AsyncIterator[str]:
    server = TestServer(build_app(FakeGenerator(), model_name="fake", api_key="k3y"), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/v1"))
    await server.close()


@pytest.mark.parametrize(("key", "said"), [(None, "no API key was sent"), ("wrong", "the API key was refused")])
async def test_health_checks_the_api_key(keyed_server: str, key: str | None, said: str) -> None:
    generator = RemoteGenerator(keyed_server, api_key=key)
    try:
        health = await generator.health()
    finally:
        await generator.close()
    assert not health.ok
    assert said in health.detail and "generation.api_key_env" in health.detail


async def test_health_with_the_right_key_is_ok(keyed_server: str) -> None:
    generator = RemoteGenerator(keyed_server, api_key="k3y")
    try:
        health = await generator.health()
    finally:
        await generator.close()
    assert health.ok and health.model == "fake"


def test_chorus_alone_lists_the_commands_and_says_where_to_start(capsys) -> None:
    # argparse said only "the following arguments are required: command".
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "run " in err and "doctor" in err and "`chorus run` opens the terminal channel" in err


@pytest.mark.parametrize(("typed", "meant"), [("rn", "run"), ("serv", "serve"), ("docter", "doctor")])
def test_a_misspelt_command_gets_the_closest_one(capsys, typed: str, meant: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([typed])
    assert exit_.value.code == 2
    assert f"unknown command '{typed}'. Did you mean `chorus {meant}`?" in capsys.readouterr().err


def test_an_unknown_option_is_shown_with_its_commands_usage(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: chorus run ") and "--bogus (`chorus run --help` lists the options)" in err


def test_each_command_says_what_it_does_and_chorus_has_a_version(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "Start Chorus on the configured platform" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("chorus ")


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    # `chorus doctor | head -3` printed a BrokenPipeError traceback.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(tmp_path), "CHORUS_MODEL__SOURCE": "fake"}
    process = subprocess.Popen(
        [sys.executable, "-m", "chorus", "doctor"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # before Chorus has printed anything: importing it takes far longer than this
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1
    assert "Traceback" not in err and "Broken pipe" not in err, err


def test_the_terminal_channel_keeps_log_lines_off_the_screen(tmp_path: Path, closed_port: int) -> None:
    # A timestamped "WARNING bots.studio: generation stopped …" line used to land in the middle of the reply.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHORUS_")}
    env |= {"CHORUS_HOME": str(tmp_path), "CHORUS_GENERATION__URL": f"http://127.0.0.1:{closed_port}/v1"}
    result = subprocess.run(
        [sys.executable, "-m", "chorus", "run"],
        cwd=ROOT,
        env=env,
        input="/create slogan tea\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "Cannot reach the generation server" in result.stdout
    assert "WARNING" not in result.stderr, result.stderr
    assert "WARNING bots.studio" in (tmp_path / "chorus.log").read_text()


def test_an_error_in_the_terminal_channel_is_one_line_that_says_where_the_details_are(tmp_path: Path) -> None:
    import io
    import logging

    from chorus.cli import _logs_off_the_screen

    screen = io.StringIO()
    handler = logging.StreamHandler(screen)
    logging.getLogger().addHandler(handler)
    try:
        with _logs_off_the_screen(tmp_path / "chorus.log", [handler]):
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("bots.studio").exception("generation 7 failed")
            logging.getLogger("bots.studio").warning("only in the file")
    finally:
        logging.getLogger().removeHandler(handler)
    assert screen.getvalue() == f"chorus: generation 7 failed (details in {tmp_path / 'chorus.log'})\n"
    logged = (tmp_path / "chorus.log").read_text()
    assert "Traceback" in logged and "ValueError: boom" in logged and "only in the file" in logged


def test_ctrl_c_while_the_model_loads_says_it_stopped(clean_env: pytest.MonkeyPatch, capsys) -> None:
    # It exited with status 130 and nothing but the terminal's "^C".
    def interrupted(settings: object) -> object:
        raise KeyboardInterrupt

    clean_env.setattr("chorus.cli.build_generator", interrupted)
    assert main(["run"]) == 130
    assert capsys.readouterr().err.strip() == "chorus: stopped (Ctrl-C)."
