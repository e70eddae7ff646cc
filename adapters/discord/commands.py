"""Slash commands, the "Remix with Chorus" message command and the persistent components, all built from the
core's `COMMANDS` and custom_id scheme; nothing here is registered by hand per command."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Optional

import discord
from discord import app_commands

from adapters.discord.translate import CUSTOM_ID, REMIX_MENU, REMIX_MODAL_ID
from bots.options import Option, typed_options
from bots.router import CommandSpec
from config import Settings
from config.settings import MAX_TONE_CHARS

_log = logging.getLogger(__name__)

CHOICES_LIMIT = 25
STRING_OPTION_LIMIT = 6000  # the longest max_length Discord accepts on a string option
FREE_TEXT = Option("text", "what to do (same words as in the terminal)")

CommandCallback = Callable[[discord.Interaction, CommandSpec], Awaitable[None]]
ComponentCallback = Callable[[discord.Interaction], Awaitable[None]]


def options_of(spec: CommandSpec) -> tuple[Option, ...]:
    """The command's typed options; a command without any takes one free-text option, as in the terminal."""
    return typed_options(spec.options) if spec.options else (FREE_TEXT,)


def required_options(spec: CommandSpec) -> list[str]:
    """The options Discord must send with this command; one missing means the client has an outdated schema."""
    return [option.name for option in typed_options(spec.options) if option.required]


def _annotation(option: Option, settings: Settings) -> Any:
    """The parameter type discord.py turns into the option's Discord type (and its bounds)."""
    limits = settings.limits
    base: Any
    if option.type == "integer":
        base = app_commands.Range[int, 1, limits.max_variants] if option.bound == "variants" else int
    else:
        longest = min(limits.max_prompt_chars, STRING_OPTION_LIMIT)
        base = app_commands.Range[str, 1, longest] if option.bound == "prompt_chars" else str
    return base if option.required else Optional[base]  # noqa: UP045 (discord.py reads typing.Optional)


def _choices(values: Sequence[str]) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=value, value=value) for value in values[:CHOICES_LIMIT]]


def slash_command(spec: CommandSpec, settings: Settings, on_command: CommandCallback) -> app_commands.Command:
    """One app command for a CommandSpec, its options typed as the spec declares; choices from the settings lists
    the spec names (autocomplete past 25). Required options come first, as Discord requires."""
    options = sorted(options_of(spec), key=lambda option: not option.required)
    parameters = [
        inspect.Parameter("interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction)
    ]
    for option in options:
        parameters.append(
            inspect.Parameter(
                option.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=inspect.Parameter.empty if option.required else None,
                annotation=_annotation(option, settings),
            )
        )

    async def callback(interaction: discord.Interaction, **_: Any) -> None:
        await on_command(interaction, spec)

    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
        option.name: option.description[:100] for option in options
    }
    lists = {"kinds": list(settings.kinds), "tones": list(settings.tones), "lengths": list(settings.lengths.names)}
    listed = {option.name: lists[option.choices] for option in options if option.choices}
    small = {name: values for name, values in listed.items() if len(values) <= CHOICES_LIMIT}
    callback.__discord_app_commands_param_choices__ = {  # type: ignore[attr-defined]
        name: _choices(values) for name, values in small.items()
    }
    command: app_commands.Command[Any, ..., Any] = app_commands.Command(
        name=spec.name, description=spec.summary[:100], callback=callback
    )
    for name, values in listed.items():
        if name not in small:
            command.autocomplete(name)(_autocomplete(values))
    if spec.opens_thread:
        # Threads exist only in server channels: a DM would take the command and then fail to open its thread.
        command.guild_only = True
        command.allowed_contexts = app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False)
    return command


def _autocomplete(
    values: Sequence[str],
) -> Callable[[discord.Interaction, str], Coroutine[Any, Any, list[app_commands.Choice[str]]]]:
    async def complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        current = current.lower()
        return _choices([value for value in values if current in value.lower()])

    return complete


def remix_menu(on_remix: Callable[[discord.Interaction, discord.Message], Awaitable[None]]) -> app_commands.ContextMenu:
    async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
        await on_remix(interaction, message)

    return app_commands.ContextMenu(name=REMIX_MENU, callback=callback)


def register(
    tree: app_commands.CommandTree,
    commands: Sequence[CommandSpec],
    settings: Settings,
    on_command: CommandCallback,
    on_remix: Callable[[discord.Interaction, discord.Message], Awaitable[None]] | None,
) -> None:
    for spec in commands:
        try:
            tree.add_command(slash_command(spec, settings, on_command))
        except (TypeError, ValueError, app_commands.AppCommandError) as exc:
            _log.error("cannot register /%s on Discord: %s", spec.name, exc)
    if on_remix is not None:
        tree.add_command(remix_menu(on_remix))


class ChorusComponent(discord.ui.DynamicItem[discord.ui.Item[Any]], template=CUSTOM_ID):
    """Every Chorus button and select, matched by custom_id, so clicks on messages from before a restart work."""

    def __init__(self, item: discord.ui.Item[Any]) -> None:
        super().__init__(item)

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> ChorusComponent:
        return cls(item)

    async def callback(self, interaction: discord.Interaction) -> None:
        handler: ComponentCallback | None = getattr(interaction.client, "on_chorus_component", None)
        if handler is not None:
            await handler(interaction)


def ask_modal(title: str, custom_id: str, max_length: int) -> discord.ui.Modal:
    """The modal a `ReplyAction.ask` button opens; its submission comes back as an Action with the text."""
    modal = discord.ui.Modal(title=title[:45] or "Chorus", custom_id=custom_id, timeout=None)
    modal.add_item(
        discord.ui.TextInput(
            label=title[:45] or "Your text",
            custom_id="text",
            style=discord.TextStyle.paragraph,
            max_length=min(4000, max_length),
        )
    )
    return modal


def remix_modal(text: str, tones: Sequence[str], max_length: int) -> discord.ui.Modal:
    """ "Remix with Chorus" asks for the tone (and lets the user trim the text) before it rewrites a message."""
    modal = discord.ui.Modal(title="Remix with Chorus", custom_id=REMIX_MODAL_ID, timeout=None)
    modal.add_item(
        discord.ui.TextInput(
            label="Text to rewrite",
            custom_id="text",
            style=discord.TextStyle.paragraph,
            default=text[: min(4000, max_length)] or None,
            max_length=min(4000, max_length),
        )
    )
    modal.add_item(
        discord.ui.TextInput(
            label="Tone",
            custom_id="tone",
            placeholder=", ".join(tones)[:100],
            default=(tones[1] if len(tones) > 1 else tones[0])[:MAX_TONE_CHARS],
            max_length=MAX_TONE_CHARS,
        )
    )
    return modal
