"""Brainstorm messages: kickoff, the controls, Themes and the summary (also the Markdown file). Pure functions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bots.actions import BRAINSTORM_ACTIONS, BRAINSTORM_IDEA, BRAINSTORM_NEXT, BRAINSTORM_VOTE, BRAINSTORM_WRAP
from bots.reply import Reply, ReplyAction
from bots.store import BrainstormRecord, IdeaRecord
from generation.text import short

IDEA, VOTE, NEXT, WRAP = BRAINSTORM_IDEA, BRAINSTORM_VOTE, BRAINSTORM_NEXT, BRAINSTORM_WRAP
ACTIONS = BRAINSTORM_ACTIONS
CHORUS_NAME = "Chorus"
PREVIEW_CHARS = 200
IDEAS_PER_THEME = 6
TOP_IDEAS = 5


def controls(session_id: int) -> tuple[ReplyAction, ...]:
    """The session's buttons. They carry the session id (as target_id) so they work from any message and after a
    restart; 💡 and Vote ask for a line first (a modal; in the terminal the rest of the line, as their keys show)."""
    return (
        ReplyAction(IDEA, "💡 Add idea", "i <idea>", ask="Your idea", target_id=session_id),
        ReplyAction(
            VOTE, "👍 Vote", "v <number>", ask="Number of the idea you vote for (e.g. 3)", target_id=session_id
        ),
        ReplyAction(NEXT, "⏭ Next round", "n", target_id=session_id),
        ReplyAction(WRAP, "✅ Wrap up", "w", target_id=session_id),
    )


def vote_button(session_id: int, number: int) -> ReplyAction:
    return ReplyAction(VOTE, f"👍 Vote #{number}", f"v{number}", value=str(number), target_id=session_id)


@dataclass(frozen=True)
class IdeaView:
    """A canonical idea with everything credited to it: its merged duplicates' authors and all their voters."""

    idea: IdeaRecord
    authors: tuple[str, ...]
    votes: int
    merged: int


def idea_views(ideas: Sequence[IdeaRecord], voters: Mapping[int, frozenset[str]]) -> dict[int, IdeaView]:
    """Canonical idea id -> its view. Duplicates fold into the idea they were merged into."""
    canonical = {idea.id: idea for idea in ideas if idea.merged_into is None or idea.merged_into not in _ids(ideas)}
    groups: dict[int, list[IdeaRecord]] = {idea_id: [idea] for idea_id, idea in canonical.items()}
    for idea in ideas:
        if idea.id not in canonical and idea.merged_into in groups:
            groups[idea.merged_into].append(idea)
    views = {}
    for idea_id, members in groups.items():
        authors: list[str] = []
        for member in members:
            name = CHORUS_NAME if member.source != "person" else member.user.name
            if name not in authors:
                authors.append(name)
        people: set[str] = set()
        for member in members:
            people |= voters.get(member.id, frozenset())
        views[idea_id] = IdeaView(canonical[idea_id], tuple(authors), len(people), len(members) - 1)
    return views


def _ids(ideas: Sequence[IdeaRecord]) -> set[int]:
    return {idea.id for idea in ideas}


def adopted(view: IdeaView) -> bool:
    """People's ideas count, and Chorus' own once someone voted for them."""
    return view.idea.source == "person" or view.votes > 0


def ranked(views: Mapping[int, IdeaView]) -> list[IdeaView]:
    """Adopted ideas, most votes first; ties in the order the ideas came."""
    return sorted(filter(adopted, views.values()), key=lambda view: (-view.votes, view.idea.number))


def _votes(n: int) -> str:
    return f"{n} vote{'s' if n != 1 else ''}"


def _ideas(n: int) -> str:
    return f"{n} idea{'s' if n != 1 else ''}"


def idea_line(view: IdeaView, limit: int = PREVIEW_CHARS) -> str:
    merged = f" (+{view.merged} similar)" if view.merged else ""
    return (
        f"#{view.idea.number} {short(view.idea.text, limit)} — {', '.join(view.authors)}{merged} · {_votes(view.votes)}"
    )


def kickoff(session: BrainstormRecord, seeds: int) -> Reply:
    minutes = _minutes(session.minutes)
    text = (
        f"Goal: as many ideas as we can for “{session.topic}”.\n"
        "How to take part: post each idea as its own message in this thread (or press 💡 Add idea). Vote with 👍 on "
        "any idea, or press 👍 Vote and give its number; one vote per person per idea.\n"
        f"Round 1 of {session.rounds} ends in {minutes} (or when someone presses ⏭ Next round). Then Chorus sorts "
        "the ideas into themes and suggests a few that build on the favourites. "
        f"{session.starter.name} (who started it) or a moderator can ✅ Wrap up at any time."
    )
    if seeds:
        text += "\nTo get you going, a few ideas from Chorus follow."
    return Reply(parts=(text,), title=f"💡 Brainstorm: {session.topic}", actions=controls(session.id))


def chorus_idea(session_id: int, idea: IdeaRecord, heading: str) -> Reply:
    """A seed or yes-and idea, posted as its own message so people can react to it."""
    return Reply(
        parts=(f"{heading} #{idea.number}: {idea.text}",),
        actions=(vote_button(session_id, idea.number), *controls(session_id)),
    )


def themes_reply(
    session: BrainstormRecord, themes: Sequence[Mapping[str, object]], views: Mapping[int, IdeaView], note: str = ""
) -> Reply:
    lines: list[str] = []
    for number, theme in enumerate(themes, 1):
        members = [views[i] for i in theme["idea_ids"] if i in views]  # type: ignore[attr-defined]
        if not members:
            continue
        members.sort(key=lambda view: (-view.votes, view.idea.number))
        votes = sum(view.votes for view in members)
        lines.append(f"{number}. {theme['label']} — {_ideas(len(members))}, {_votes(votes)}")
        lines += [f"   {idea_line(view)}" for view in members[:IDEAS_PER_THEME]]
        if len(members) > IDEAS_PER_THEME:
            lines.append(f"   …and {len(members) - IDEAS_PER_THEME} more")
    if note:
        lines.append(note)
    return Reply(
        parts=("\n".join(lines),),
        title=f"Themes — round {session.round} of {session.rounds}",
        actions=controls(session.id),
    )


def round_open(session: BrainstormRecord) -> Reply:
    text = (
        f"Round {session.round} of {session.rounds} is open for {_minutes(session.minutes)}: add ideas, build on the "
        "ones above, and vote for your favourites."
    )
    return Reply(parts=(text,), actions=controls(session.id))


def contributors(views: Mapping[int, IdeaView], ideas: Sequence[IdeaRecord]) -> list[tuple[str, int]]:
    """(name, ideas credited) for every person, most first; merged duplicates credit each of their authors."""
    counts: dict[str, int] = {}
    for idea in ideas:
        if idea.source == "person":
            counts[idea.user.name] = counts.get(idea.user.name, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def summary_markdown(
    session: BrainstormRecord, views: Mapping[int, IdeaView], ideas: Sequence[IdeaRecord], voter_count: int
) -> str:
    """The wrap-up: top ideas by votes, themes, every contributor, next steps. Built from live rows, so a /forget
    takes the person's ideas out of it."""
    people = contributors(views, ideas)
    lines = [
        f"# Brainstorm: {session.topic}",
        "",
        f"Started by {session.starter.name} · {session.rounds} round{'s' if session.rounds != 1 else ''} · "
        f"{_ideas(sum(1 for i in ideas if i.source == 'person'))} from {len(people)} "
        f"{'person' if len(people) == 1 else 'people'} · {voter_count} "
        f"{'person' if voter_count == 1 else 'people'} voted",
        "",
        "## Top ideas",
    ]
    top = ranked(views)[:TOP_IDEAS]
    lines += [f"{n}. {idea_line(view, limit=10_000)}" for n, view in enumerate(top, 1)] or ["No ideas were posted."]
    lines += ["", "## Themes"]
    themed = False
    for theme in session.themes:
        members = [views[i] for i in theme["idea_ids"] if i in views]
        if members:
            themed = True
            numbers = ", ".join(f"#{view.idea.number}" for view in members)
            lines.append(f"- **{theme['label']}** ({_ideas(len(members))}): {numbers}")
    if not themed:
        lines.append("No themes (too few ideas).")
    lines += ["", "## Contributors"]
    lines.append(", ".join(f"{name} ({_ideas(n)})" for name, n in people) if people else "No one posted ideas.")
    lines += ["", "## Next steps"]
    lines += [f"{n}. {step}" for n, step in enumerate(session.next_steps, 1)] or ["Pick the idea to try first."]
    return "\n".join(lines)


def _minutes(minutes: float) -> str:
    if minutes < 1:
        return f"{round(minutes * 60)} seconds"
    whole = round(minutes) if abs(minutes - round(minutes)) < 0.05 else round(minutes, 1)
    return f"{whole} minute{'s' if whole != 1 else ''}"
