"""/mydata: a JSON file of everything Chorus stores about the user, delivered to them alone.

The file is rewritten by each /mydata, deleted by /forget, and swept away `store.exports_hours` after it was made.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
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
    counts = [f"{len(data[key])} {key.replace('_', ' ')}" for key in _COUNTED if data[key]]
    summary = ", ".join(counts) if counts else "nothing besides your name and id"
    await ctx.responder.send(
        Reply(
            parts=(f"Everything Chorus stores about you ({summary}) is in the attached JSON file, for you alone.",),
            footer="/forget deletes it all.",
            attachments=(Attachment("chorus-mydata.json", path, "Everything Chorus stores about you (JSON)"),),
            ephemeral=True,
        )
    )


MYDATA = CommandSpec(
    name="mydata", summary="get a file of everything Chorus stores about you", usage="/mydata", handler=mydata
)
