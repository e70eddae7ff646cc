"""One store suite, run over SQLite (a file under tmp_path) and Postgres (the server CI provides)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bots.events import Conversation, User
from bots.store import GenerationRecord, Store, StoreError

HERE = Conversation("discord", "guild-1", "general")
THREAD = Conversation("discord", "guild-1", "general", "thread-9")
ELSEWHERE = Conversation("discord", "guild-1", "random")
ALICE = User("u-alice", "Alice")
BOB = User("u-bob", "Bob")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        # A directory that does not exist yet: start() must create it.
        return f"sqlite+aiosqlite:///{tmp_path / 'home' / 'chorus.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = Store(store_url)
    await store.start()
    yield store
    await store.close()


async def _generate(
    store: Store,
    conversation: Conversation = HERE,
    user: User = ALICE,
    *,
    prompt: str = "a haiku about tea",
    parent: GenerationRecord | None = None,
    instruction: str = "",
) -> GenerationRecord:
    return await store.add_generation(
        conversation,
        user,
        kind="poem",
        tone="playful",
        prompt=prompt,
        variants=["one", "two"],
        params={"temperature": 0.8},
        instruction=instruction,
        parent=parent,
    )


async def test_add_and_get_round_trip(store: Store) -> None:
    variants = ["茶の湯 — steam rises 🍵", "Ünïcödé\nsecond line", ""]
    params = {"temperature": 0.7, "max_new_tokens": 64, "stop": ["\n\n"], "note": "café ☕", "nested": {"k": [1, 2]}}
    before = datetime.now(UTC)

    added = await store.add_generation(
        THREAD, ALICE, kind="haiku", tone="wistful", prompt="tea ceremony 🍵", variants=variants, params=params
    )
    fetched = await store.get_generation(added.id)

    assert fetched == added
    assert fetched.conversation == THREAD
    assert fetched.user == ALICE
    assert (fetched.kind, fetched.tone, fetched.prompt) == ("haiku", "wistful", "tea ceremony 🍵")
    assert fetched.variants == tuple(variants)
    assert dict(fetched.params) == params
    assert (fetched.version, fetched.parent_id, fetched.root_id) == (1, None, added.id)
    assert (fetched.instruction, fetched.status, fetched.message_ref) == ("", "ok", None)
    assert fetched.created_at.tzinfo is not None and fetched.created_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=5) <= fetched.created_at <= datetime.now(UTC) + timedelta(seconds=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fetched.prompt = "changed"  # type: ignore[misc]
    with pytest.raises(TypeError):
        fetched.params["temperature"] = 2.0  # type: ignore[index]
    assert await store.get_generation(added.id + 1000) is None
    assert await store.count_generations() == 1


async def test_status_is_stored_and_checked(store: Store) -> None:
    partial = await store.add_generation(
        HERE, ALICE, kind="poem", tone="dry", prompt="p", variants=["half"], params={}, status="partial"
    )
    assert (await store.get_generation(partial.id)).status == "partial"
    with pytest.raises(ValueError, match="status"):
        await store.add_generation(HERE, ALICE, kind="poem", tone="dry", prompt="p", variants=[], params={}, status="x")


async def test_versions_and_lineage_of_a_chain(store: Store) -> None:
    v1 = await _generate(store)
    v2 = await _generate(store, parent=v1, instruction="shorter")
    v3 = await _generate(store, user=BOB, parent=v2, instruction="make the second one rhyme")

    assert [(r.version, r.parent_id, r.root_id) for r in (v1, v2, v3)] == [
        (1, None, v1.id),
        (2, v1.id, v1.id),
        (3, v2.id, v1.id),
    ]
    assert v3.instruction == "make the second one rhyme"
    assert await store.versions(v1.id) == [v1, v2, v3]
    assert await store.lineage(v3) == [v1, v2, v3]
    assert await store.lineage(v1) == [v1]


async def test_a_branch_gets_the_next_version_of_the_lineage(store: Store) -> None:
    v1 = await _generate(store)
    shorter = await _generate(store, parent=v1, instruction="shorter")
    rhyming = await _generate(store, parent=v1, instruction="make it rhyme")
    unrelated = await _generate(store, prompt="another one")

    assert (shorter.version, rhyming.version) == (2, 3)
    assert shorter.parent_id == rhyming.parent_id == v1.id
    assert await store.versions(v1.id) == [v1, shorter, rhyming]
    assert await store.lineage(rhyming) == [v1, rhyming]
    assert await store.versions(unrelated.id) == [unrelated]


async def test_concurrent_refinements_get_distinct_versions(store: Store) -> None:
    v1 = await _generate(store)
    refinements = await asyncio.gather(*(_generate(store, parent=v1, instruction=f"take {n}") for n in range(5)))

    assert sorted(r.version for r in refinements) == [2, 3, 4, 5, 6]
    assert [r.version for r in await store.versions(v1.id)] == [1, 2, 3, 4, 5, 6]


async def test_latest_generation_is_per_channel_and_thread(store: Store) -> None:
    assert await store.latest_generation(HERE) is None
    first_here = await _generate(store, HERE)
    in_thread = await _generate(store, THREAD)
    elsewhere = await _generate(store, ELSEWHERE)
    last_here = await _generate(store, HERE, user=BOB)
    other_workspace = await _generate(store, Conversation("discord", "guild-2", "general"))

    assert first_here.id < last_here.id
    assert await store.latest_generation(HERE) == last_here
    assert await store.latest_generation(THREAD) == in_thread
    assert await store.latest_generation(ELSEWHERE) == elsewhere
    assert await store.latest_generation(Conversation("discord", "guild-2", "general")) == other_workspace
    assert await store.latest_generation(Conversation("slack", "guild-1", "general")) is None
    assert await store.latest_generation(Conversation("discord", "guild-1", "general", "thread-0")) is None


async def test_find_by_message_ref(store: Store) -> None:
    shown = await _generate(store)
    await _generate(store, prompt="not shown yet")

    await store.set_message_ref(shown.id, "1234567890123456789")
    found = await store.find_by_message_ref("discord", "1234567890123456789")

    assert found == dataclasses.replace(shown, message_ref="1234567890123456789")
    assert await store.find_by_message_ref("slack", "1234567890123456789") is None
    assert await store.find_by_message_ref("discord", "999") is None
    await store.set_message_ref(shown.id + 1000, "nowhere")  # a missing id is logged, not raised


async def test_forget_user_deletes_only_that_users_data(store: Store) -> None:
    alice_v1 = await _generate(store, user=ALICE)
    alice_v2 = await _generate(store, user=ALICE, parent=alice_v1, instruction="shorter")
    bobs_refinement = await _generate(store, user=BOB, parent=alice_v2, instruction="make it rhyme")
    bobs_own = await _generate(store, user=BOB, prompt="bob's own")
    await store.add_feedback(alice_v1.id, ALICE, "discord", "rating", "+1")
    await store.add_feedback(bobs_own.id, ALICE, "discord", "reaction", "👍")
    await store.add_feedback(bobs_refinement.id, BOB, "discord", "action", "shorter")
    await store.add_engagement(HERE, "reply", user=ALICE, generation_id=bobs_own.id)
    await store.add_engagement(THREAD, "click", "regenerate", user=BOB, generation_id=alice_v1.id)
    await store.add_engagement(HERE, "reaction", "🎉")
    # The same user id on another platform is somebody else.
    await _generate(store, Conversation("slack", "T1", "C1"), user=ALICE)
    await store.add_feedback(bobs_own.id, ALICE, "slack", "rating", "-1")

    counts = await store.user_data_counts("discord", ALICE.id)
    assert counts == {"generations": 2, "feedback": 2, "engagement": 1}
    assert await store.forget_user("discord", ALICE.id) == counts

    assert await store.user_data_counts("discord", ALICE.id) == {"generations": 0, "feedback": 0, "engagement": 0}
    assert await store.user_data_counts("slack", ALICE.id) == {"generations": 1, "feedback": 1, "engagement": 0}
    assert await store.user_data_counts("discord", BOB.id) == {"generations": 2, "feedback": 1, "engagement": 1}
    assert await store.get_generation(alice_v1.id) is None
    assert await store.get_generation(alice_v2.id) is None
    survivor = await store.get_generation(bobs_refinement.id)
    # Bob keeps his text, but not Alice's prompt his version was built on.
    assert survivor == dataclasses.replace(bobs_refinement, parent_id=None, prompt="")
    assert survivor.root_id == alice_v1.id
    assert await store.versions(alice_v1.id) == [survivor]
    assert await store.lineage(survivor) == [survivor]
    assert await store.count_generations() == 3
    # Refining the survivor keeps numbering the lineage after it.
    assert (await _generate(store, user=BOB, parent=survivor)).version == 4
    assert await store.forget_user("discord", ALICE.id) == {"generations": 0, "feedback": 0, "engagement": 0}


async def test_refining_or_rating_a_forgotten_result_is_a_store_error(store: Store) -> None:
    alice_v1 = await _generate(store, user=ALICE)
    await store.forget_user("discord", ALICE.id)

    with pytest.raises(StoreError, match="no longer exists"):
        await _generate(store, user=BOB, parent=alice_v1)
    with pytest.raises(StoreError, match="no longer exists"):
        await store.add_feedback(alice_v1.id, BOB, "discord", "rating", "+1")
    with pytest.raises(StoreError, match="no longer exists"):
        await store.add_engagement(HERE, "click", generation_id=alice_v1.id)
    assert await store.count_generations() == 0
    # Ids are never reused, so a new result cannot join the forgotten lineage.
    fresh = await _generate(store, user=BOB)
    assert fresh.id > alice_v1.id
    assert await store.versions(alice_v1.id) == []


async def test_data_survives_a_restart(store_url: str) -> None:
    first = Store(store_url)
    await first.start()
    v1 = await _generate(first)
    v2 = await _generate(first, parent=v1, instruction="shorter")
    await first.set_message_ref(v2.id, "m-2")
    await first.add_feedback(v2.id, BOB, "discord", "rating", "+1")
    await first.add_engagement(HERE, "reply", user=BOB, generation_id=v2.id)
    await first.close()

    second = Store(store_url)
    await second.start()
    try:
        assert await second.count_generations() == 2
        assert await second.versions(v1.id) == [v1, dataclasses.replace(v2, message_ref="m-2")]
        assert (await second.find_by_message_ref("discord", "m-2")).id == v2.id
        assert await second.user_data_counts("discord", BOB.id) == {"generations": 0, "feedback": 1, "engagement": 1}
        assert (await _generate(second, parent=v2)).version == 3
    finally:
        await second.close()


async def test_what_postgres_refuses_is_cleaned_and_stored_not_lost(store: Store) -> None:
    long_name = User("u-long", "N" * 300)
    nul = "tea\x00 at dawn"

    record = await _generate(store, user=long_name, prompt=nul)
    refined = await store.add_generation(
        HERE, ALICE, kind="poem", tone="warm", prompt=nul, variants=["one\x00", "two"], params={}, parent=record
    )
    session = await store.create_brainstorm(HERE, long_name, topic=nul, rounds=1, minutes=1.0, deadline=None)
    idea = await store.add_idea(session.id, long_name, "discord", nul, round=1)
    await store.add_engagement(HERE, "reply", nul, user=long_name)

    stored = await store.get_generation(record.id)
    assert stored is not None
    assert (stored.prompt, len(stored.user.name), stored.user.name[-1]) == ("tea at dawn", 255, "…")
    assert (await store.get_generation(refined.id)).variants == ("one", "two")
    assert (await store.get_brainstorm(session.id)).starter.name == stored.user.name
    assert [i.text for i in await store.ideas(session.id)] == ["tea at dawn"] and idea.id
    assert await store.user_data_counts("discord", "u-long") == {
        "generations": 1,
        "feedback": 0,
        "engagement": 1,
        "brainstorm ideas": 1,
        "brainstorms started": 1,
    }


def _under_a_file(tmp_path: Path) -> Path:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    return blocker / "home"


def _read_only(tmp_path: Path) -> Path:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    return locked / "home"


@pytest.mark.parametrize(
    "make_home",
    [
        pytest.param(lambda tmp: _under_a_file(tmp).parent, id="path-is-a-file"),
        pytest.param(_under_a_file, id="under-a-file"),
        pytest.param(
            _read_only,
            id="read-only-dir",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories"),
        ),
        pytest.param(
            lambda tmp: _read_only(tmp).parent,
            id="read-only-existing-dir",
            marks=pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only directories"),
        ),
    ],
)
async def test_unwritable_data_directory_is_a_store_error(tmp_path: Path, make_home: Callable[[Path], Path]) -> None:
    home = make_home(tmp_path)
    store = Store(f"sqlite+aiosqlite:///{home / 'chorus.db'}")

    with pytest.raises(StoreError) as caught:
        await store.start()

    message = str(caught.value)
    assert f"data directory {home}:" in message
    assert "CHORUS_HOME" in message and "chorus.home" in message
    await store.close()


async def test_unreachable_server_is_a_store_error() -> None:
    store = Store("postgresql+asyncpg://chorus:secret@127.0.0.1:1/chorus")

    with pytest.raises(StoreError, match="Cannot open the store") as caught:
        await store.start()

    assert "secret" not in str(caught.value)


async def test_a_bad_url_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="not a database URL"):
        await Store("chorus.db").start()


async def test_using_a_store_before_start_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await Store("sqlite+aiosqlite://").count_generations()
