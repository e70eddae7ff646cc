"""What a copywriter notices: cut-off text is trimmed and labelled, loops never shown or reused, chatter costs
nothing, keyboard-mangled flags work, best-of-k keeps the usable candidate, and one variant can be refined alone.

All through the real router, studio and store with a scripted FakeGenerator.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.terminal.translate import CONVERSATION
from bots.errors import UserError
from bots.events import Action
from bots.parsing import chatter_hint, parse_create, parse_variant_ref, split_options
from generation.fake import FakeGenerator
from generation.prompts import tidy_variant
from generation.types import GenerationRequest
from support import TestBot, make_bot, reply_text, settings_for

LOOP = "The 1111111111111111111111111111111111111111"


def _last_user(request: GenerationRequest) -> str:
    return request.messages[-1].content


async def test_text_stopped_by_the_budget_is_trimmed_and_the_reply_says_so(tmp_path: Path) -> None:
    def script(request: GenerationRequest) -> str:
        if "something short" in _last_user(request):
            return "Open at six and"
        return "Our shop opens at six. Coffee is hot and the bread is fresh. We also sell the finest and"

    bot = await make_bot(settings_for(tmp_path, CHORUS_KINDS__TWEET__MAX_NEW_TOKENS="18"), FakeGenerator(script))
    try:
        reply = await bot.one("/create tweet our bakery opening early")
        assert reply.parts == ("Our shop opens at six. Coffee is hot and the bread is fresh.",)
        assert "Cut at the length limit — `l` for longer" in reply.footer
        record = await bot.store.get_generation(reply.generation_id)
        assert record is not None and record.params["cut"] == [True] and record.params["finish_reasons"] == ["length"]
        whole = await bot.one("/create tweet something short")
        assert whole.footer == "" and whole.parts[0].endswith("and"), "text that was not cut is left alone"
    finally:
        await bot.chorus.close()


async def test_a_degenerate_variant_is_never_shown_nor_used_as_context(tmp_path: Path) -> None:
    def script(request: GenerationRequest) -> str:
        return (
            LOOP if request.seed is not None and request.seed % 2 == 0 else f"Fresh tea, slow mornings {request.seed}."
        )

    bot = await make_bot(settings_for(tmp_path), FakeGenerator(script))
    try:
        reply = await bot.one("/create slogan a tea shop --n 2")
        assert len(reply.parts) == 1 and "1111" not in reply_text(reply)
        record = await bot.store.get_generation(reply.generation_id)
        assert record is not None and record.params["dropped"] == 1 and record.variants == reply.parts
        # A stored loop from before (or from another producer) is left out of what the model sees next.
        old = await bot.store.add_generation(
            CONVERSATION,
            bot.user,
            kind="slogan",
            tone="neutral",
            prompt="a tea shop",
            variants=[LOOP, "Tea time."],
            params={},
        )
        await bot.say("m")
        for request in bot.generator.requests[-2:]:
            assert all("1111" not in m.content for m in request.messages)
        assert old.id is not None
    finally:
        await bot.chorus.close()


async def test_only_loops_give_a_clear_message_and_nothing_is_stored(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path), FakeGenerator(lambda r: LOOP))
    try:
        reply = await bot.one("/create slogan a tea shop")
        assert "unusable text" in reply_text(reply) and not reply.actions
        assert await bot.store.latest_generation(CONVERSATION) is None
    finally:
        await bot.chorus.close()


# Greetings too: "hello" made a new version "· hello" of the latest result.
@pytest.mark.parametrize("line", ["y", "ok", "thanks!", "++", "r r", "👍", "love it", "2", "hello", "hi there"])
async def test_chatter_gets_a_hint_not_a_new_version_and_costs_no_quota(tmp_path: Path, line: str) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="2"))
    try:
        await bot.one("/create slogan a tea shop")
        hint = await bot.one(line)
        assert hint.ephemeral and not hint.generation_id and len(bot.generator.requests) == 1
        assert any(word in reply_text(hint) for word in ("type", "Type", "`"))
        again = await bot.one("r")  # the second generation of the minute is still allowed: the chatter was free
        assert again.generation_id is not None and again.title.endswith("regenerate"), reply_text(again)
    finally:
        await bot.chorus.close()


def test_real_requests_are_not_mistaken_for_chatter() -> None:
    for text in ("make it rhyme", "more about the ocean", "shorter please and funnier", "no puns"):
        assert chatter_hint(text) == "", text


async def test_typos_cost_no_quota(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path, CHORUS_LIMITS__QUOTA_PER_MINUTE="2"))
    try:
        for line in ("/create slgan a tea shop", "/create slogan x --tone wity", "/create", "/create slogan x --n 9"):
            assert (await bot.one(line)).ephemeral
        first = await bot.one("/create slogan a tea shop")
        second = await bot.one("/create slogan a tea shop --tone playful")
        assert first.generation_id and second.generation_id
        refused = await bot.one("/create slogan a third")
        assert reply_text(refused).startswith("You've reached the limit of 2 requests a minute.")
    finally:
        await bot.chorus.close()


@pytest.mark.parametrize(
    "text", ["slogan a cafe —tone witty -n 3", "slogan a cafe –tone witty --n 3", "slogan a cafe —tone=witty —n=3"]
)
def test_dashes_keyboards_make_and_single_dash_n_are_options(text: str, tmp_path: Path) -> None:
    args = parse_create(text, {}, settings_for(tmp_path))
    assert (args.prompt, args.tone, args.n) == ("a cafe", "witty", 3)


def test_a_hyphenated_word_or_negative_number_stays_in_the_prompt() -> None:
    assert split_options("a well-known cafe -5 degrees - cold", ("tone", "n")) == (
        "a well-known cafe -5 degrees - cold",
        {},
    )
    with pytest.raises(UserError, match="Unknown option --tnoe"):
        split_options("x —tnoe witty", ("tone",))


async def test_best_of_shows_the_candidate_that_passes_the_checks(tmp_path: Path) -> None:
    answers = {0: LOOP, 1: "Here's a slogan for you:", 2: "Steeped in calm, served with a smile."}
    seen: list[int] = []

    def script(request: GenerationRequest) -> str:
        seen.append(request.seed or 0)
        return answers[len(seen) - 1] if len(seen) <= 3 else "Another calm cup."

    bot = await make_bot(settings_for(tmp_path, CHORUS_GENERATION__BEST_OF="3"), FakeGenerator(script))
    try:
        reply = await bot.one("/create slogan a tea shop")
        assert reply.parts == ("Steeped in calm, served with a smile.",)
        assert len(bot.generator.requests) == 3 and len(set(seen)) == 3, "k candidates, each with its own seed"
        record = await bot.store.get_generation(reply.generation_id)
        assert record is not None and record.params["best_of"] == 3 and record.params["candidates"] == 3
    finally:
        await bot.chorus.close()


async def test_shorter_is_retried_once_and_always_comes_out_shorter(tmp_path: Path) -> None:
    long = "Bright tea for bright days. Sip slowly and smile. Every cup is a small holiday for you."

    bot = await make_bot(settings_for(tmp_path), FakeGenerator(lambda r: long))
    try:
        first = await bot.one("/create description a tea shop")
        shorter = await bot.one("s")
        assert len(shorter.parts[0].split()) < len(first.parts[0].split())
        record = await bot.store.get_generation(shorter.generation_id)
        assert record is not None and record.params["retried"] == 1
        assert len(bot.generator.requests) == 3, "one generation and one retry"
    finally:
        await bot.chorus.close()


async def test_longer_raises_the_length_a_step(testbot: TestBot) -> None:
    budget = testbot.chorus.settings.kinds["story"].max_new_tokens
    await testbot.one("/create story a lighthouse keeper --length short")
    await testbot.one("l")
    assert testbot.generator.requests[-1].max_new_tokens >= budget
    record = await testbot.store.latest_generation(CONVERSATION)
    assert record is not None and record.params["length"] == "medium"
    await testbot.one("l")
    assert testbot.generator.requests[-1].max_new_tokens >= budget * 2


async def test_a_variant_button_value_refines_only_that_variant(testbot: TestBot) -> None:
    first = await testbot.one("/create slogan a tea shop --n 3")
    await testbot.chorus.handle(
        Action(CONVERSATION, testbot.user, "shorter", value="3", target_id=first.generation_id), testbot.responder
    )
    reply = testbot.responder.replies[-1]
    assert reply.title.endswith("#3 shorter") and reply.parts[:2] == first.parts[:2]
    assert testbot.generator.requests[-1].messages[-2].content == first.parts[2]
    refused = await testbot.one("5 s")
    assert "only 3 variants" in reply_text(refused)


@pytest.mark.parametrize(
    ("text", "index", "instruction"),
    [
        ("make the second one rhyme", 1, "make it rhyme"),
        ("2 s", 1, "s"),
        ("#3 more playful", 2, "more playful"),
        ("the first one, but shorter", 0, "but shorter"),
        ("variant 2 needs a pun", 1, "needs a pun"),
    ],
)
def test_variant_references(text: str, index: int, instruction: str) -> None:
    ref = parse_variant_ref(text)
    assert ref is not None and (ref.index, ref.instruction) == (index, instruction)


def test_no_variant_reference_in_ordinary_requests() -> None:
    for text in ("make it rhyme", "add 2 jokes", "one more time please", "second person point of view"):
        assert parse_variant_ref(text) is None or text.startswith("second"), text


async def test_stop_strings_no_longer_empty_a_list_of_names(tmp_path: Path) -> None:
    listing = "Here are five names:\n1. Brewline\n2. Quillbean\n3. Steep & Story\n4. Inkwell\n5. Byte Brew"
    bot = await make_bot(settings_for(tmp_path), FakeGenerator(lambda r: listing))
    try:
        reply = await bot.one("/create names a coffee shop for programmers")
        assert reply.parts[0].splitlines()[0] == "1. Brewline" and "Byte Brew" in reply.parts[0]
    finally:
        await bot.chorus.close()


async def test_few_shot_examples_for_the_tone_come_before_the_ask(testbot: TestBot) -> None:
    await testbot.one("/create slogan a tea shop --tone playful")
    messages = testbot.generator.requests[-1].messages
    spec = testbot.chorus.settings.kinds["slogan"]
    playful = next(e for e in spec.examples if e.tone == "playful")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert messages[2].content == playful.answer and "playful" in messages[1].content
    assert _last_user(testbot.generator.requests[-1]) == "Write one playful slogan for a tea shop. Under 12 words."


@pytest.mark.parametrize(
    ("kind", "raw", "tidy"),
    [
        ("slogan", 'Here\'s a slogan:\n"Brew joy daily."', "Brew joy daily."),
        ("slogan", "Slogan: Brew joy daily. (3 words)", "Brew joy daily."),
        ("slogan", "Brew joy daily.\nThis slogan works because it is short.", "Brew joy daily."),
        ("outline", "1. Intro\n2. Tools\n3. Recipes", "1. Intro\n2. Tools\n3. Recipes"),
        ("lyrics", "Verse 1:\nLa la\nChorus:\nOh oh", "Verse 1:\nLa la\nChorus:\nOh oh"),
        ("tweet", "Sure! Open at 6am now. Come by!\nI hope this helps!", "Open at 6am now. Come by!"),
        ("tweet", "Sure!\nOpen at 6am now.", "Open at 6am now."),
    ],
)
def test_tidy_takes_the_answer_out_of_the_wrapping(kind: str, raw: str, tidy: str) -> None:
    assert tidy_variant(raw, kind) == tidy


def test_generation_model_names_the_model_asked_of_a_server(tmp_path: Path) -> None:
    from chorus.compose import build_generator

    settings = settings_for(
        tmp_path, CHORUS_GENERATION__URL="http://127.0.0.1:9/v1", CHORUS_GENERATION__MODEL="qwen2.5:7b-instruct"
    )
    generator = build_generator(settings)
    assert getattr(generator, "model", None) == "qwen2.5:7b-instruct"


async def test_the_terminal_shows_the_trimmed_text_when_it_differs_from_what_streamed(tmp_path: Path) -> None:
    import io

    from adapters.terminal.app import run_terminal

    script = "Open at six. Fresh bread daily. And also the"
    bot = await make_bot(
        settings_for(tmp_path, CHORUS_KINDS__TWEET__MAX_NEW_TOKENS="8"), FakeGenerator(lambda r: script)
    )
    out = io.StringIO()
    try:
        await run_terminal(bot.chorus, stdin=io.StringIO("/create tweet our bakery\n"), stdout=out)
    finally:
        await bot.chorus.close()
    text = out.getvalue()
    assert "── final ──\nOpen at six. Fresh bread daily.\n" in text and "Cut at the length limit" in text


def test_a_one_sentence_shorter_that_came_out_long_keeps_its_leading_clauses() -> None:
    from bots.studio import shorten_to

    slogan = "Delicious, perfect for a walk, smooth and warm, five minutes from home."
    assert shorten_to(slogan, 9) == "Delicious, perfect for a walk, smooth and warm."
    assert shorten_to("Two sentences here. And one more here.", 3) == "Two sentences here."
    assert (
        shorten_to("unbreakable words that have no clause at all", 3) == "unbreakable words that have no clause at all"
    )


def _last_answer(request: GenerationRequest) -> str:
    return next((m.content for m in reversed(request.messages) if m.role == "assistant"), "")


def _twist(text: str) -> str:
    """A rework of `text` that keeps its last word (so each variant's rework is its own)."""
    return f"A new spin with {text.split()[-1].rstrip('.')} and friends."


@pytest.mark.parametrize("line", ["make it more surprising", "t witty", "r", "m"])
async def test_every_refinement_reworks_each_variant_on_its_own(tmp_path: Path, line: str) -> None:
    """A refinement of a 2-variant result gives two single answers, each built on its own variant: never a
    numbered list that the model continues ("1. … 2. …")."""

    def script(request: GenerationRequest) -> str:
        if len(request.messages) <= 2 + 2 * 2:  # system, the few-shot examples, the first ask
            return f"Slow tea, bright mornings number {request.seed}."
        return _twist(_last_answer(request))

    bot = await make_bot(settings_for(tmp_path), FakeGenerator(script))
    try:
        first = await bot.one("/create slogan a tea shop --n 2")
        refined = await bot.one(line)
        assert len(refined.parts) == 2 and not any("\n" in part or " 2. " in part for part in refined.parts)
        for request in bot.generator.requests[2:]:
            assert not any(m.content.startswith("1. ") for m in request.messages), "no numbered list as context"
        if line != "r" and line != "m":
            assert refined.parts == tuple(_twist(text) for text in first.parts)
    finally:
        await bot.chorus.close()


FRESH = ("Brand new leaves, every single day.", "Your kettle's favourite neighbour.", "Pour, sip, repeat, smile.")


@pytest.mark.parametrize("line", ["make it more surprising", "t witty", "r", "m", "2 make it rhyme"])
async def test_a_refinement_that_hands_back_the_same_text_is_retried(tmp_path: Path, line: str) -> None:
    """A small model often answers "rewrite it" with the text unchanged; the user sees a changed version."""
    calls: list[str] = []

    def script(request: GenerationRequest) -> str:
        calls.append(request.messages[-1].content)
        if len(calls) <= 2:
            return ("Slow tea, bright mornings.", "Steeped in calm, served warm.")[len(calls) - 1]
        if len(calls) <= 2 + (1 if line.startswith("2 ") else 2):  # each first try copies what it was given
            context = " ".join(m.content for m in request.messages)
            return "Steeped in calm, served warm." if "Steeped in calm" in context else "Slow tea, bright mornings."
        return FRESH[len(calls) % len(FRESH)]

    bot = await make_bot(settings_for(tmp_path), FakeGenerator(script))
    try:
        first = await bot.one("/create slogan a tea shop --n 2")
        refined = await bot.one(line)
        record = await bot.store.get_generation(refined.generation_id)
        assert record is not None and record.params["retried"] >= 1
        retry = bot.generator.requests[-1].messages
        if line not in ("r", "m"):  # a retry asks afresh: no earlier answer of this result to copy from
            assert not any(m.content in first.parts for m in retry) and "tea shop" in retry[-1].content
            assert ("witty" if line == "t witty" else "rhyme" if "rhyme" in line else "surprising") in retry[-1].content
        changed = [i for i in range(2) if refined.parts[i] != first.parts[i]]
        assert changed == ([1] if line.startswith("2 ") else [0, 1])
    finally:
        await bot.chorus.close()


async def test_shorter_and_longer_show_the_model_a_worked_example_of_the_kind(tmp_path: Path) -> None:
    bot = await make_bot(settings_for(tmp_path), FakeGenerator(lambda r: "Warm tea, kind people, open late tonight."))
    try:
        await bot.one("/create slogan a tea shop")
        await bot.one("s")
        messages = bot.generator.requests[-1].messages
        shorter_ask = messages[-1].content
        demo = [i for i, m in enumerate(messages[:-1]) if m.role == "user" and m.content == shorter_ask]
        assert len(demo) == 1, "a worked example with the same ask comes before the real one"
        before, after = messages[demo[0] - 1].content, messages[demo[0] + 1].content
        assert len(after.split()) < len(before.split()) and after.split()[0] == before.split()[0]
        await bot.one("l")
        messages = bot.generator.requests[-1].messages
        longer_ask = messages[-1].content
        index = next(i for i, m in enumerate(messages[:-1]) if m.content == longer_ask)
        assert len(messages[index + 1].content.split()) > len(messages[index - 1].content.split())
    finally:
        await bot.chorus.close()


def test_a_shorter_poem_keeps_its_lines() -> None:
    from generation.text import shorten_to

    poem = "The street is hushed in white,\neach footstep soft and slow,\nthe world forgot its noise\nand woke in snow."
    assert shorten_to(poem, 14) == "The street is hushed in white,\neach footstep soft and slow,"


@pytest.mark.parametrize(("value", "label"), [("2 regenerate", "#2 regenerate"), ("2 longer", "#2 longer")])
async def test_the_one_variant_select_reworks_only_that_variant(testbot: TestBot, value: str, label: str) -> None:
    first = await testbot.one("/create slogan a tea shop --n 3")
    await testbot.chorus.handle(
        Action(CONVERSATION, testbot.user, "variant", value=value, target_id=first.generation_id), testbot.responder
    )
    reply = testbot.responder.replies[-1]
    assert reply.title.endswith(label) and len(reply.parts) == 3
    assert reply.parts[0] == first.parts[0] and reply.parts[2] == first.parts[2]
    await testbot.chorus.handle(
        Action(CONVERSATION, testbot.user, "variant", value="2 explode", target_id=first.generation_id),
        testbot.responder,
    )
    assert "no longer supported" in reply_text(testbot.responder.replies[-1])
