"""The Slack app manifest users paste into Slack, built from the core's command list so it never drifts.

`python -m adapters.slack.manifest` rewrites manifest.yaml next to this file (after a command is added).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adapters.slack.app import BOT_SCOPES
from adapters.slack.translate import REMIX_SHORTCUT
from bots.commands import COMMANDS
from bots.router import CommandSpec

PATH = Path(__file__).with_name("manifest.yaml")
EXAMPLE_URL = "https://chorus.example.com"
BOT_EVENTS = (
    "app_home_opened",
    "message.channels",
    "message.groups",
    "message.im",
    "message.mpim",
    "reaction_added",
    "reaction_removed",
    # No scope needed: the workspace removed Chorus or revoked its token (adapters/slack/app.py forgets the token).
    "app_uninstalled",
    "tokens_revoked",
)
HEADER = """\
# Chorus — Slack app manifest. Paste it at https://api.slack.com/apps → Create New App → From a manifest.
#
# As is, it is set up for Socket Mode (no public URL needed). For HTTP mode, set socket_mode_enabled: false and
# replace every https://chorus.example.com with your server's address (slack.path, default /slack/events).
# For multi-workspace installs (slack.oauth = true, HTTP mode) keep the redirect URL too.
# Generated from bots.commands.COMMANDS by `python -m adapters.slack.manifest`; with slack.command_prefix set,
# rename the commands to match (/chorus-create …).
"""


def manifest(commands: Sequence[CommandSpec] = COMMANDS, url: str = EXAMPLE_URL) -> dict[str, Any]:
    events_url = f"{url}/slack/events"
    return {
        "display_information": {
            "name": "Chorus",
            "description": "An AI creative co-pilot for your channels",
            "background_color": "#3b2e5a",
            "long_description": (
                "Chorus writes slogans, taglines, posts, stories, poems, lyrics, names and more, right in Slack. "
                "Start with /create, then refine the result with its buttons (Regenerate, More like this, Shorter, "
                "Longer, tone, thumbs up or down) or by replying in its thread. /forget deletes everything it "
                "stored about you."
            ),
        },
        "features": {
            "app_home": {
                "home_tab_enabled": True,
                "messages_tab_enabled": True,
                "messages_tab_read_only_enabled": False,
            },
            "bot_user": {"display_name": "Chorus", "always_online": True},
            "shortcuts": [
                {
                    "name": "Remix with Chorus",
                    "type": "message",
                    "callback_id": REMIX_SHORTCUT,
                    "description": "Rewrite this message in another tone",
                }
            ],
            "slash_commands": [_command(spec, events_url) for spec in commands],
        },
        "oauth_config": {"redirect_urls": [f"{url}/slack/oauth_redirect"], "scopes": {"bot": list(BOT_SCOPES)}},
        "settings": {
            "event_subscriptions": {"request_url": events_url, "bot_events": list(BOT_EVENTS)},
            "interactivity": {"is_enabled": True, "request_url": events_url},
            "org_deploy_enabled": False,
            "socket_mode_enabled": True,
            "token_rotation_enabled": False,
        },
    }


def _command(spec: CommandSpec, url: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "command": f"/{spec.name}",
        "description": spec.summary[:1].upper() + spec.summary[1:],
        "url": url,
        "should_escape": False,
    }
    hint = spec.usage.removeprefix(f"/{spec.name}").strip()
    if hint:
        entry["usage_hint"] = hint
    return entry


def render_yaml(commands: Sequence[CommandSpec] = COMMANDS) -> str:
    import yaml  # a development tool: PyYAML is needed only to regenerate the file

    return HEADER + yaml.safe_dump(manifest(commands), sort_keys=False, allow_unicode=True, width=110)


if __name__ == "__main__":
    PATH.write_text(render_yaml())
    print(f"wrote {PATH}", file=sys.stderr)
