"""/mydata: a JSON file of everything Chorus stores about the user, delivered to them alone.

The file is rewritten by each /mydata, deleted by /forget, and swept away `store.exports_hours` after it was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bots.reply import Attachment, Reply
from bots.router import CommandSpec, Context

EXPORTS_DIR = "exports"
_COUNTED = (
    "generations",
    "feedback",
    "engagement",
    "brainstorms_started",
    "brainstorm_ideas",
    "brainstorm_votes",
    "drop_channels_enabled",
)


# What people call the store's records (its table names are "generations", "feedback", "engagement").
_WORDS = {
    "generations": ("result", "results"),
    "feedback": ("rating or reaction", "ratings and reactions"),
    "engagement": ("reply, reaction or click", "replies, reactions and clicks"),
}


def describe_counts(counts: Mapping[str, int]) -> str:
    """'1 result, 3 brainstorm votes': each non-zero count with its noun in people's words, singular for one."""
    phrases = []
    for key, n in counts.items():
        if not n:
            continue
        what = key.replace("_", " ")
        one, many = _WORDS.get(what, (_singular(what), what))
        phrases.append(f"{n} {one if n == 1 else many}")
    return ", ".join(phrases)


def _singular(what: str) -> str:
    """'brainstorm votes' -> 'brainstorm vote', 'drop channels enabled' -> 'drop channel enabled'."""
    words = what.split()
    for i in range(len(words) - 1, -1, -1):
        if words[i].endswith("s") and not words[i].endswith("ss"):
            words[i] = words[i][:-1]
            break
    return " ".join(words)


def export_path(home: Path, platform: str, user_id: str) -> Path:
    """Where one user's export is written; named by a hash, so the file name identifies no one."""
    digest = hashlib.sha256(f"{platform}\0{user_id}".encode()).hexdigest()[:20]
    return home / EXPORTS_DIR / f"chorus-mydata-{digest}.json"


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(data, handle, ensure_ascii=False, indent=2)
        handle.write("\n")
    partial.replace(path)


async def mydata(ctx: Context) -> None:
    user = ctx.event.user
    platform = ctx.event.conversation.platform
    data = await ctx.app.store.user_data(platform, user.id, names=(user.name,))
    data = {"exported_at": datetime.now(UTC).isoformat(), **data}
    path = export_path(ctx.app.settings.home_dir, platform, user.id)
    await asyncio.to_thread(_write_private, path, data)
    summary = describe_counts({key: len(data[key]) for key in _COUNTED}) or "nothing besides your name and id"
    await ctx.responder.send(
        Reply(
            parts=(f"Everything Chorus stores about you ({summary}) is in the attached JSON file, for you alone.",),
            footer="/forget deletes it all.",
            attachments=(Attachment("chorus-mydata.json", path, "Everything Chorus stores about you (JSON)"),),
            ephemeral=True,
        )
    )


MYDATA = CommandSpec(
    name="mydata",
    summary="get a file of everything Chorus stores about you",
    usage="/mydata",
    handler=mydata,
    bare=True,
)
