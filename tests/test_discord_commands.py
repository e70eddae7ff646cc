"""The slash-command schema Discord receives is built from the typed options each command declares."""

from __future__ import annotations

from pathlib import Path

import discord
from discord import app_commands

from adapters.discord.commands import required_options, slash_command
from bots.commands.create import CREATE
from bots.options import Option
from bots.router import CommandSpec
from support import settings_for


async def _noop(ctx) -> None:
    """A handler that is never called: only the schema is under test."""


def _schema(spec: CommandSpec, tmp_path: Path) -> dict[str, dict]:
    settings = settings_for(tmp_path)
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))

    async def on_command(interaction: discord.Interaction, spec: CommandSpec) -> None:
        """Never called here."""

    command = slash_command(spec, settings, on_command).to_dict(tree)
    return {option["name"]: option for option in command["options"]}


def test_option_types_come_from_the_declared_types_not_the_names(tmp_path: Path) -> None:
    spec = CommandSpec(
        name="nickname",
        summary="pick a nickname",
        usage="/nickname",
        handler=_noop,
        options=(
            Option("n", "the nickname itself"),  # text, though `n` is an integer elsewhere
            Option("count", "how many to suggest", type="integer", required=True, bound="variants"),
            Option("kind", "any word"),  # no choices unless declared
            ("tone", "a plain pair is an optional text option"),
        ),
    )
    options = _schema(spec, tmp_path)
    assert options["n"]["type"] == 3 and not options["n"].get("required")
    assert options["count"]["type"] == 4 and options["count"]["required"] and options["count"]["max_value"] >= 1
    assert not options["kind"].get("choices") and options["tone"]["type"] == 3
    assert next(iter(options)) == "count", "required options come first"
    assert required_options(spec) == ["count"]


def test_create_declares_its_required_options_and_choices(tmp_path: Path) -> None:
    options = _schema(CREATE, tmp_path)
    assert options["kind"]["required"] and options["prompt"]["required"] and options["n"]["type"] == 4
    assert [choice["value"] for choice in options["length"]["choices"]] == ["short", "medium", "long"]
    assert required_options(CREATE) == ["kind", "prompt"]


def test_brainstorm_is_offered_only_in_servers_because_it_opens_a_thread(tmp_path: Path) -> None:
    # Discord has no threads in DMs: /brainstorm in a DM with Chorus posted a kickoff and then "Something went wrong".
    from bots.brainstorm.command import BRAINSTORM

    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))

    async def on_command(interaction: discord.Interaction, spec: CommandSpec) -> None:
        """Never called here."""

    settings = settings_for(tmp_path)
    brainstorm = slash_command(BRAINSTORM, settings, on_command).to_dict(tree)
    create = slash_command(CREATE, settings, on_command).to_dict(tree)
    assert brainstorm["contexts"] == [0] and brainstorm["dm_permission"] is False
    assert create["contexts"] is None and create["dm_permission"] is not False


def test_a_prompt_limit_above_discords_string_option_limit_still_registers(tmp_path: Path) -> None:
    # Discord refuses a string option with max_length over 6000, and with it the whole command sync.
    settings = settings_for(tmp_path, CHORUS_LIMITS__MAX_PROMPT_CHARS="10000")
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))

    async def on_command(interaction: discord.Interaction, spec: CommandSpec) -> None:
        """Never called here."""

    options = {o["name"]: o for o in slash_command(CREATE, settings, on_command).to_dict(tree)["options"]}
    assert options["prompt"]["max_length"] == 6000


def test_remix_asks_discord_for_the_tone_it_requires(tmp_path: Path) -> None:
    # The tone option was optional in Discord's form, and leaving it out was answered "Say which tone…".
    from bots.commands.create import REMIX

    options = _schema(REMIX, tmp_path)
    assert options["text"]["required"] and options["tone"]["required"]
    assert [choice["value"] for choice in options["tone"]["choices"]][:2] == ["neutral", "playful"]
