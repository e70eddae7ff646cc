"""Conversational feedback: buttons, shortcut keys, plain sentences and reactions refine a result into versions.

Each refinement is a new stored version whose parent is the result it refines. The model sees the conversation so
far (the first ask, every earlier answer and follow-up), trimmed to `generation.max_context_turns`.
"""

from __future__ import annotations

import logging
from typing import Any

from bots.actions import LONGER, MORE, RATE_DOWN, RATE_UP, REFINEMENTS, REGENERATE, SHORTER, TONE, VARIANT
from bots.clicks import ALREADY_ON_IT
from bots.errors import UserError
from bots.events import Action, Message, Reaction, plain_emoji
from bots.parsing import CHATTER_HINT, VariantRef, chatter_hint, parse_tone, parse_variant_ref
from bots.reply import Reply, ReplyAction
from bots.router import Context
from bots.store import GenerationRecord
from bots.studio import Draft, at_length
from config import KindSpec, Settings
from generation.prompts import Turn, render_template
from generation.scorecard import repeats_lines
from generation.text import is_degenerate

_log = logging.getLogger(__name__)

GENERATING_ACTIONS = REFINEMENTS
GREETING = (
    "👋 I'm Chorus: I write slogans, posts, stories, poems, names and more. Ask in words, e.g. `write a slogan for "
    "our bake sale`, or use /create; /help lists the kinds and tones."
)
NOTHING_YET = (
    "Nothing to refine yet. Start with /create <kind> <what it is about> (see /help), or ask in words: "
    "`write a slogan for our bake sale`."
)


# What one variant of a result can be asked for, from its select: (instruction, label).
VARIANT_CHOICES = ((SHORTER, "Shorter"), (LONGER, "Longer"), (REGENERATE, "Regenerate"))


def result_actions(generation_id: int, variants: int = 1) -> tuple[ReplyAction, ...]:
    """The actions under every finished result, in display order; with several variants, a select that reworks one
    of them ("#2 · Shorter"; in the terminal, `2 s`)."""
    actions = [
        ReplyAction(REGENERATE, "Regenerate", "r", target_id=generation_id),
        ReplyAction(MORE, "More like this", "m", target_id=generation_id),
        ReplyAction(SHORTER, "Shorter", "s", target_id=generation_id),
        ReplyAction(LONGER, "Longer", "l", target_id=generation_id),
        ReplyAction(TONE, "Change tone", "t <tone>", target_id=generation_id),
    ]
    if variants > 1:
        choices = tuple(
            (f"#{number} · {label}", f"{number} {instruction}")
            for number in range(1, variants + 1)
            for instruction, label in VARIANT_CHOICES
        )
        actions.append(ReplyAction(VARIANT, "Rework one variant…", "", target_id=generation_id, choices=choices))
    actions += [
        ReplyAction(RATE_UP, "👍", "+", value="+1", target_id=generation_id),
        ReplyAction(RATE_DOWN, "👎", "-", value="-1", target_id=generation_id),
    ]
    return tuple(actions)


def spec_for(kind: str, settings: Settings) -> KindSpec:
    if kind == "remix":
        return settings.remix
    spec = settings.kinds.get(kind)
    if spec is None:
        raise UserError(f"The kind {kind!r} is no longer configured, so this result can't be refined.")
    return spec


def ask_for(instruction: str, settings: Settings) -> str:
    """The message sent to the model for a stored instruction label ("shorter", "tone: formal", free text)."""
    refine = settings.refine
    if instruction == SHORTER:
        return refine.shorter
    if instruction == LONGER:
        return refine.longer
    if instruction == MORE:
        return refine.more
    if instruction.startswith("tone: "):
        return refine.tone.replace("{tone}", instruction.removeprefix("tone: "))
    return refine.free.replace("{instruction}", instruction.rstrip(".!? "))


def length_of(record: GenerationRecord) -> str:
    """The /create --length a result was made at ("" for results from before lengths, or drops)."""
    length = record.params.get("length", "")
    return length if isinstance(length, str) else ""


def first_turn(first: GenerationRecord, settings: Settings) -> tuple[KindSpec, str]:
    """The spec and the first ask of a lineage, at the length it was created with."""
    spec = spec_for(first.kind, settings)
    return at_length(spec, render_template(spec, first.prompt, first.tone), length_of(first), settings)


def usable(variants: tuple[str, ...]) -> tuple[str, ...]:
    """Variants with degenerate ones blanked ("" keeps the numbering), so a loop is never built upon."""
    return tuple("" if is_degenerate(text) or repeats_lines(text) else text for text in variants)


def _instruction_ask(instruction: str, settings: Settings) -> str:
    """The ask for a stored label, including one-variant labels ("#2 shorter")."""
    if instruction.startswith("#") and " " in instruction:
        return ask_for(instruction.split(" ", 1)[1], settings)
    return ask_for(instruction, settings)


def conversation_turns(lineage: list[GenerationRecord], settings: Settings) -> list[Turn]:
    """Rebuild the exchange from stored versions. A regenerate replaces the answer it redoes."""
    first = lineage[0]
    turns: list[Turn] = []
    for record in lineage:
        if record is first:
            ask = first_turn(first, settings)[1]
            turns.append(Turn(ask, usable(record.variants)))
        elif turns and (record.instruction == REGENERATE or record.instruction.endswith(f" {REGENERATE}")):
            turns[-1] = Turn(turns[-1].ask, usable(record.variants))
        else:
            turns.append(Turn(_instruction_ask(record.instruction, settings), usable(record.variants)))
    keep = settings.generation.max_context_turns
    if len(turns) > keep >= 1:
        turns = [turns[0], *turns[len(turns) - keep + 1 :]] if keep > 1 else [turns[0]]
    return turns


async def target_generation(ctx: Context, generation_id: int | None, reply_to: str | None = None) -> GenerationRecord:
    store = ctx.app.store
    conversation = ctx.event.conversation
    if generation_id is not None:
        record = await store.get_generation(generation_id)
        if record is None:
            raise UserError("That result no longer exists (it was deleted or forgotten). Start again with /create.")
        return record
    if reply_to is not None:
        record = await store.find_by_message_ref(conversation.platform, reply_to)
        if record is not None:
            return record
    record = await store.latest_generation(conversation)
    if record is None:
        raise UserError(NOTHING_YET)
    return record


async def message_target(ctx: Context, message: Message) -> GenerationRecord:
    """The result a message refines: the one it replies to. A reply in a thread to the message the thread hangs under
    (all a Slack thread reply can say) means the thread itself: its newest result, once it has one."""
    record = await target_generation(ctx, None, message.reply_to)
    thread = message.conversation.thread
    if thread and record.conversation.thread != thread:
        newest = await ctx.app.store.latest_generation(message.conversation)
        if newest is not None:
            return newest
    return record


def step_length(length: str, settings: Settings, step: int) -> str:
    """The length one step longer (+1) or shorter (-1) than `length`, within short…long."""
    names = settings.lengths.names
    current = length if length in names else settings.lengths.default
    return names[max(0, min(len(names) - 1, names.index(current) + step))]


async def refine(
    ctx: Context, record: GenerationRecord, instruction: str, *, tone: str | None = None, only: int | None = None
) -> None:
    """Make the next version of `record`: a regenerate, a per-variant rework, or a new ask over all variants.
    With `only`, just that variant (0-based) is remade and the others are kept as they are."""
    settings = ctx.app.settings
    lineage = await ctx.app.store.lineage(record)
    turns = conversation_turns(lineage, settings)
    first_spec, first_ask = first_turn(lineage[0], settings)
    # A version keeps the length of the one it refines; "longer" raises it a step so the budget can grow.
    length = length_of(record) or length_of(lineage[0])
    if instruction == LONGER:
        length = step_length(length, settings, +1)
    base = spec_for(lineage[0].kind, settings)
    spec = at_length(base, "", length, settings)[0] if length else first_spec
    if instruction == LONGER:
        longest = max((len(text.split()) for text in record.variants), default=0)
        # Room for about twice the longest variant (a word is about 1.5 tokens), whatever the length says.
        spec = spec.model_copy(update={"max_new_tokens": min(4096, max(spec.max_new_tokens, longest * 4))})
    n = max(1, len(record.variants))
    label = f"tone: {tone}" if tone is not None else instruction
    if only is not None:
        if n < 2:
            raise UserError("This result has only one variant; say what to change without a number.")
        if not 0 <= only < n:
            raise UserError(f"There are only {n} variants; pick one from 1 to {n}.")
    common: dict[str, Any] = {
        "kind": record.kind,
        "prompt": record.prompt,
        "spec": spec,
        "first_ask": first_ask,
        "n": n,
        "length": length,
        "parent": record,
        "only": only,
        "keep": record.variants if only is not None else (),
        "instruction": f"#{only + 1} {label}" if only is not None else label,
    }
    words = tuple(len(text.split()) for text in record.variants)
    # Every path reworks each variant on its own (variant i sees only its own earlier texts) and must not hand it
    # back unchanged; "more" must not repeat any variant already shown.
    shown = tuple(text for text in record.variants if text)
    avoid = tuple(shown if instruction == MORE else (text,) if text else () for text in record.variants)
    # A retry of a rewrite that came back unchanged asks afresh: the first ask, in the new tone, with the user's
    # sentence added (shorter/longer keep the conversation: they need the text they change).
    fresh_tone = tone or record.tone
    fresh_ask = at_length(base, render_template(base, lineage[0].prompt, fresh_tone), length, settings)[1]
    if instruction not in (REGENERATE, MORE, SHORTER, LONGER) and tone is None:
        said = instruction.strip().rstrip(".!? ")
        fresh_ask = f"{fresh_ask} {said[:1].upper()}{said[1:]}."
    if instruction in (SHORTER, LONGER) or lineage[0].kind == "remix":
        fresh_ask = ""
    common["fresh_ask"] = fresh_ask
    if instruction == REGENERATE:
        last = turns.pop()
        draft = Draft(tone=record.tone, turns=tuple(turns), ask=last.ask, per_variant=True, avoid=avoid, **common)
    else:
        draft = Draft(
            tone=tone or record.tone,
            turns=tuple(turns),
            ask=ask_for(label, settings),
            per_variant=True,
            shorter_than=words if instruction == SHORTER else (),
            longer_than=words if instruction == LONGER else (),
            avoid=avoid,
            demo=instruction if instruction in (SHORTER, LONGER) else "",
            **common,
        )
    await ctx.app.studio.run(ctx, draft)


async def handle_action(ctx: Context) -> None:
    action = ctx.event
    assert isinstance(action, Action)
    if action.action_id in (RATE_UP, RATE_DOWN):
        record = await target_generation(ctx, action.target_id, action.message_ref)
        value = "+1" if action.action_id == RATE_UP else "-1"
        await ctx.app.store.add_feedback(record.id, action.user, action.conversation.platform, "rating", value)
        thumb = "👍" if value == "+1" else "👎"
        await ctx.responder.send(
            Reply.text(f"Noted {thumb} on {record.kind} v{record.version}. Thanks!", ephemeral=True)
        )
        return
    if action.action_id not in GENERATING_ACTIONS:
        raise UserError("That button is no longer supported. Start again with /create.")
    with ctx.app.clicks.hold(action) as first:
        if not first:
            await ctx.responder.send(Reply.text(ALREADY_ON_IT, ephemeral=True))
            return
        await _refine_from_action(ctx, action)


async def _refine_from_action(ctx: Context, action: Action) -> None:
    tone = None
    # A per-variant button (or `2 s`) carries the variant number in its value: "2", or "2 witty" for a tone.
    value = action.value.strip()
    only = None
    head, _, rest = value.partition(" ")
    if head.isdigit():
        only, value = int(head) - 1, rest.strip()
    instruction = action.action_id
    if instruction == VARIANT:
        # The one-variant select: "2 shorter" (a variant number, then the refinement).
        instruction, _, value = value.partition(" ")
        if only is None or instruction not in GENERATING_ACTIONS - {VARIANT}:
            raise UserError("That choice is no longer supported. Start again with /create.")
    if instruction == TONE:
        if not value:
            raise UserError(f"Say which tone, e.g. t playful. Tones: {', '.join(ctx.app.settings.tones)}.")
        tone = parse_tone(value, ctx.app.settings)
    record = await target_generation(ctx, action.target_id, action.message_ref)
    await ctx.app.store.add_feedback(record.id, action.user, action.conversation.platform, "action", action.action_id)
    await refine(ctx, record, instruction, tone=tone, only=only)


async def handle_message(ctx: Context) -> None:
    """A plain sentence refines the latest result (or the one it replies to)."""
    message = ctx.event
    assert isinstance(message, Message)
    text = message.text.strip()
    if not text:
        if message.reply_to is None and message.conversation.thread is None:
            # A bare @Chorus, or a DM with only a file: say how to ask instead of nothing. (A reply or a thread
            # message without text may be one whose text the platform withheld: nothing to answer.)
            latest = await ctx.app.store.latest_generation(message.conversation)
            await ctx.responder.send(Reply.text(GREETING if latest is None else CHATTER_HINT, ephemeral=True))
        return
    limit = ctx.app.settings.limits.max_prompt_chars
    if len(text) > limit:
        raise UserError(f"That message is {len(text)} characters; the limit is {limit}. Shorten it and try again.")
    hint = chatter_hint(text)
    if hint and message.reply_to is None and await ctx.app.store.latest_generation(message.conversation) is None:
        # "hi" in a DM or a first mention: there is no result to change, so say what Chorus does and how to ask.
        await ctx.responder.send(Reply.text(GREETING, ephemeral=True))
        return
    if hint:
        # "ok", "thanks!", "++", a lone emoji: not a request for a new version, and no quota is used.
        number = text.rstrip("?!. ")
        if number.isdecimal():  # a lone variant number: suggest only what the result can do
            hint = _lone_number_hint(int(number), await message_target(ctx, message)) or hint
        await ctx.responder.send(Reply.text(hint, ephemeral=True))
        return
    record = await message_target(ctx, message)
    await ctx.app.store.add_engagement(message.conversation, "reply", user=message.user, generation_id=record.id)
    ref = parse_variant_ref(text)
    if ref is None:
        await refine(ctx, record, text)
        return
    instruction, tone = _variant_instruction(ref, ctx.app.settings)
    await refine(ctx, record, instruction, tone=tone, only=ref.index)


def _lone_number_hint(number: int, record: GenerationRecord) -> str:
    """For a lone number typed after a result: "" when it names one of its variants (the generic hint then asks
    which change), else what the result does have, so nobody is told to type `5 s` to a result of two variants."""
    n = max(1, len(record.variants))
    if n < 2:
        return "This result has only one variant; say what to change, e.g. `s` for shorter or `make it rhyme`."
    if not 1 <= number <= n:
        return f"There are only {n} variants; pick one from 1 to {n}, e.g. `{n} s` to make the last one shorter."
    return ""


_KEY_INSTRUCTIONS = {
    "r": REGENERATE,
    "regenerate": REGENERATE,
    "m": MORE,
    "more": MORE,
    "s": SHORTER,
    "shorter": SHORTER,
    "l": LONGER,
    "longer": LONGER,
}


def _variant_instruction(ref: VariantRef, settings: Settings) -> tuple[str, str | None]:
    """`2 s` → shorter, `2 t witty` → a tone, anything else is a free instruction for that variant."""
    words = ref.instruction.split()
    if len(words) == 1 and words[0].lower() in _KEY_INSTRUCTIONS:
        return _KEY_INSTRUCTIONS[words[0].lower()], None
    if len(words) == 2 and words[0].lower() in ("t", "tone"):
        return TONE, parse_tone(words[1], settings)
    return ref.instruction, None


async def handle_reaction(ctx: Context) -> None:
    """Reactions on a Chorus result are recorded as feedback and engagement; others are ignored."""
    reaction = ctx.event
    assert isinstance(reaction, Reaction)
    record = await ctx.app.store.find_by_message_ref(reaction.conversation.platform, reaction.message_ref)
    if record is None:
        return
    emoji = plain_emoji(reaction.emoji)
    value = emoji if reaction.added else f"-{emoji}"
    await ctx.app.store.add_feedback(record.id, reaction.user, reaction.conversation.platform, "reaction", value)
    await ctx.app.store.add_engagement(
        reaction.conversation, "reaction", value, user=reaction.user, generation_id=record.id
    )
