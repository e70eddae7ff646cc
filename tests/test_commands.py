"""Commands and feedback through the real router, studio and SQLite store, with the FakeGenerator.

Each test reads like a terminal session: what the user types, what they see, what was stored.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.terminal.translate import CONVERSATION
from bots.events import Action, Activity, Command, Conversation, Message, Reaction, User
from bots.router import CommandSpec, Context
from bots.store import Store
from chorus.compose import build_chorus
from generation.fake import FakeGenerator
from generation.types import Chunk, GenerationRequest
from support import FakeResponder, TestBot, make_bot, reply_text, settings_for


def _echo_variant(request: GenerationRequest) -> str:
    return f"idea {request.seed} for {request.messages[-1].content[:40]}"


async def test_create_streams_numbered_variants_and_offers_actions(testbot: TestBot) -> None:
    reply = await testbot.one("/create slogan a bookstore that is also a cafe --tone playful --n 3")
    assert reply.title == "slogan · v1 of 1"
    assert len(reply.parts) == 3 and all(reply.parts)
    assert [a.key for a in reply.actions] == ["r", "m", "s", "l", "t <tone>", "", "+", "-"]
    rework = reply.actions[5]  # several variants: a select that reworks one of them
    assert {value.split()[0] for _, value in rework.choices} == {"1", "2", "3"}
    stream = testbot.responder.streams[-1]
    assert len(stream.deltas) > 3, "text should arrive in several chunks"
    assert [part.strip() for part in stream.parts] == list(reply.parts)
    assert testbot.responder.deferred == 1
    prompt = testbot.generator.requests[0].messages[-1].content
    assert "playful slogan for a bookstore that is also a cafe" in prompt
    record = await testbot.store.get_generation(reply.generation_id)
    assert record is not None and record.variants == reply.parts and record.params["n"] == 3


async def test_shortcut_refines_into_v2_with_the_conversation_as_context(testbot: TestBot) -> None:
    first = await testbot.one("/create slogan a tea shop --n 2")
    second = await testbot.one("s")
    assert second.title == "slogan · v2 of 2 · shorter"
    assert len(second.parts) == 2
    # "shorter" reworks each variant on its own: variant 2's request carries variant 2's previous text.
    refined = testbot.generator.requests[2:]
    assert {r.messages[-2].content for r in refined} == set(first.parts)
    request = refined[-1]
    roles = [m.role for m in request.messages]
    assert roles[0] == "system" and roles[-3:] == ["user", "assistant", "user"]
    assert "shorter" in request.messages[-1].content.lower()
    record = await testbot.store.get_generation(second.generation_id)
    assert record is not None and record.parent_id == first.generation_id and record.version == 2
    assert testbot.responder.deferred == 2, "a refinement is acknowledged at once, like a command"


async def test_history_with_a_number_shows_that_version_whole(testbot: TestBot) -> None:
    first = await testbot.one("/create poem the sea --n 2")
    await testbot.one("s")
    old = await testbot.one("/history 1")
    assert old.parts == tuple(f"{i}. {text}" for i, text in enumerate(first.parts, start=1))
    assert "v1 of 2" in old.title
    assert "this result has v1–v2" in reply_text(await testbot.one("/history 7"))
    assert "/history 2 shows version 2" in reply_text(await testbot.one("/history latest"))


async def test_plain_sentence_refines_with_all_variants_and_history_lists_versions(testbot: TestBot) -> None:
    await testbot.one("/create poem autumn rain --n 2")
    second = await testbot.one("l")
    third = await testbot.one("make it rhyme")
    assert third.title.startswith("poem · v3 of 3 · make it rhyme") and len(third.parts) == 2
    # Each variant is reworked from its own text, never from a numbered list of all of them.
    request = testbot.generator.requests[-1]
    assert request.messages[-2].content in second.parts and not request.messages[-2].content.startswith("1. ")
    assert request.messages[-1].content.startswith("make it rhyme")
    assert [m.role for m in request.messages[-5:]] == ["user", "assistant", "user", "assistant", "user"]
    history = reply_text(await testbot.one("/history"))
    assert "3 versions" in history
    assert "v1  /create poem" in history and "v2  longer" in history and "v3  make it rhyme" in history


async def test_make_the_second_one_rhyme_refines_only_variant_two_and_keeps_the_first(testbot: TestBot) -> None:
    first = await testbot.one("/create poem autumn rain --n 2")
    third = await testbot.one("make the second one rhyme")
    assert third.title == "poem · v2 of 2 · #2 make it rhyme"
    assert third.parts[0] == first.parts[0] and third.parts[1] != first.parts[1]
    request = testbot.generator.requests[-1]
    assert request.messages[-2].content == first.parts[1], "variant 2 is refined from its own text"
    assert request.messages[-1].content.startswith("make it rhyme")
    assert len(testbot.generator.requests) == 3, "one variant generated, not two"
    fourth = await testbot.one("2 s")
    assert fourth.title == "poem · v3 of 3 · #2 shorter" and fourth.parts[0] == first.parts[0]
    assert "shorter" in testbot.generator.requests[-1].messages[-1].content.lower()
    history = reply_text(await testbot.one("/history"))
    assert "v2  #2 make it rhyme" in history and "v3  #2 shorter" in history


async def test_tone_change_and_regenerate(testbot: TestBot) -> None:
    await testbot.one("/create tagline a bike repair cafe")
    toned = await testbot.one("t formal")
    assert toned.title == "tagline · v2 of 2 · tone: formal"
    assert "formal tone" in testbot.generator.requests[-1].messages[-1].content
    previous, asked = testbot.generator.requests[-1], len(testbot.generator.requests)
    regenerated = await testbot.one("r")
    assert regenerated.title == "tagline · v3 of 3 · regenerate"
    # A regenerate asks the same question again with a new seed, without the answer it replaces (a retry may
    # follow when the model hands back the same text).
    latest = testbot.generator.requests[asked]
    assert latest.messages == previous.messages and latest.seed != previous.seed


async def test_unknown_tone_on_the_tone_action(testbot: TestBot) -> None:
    await testbot.one("/create tagline a bike repair cafe")
    reply = await testbot.one("t grumpy")
    assert reply.ephemeral and "Unknown tone 'grumpy'" in reply_text(reply)


async def test_action_with_no_previous_result(testbot: TestBot) -> None:
    for line in ("s", "r", "make it rhyme"):
        reply = await testbot.one(line)
        assert reply.ephemeral
        assert reply_text(reply).startswith("Nothing to refine yet. Start with /create")
    assert testbot.generator.requests == []


async def test_unknown_command_suggests_the_closest(testbot: TestBot) -> None:
    reply = await testbot.one("/crate slogan x")
    assert (
        reply.ephemeral
        and reply_text(reply) == "Unknown command /crate. Did you mean /create? Type /help for the list."
    )


async def test_the_start_of_a_command_or_a_bare_slash_points_to_it(testbot: TestBot) -> None:
    assert "Unknown command /h. Did you mean /help or /history?" in reply_text(await testbot.one("/h"))
    assert "Did you mean /history?" in reply_text(await testbot.one("/hist"))
    assert "Did you mean /help?" in reply_text(await testbot.one("/?"))
    assert "Did you mean /help?" in reply_text(await testbot.one("/"))
    assert "Did you mean" not in reply_text(await testbot.one("/zzz")), "nothing starts like that"


async def test_unknown_kind_lists_kinds_and_nothing_is_generated(testbot: TestBot) -> None:
    reply = await testbot.one("/create limerick a cat")
    assert reply.ephemeral and "Unknown kind 'limerick'" in reply_text(reply) and "slogan, tagline" in reply_text(reply)
    assert testbot.generator.requests == []


async def test_remix_rewrites_in_the_tone(testbot: TestBot) -> None:
    reply = await testbot.one("/remix we r open late tonite come thru --tone formal")
    assert reply.title == "remix · v1 of 1"
    assert (
        "Rewrite this in a formal tone:\n\nwe r open late tonite come thru"
        in testbot.generator.requests[0].messages[-1].content
    )


async def test_help_lists_commands_kinds_and_tones(testbot: TestBot) -> None:
    text = reply_text(await testbot.one("/help"))
    for needle in ("/create <kind>", "/remix", "/history", "/forget", "slogan", "micro-fiction", "Tones: neutral"):
        assert needle in text


async def _hint_without_a_version(testbot: TestBot, lines: tuple[str, ...], hint: str) -> None:
    """Each line after a result gets `hint` and makes no new version: the model is never asked."""
    requests = len(testbot.generator.requests)
    for line in lines:
        reply = await testbot.one(line)
        assert hint in reply_text(reply) and reply.generation_id is None, line
    assert len(testbot.generator.requests) == requests, "a hint is not an instruction to rewrite"


async def test_help_typed_without_the_slash_points_to_help_and_makes_no_version(testbot: TestBot) -> None:
    assert "/help" in reply_text(await testbot.one("help"))
    await testbot.one("/create poem the sea")
    await _hint_without_a_version(testbot, ("help", "Help me please", "commands?"), "Type /help for the commands")


async def test_a_question_about_chorus_itself_gets_help_not_a_rewrite(testbot: TestBot) -> None:
    await testbot.one("/create poem the sea")
    questions = ("how do I use this?", "Hi, what can you do", "how does this work", "who are you?")
    await _hint_without_a_version(testbot, questions, "Type /help for the commands")
    # Instructions that merely start like a question still refine the poem.
    for line in ("how about making it rhyme", "what if the sea were angry"):
        assert (await testbot.one(line)).generation_id is not None, line


async def test_undo_says_versions_are_kept_instead_of_asking_the_model_to_undo(testbot: TestBot) -> None:
    await testbot.one("/create poem the sea")
    await testbot.one("s")
    await _hint_without_a_version(testbot, ("undo", "Go back!", "ctrl+z"), "/history lists them all")


async def test_help_for_one_command_shows_its_usage_example_and_values(testbot: TestBot) -> None:
    reply = await testbot.one("/help create")
    text = reply_text(reply)
    assert reply.title == "Help: /create" and "Content kinds:" not in text, "only the command asked about"
    assert "Example: /create slogan my bakery" in text and "Tones: neutral" in text and "Kinds: slogan" in text
    assert "Example: /remix" in reply_text(await testbot.one("/help /remix"))
    assert "No command /crate. Did you mean /create?" in reply_text(await testbot.one("/help crate"))
    assert "/help create" in reply_text(await testbot.one("/help")), "the full list says how to ask about one"


async def test_forget_asks_then_deletes_only_the_users_data(testbot: TestBot) -> None:
    await testbot.one("/create slogan a tea shop", as_user="alice")
    await testbot.one("/create slogan a bakery", as_user="bob")
    ask = await testbot.one("/forget", as_user="alice")
    assert "cannot be undone" in reply_text(ask) and [a.key for a in ask.actions] == ["y", "n"]
    assert "(1 result)" in reply_text(ask), "one of a thing is singular"
    cancelled = await testbot.one("n")
    assert "Nothing was deleted" in reply_text(cancelled)
    assert (await testbot.store.user_data_counts("terminal", "alice"))["generations"] == 1
    await testbot.one("/forget")
    done = await testbot.one("y")
    assert reply_text(done).startswith("Done. Deleted 1 result.")
    assert (await testbot.store.user_data_counts("terminal", "alice"))["generations"] == 0
    assert (await testbot.store.user_data_counts("terminal", "bob"))["generations"] == 1


async def test_only_the_asker_can_confirm_forget(testbot: TestBot) -> None:
    await testbot.one("/create slogan a tea shop", as_user="alice")
    await testbot.one("/forget")
    reply = await testbot.one("y", as_user="mallory")
    assert "Only the person who asked" in reply_text(reply)
    assert (await testbot.store.user_data_counts("terminal", "alice"))["generations"] == 1


async def test_ratings_are_stored_as_feedback(testbot: TestBot) -> None:
    reply = await testbot.one("/create slogan a tea shop")
    thanks = await testbot.one("+")
    assert "Noted 👍 on slogan v1" in reply_text(thanks)
    counts = await testbot.store.user_data_counts("terminal", "alice")
    assert counts["feedback"] == 1
    assert reply.generation_id is not None


async def test_quota_per_user_with_a_wait_time(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="2"))
    try:
        await bot.one("/create slogan one")
        await bot.one("r")
        asked = len(bot.generator.requests)
        refused = await bot.one("/create slogan three")
        assert refused.ephemeral
        assert reply_text(refused).startswith("You've reached the limit of 2 requests a minute. Try again in ")
        assert len(bot.generator.requests) == asked, "a refused /create generates nothing"
        other = await bot.one("/create slogan for bob", as_user="bob")
        assert other.title == "slogan · v1 of 1"
        assert "/help" in reply_text(await bot.one("/help", as_user="alice")), "non-generating commands are free"
    finally:
        await bot.chorus.close()


async def test_messages_a_feature_claims_cost_no_quota_but_refinements_do(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="2"))
    claimed: list[str] = []

    async def ideas(ctx: Context) -> bool:
        text = getattr(ctx.event, "text", "")
        if text.startswith("idea:"):
            claimed.append(text)
            return True
        return False

    bot.chorus.intercept(Message, ideas)
    try:
        await bot.one("/create slogan one")
        for number in range(5):  # a brainstorm thread: many messages, none of them generate
            assert await bot.say(f"idea: number {number}") == []
        assert len(claimed) == 5
        await bot.one("make it rhyme")
        refused = await bot.one("make it longer")
        assert reply_text(refused).startswith("You've reached the limit of 2 requests a minute.")
        assert len(bot.generator.requests) == 2
    finally:
        await bot.chorus.close()


async def test_blocklisted_input_is_refused_and_output_redacted(tmp_path: Path) -> None:
    generator = FakeGenerator(script=lambda request: "Ping @everyone and <!channel>, darn good deals")
    bot = await make_bot(settings_for(tmp_path, CHORUS_MODERATION__BLOCKLIST='["darn"]'), generator)
    try:
        refused = await bot.one("/create slogan a darn shop")
        assert "blocked word ('darn')" in reply_text(refused) and generator.requests == []
        reply = await bot.one("/create slogan a shop")
        text = reply.parts[0]
        # Mentions are the adapters' to defuse (tests/test_*_render.py); the core keeps the words as written.
        assert "darn" not in text and "Ping @everyone and <!channel>" in text
        streamed = "".join(bot.responder.streams[-1].deltas)
        assert "darn" not in streamed
    finally:
        await bot.chorus.close()


async def test_failure_mid_stream_keeps_what_was_produced_and_says_so(tmp_path: Path) -> None:
    generator = FakeGenerator(script=lambda r: "one two three four five six", fail_after=3)
    bot = await make_bot(settings_for(tmp_path), generator)
    try:
        reply = await bot.one("/create slogan a shop --n 2")
        assert reply.parts == ("one two three",)
        assert reply.footer.startswith("⚠ Generation failed:") and "before it stopped" in reply.footer
        record = await bot.store.get_generation(reply.generation_id)
        assert record is not None and record.status == "partial"
        assert len(reply.parts) == 1, "variants after a failure are dropped"
        generator.fail_after = None
        assert (await bot.one("/create slogan again")).footer == ""
    finally:
        await bot.chorus.close()


async def test_busy_generator_gets_a_clear_message(tmp_path: Path) -> None:
    generator = FakeGenerator()
    generator.busy = True
    bot = await make_bot(settings_for(tmp_path), generator)
    try:
        reply = await bot.one("/create slogan a shop")
        assert "busy" in reply_text(reply).lower()
        assert await bot.store.count_generations() == 0
    finally:
        await bot.chorus.close()


async def test_moderator_only_commands_are_refused_for_others(testbot: TestBot) -> None:
    async def secret(ctx: Context) -> None:
        await ctx.responder.send(__import__("bots.reply", fromlist=["Reply"]).Reply.text("ok"))

    testbot.chorus.router.commands["secret"] = CommandSpec("secret", "x", "/secret", secret, moderator_only=True)
    place = Conversation("discord", "g1", "c1")
    responder = FakeResponder()
    await testbot.chorus.handle(Command(place, User("u1", "member"), "secret"), responder)
    await testbot.chorus.handle(Command(place, User("u2", "mod", is_moderator=True), "secret"), responder)
    assert [reply_text(r) for r in responder.replies] == ["Only moderators can use /secret.", "ok"]


async def test_reactions_on_results_are_recorded(testbot: TestBot) -> None:
    reply = await testbot.one("/create slogan a tea shop")
    record = await testbot.store.get_generation(reply.generation_id)
    assert record is not None and record.message_ref
    await testbot.chorus.handle(
        Reaction(record.conversation, User("bob", "bob"), record.message_ref, "🔥"), FakeResponder()
    )
    await testbot.chorus.handle(Reaction(record.conversation, User("bob", "bob"), "unrelated", "🔥"), FakeResponder())
    assert (await testbot.store.user_data_counts("terminal", "bob"))["feedback"] == 1


async def test_channel_activity_reaches_hooks_and_never_posts(testbot: TestBot) -> None:
    seen: list[Activity] = []

    async def count(ctx: Context) -> bool:
        assert isinstance(ctx.event, Activity)
        seen.append(ctx.event)
        return True

    async def broken(ctx: Context) -> bool:
        raise RuntimeError("a feature's hook failed")

    event = Activity(Conversation("terminal", "local", "general"), User("bob", "bob"), datetime.now(UTC))
    responder = FakeResponder()
    await testbot.chorus.handle(event, responder)  # no hook yet: ignored
    testbot.chorus.intercept(Activity, count)
    await testbot.chorus.handle(event, responder)
    assert seen == [event]
    testbot.chorus.intercept(Activity, broken)
    seen.clear()
    testbot.chorus._event_hooks[Activity].reverse()  # the broken hook first
    await testbot.chorus.handle(event, responder)
    assert responder.replies == [] and seen == []


async def test_history_and_refinement_survive_a_restart(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    bot = await make_bot(settings)
    await bot.one("/create slogan a tea shop")
    await bot.one("s")
    await bot.chorus.close()

    store = Store(settings.store_url)
    await store.start()
    restarted = TestBot(build_chorus(settings, store, FakeGenerator(), drops=False))
    try:
        history = reply_text(await restarted.one("/history"))
        assert "2 versions" in history and "v2  shorter" in history
        third = await restarted.one("l")  # no reply shown since the restart: the latest result is used
        assert third.title == "slogan · v3 of 3 · longer"
    finally:
        await restarted.chorus.close()


async def test_tone_key_without_a_tone_asks_for_one(testbot: TestBot) -> None:
    await testbot.one("/create tagline a bike repair cafe")
    reply = await testbot.one("t")
    assert reply.ephemeral and reply_text(reply).startswith("Say which tone, e.g. t playful. Tones: neutral")
    assert len(testbot.generator.requests) == 1


async def test_queue_position_is_shown_while_waiting(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path), FakeGenerator(queued=3))
    try:
        reply = await bot.one("/create slogan a shop")
        assert bot.responder.streams[-1].statuses == [
            "Queued: 3rd in line, about 6 s",
            "Queued: 2nd in line, about 4 s",
            "Queued: 1st in line, about 2 s",
        ]
        assert "Queued" not in reply_text(reply)
    finally:
        await bot.chorus.close()


class CountingGenerator(FakeGenerator):
    """Notes how many streams were open at once, and which were closed before they finished."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.open = 0
        self.most_open = 0
        self.cut_short: list[str] = []

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        finished = False
        try:
            async for chunk in super().stream(request):
                finished = chunk.finish_reason is not None
                yield chunk
        finally:
            self.open -= 1
            if not finished:
                self.cut_short.append(request.request_id)


async def test_variants_are_generated_together_and_shown_in_order(tmp_path: Path) -> None:
    generator = CountingGenerator(delay_s=0.01)
    bot = await make_bot(settings_for(tmp_path), generator)
    try:
        reply = await bot.one("/create slogan a shop --n 3")
        assert generator.most_open == 3
        assert [part.strip() for part in bot.responder.streams[-1].parts] == list(reply.parts)
        assert generator.cut_short == []
    finally:
        await bot.chorus.close()


async def test_a_failure_with_several_variants_keeps_the_first_and_leaves_nothing_running(tmp_path: Path) -> None:
    generator = CountingGenerator(script=lambda r: " ".join(["word"] * 40), delay_s=0.01, fail_after=2)
    bot = await make_bot(settings_for(tmp_path), generator)
    try:
        reply = await bot.one("/create slogan a shop --n 3")
        assert reply.parts == ("word word",) and reply.footer.startswith("⚠ Generation failed")
        assert generator.open == 0, "no stream is left running"
    finally:
        await bot.chorus.close()


async def test_every_version_shows_where_it_stands_in_its_lineage(testbot: TestBot) -> None:
    first = await testbot.one("/create slogan a tea shop")
    assert first.title == "slogan · v1 of 1"
    assert (await testbot.one("s")).title == "slogan · v2 of 2 · shorter"
    third = await testbot.one("l")
    assert third.title == "slogan · v3 of 3 · longer"
    assert testbot.responder.streams[-1].title == "slogan · v3 of 3 · longer", "the streaming title says it too"
    # Regenerating the first version (its old button) branches off v1 but is numbered after the newest, v4 of 4.
    click = Action(conversation=CONVERSATION, user=testbot.user, action_id="regenerate", target_id=first.generation_id)
    await testbot.chorus.handle(click, testbot.responder)
    branch = testbot.responder.replies[-1]
    assert branch.title == "slogan · v4 of 4 · regenerate"
    record = await testbot.store.get_generation(branch.generation_id)
    assert record is not None and record.parent_id == first.generation_id
    history = reply_text(await testbot.one("/history"))
    assert "4 versions" in history and "v1  /create slogan" in history and "v4  regenerate" in history


async def test_length_scales_the_token_budget_and_asks_for_it_and_refinements_keep_it(testbot: TestBot) -> None:
    budget = testbot.chorus.settings.kinds["story"].max_new_tokens
    await testbot.one("/create story a lighthouse keeper --length short")
    short = testbot.generator.requests[-1]
    assert short.max_new_tokens == budget // 2
    assert short.messages[-1].content.endswith("micro-story about a lighthouse keeper. Keep it brief.")
    record = await testbot.store.latest_generation(CONVERSATION)
    assert record is not None and record.params["length"] == "short" and record.params["max_new_tokens"] == budget // 2
    await testbot.one("make it funnier")
    refined = testbot.generator.requests[-1]
    assert refined.max_new_tokens == budget // 2, "a refinement keeps the length it was created at"
    assert refined.messages[-3].content.endswith("Keep it brief.") and refined.messages[-1].content.startswith("make")
    history = reply_text(await testbot.one("/history"))
    assert "v1  /create story --length short" in history and "v2  make it funnier" in history

    await testbot.one("/create story a lighthouse keeper --length long")
    long = testbot.generator.requests[-1]
    assert long.max_new_tokens == budget * 2 and long.messages[-1].content.endswith("Make it rich and detailed.")
    await testbot.one("/create story a lighthouse keeper")
    medium = testbot.generator.requests[-1]
    assert medium.max_new_tokens == budget and medium.messages[-1].content.endswith("lighthouse keeper.")


async def test_long_is_capped_at_4096_tokens_and_a_bad_length_is_refused_like_a_bad_tone(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_KINDS__POST__MAX_NEW_TOKENS="3000"))
    try:
        await bot.one("/create post our summer party --length long")
        assert bot.generator.requests[-1].max_new_tokens == 4096
        refused = await bot.one("/create post our summer party --length lnog")
        assert refused.ephemeral and len(bot.generator.requests) == 1
        assert reply_text(refused) == "Unknown length 'lnog'. Did you mean 'long'? Lengths: short, medium, long."
    finally:
        await bot.chorus.close()


async def test_help_lists_the_lengths_and_the_create_usage_has_the_option(testbot: TestBot) -> None:
    text = reply_text(await testbot.one("/help"))
    assert "[--length short|medium|long]" in text
    assert "Lengths: short, medium (default), long" in text


async def test_a_lone_number_gets_a_hint_that_fits_the_result(tmp_path: Path) -> None:
    # A lone "5" after a result of two variants was told to type `5 s`, which was then refused.
    bot = await make_bot(settings_for(tmp_path))
    try:
        await bot.one("/create slogan a tea shop --n 2")
        before = len(bot.generator.requests)
        assert "`2 s`" in reply_text(await bot.one("2"))
        for line in ("5", "0", "7?"):
            text = reply_text(await bot.one(line))
            assert "There are only 2 variants; pick one from 1 to 2" in text and f"`{line[0]} s`" not in text, line
        await bot.one("/create slogan a tea shop --n 1")
        assert "only one variant" in reply_text(await bot.one("3"))
        assert len(bot.generator.requests) == before + 1  # hints use no generation
    finally:
        await bot.chorus.close()


async def test_variant_0_or_10_is_a_variant_number_not_an_instruction(tmp_path: Path) -> None:
    # "0 s" and "10 s" made a whole new version with the instruction "0 s"; with limits.max_variants = 10 the tenth
    # variant could not be reworked on its own at all.
    bot = await make_bot(settings_for(tmp_path, CHORUS_LIMITS__MAX_VARIANTS="10"))
    try:
        await bot.one("/create slogan a tea shop --n 3")
        before = len(bot.generator.requests)
        for line in ("0 s", "10 s", "#10 make it rhyme"):
            assert "There are only 3 variants; pick one from 1 to 3." in reply_text(await bot.one(line)), line
        assert len(bot.generator.requests) == before
        first = await bot.one("/create slogan a tea shop --n 10")
        tenth = await bot.one("10 s")
        assert tenth.title.endswith("#10 shorter") and tenth.parts[:9] == first.parts[:9]
    finally:
        await bot.chorus.close()


async def test_a_request_in_words_starts_a_new_result_instead_of_changing_the_last_one(testbot: TestBot) -> None:
    """What people write when they mention or DM a bot: the words of a /create, not a change to what came before."""
    first = await testbot.one("/create tagline a bike repair cafe")
    reply = await testbot.one("@Chorus can you write 2 slogans for our bake sale?")
    assert reply.title == "slogan · v1 of 1" and len(reply.parts) == 2
    record = await testbot.store.get_generation(reply.generation_id)
    assert record is not None and record.parent_id is None and record.prompt == "our bake sale"
    # Pointing back at the result is a change to it, not a new request.
    changed = await testbot.one("make a poem out of it")
    assert changed.title.startswith("slogan · v2 of 2")
    assert first.generation_id != reply.generation_id


async def test_with_nothing_to_change_a_plain_request_starts_a_result_and_chatter_says_how_to_ask(
    testbot: TestBot,
) -> None:
    hint = await testbot.one("hello there, what about a drink")
    assert hint.ephemeral and "write a slogan for our bake sale" in reply_text(hint)
    reply = await testbot.one("a poem about the sea")
    assert reply.title == "poem · v1 of 1"


async def test_a_first_hello_says_what_chorus_does_and_a_misspelt_request_gets_the_closest_kind(
    testbot: TestBot,
) -> None:
    """ "hi" in a DM before anything was made is not told how to change a result; a request with a typo in its kind
    after a result is not turned into a change of that result."""
    hello = await testbot.one("hi")
    assert hello.ephemeral and "Ask in words" in reply_text(hello) and "To change the result" not in reply_text(hello)
    await testbot.one("/create tagline a bike repair cafe")
    typo = await testbot.one("write a slgan for our bake sale")
    assert typo.ephemeral and "Did you mean 'slogan'?" in reply_text(typo)
    assert len(await testbot.store.versions(1)) == 1
