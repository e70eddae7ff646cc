"""The `chorus` command line: run, doctor, serve, prepare-model. What it builds comes from chorus/compose.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import gc
import importlib.metadata
import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from bots.store import Store, StoreError
from chorus.compose import build_chorus, build_embedder, build_generator, progress, run_platform
from config import ConfigError, Settings, load_settings
from generation.types import Embedder, GenerationError, ModelUnavailable

_log = logging.getLogger("chorus")

# Platforms whose adapter ships in this version; the others are refused before the model loads.
_PLATFORMS_AVAILABLE = frozenset({"terminal", "discord", "slack"})


async def _run(settings: Settings) -> int:
    if settings.chorus.platform not in _PLATFORMS_AVAILABLE:
        print(
            f"chorus: platform {settings.chorus.platform!r} is not available in this version yet; "
            'use chorus.platform = "terminal".',
            file=sys.stderr,
        )
        return 2
    store = Store(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    await store.start()
    try:
        generator = build_generator(settings)
    except ModelUnavailable:
        await store.close()
        raise
    warmup = getattr(generator, "warmup", None)
    if warmup is not None:
        progress("Loading the model…")
        await warmup()
    chorus = build_chorus(settings, store, generator, embedder=build_embedder(settings))
    # The model, torch and the libraries live as long as the process: keep full collections from rescanning them
    # (one such pause stalled Slack acks by 280 ms in bench/ack_slack.py).
    gc.collect()
    gc.freeze()
    try:
        return await run_platform(chorus)
    finally:
        await chorus.close()


async def _doctor(settings: Settings) -> int:
    """Every check on its own line; exit status 2 when any of them failed."""
    from generation.models import model_check

    print("Chorus doctor")
    print(f"  config:    {' + '.join(settings.sources)} + CHORUS_* environment")
    print(f"  home:      {settings.home_dir}")
    print(f"  platform:  {settings.chorus.platform}")
    print(f"  kinds:     {', '.join(settings.kinds)}")
    ok = True
    store = Store(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    try:
        await store.start()
        print(f"  store:     ok ({_redact(settings.store_url)}, {await store.count_generations()} generations)")
    except StoreError as exc:
        ok = False
        print(f"  store:     FAILED — {exc}")
    finally:
        await store.close()
    if settings.generation.url:
        remote = build_generator(settings)
        try:
            health = await remote.health()
        finally:
            await remote.close()
        ok = ok and health.ok
        state = f"ok, serving {health.model}" if health.ok else f"NOT READY — {health.detail}"
        print(f"  model:     remote {settings.generation.url}: {state}")
    elif settings.model.source == "fake":
        print("  model:     fake (scripted text, for tests and demos)")
    else:
        usable, line = model_check(settings)
        ok = ok and usable
        print(f"  model:     {line}" if usable else f"  model:     FAILED — {line}")
    if settings.brainstorm.embedding_url or settings.brainstorm.embedding_path:
        ok = await _check_embedding(settings) and ok
    print("  terminal:  ready")
    print(f"  {'discord:':<10} {_discord_token(settings)}; adapter ready")
    slack_env = settings.slack.bot_token_env
    state = "token set" if os.environ.get(slack_env) else f"no token ({slack_env} unset)"
    state += f", {settings.slack.mode} mode" + (", OAuth installs" if settings.slack.oauth else "")
    print(f"  {'slack:':<10} {state}; adapter ready")
    return 0 if ok else 2


def _discord_token(settings: Settings) -> str:
    """Where the Discord token would come from, as doctor shows it; a token file that is not there is said so."""
    env = settings.discord.token_env
    if os.environ.get(env):
        return "token set"
    if not settings.discord.token_file:
        return f"no token ({env} unset)"
    token_file = Path(settings.discord.token_file).expanduser()
    if token_file.is_file():
        return "token set"
    return f"no token ({env} unset, discord.token_file {token_file} not found)"


async def _check_embedding(settings: Settings) -> bool:
    """Embed one sentence through `brainstorm.embedding_url` or the model in `brainstorm.embedding_path`: brainstorm
    themes and drop repeat checks use it."""
    where = settings.brainstorm.embedding_url or settings.brainstorm.embedding_path
    embedder = None
    try:
        embedder = build_embedder(settings)
        assert embedder is not None
        await embedder.embed(["Chorus doctor"])
    except GenerationError as exc:  # ModelUnavailable included: a path that holds no model
        print(f"  embedding: FAILED — {exc}")
        return False
    finally:
        close = getattr(embedder, "close", None)
        if close is not None:
            await close()
    print(f"  embedding: ok ({where})")
    return True


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


def _served_embedder(settings: Settings) -> Embedder | None:
    """What `chorus serve` answers /v1/embeddings with: `brainstorm.embedding_path`'s model when set (so bot hosts
    share one stronger embedder), else MiniLM when installed (chosen inside serve)."""
    if not settings.brainstorm.embedding_path:
        return None
    from generation.embeddings import local_embedder

    return local_embedder(settings.brainstorm.embedding_path)


async def _serve(settings: Settings, host: str, port: int, api_key_env: str | None) -> int:
    from generation.serve import serve

    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        print(f"chorus: --api-key-env names {api_key_env}, but that environment variable is empty.", file=sys.stderr)
        return 2
    generator = build_generator(settings)
    try:
        warmup = getattr(generator, "warmup", None)
        if warmup is not None:
            progress("Loading the model…")
            await warmup()
        model_name = (await generator.health()).model or "chorus"

        def ready(url: str) -> None:
            auth = f"; clients send the key from ${api_key_env}" if api_key else ""
            print(f"Serving {model_name} at {url} (OpenAI-compatible{auth}). Ctrl-C stops.", flush=True)

        # 4096: the most a content kind may ask for, so any valid configuration works against this server.
        await serve(
            generator,
            host,
            port,
            model_name=model_name,
            api_key=api_key,
            max_tokens_limit=4096,
            time_budget_s=settings.generation.time_budget_s,
            on_ready=ready,
            embedder=_served_embedder(settings),
        )
    except OSError as exc:
        print(f"chorus: cannot serve on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        await generator.close()
    return 0


def _prepare(settings: Settings) -> int:
    from generation.models import prepare_model

    spec = prepare_model(settings, progress=progress)
    print(f"Model: {spec.name} ({spec.path})")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, plus the closest command for a misspelt one (`chorus rn` -> did you mean `chorus run`?)."""

    def error(self, message: str) -> NoReturn:
        typed = re.search(r"invalid choice: '([^']*)'", message)
        commands = list(self.commands())
        if typed and commands:
            close = difflib.get_close_matches(typed[1], commands, n=1, cutoff=0.5)
            hint = f"Did you mean `{self.prog} {close[0]}`? " if close else ""
            message = f"unknown command '{typed[1]}'. {hint}Commands: {', '.join(commands)}."
        elif message.startswith("unrecognized arguments"):
            message += f" (`{self.prog} --help` lists the options)"
        super().error(message)

    def commands(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}


_VERBOSE = "log to stderr (else `run` in the terminal logs warnings to <home>/chorus.log)"


def parser() -> _Parser:
    root = _Parser(
        prog="chorus",
        description="An AI creative co-pilot for chat communities. Start with `chorus run`: the terminal channel.",
        epilog="`chorus <command> --help` shows a command's options. Data lives in $CHORUS_HOME (default "
        "~/.cache/chorus); settings: docs/configuration.md.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    root.add_argument("--config", help="a TOML file layered over the defaults (or set CHORUS_CONFIG)")
    root.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE)
    # The same two options after the command (`chorus run --config chorus.toml`); SUPPRESS keeps the root's value
    # when they are not given there.
    common = _Parser(add_help=False)
    common.add_argument("--config", default=argparse.SUPPRESS, help="a TOML file layered over the defaults")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE)
    sub = root.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        # The summary both in `chorus --help`'s list and at the top of `chorus <name> --help`.
        return sub.add_parser(name, parents=[common], help=summary, description=summary[0].upper() + summary[1:] + ".")

    command("run", "start Chorus on the configured platform (the terminal by default; /help lists its commands)")
    command("doctor", "print config, model and platform readiness")
    command("prepare-model", "verify and convert the configured model once, then exit")
    serve = command("serve", "serve the configured model over an OpenAI-compatible HTTP API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0 picks a free one)")
    serve.add_argument("--api-key-env", metavar="NAME", help="require `Authorization: Bearer $NAME` on /v1/*")
    pull = command("pull", "download a model from the Hugging Face Hub once and print the model.path")
    pull.add_argument("hub_id", help="owner/name, e.g. HuggingFaceTB/SmolLM2-360M-Instruct")
    pull.add_argument("--revision", help="a branch, tag or commit (default: main)")
    pull.add_argument("--gguf-file", default="", help="download this one GGUF file of the repository instead")
    pull.add_argument(
        "--embedder",
        action="store_true",
        help="a sentence-embedding model for brainstorm themes (e.g. sentence-transformers/all-mpnet-base-v2)",
    )
    return root


def _version() -> str:
    try:
        return importlib.metadata.version("chorus")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def _pull(settings: Settings, hub_id: str, revision: str | None, gguf_file: str, embedder: bool = False) -> int:
    """Explicit download (the only one Chorus ever does), then the config lines that use the model."""
    from generation.hub import pull_model

    if embedder and gguf_file:
        print("chorus: --embedder takes a transformers model, not a GGUF file.", file=sys.stderr)
        return 2
    spec = pull_model(hub_id, settings, revision=revision, gguf_file=gguf_file, embedder=embedder, progress=progress)
    if embedder:
        print(
            "Use it for brainstorm themes by setting, in your config file:\n\n[brainstorm]\n"
            f'embedding_path = "{spec.path}"\n\nor in the environment: CHORUS_BRAINSTORM__EMBEDDING_PATH={spec.path}'
        )
        return 0
    print(
        f'Use it by setting, in your config file:\n\n[model]\nsource = "hf"\npath = "{spec.path}"\n\n'
        f"or in the environment: CHORUS_MODEL__SOURCE=hf CHORUS_MODEL__PATH={spec.path}"
    )
    return 0


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _OneLine(logging.Formatter):
    """An error as one line that says where its details are: a traceback would land in the middle of the chat."""

    def __init__(self, log_file: Path) -> None:
        super().__init__()
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        return f"chorus: {record.getMessage()} (details in {self.log_file})"


@contextlib.contextmanager
def _logs_off_the_screen(log_file: Path, on_screen: list[logging.Handler]) -> Iterator[None]:
    """In the terminal channel the screen is the chat: warnings and tracebacks go to `log_file`, and only an error
    shows, as one line (`-v` keeps everything on stderr). An unwritable home leaves logging as it was."""
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file: logging.Handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=1_000_000, backupCount=1, encoding="utf-8"
        )
    except OSError:
        yield
        return
    to_file.setFormatter(logging.Formatter(_LOG_FORMAT))
    saved = [(handler, handler.level, handler.formatter) for handler in on_screen]
    for handler in on_screen:
        handler.setLevel(logging.ERROR)
        handler.setFormatter(_OneLine(log_file))
    root = logging.getLogger()
    root.addHandler(to_file)
    try:
        yield
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler, level, formatter in saved:
            handler.setLevel(level)
            handler.setFormatter(formatter)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A bad setting or an unusable dependency is one line on stderr and exit status 2."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader went away (`chorus doctor | head -3`): stop quietly, and keep the interpreter's last flush from
        # failing on the closed pipe too.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return 1


def _main(argv: Sequence[str] | None) -> int:
    cli = parser()
    args, unknown = cli.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so its usage and options are the ones shown
        cli.commands().get(args.command, cli).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        cli.print_help(sys.stderr)
        print("\nchorus: say which command to run; `chorus run` opens the terminal channel.", file=sys.stderr)
        return 2
    if args.command == "serve" and not 0 <= args.port <= 65535:
        print(f"chorus: --port {args.port} is not a port number (0-65535; 0 picks a free one)", file=sys.stderr)
        return 2
    before = set(logging.getLogger().handlers)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format=_LOG_FORMAT, stream=sys.stderr)
    on_screen = [handler for handler in logging.getLogger().handlers if handler not in before]
    settings: Settings | None = None
    try:
        settings = load_settings(args.config)
        if args.command == "run":
            if settings.chorus.platform != "terminal" or args.verbose:
                return asyncio.run(_run(settings))
            with _logs_off_the_screen(settings.home_dir / "chorus.log", on_screen):
                return asyncio.run(_run(settings))
        if args.command == "doctor":
            return asyncio.run(_doctor(settings))
        if args.command == "serve":
            return asyncio.run(_serve(settings, args.host, args.port, args.api_key_env))
        if args.command == "pull":
            return _pull(settings, args.hub_id, args.revision, args.gguf_file, args.embedder)
        return _prepare(settings)
    except ConfigError as exc:
        print(f"chorus: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        origin = f" (store.url from {settings.origin('store.url')})" if settings and settings.store.url else ""
        print(f"chorus: {exc}{origin}", file=sys.stderr)
        return 2
    except ModelUnavailable as exc:
        print(f"chorus: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the terminal channel takes Ctrl-C over, e.g. while the model loads
        print("\nchorus: stopped (Ctrl-C).", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
