"""/mydata: the user gets, privately, a JSON file of everything Chorus stores about them, and nothing of others'."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from support import TestBot, reply_text


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _exists(path: Path) -> bool:
    return path.exists()


async def test_mydata_is_a_private_json_file_of_everything_stored_about_the_user(testbot: TestBot) -> None:
    await testbot.one("/create slogan a tea shop", as_user="alice")
    await testbot.say("+", as_user="alice")
    await testbot.one("/create slogan a bakery", as_user="bob")
    await testbot.say("-", as_user="alice")  # alice rates bob's

    reply = await testbot.one("/mydata", as_user="alice")

    assert reply.ephemeral and len(reply.attachments) == 1
    path = reply.attachments[0].path
    data = _read(path)
    assert (data["platform"], data["user_id"], data["names"]) == ("terminal", "alice", ["alice"])
    assert [g["prompt"] for g in data["generations"]] == ["a tea shop"]
    assert sorted(f["value"] for f in data["feedback"]) == ["+1", "-1"]
    assert "bakery" not in json.dumps(data) and "bob" not in json.dumps(data)
    assert _mode(path) == 0o600
    assert "2 ratings and reactions" in reply_text(reply)


async def test_forget_deletes_the_users_export(testbot: TestBot) -> None:
    await testbot.one("/create slogan a tea shop", as_user="alice")
    path = Path((await testbot.one("/mydata")).attachments[0].path)
    assert _exists(path)
    await testbot.one("/forget")
    await testbot.one("y")
    assert not _exists(path)


async def test_mydata_for_someone_chorus_knows_nothing_about(testbot: TestBot) -> None:
    reply = await testbot.one("/mydata", as_user="newcomer")
    data = _read(reply.attachments[0].path)
    assert data["generations"] == [] and "nothing besides your name" in reply_text(reply)


async def test_forget_deletes_an_export_even_when_nothing_else_is_stored(testbot: TestBot) -> None:
    # The export holds the person's id and name; /forget answered "nothing stored" and left it for a day.
    path = Path((await testbot.one("/mydata", as_user="newcomer")).attachments[0].path)
    question = await testbot.one("/forget", as_user="newcomer")
    assert "Delete it?" in reply_text(question) and "1 export file" in reply_text(question)
    done = await testbot.one("y", as_user="newcomer")
    assert reply_text(done).startswith("Done. Deleted") and not _exists(path)


async def test_words_after_a_command_that_takes_none_are_refused_not_ignored(testbot: TestBot) -> None:
    # "/stats last week" and "/mydata please" used to run as if the words were not there, which reads as "done that".
    reply = await testbot.one("/mydata   please\tnow", as_user="alice")
    assert reply.ephemeral and not reply.attachments
    assert "/mydata takes nothing after it (got “please now”). Type /mydata alone." in reply_text(reply)
