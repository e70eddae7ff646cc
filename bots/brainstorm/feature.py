"""Brainstorm sessions: a channel thinks together in a thread, and Chorus sorts, names and builds on its ideas.

The feature claims the events of its threads (messages are ideas, 👍 reactions and Vote buttons are votes), runs each
round on an asyncio timer whose deadline is stored (so a restart re-arms it), and at the end of a round embeds,
merges, clusters and names the ideas, then suggests "yes-and" ideas. Everything lives in the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bots.brainstorm import render
from bots.brainstorm.prompts import next_steps, seed_ideas, yes_and_ideas
from bots.brainstorm.reading import IdeaReader
from bots.brainstorm.themes import embed_ahead, organize
from bots.errors import UserError
from bots.events import Action, Conversation, Message, MessageDeleted, MessageEdited, Reaction, User, plain_emoji
from bots.reply import Attachment, Publisher, PublishForbidden, Reply, Responder
from bots.router import Context
from bots.store import BRAINSTORM_CLOSED, IDEA_WITHDRAWN, BrainstormRecord, IdeaRecord
from config.settings import BrainstormSection

if TYPE_CHECKING:
    from bots.app import Chorus

_log = logging.getLogger(__name__)

Post = Callable[[Reply], Awaitable[str]]
CHORUS = User(id="chorus", name=render.CHORUS_NAME)
# Replies that agree or react rather than propose: not ideas. Anything without three letters is not one either.
_THROWAWAY_LIST = (
    "+1|+2|-1|lol|lmao|rofl|haha|hahaha|ok|okay|k|yes|yep|yeah|no|nope|nah|nice|cool|wow|same|this|that|agreed|agree|"
    "lgtm|thanks|thx|ty|great|good|true|exactly|love it|love that|love this|me too|this one|so true|yes please|"
    "good idea|great idea|nice idea|^|^^"
)
THROWAWAYS = frozenset(_THROWAWAY_LIST.split("|"))
_VOTE_WORDS = frozenset({"+1", "👍", "this", "this one", "agree", "agreed", "same", "me too"})
# Platforms whose threads are a mode of their one channel rather than a place of their own.
_MODE_THREAD_PLATFORMS = frozenset({"terminal"})
# The longest idea taken, in characters: the longest message Discord allows (with Nitro). Longer ideas are kept
# whole up to this, and only shortened for embedding and in prompts; a page pasted from Slack or the terminal is
# refused with the limit instead of being stored and filling the summary.
MAX_IDEA_CHARS = 4000
# A session opens a thread on its kickoff, and a thread cannot hold another (Discord refuses it outright).
IN_A_THREAD = "A brainstorm opens a thread of its own, and threads can't hold threads: run /brainstorm in the channel."
_THROWAWAY_HINT = "Not taken as an idea. To vote, type v <number> (e.g. v 3); to add an idea, write it out."
ORPHAN_AFTER = timedelta(minutes=2)
_THEMES_FAILED = "Sorting the ideas failed this time; they are all kept and the next round end tries again."
_NO_CLEAR_THEMES = (
    "These ideas do not fall into clear groups yet, so they are listed together rather than split into made-up "
    "themes. More ideas, or ideas that differ in what they aim at, make themes."
)


def _now() -> datetime:
    return datetime.now(UTC)


def is_throwaway(text: str) -> bool:
    """'+1', 'lol', '🔥🔥' and the like are reactions in words, not ideas."""
    flat = " ".join(text.lower().split()).strip(" .!?,")
    if flat in THROWAWAYS:
        return True
    letters = sum(1 for char in flat if unicodedata.category(char).startswith("L"))
    return letters < 3


def _shown(idea: IdeaRecord) -> bool:
    """Chorus' own ideas exist for people once posted; one stored just before a crash was never seen, so it cannot
    be voted on until the resumed round end posts it."""
    if idea.source == IDEA_WITHDRAWN:
        return False
    return idea.source == "person" or idea.message_ref is not None


# A vote typed in the thread as people type it: "v 3", "vote #3", "vote for 3 and 5", "+1 #3", "👍 3", "#3 +1".
_VOTE_NUMBERS = r"#?\s*\d{1,6}(?:\s*(?:,|&|\band\b)?\s*#?\s*\d{1,6})*"
_THUMB = "(?:\\+1|👍[\U0001f3fb-\U0001f3ff]?)"
_TYPED_VOTE = re.compile(
    rf"(?:i\s+)?(?:v|vote|votes|voting|{_THUMB})\s*(?:for|to|on)?\s*{_VOTE_NUMBERS}|{_VOTE_NUMBERS}\s*{_THUMB}"
)
# A vote without a number ("vote", "v"): the person is asked which idea, instead of it becoming an idea.
_BARE_VOTE = re.compile(r"(?:i\s+)?(?:v|vote|votes|voting)(?:\s+for)?")
_WHICH_IDEA = "Say which idea by its number, e.g. v 3 (numbers are shown as #3)."


def typed_votes(text: str) -> list[int]:
    """The idea numbers a message votes for when the whole message is a vote ("vote #3", "+1 for 3 and 5"); an
    empty list for anything else, so an idea that merely mentions a number stays an idea."""
    flat = " ".join(text.lower().split()).strip(" .!")
    if not _TYPED_VOTE.fullmatch(flat):
        return []
    return list(dict.fromkeys(int(number) for number in re.findall(r"\d{1,6}", flat.replace("+1", ""))))


def parse_number(value: str) -> int | None:
    match = re.fullmatch(r"\s*#?\s*(\d{1,6})\s*", value)
    return int(match.group(1)) if match else None


class Brainstorms:
    """The brainstorm feature of one Chorus: events in, sessions in the store, rounds on timers."""

    def __init__(self, app: Chorus) -> None:
        self.app = app
        self.clock: Callable[[], datetime] = _now
        self._timers: dict[int, asyncio.Task[None]] = {}
        # A round end its timer could not finish (the platform or the database failing for a moment) is tried
        # again this much later; each step leaves its mark in the store, so a retry resumes where it stopped.
        self.retry_s = 60.0
        self._locks: dict[int, asyncio.Lock] = {}
        self._hinted: set[tuple[int, str]] = set()  # (session, user) told once that their message was unreadable
        self._rejoined: set[int] = set()  # sessions whose mode thread this process has re-entered (or opened)
        # Sessions this process is starting: stored, their kickoff and thread not out yet.
        self._starting: set[int] = set()
        # A session is stored a moment before its kickoff is posted and its thread opened; one still without a
        # thread this long after it was created was left by a process that stopped in between, and is ended.
        self.orphan_after = ORPHAN_AFTER
        # The model's reading of each idea, taken as it arrives, for finding themes (None: sentence vectors alone).
        self.reader = IdeaReader(app.generator) if app.settings.brainstorm.model_reads_ideas else None
        self._ahead: set[asyncio.Task[None]] = set()

    def _read_ahead(self, topic: str, text: str) -> None:
        """An idea was just posted (or edited): the model reads it and the embedder embeds it in the background, so
        the round's end finds it done. A failure here costs nothing: the round's end does it then."""
        if self.reader is not None:
            self.reader.prefetch(topic, [text])
        embedder = self.app.embedder
        if embedder is None:
            return

        async def embed() -> None:
            try:
                await embed_ahead(embedder, text, topic, self.config.embed_chars)
            except Exception:
                _log.debug("embedding an idea ahead failed", exc_info=True)

        task = asyncio.get_running_loop().create_task(embed())
        self._ahead.add(task)
        task.add_done_callback(self._ahead.discard)

    @property
    def config(self) -> BrainstormSection:
        return self.app.settings.brainstorm

    @property
    def summaries_dir(self) -> Path:
        return self.app.settings.home_dir / "brainstorms"

    # -- starting ------------------------------------------------------------------------------------------------

    async def start(self, ctx: Context, topic: str, minutes: float, rounds: int) -> BrainstormRecord | None:
        """Post the kickoff, open its thread, post the seed ideas there, and arm the round timer; None when Chorus
        may not post in the channel."""
        store = self.app.store
        conversation = ctx.event.conversation
        if conversation.thread is not None and conversation.platform not in _MODE_THREAD_PLATFORMS:
            raise UserError(IN_A_THREAD)
        await self.purge_expired()
        running = await store.open_brainstorm_in_channel(conversation)
        if running is not None and self._orphaned(running):
            await self._end_orphan(running.id, notify=False)
            running = await store.open_brainstorm_in_channel(conversation)
        if running is not None:
            where = f" in its thread “{running.thread_name}”" if running.thread_name else ""
            raise UserError(
                f"A brainstorm on “{running.topic}” is already running in this channel{where} (round "
                f"{running.round} of {running.rounds}, started by {running.starter.name}). Join it there, or wait "
                "until it wraps up."
            )
        await ctx.responder.defer()
        channel = Conversation(conversation.platform, conversation.workspace, conversation.channel)
        deadline = self.clock() + timedelta(minutes=minutes)
        session = await store.create_brainstorm(
            channel, ctx.event.user, topic=topic, rounds=rounds, minutes=minutes, deadline=deadline
        )
        self._starting.add(session.id)
        try:
            return await self._open(ctx, session, topic)
        finally:
            self._starting.discard(session.id)

    async def _open(self, ctx: Context, session: BrainstormRecord, topic: str) -> BrainstormRecord | None:
        """The rest of `start`, once the session is stored: kickoff, thread, seed ideas, timer."""
        store = self.app.store
        channel = session.conversation
        seed = random.randrange(1 << 30)
        seeds_task = asyncio.create_task(
            seed_ideas(
                self.app.generator,
                topic,
                self.config.seed_ideas,
                blocklist=self.app.blocklist,
                seed=seed,
                key=channel.key,
            )
        )
        name = f"Brainstorm: {render.short(topic, 80)}"

        async def abandon() -> None:
            # Without its kickoff or thread the session cannot run; never leave it blocking the channel.
            seeds_task.cancel()
            now = self.clock()
            await store.update_brainstorm(
                session.id, status=BRAINSTORM_CLOSED, deadline=None, closed_at=now, expires_at=now
            )

        try:
            kickoff_ref = await ctx.responder.send(render.kickoff(session, self.config.seed_ideas))
            if kickoff_ref:
                thread, responder = await ctx.responder.open_thread(kickoff_ref, name)
        except BaseException:
            await abandon()
            raise
        if not kickoff_ref:  # Chorus may not post here, and the adapter has told the person why
            await abandon()
            return None
        session = await store.update_brainstorm(session.id, thread=thread, thread_name=name, kickoff_ref=kickoff_ref)
        self._rejoined.add(session.id)
        for text in await seeds_task:
            idea = await store.add_idea(session.id, CHORUS, channel.platform, text, round=1, source="seed")
            ref = await responder.send(render.chorus_idea(session.id, idea, "Seed idea"))
            await store.set_idea_message_ref(idea.id, ref)
        self._arm(session)
        _log.info("brainstorm %d started in %s: %r", session.id, channel.key, topic)
        return session

    # -- ideas and votes ---------------------------------------------------------------------------------------------

    async def _session_for(self, ctx: Context, session_id: int | None = None) -> BrainstormRecord | None:
        if session_id is not None:
            return await self.app.store.get_brainstorm(session_id)
        return await self.app.store.brainstorm_for_thread(ctx.event.conversation)

    async def _on_message(self, ctx: Context) -> bool:
        message = ctx.event
        assert isinstance(message, Message)
        session = await self._session_for(ctx) or await self._rejoin_thread(ctx)
        if session is None:
            return False
        if not session.is_open:
            await ctx.responder.send(
                Reply.error("This brainstorm has wrapped up. /brainstorm summary shows what came of it.")
            )
            return True
        text = message.text.strip()
        if not text:
            await self._unreadable(ctx, session)
            return True
        numbers = typed_votes(text)
        if numbers:
            await self._vote_numbers(ctx, session, numbers)
            return True
        if _BARE_VOTE.fullmatch(" ".join(text.lower().split()).strip(" .!?:")):
            raise UserError(_WHICH_IDEA)
        if is_throwaway(text):
            # "+1" in reply to an idea is a vote; other throw-aways are just chat.
            flat = " ".join(text.lower().split()).strip(" .!")
            if message.reply_to and flat in _VOTE_WORDS:
                idea = await self.app.store.find_idea(session.id, message_ref=message.reply_to)
                if idea is not None and idea.source != IDEA_WITHDRAWN:
                    await self._vote(ctx, session, idea, quiet=True)
            elif message.conversation.platform in _MODE_THREAD_PLATFORMS:
                # Chat among people stays unanswered; in the terminal, one person typed it and has no reactions.
                await ctx.responder.send(Reply.text(_THROWAWAY_HINT, ephemeral=True))
            return True
        await self._add_idea(ctx, session, text, message.message_ref)
        return True

    async def _rejoin_thread(self, ctx: Context) -> BrainstormRecord | None:
        """Where a thread is only a mode of the one channel (the terminal), a restart forgets the mode: the first
        message typed in the channel while its brainstorm runs re-enters the thread, instead of becoming a
        refinement of some earlier result. Once per session and process, so /leave still leaves."""
        conversation = ctx.event.conversation
        if conversation.platform not in _MODE_THREAD_PLATFORMS or conversation.thread is not None:
            return None
        session = await self.app.store.open_brainstorm_in_channel(conversation)
        if session is None or session.kickoff_ref is None or session.id in self._rejoined:
            return None
        self._rejoined.add(session.id)
        await ctx.responder.open_thread(session.kickoff_ref, session.thread_name)
        # The session's controls again, so their keys (n, w, v <number>, i <idea>) work after the restart too.
        topic = render.short(session.topic, 80)
        note = f"Back in the brainstorm on “{topic}” (round {session.round} of {session.rounds})."
        await ctx.responder.send(Reply(parts=(note,), actions=render.controls(session.id)))
        return session

    async def _unreadable(self, ctx: Context, session: BrainstormRecord) -> None:
        """A message that arrived without its text (Discord without the Message Content intent, a file alone): say
        once per person how to get the idea in, instead of dropping it silently."""
        key = (session.id, ctx.event.user.id)
        if key in self._hinted:
            return
        self._hinted.add(key)
        await ctx.responder.send(
            Reply.text(
                f"{render.CHORUS_NAME} could not read that message, so it is not an idea yet. Mention "
                f"@{render.CHORUS_NAME} in it, or press 💡 Add idea on a brainstorm message.",
                ephemeral=True,
            )
        )

    async def _add_idea(self, ctx: Context, session: BrainstormRecord, text: str, message_ref: str | None) -> None:
        store = self.app.store
        if len(text) > MAX_IDEA_CHARS:
            raise UserError(
                f"That idea is {len(text)} characters; an idea can be at most {MAX_IDEA_CHARS}. Your idea was not "
                "added: shorten it and post it again."
            )
        found = self.app.blocklist.find(text)
        if found:
            raise UserError(f"Your idea contains a blocked word ({found!r}). Rephrase it and post it again.")
        cap = self.config.max_ideas_per_round
        if await store.count_ideas(session.id, round=session.round) >= cap:
            raise UserError(
                f"Round {session.round} already has {cap} ideas, the most one round takes. Your idea was not added: "
                "press ⏭ Next round to sort these into themes, then post it in the next round."
            )
        user = ctx.event.user
        idea = await store.add_idea(
            session.id, user, ctx.event.conversation.platform, text, round=session.round, message_ref=message_ref
        )
        self._read_ahead(session.topic, text)
        await ctx.responder.send(
            Reply.text(
                f"💡 Idea #{idea.number} noted for round {session.round}. Others vote with 👍 on it or 👍 Vote "
                f"{idea.number}.",
                ephemeral=True,
            )
        )

    async def _vote_numbers(self, ctx: Context, session: BrainstormRecord, numbers: list[int]) -> None:
        """A vote for each idea number, each confirmed or refused on its own."""
        for number in numbers:
            try:
                await self._vote_number(ctx, session, number)
            except UserError as exc:
                await ctx.responder.send(Reply.error(str(exc)))

    async def _vote_number(self, ctx: Context, session: BrainstormRecord, number: int) -> None:
        """A vote for the idea shown as #number (a Vote button's value, or a vote typed in the thread)."""
        idea = await self.app.store.find_idea(session.id, number=number)
        if idea is not None and idea.source == IDEA_WITHDRAWN:
            raise UserError(f"Idea #{number} was withdrawn (its message was deleted or emptied), so it takes no votes.")
        if idea is None or not _shown(idea):
            raise UserError(f"There is no idea #{number} in this brainstorm.")
        await self._vote(ctx, session, idea)

    async def _vote(self, ctx: Context, session: BrainstormRecord, idea: IdeaRecord, *, quiet: bool = False) -> None:
        user = ctx.event.user
        if not session.is_open:
            raise UserError("This brainstorm has wrapped up; votes are closed. /brainstorm summary shows the result.")
        own = idea.source == "person" and idea.user.id == user.id
        if own and not self.config.self_vote:
            raise UserError(
                f"#{idea.number} is your own idea, and self-votes are off here (brainstorm.self_vote = false). "
                "Vote for someone else's!"
            )
        added = await self.app.store.add_vote(idea, ctx.event.conversation.platform, user.id)
        if quiet:
            return
        if not added:
            await ctx.responder.send(
                Reply.text(f"You already voted for #{idea.number}; one vote per person per idea.", ephemeral=True)
            )
            return
        note = " It's your own idea; self-votes count here (brainstorm.self_vote = true)." if own else ""
        await ctx.responder.send(Reply.text(f"👍 Vote counted for #{idea.number}.{note}", ephemeral=True))

    async def _on_reaction(self, ctx: Context) -> bool:
        reaction = ctx.event
        assert isinstance(reaction, Reaction)
        idea = await self.app.store.find_idea_by_ref(reaction.conversation.platform, reaction.message_ref)
        if idea is None:
            return False
        if plain_emoji(reaction.emoji) != plain_emoji(self.config.vote_emoji) or idea.source == IDEA_WITHDRAWN:
            return True  # other reactions on ideas are people's business; a withdrawn idea takes no votes
        session = await self.app.store.get_brainstorm(idea.session_id)
        if session is None or not session.is_open:
            return True
        if reaction.added:
            await self._vote(ctx, session, idea, quiet=True)
        else:
            await self.app.store.remove_vote(idea, reaction.conversation.platform, reaction.user.id)
        return True

    # -- edits and deletions -------------------------------------------------------------------------------------

    async def _on_message_edited(self, ctx: Context) -> bool:
        """Someone corrected an idea's message: while the idea's round is open, the idea takes the new text; an edit
        that leaves no idea (empty, "lol") withdraws it, and one that brings an idea back restores it under its old
        number. Later edits change nothing. Quiet unless the new text cannot be taken."""
        edit = ctx.event
        assert isinstance(edit, MessageEdited)
        store = self.app.store
        idea = await store.find_idea_by_ref(edit.conversation.platform, edit.message_ref)
        if idea is None:
            return False
        if idea.source not in ("person", IDEA_WITHDRAWN):
            return True  # Chorus' own idea messages
        async with self._lock(idea.session_id):
            open_round = await self._changeable(idea)
            if open_round is None:
                return True
            session, idea = open_round
            text = edit.text.strip()
            withdrawn = idea.source == IDEA_WITHDRAWN
            if not text or is_throwaway(text):
                if not withdrawn:
                    await store.withdraw_idea(idea.id)
                    _log.info("brainstorm %d: idea #%d withdrawn by an edit", session.id, idea.number)
                return True
            if text == idea.text and not withdrawn:
                return True  # a link preview or a thread reply changed the message, not its text
            kept = f"#{idea.number} stays withdrawn." if withdrawn else f"#{idea.number} keeps its earlier text."
            refused = f"Your edit of idea #{idea.number} was not taken:"
            if len(text) > MAX_IDEA_CHARS:
                raise UserError(
                    f"{refused} it is {len(text)} characters and an idea can be at most {MAX_IDEA_CHARS}. {kept}"
                )
            found = self.app.blocklist.find(text)
            if found:
                raise UserError(f"{refused} it contains a blocked word ({found!r}). {kept}")
            cap = self.config.max_ideas_per_round
            if withdrawn and await store.count_ideas(session.id, round=session.round) >= cap:
                raise UserError(f"{refused} round {session.round} already has {cap} ideas. {kept}")
            await store.edit_idea(idea.id, text, edit.user if withdrawn else None)
        self._read_ahead(session.topic, text)
        return True

    async def _on_message_deleted(self, ctx: Context) -> bool:
        """An idea's message was deleted while its round is open: the idea is withdrawn (out of Themes, its votes
        dropped; the other ideas keep their numbers). Later deletions change nothing: the round's Themes stand."""
        deleted = ctx.event
        assert isinstance(deleted, MessageDeleted)
        idea = await self.app.store.find_idea_by_ref(deleted.conversation.platform, deleted.message_ref)
        if idea is None:
            return False
        if idea.source != "person":
            return True
        async with self._lock(idea.session_id):
            open_round = await self._changeable(idea)
            if open_round is not None:
                await self.app.store.withdraw_idea(idea.id)
                _log.info("brainstorm %d: idea #%d withdrawn, its message deleted", idea.session_id, idea.number)
        return True

    async def _changeable(self, idea: IdeaRecord) -> tuple[BrainstormRecord, IdeaRecord] | None:
        """The session and the idea as stored now, when the idea's round is still open (not ended nor ending: a
        session whose deadline is cleared is sorting its ideas); None otherwise. Call under the session's lock."""
        store = self.app.store
        session = await store.get_brainstorm(idea.session_id)
        if session is None or not session.is_open or session.deadline is None or session.round != idea.round:
            return None
        fresh = await store.find_idea(session.id, number=idea.number)
        return (session, fresh) if fresh is not None and fresh.id == idea.id else None

    # -- buttons ---------------------------------------------------------------------------------------------------

    async def _on_action(self, ctx: Context) -> bool:
        action = ctx.event
        assert isinstance(action, Action)
        if action.action_id not in render.ACTIONS:
            return False
        session = await self._session_for(ctx, action.target_id)
        if session is None:
            raise UserError("That brainstorm no longer exists (it ended and its retention period is over).")
        if not session.is_open:
            raise UserError("This brainstorm has wrapped up. /brainstorm summary shows what came of it.")
        if action.action_id == render.IDEA:
            text = action.value.strip()
            if not text:
                raise UserError("Write the idea after the button, e.g. i a cooking class for the whole team.")
            await self._add_idea(ctx, session, text, None)
        elif action.action_id == render.VOTE:
            # The value asked for after the button: "3", "#3", or several as typed in the thread ("3 and 5").
            number = parse_number(action.value)
            numbers = [number] if number is not None else typed_votes(f"vote {action.value}")
            if not numbers:
                raise UserError(_WHICH_IDEA)
            await self._vote_numbers(ctx, session, numbers)
        elif action.action_id == NEXT_ACTION:
            await self._next_pressed(ctx, session)
        else:
            await self._wrap_pressed(ctx, session)
        return True

    def may_wrap(self, session: BrainstormRecord, user: User) -> bool:
        return user.is_moderator or user.id == session.starter.id

    async def _next_pressed(self, ctx: Context, session: BrainstormRecord) -> None:
        last = session.round >= session.rounds
        if last and not self.may_wrap(session, ctx.event.user):
            raise UserError(
                f"This is the last round. {session.starter.name} (who started it) or a moderator wraps it up with ✅ "
                "Wrap up; otherwise it wraps up by itself when the timer ends."
            )
        await ctx.responder.defer()
        done = await self.end_round(session.id, session.round, fallback=ctx.responder)
        if not done:
            await ctx.responder.send(Reply.text("That round has already ended.", ephemeral=True))

    async def _wrap_pressed(self, ctx: Context, session: BrainstormRecord) -> bool:
        """✅ Wrap up (or /brainstorm end): True once this call wrapped the session up."""
        if not self.may_wrap(session, ctx.event.user):
            raise UserError(
                f"Only {session.starter.name} (who started this brainstorm) or a moderator can wrap it up. "
                "⏭ Next round is open to everyone."
            )
        await ctx.responder.defer()
        async with self._lock(session.id):
            current = await self.app.store.get_brainstorm(session.id)
            if current is None or not current.is_open:
                await ctx.responder.send(Reply.text("This brainstorm has already wrapped up.", ephemeral=True))
                return False
            try:
                await self._wrap_up(current, self._poster(current, ctx.responder))
            except PublishForbidden:
                await self._close_unreachable(session.id)
                raise
            except Exception:
                # Once marked as wrapping up, the session has no timer: a later try finishes the wrap-up.
                marked = await self._reload(current)
                if marked.is_open and marked.deadline is None:
                    self._retry(marked.id, marked.round)
                raise
            return True

    async def end_requested(self, ctx: Context) -> None:
        """/brainstorm end: wrap up the brainstorm running here (this thread's, else the channel's), as ✅ Wrap up
        does; the asker is told where the summary went when it went into the session's thread."""
        store = self.app.store
        conversation = ctx.event.conversation
        session = await store.brainstorm_for_thread(conversation)
        if session is None or not session.is_open:
            session = await store.open_brainstorm_in_channel(conversation)
        if session is None:
            raise UserError(
                "No brainstorm is running in this channel. /brainstorm summary shows the last one's result; "
                "/brainstorm <topic> starts a new one."
            )
        thread = session.conversation.thread
        if await self._wrap_pressed(ctx, session) and thread is not None and conversation.thread != thread:
            name = f" “{session.thread_name}”" if session.thread_name else ""
            topic = render.short(session.topic, 80)
            note = f"The brainstorm on “{topic}” has wrapped up; the summary is in its thread{name}."
            await ctx.responder.send(Reply.text(note, ephemeral=True))

    # -- rounds ------------------------------------------------------------------------------------------------------

    def _lock(self, session_id: int) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def _poster(self, session: BrainstormRecord, fallback: Responder | None) -> Post:
        """Posts go into the session's thread: through the publisher when one is attached, else the responder."""
        publisher = self.app.publisher
        if publisher is not None and session.conversation.thread is not None:
            conversation = session.conversation

            async def publish(reply: Reply) -> str:
                return await publisher.publish(conversation, reply)

            return publish
        if fallback is None:
            raise RuntimeError("nowhere to post: no publisher attached and no responder")
        return fallback.send

    async def end_round(self, session_id: int, expected_round: int, *, fallback: Responder | None = None) -> bool:
        """End round `expected_round` (timer or button): post Themes, then yes-and ideas and the next round, or the
        wrap-up after the last round. False when that round had already ended (a timer and a button racing).

        Each step leaves a mark in the store before the next begins (the deadline cleared, the themes stamped with
        their round, the yes-and ideas stored), so a restart part-way through resumes where it stopped: nothing is
        posted or generated twice. A round end that fails part-way (the platform or the database failing for a
        moment) is tried again `retry_s` later, whether a timer or a button started it."""
        try:
            return await self._end_round(session_id, expected_round, fallback)
        except PublishForbidden:  # the thread is gone for good: retrying cannot help
            await self._close_unreachable(session_id)
            raise
        except Exception:
            self._retry(session_id, expected_round)
            raise

    async def _end_round(self, session_id: int, expected_round: int, fallback: Responder | None) -> bool:
        async with self._lock(session_id):
            session = await self.app.store.get_brainstorm(session_id)
            if session is None or not session.is_open or session.round != expected_round:
                return False
            self._disarm(session_id)
            if session.deadline is not None:
                # No deadline on an open session means "this round is ending": a restart resumes it at once.
                session = await self.app.store.update_brainstorm(session.id, deadline=None)
            post = self._poster(session, fallback)
            # With votes in, the ideas to build on are known before sorting: the yes-and ideas are written while
            # the themes are named (one batch for the model), and stored and posted only after Themes went out.
            early = await self._early_yes_and(session) if session.round < session.rounds else None
            try:
                views = await self._themes_once(session, post)
                if session.round >= session.rounds:
                    await self._wrap_up(await self._reload(session), post, sorted_already=True)
                    return True
                await self._yes_and(await self._reload(session), views, post, early)
            finally:
                if early is not None and not early.done():
                    early.cancel()
            deadline = self.clock() + timedelta(minutes=session.minutes)
            # Posted before the new round is stored: a restart in between posts it again rather than never.
            await post(render.round_open(dataclasses.replace(session, round=session.round + 1, deadline=deadline)))
            session = await self.app.store.update_brainstorm(session.id, round=session.round + 1, deadline=deadline)
            self._arm(session)
            return True

    async def _close_unreachable(self, session_id: int) -> None:
        """Close a session whose thread the platform refuses for good (deleted, archived, no access): it cannot go on,
        and left open it would keep its channel from starting another and its ideas past their retention."""
        session = await self.app.store.get_brainstorm(session_id)
        if session is None or not session.is_open:
            return
        self._disarm(session_id)
        now = self.clock()
        await self.app.store.update_brainstorm(
            session_id,
            status=BRAINSTORM_CLOSED,
            deadline=None,
            closed_at=now,
            expires_at=now + timedelta(days=self.config.retention_days),
        )
        _log.warning("brainstorm %d closed: its thread refuses Chorus for good", session_id)

    async def _themes_once(self, session: BrainstormRecord, post: Post) -> dict[int, render.IdeaView]:
        """Sort and post this round's Themes, unless a run before a restart already did: then post the stored
        themes if they never went out, and sort nothing again."""
        store = self.app.store
        stamped = [theme for theme in session.themes if theme.get("round") == session.round]
        if not stamped:
            return await self._sort(session, post)
        views = render.idea_views(await store.ideas(session.id), await store.voters(session.id))
        if not all(theme.get("posted") for theme in stamped):
            await post(render.themes_reply(session, session.themes, views, str(stamped[0].get("note", ""))))
            await self._mark_posted(session)
        return views

    async def _mark_posted(self, session: BrainstormRecord) -> None:
        fresh = await self._reload(session)
        themes = [{**theme, "posted": True} for theme in fresh.themes]
        await self.app.store.update_brainstorm(session.id, themes=themes)

    async def _reload(self, session: BrainstormRecord) -> BrainstormRecord:
        fresh = await self.app.store.get_brainstorm(session.id)
        return fresh or session

    async def _sort(self, session: BrainstormRecord, post: Post | None) -> dict[int, render.IdeaView]:
        """Embed, merge, cluster and name the session's ideas so far; post **Themes** when `post` is given."""
        store = self.app.store
        ideas = await store.ideas(session.id)
        voters = await store.voters(session.id)
        views = render.idea_views(ideas, voters)
        # People's ideas, plus Chorus' own once someone voted for them (adopted).
        candidates = [view.idea for view in sorted(views.values(), key=lambda v: v.idea.number) if render.adopted(view)]
        this_round = sum(1 for idea in ideas if idea.source == "person" and idea.round == session.round)
        if not candidates:
            if post is not None:
                # An empty theme marks the round as sorted, so a restart does not say it twice.
                marker = {"label": "", "idea_ids": [], "round": session.round, "posted": False}
                await store.update_brainstorm(session.id, themes=[marker])
                await post(
                    Reply(
                        parts=(
                            f"Round {session.round} ended with no ideas yet, so there is nothing to sort. Post ideas "
                            "in the thread (or press 💡 Add idea); every message counts.",
                        ),
                        title=f"Themes — round {session.round} of {session.rounds}",
                        actions=render.controls(session.id),
                    )
                )
                await self._mark_posted(session)
            return views
        try:
            organized = await organize(
                [(idea.id, idea.text) for idea in candidates],
                embedder=self.app.embedder,
                generator=self.app.generator,
                topic=session.topic,
                blocklist=self.app.blocklist,
                merge_threshold=self.config.merge_threshold,
                max_themes=self.config.max_themes,
                embed_chars=self.config.embed_chars,
                key=session.conversation.key,
                reader=self.reader,
            )
        except Exception:
            _log.exception("sorting brainstorm %d failed", session.id)
            if post is not None:
                await post(Reply(parts=(_THEMES_FAILED,), actions=render.controls(session.id)))
            return views
        await store.merge_ideas(organized.merged)
        note = ""
        if this_round == 0:
            note = "No new ideas this round; these are the ideas so far."
        elif len(candidates) == 1:
            note = "Just one idea so far, so it is its own theme; more ideas make better themes."
        elif not organized.separated:
            note = _NO_CLEAR_THEMES
        elif organized.tentative:
            distinct = len(candidates) - len(organized.merged)
            note = f"With {distinct} ideas these themes are a first guess; more ideas make clearer ones."
        if organized.merged:
            note += (" " if note else "") + (
                f"{len(organized.merged)} near-duplicate idea{'s were' if len(organized.merged) != 1 else ' was'} "
                "merged; every author is credited."
            )
        # Themes sorted for a wrap-up (no post) are never posted as a Themes message, even after a restart.
        stamp = {"round": session.round, "posted": post is None, "note": note}
        themes = [{"label": theme.label, "idea_ids": list(theme.idea_ids), **stamp} for theme in organized.themes]
        session = await store.update_brainstorm(session.id, themes=themes)
        views = render.idea_views(await store.ideas(session.id), voters)
        if post is not None:
            await post(render.themes_reply(session, session.themes, views, note))
            await self._mark_posted(session)
        return views

    async def _pending_yes_and(self, session: BrainstormRecord) -> list[IdeaRecord]:
        """Yes-and ideas already stored for the next round (a run before a restart wrote them)."""
        ideas = await self.app.store.ideas(session.id)
        return [idea for idea in ideas if idea.source == "yes-and" and idea.round == session.round + 1]

    def _write_yes_and(self, session: BrainstormRecord, basis: list[render.IdeaView]) -> Awaitable[list[str]]:
        return yes_and_ideas(
            self.app.generator,
            session.topic,
            [view.idea.text for view in basis],
            self.config.yes_and_ideas,
            blocklist=self.app.blocklist,
            seed=session.id * 1000 + session.round + 500,
            key=session.conversation.key,
        )

    async def _early_yes_and(self, session: BrainstormRecord) -> asyncio.Task[list[str]] | None:
        """Start writing the yes-and ideas now when people voted (the top-voted ideas are their basis) and none are
        stored yet; None otherwise. Nothing is stored here: the texts are only kept once Themes went out."""
        if await self._pending_yes_and(session):
            return None
        views = render.idea_views(await self.app.store.ideas(session.id), await self.app.store.voters(session.id))
        voted = [view for view in render.ranked(views) if view.votes][:3]
        if not voted:
            return None
        return asyncio.ensure_future(self._write_yes_and(session, voted))

    async def _yes_and(
        self,
        session: BrainstormRecord,
        views: dict[int, render.IdeaView],
        post: Post,
        early: asyncio.Task[list[str]] | None = None,
    ) -> None:
        """Ideas that build on the favourites: all stored first, then each posted, so a restart in between posts
        the stored ones and generates nothing again. `early` holds ones already being written from the votes."""
        store = self.app.store
        pending = await self._pending_yes_and(session)
        if not pending:
            if early is not None:
                texts = await early
            else:
                # The top-voted ideas, or with no votes the first idea of each of the first three themes.
                voted = [view for view in render.ranked(views) if view.votes]
                leads = [views[ids[0]] for theme in session.themes if (ids := theme["idea_ids"]) and ids[0] in views]
                basis = voted[:3] or leads[:3]
                if not basis:
                    return
                texts = await self._write_yes_and(session, basis)
            platform = session.conversation.platform
            pending = [
                await store.add_idea(session.id, CHORUS, platform, text, round=session.round + 1, source="yes-and")
                for text in texts
            ]
        for idea in pending:
            if idea.message_ref is None:
                ref = await post(render.chorus_idea(session.id, idea, "Yes, and…"))
                await store.set_idea_message_ref(idea.id, ref)

    # -- wrap-up -----------------------------------------------------------------------------------------------------

    async def _wrap_up(self, session: BrainstormRecord, post: Post, *, sorted_already: bool = False) -> None:
        """Write the summary, post it with the Markdown file attached, then close the session.

        The session is first marked as wrapping up (this round its last, no deadline) and the next steps are stored
        before the summary is posted, so a restart or a failed post resumes the wrap-up (a round end of the last
        round) instead of losing the summary or opening another round."""
        self._disarm(session.id)
        store = self.app.store
        if session.rounds != session.round or session.deadline is not None:
            session = await store.update_brainstorm(session.id, rounds=session.round, deadline=None)
        if sorted_already:
            views = render.idea_views(await store.ideas(session.id), await store.voters(session.id))
        else:
            views = await self._sort(session, None)
            session = await self._reload(session)
        top_views = render.ranked(views)[:3]
        top = [view.idea.text for view in top_views]
        steps = list(session.next_steps) or (
            await next_steps(
                self.app.generator,
                session.topic,
                top,
                blocklist=self.app.blocklist,
                seed=session.id * 1000 + 999,
                key=session.conversation.key,
            )
            if top
            else []
        )
        if steps and not session.next_steps:
            session = await store.update_brainstorm(
                session.id, next_steps=steps, next_step_idea_ids=[view.idea.id for view in top_views[: len(steps)]]
            )
        await post(await self.summary_reply(session))
        now = self.clock()
        session = await store.update_brainstorm(
            session.id,
            status=BRAINSTORM_CLOSED,
            deadline=None,
            closed_at=now,
            expires_at=now + timedelta(days=self.config.retention_days),
        )
        await self.purge_expired()
        _log.info("brainstorm %d wrapped up", session.id)

    async def summary_reply(self, session: BrainstormRecord) -> Reply:
        """The summary as a message with the Markdown file attached (rewritten from the store each time)."""
        store = self.app.store
        ideas = await store.ideas(session.id)
        voters = await store.voters(session.id)
        views = render.idea_views(ideas, voters)
        voter_count = len(set().union(*voters.values())) if voters else 0
        markdown = render.summary_markdown(session, views, ideas, voter_count)
        path = self.write_summary(session, markdown)
        return Reply(
            parts=(markdown,),
            title=f"Brainstorm summary: {render.short(session.topic, 80)}",
            footer=f"Also attached as {path.name}. /brainstorm summary shows it again.",
            attachments=(Attachment(path.name, path, "Brainstorm summary (Markdown)"),),
        )

    def write_summary(self, session: BrainstormRecord, markdown: str) -> Path:
        self.summaries_dir.mkdir(parents=True, exist_ok=True)
        path = self.summaries_dir / f"brainstorm-{session.id}-summary.md"
        path.write_text(markdown + "\n", encoding="utf-8")
        return path

    async def refresh_summaries(self) -> None:
        """Rewrite summary files from the store (after a /forget), and delete those of purged sessions."""
        for path, session in await self._summary_files():
            if session is None:
                path.unlink(missing_ok=True)
            else:
                await self.summary_reply(session)

    async def purge_expired(self) -> None:
        """Delete sessions past `brainstorm.retention_days`, and their summary files with them."""
        await self.app.store.purge_expired_brainstorms(self.clock())
        for path, session in await self._summary_files():
            if session is None:
                path.unlink(missing_ok=True)
                _log.info("deleted %s: its brainstorm is past its retention period", path.name)

    async def _summary_files(self) -> list[tuple[Path, BrainstormRecord | None]]:
        """Each summary file with its session (None once the session is gone)."""
        if not self.summaries_dir.is_dir():
            return []
        found = []
        for path in sorted(self.summaries_dir.glob("brainstorm-*-summary.md")):
            match = re.fullmatch(r"brainstorm-(\d+)-summary\.md", path.name)
            found.append((path, await self.app.store.get_brainstorm(int(match.group(1))) if match else None))
        return found

    # -- timers ------------------------------------------------------------------------------------------------------

    def _arm(self, session: BrainstormRecord) -> None:
        """(Re)start the round timer from the stored deadline; a deadline already past fires at once, and so does a
        round end that a restart interrupted (an open session without a deadline)."""
        self._disarm(session.id)
        if not session.is_open:
            return
        delay = 0.0 if session.deadline is None else max(0.0, (session.deadline - self.clock()).total_seconds())
        self._timers[session.id] = asyncio.create_task(
            self._timer(session.id, session.round, delay), name=f"brainstorm-{session.id}-round-{session.round}"
        )

    def _disarm(self, session_id: int) -> None:
        task = self._timers.pop(session_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def _timer(self, session_id: int, round_number: int, delay: float) -> None:
        await asyncio.sleep(delay)
        if self.app.publisher is None:
            _log.info("brainstorm %d: round %d timer fired with no publisher; waits for one", session_id, round_number)
            return
        try:
            await self.end_round(session_id, round_number)
        except PublishForbidden as exc:  # the thread is gone for good: retrying cannot help
            _log.warning("brainstorm %d: round %d cannot be ended in its thread: %s", session_id, round_number, exc)
        except Exception:
            _log.exception("brainstorm %d: ending round %d on its timer failed", session_id, round_number)

    def _retry(self, session_id: int, round_number: int) -> None:
        """Try a round end (or a wrap-up) that failed part-way again `retry_s` from now."""
        _log.warning("brainstorm %d: ending round %d failed; retrying in %g s", session_id, round_number, self.retry_s)
        self._disarm(session_id)
        self._timers[session_id] = asyncio.create_task(
            self._timer(session_id, round_number, self.retry_s),
            name=f"brainstorm-{session_id}-round-{round_number}-retry",
        )

    async def _on_publisher(self, publisher: Publisher) -> None:
        """Resume: re-arm every running session's timer from its stored deadline, and drop expired sessions. A
        session without a thread (its process stopped while starting it) is ended instead, once it is clearly not
        one being started right now."""
        await self.purge_expired()
        for session in await self.app.store.open_brainstorms():
            if session.conversation.thread is None:
                if session.id not in self._starting:
                    self._watch_orphan(session)
                continue
            self._arm(session)
        if self._timers:
            _log.info("brainstorm: %d running session timers re-armed", len(self._timers))

    def _orphaned(self, session: BrainstormRecord, *, waited: bool = False) -> bool:
        """Open, without a thread, not being started here, and older than a start takes (or `waited` that long
        already): left by a process that stopped while starting it."""
        return (
            session.is_open
            and session.conversation.thread is None
            and session.id not in self._starting
            and (waited or self.clock() - session.created_at >= self.orphan_after)
        )

    def _watch_orphan(self, session: BrainstormRecord) -> None:
        """End a thread-less session once it is `orphan_after` old, unless its thread opened by then."""
        self._disarm(session.id)
        delay = max(0.0, (session.created_at + self.orphan_after - self.clock()).total_seconds())

        async def watch() -> None:
            await asyncio.sleep(delay)
            await self._end_orphan(session.id, waited=True)

        self._timers[session.id] = asyncio.create_task(watch(), name=f"brainstorm-{session.id}-orphan")

    async def _end_orphan(self, session_id: int, *, notify: bool = True, waited: bool = False) -> None:
        """End a session whose process stopped between storing it and opening its thread: it has no ideas and
        nowhere to post, and it would keep its channel from starting another. Says so in the channel when it can."""
        store = self.app.store
        async with self._lock(session_id):
            session = await store.get_brainstorm(session_id)
            if session is None or not self._orphaned(session, waited=waited):
                return
            self._disarm(session_id)
            now = self.clock()
            await store.update_brainstorm(
                session_id, status=BRAINSTORM_CLOSED, deadline=None, closed_at=now, expires_at=now
            )
        _log.warning("brainstorm %d had no thread (Chorus stopped while starting it); ended", session_id)
        publisher = self.app.publisher
        if not notify or publisher is None:
            return
        topic = render.short(session.topic, 80)
        note = (
            f"The brainstorm on “{topic}” was cut off by a restart before its thread opened, so it has been "
            f"ended. Start it again with /brainstorm {topic}."
        )
        try:
            await publisher.publish(session.conversation, Reply.text(note))  # the channel: there is no thread
        except Exception as exc:  # the channel is usable again; the note is a courtesy
            _log.warning("brainstorm %d: could not say it was ended: %s", session_id, exc)

    async def close(self) -> None:
        if self.reader is not None:
            await self.reader.close()
        tasks = list(self._timers.values()) + list(self._ahead)
        self._timers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


NEXT_ACTION = render.NEXT
