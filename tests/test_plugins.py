"""Features join Chorus one way: as plug-ins installed by the composition root (chorus/compose.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bots.commands import COMMANDS
from bots.events import Command, Message
from bots.plugin import Plugin
from bots.reply import Publisher, Reply
from bots.router import CommandSpec, Context, Handler
from bots.store import Store
from chorus.compose import build_chorus, features
from generation.fake import FakeGenerator
from support import make_bot, reply_text, settings_for


async def _echo(ctx: Context) -> None:
    assert isinstance(ctx.event, Command)
    await ctx.responder.send(Reply.text(f"echo: {ctx.event.text}"))


ECHO = CommandSpec(name="echo", summary="say it back", usage="/echo <text>", handler=_echo)


class EchoPlugin(Plugin):
    """A feature as small as one can be: a command, a claim on messages that start with "echo", start and stop."""

    name = "echo"
    commands = (ECHO,)

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.middleware = (self._count,)

    async def _count(self, ctx: Context, call_next: Handler) -> None:
        self.calls.append(f"saw {type(ctx.event).__name__}")
        await call_next(ctx)

    async def on_message(self, ctx: Context) -> bool:
        assert isinstance(ctx.event, Message)
        if not ctx.event.text.startswith("echo"):
            return False
        await ctx.responder.send(Reply.text("echoed"))
        return True

    async def start(self, app: object, publisher: Publisher) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")


class _Publisher:
    async def publish(self, conversation: object, reply: Reply) -> str:
        return "ref"


async def test_the_composition_root_installs_every_feature_and_the_platforms_list_what_they_declare(
    tmp_path: Path,
) -> None:
    assert [plugin.name for plugin in features()] == ["create", "brainstorm", "drops"]
    settings = settings_for(tmp_path)
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator())
    try:
        assert list(chorus.plugins) == ["create", "brainstorm", "drops"]
        # Discord and the Slack manifest register the catalogue: it must be exactly what the features declare.
        assert list(chorus.router.commands) == [spec.name for spec in COMMANDS]
        assert chorus.brainstorms is not None and chorus.drops is not None
    finally:
        await chorus.close()


async def test_an_installed_plugin_gets_its_command_its_events_and_start_and_stop(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path))
    plugin = EchoPlugin()
    bot.chorus.install(plugin)
    try:
        assert reply_text(await bot.one("/echo hello")) == "echo: hello"
        # Claimed before create/refine, which would otherwise answer that there is nothing to refine yet.
        assert reply_text(await bot.one("echo this")) == "echoed"
        assert "Nothing to refine yet" in reply_text(await bot.one("make it shorter"))
        assert "echo" in reply_text(await bot.one("/help"))
        await bot.chorus.attach_publisher(_Publisher())
        # Core services start once, however many features are installed.
        assert [t.get_name() for t in asyncio.all_tasks()].count("chorus-retention") == 1
    finally:
        await bot.chorus.close()
    assert plugin.calls.count("saw Command") == 2 and plugin.calls.count("saw Message") == 2
    assert plugin.calls[-1] == "stop" and "start" in plugin.calls


async def test_a_feature_cannot_be_installed_twice_or_take_another_features_command(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path))
    try:
        bot.chorus.install(EchoPlugin())
        with pytest.raises(ValueError, match="already installed"):
            bot.chorus.install(EchoPlugin())

        class Impostor(Plugin):
            name = "impostor"
            commands = (COMMANDS[0],)

        with pytest.raises(ValueError, match="declared twice"):
            bot.chorus.install(Impostor())
    finally:
        await bot.chorus.close()
