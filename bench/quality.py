"""Quality scorecard: realistic briefs for every kind, run through Chorus itself, every variant checked.

Each brief is typed as a user would (`/create slogan ... --tone playful --n 3`) into the real router, commands,
studio and store, with a recording responder; the variants in the final reply are scored with
generation.scorecard (complete, not degenerate, no meta-text, the kind's format, on topic by all-MiniLM-L6-v2
similarity to the brief, distinct from the others). Refinement chains (s, l, r, m, t <tone>, a free sentence, a
chosen variant by `2 s` and by "the second one") are scored the same way, plus their effect: shorter is shorter,
longer is longer, r/m/t/free change the text, a chosen variant leaves the others. A latency section times
3-variant /create runs of a short kind one after another.

Run:  .venv/bin/python bench/quality.py [--quick] [--best-of K] [--url http://host:port/v1] [--label NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from local_generator import machine_info  # noqa: E402

from adapters.terminal.translate import to_event  # noqa: E402
from bots.events import Conversation, User  # noqa: E402
from bots.reply import Reply, ReplyAction  # noqa: E402
from generation.scorecard import CHECKS, cosine, near_duplicate, score_variant  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
_log = logging.getLogger("bench.quality")

# (brief, tone). Realistic asks a copywriter or community manager would type; four or more per kind.
BRIEFS: dict[str, list[tuple[str, str]]] = {
    "slogan": [
        ("a bookstore that is also a cafe", "playful"),
        ("a bike repair shop run by volunteers", "warm"),
        ("an electric cargo bike for families", "bold"),
        ("a password manager for small businesses", "professional"),
    ],
    "tagline": [
        ("a budgeting app for students", "witty"),
        ("a bakery that only uses local flour", "warm"),
        ("a noise-cancelling headset for open offices", "minimal"),
        ("a hiking boot made from recycled plastic", "bold"),
    ],
    "tweet": [
        ("our coffee shop now opens at 6am on weekdays", "playful"),
        ("the city library launching free coding classes for teens", "warm"),
        ("a product update: dark mode is finally here", "witty"),
        ("a reminder to back up your photos this weekend", "neutral"),
    ],
    "post": [
        ("welcoming new members to our gardening community", "warm"),
        ("the rules for our weekly photo challenge", "neutral"),
        ("a volunteer beach clean-up this Saturday morning", "playful"),
        ("our open-source project reaching version 2.0", "professional"),
    ],
    "headline": [
        ("a study finding that short walks after meals lower blood sugar", "neutral"),
        ("a small town that banned cars from its centre", "dramatic"),
        ("tips for remote workers to avoid burnout", "professional"),
        ("a robot that sorts recycling faster than people", "witty"),
    ],
    "story": [
        ("a lighthouse keeper who finds a message in a bottle", "dramatic"),
        ("a robot learning to bake bread", "warm"),
        ("the last day of summer camp", "poetic"),
        ("a cat who runs a bookshop at night", "playful"),
    ],
    "poem": [
        ("autumn rain on a city street", "poetic"),
        ("the first cup of coffee in the morning", "playful"),
        ("moving to a new country", "warm"),
        ("the ocean at night", "dramatic"),
    ],
    "lyrics": [
        ("a road trip with old friends", "playful"),
        ("missing home in a big city", "warm"),
        ("dancing in the kitchen", "bold"),
        ("the last train home", "dramatic"),
    ],
    "ad": [
        ("a meal-kit delivery service for busy parents", "warm"),
        ("a waterproof phone case", "bold"),
        ("a language-learning app with five-minute lessons", "playful"),
        ("an accounting firm for freelancers", "professional"),
    ],
    "names": [
        ("a coffee shop for programmers", "playful"),
        ("a line of eco-friendly cleaning products", "neutral"),
        ("a fantasy tavern in a mountain village", "dramatic"),
        ("a productivity app for writers", "minimal"),
    ],
    "outline": [
        ("a blog post about starting a vegetable garden", "neutral"),
        ("a talk on why teams should write design docs", "professional"),
        ("a newsletter announcing our summer festival", "playful"),
        ("a guide to adopting a rescue dog", "warm"),
    ],
    "description": [
        ("a handmade ceramic mug with a speckled glaze", "warm"),
        ("a weekend jazz festival in the park", "playful"),
        ("a lightweight laptop for students", "professional"),
        ("a guided night walk through an old town", "dramatic"),
    ],
}

# Refinement paths, each typed as the terminal would after the previous result. The "chosen" ones refine variant 2 only.
REFINEMENTS: list[tuple[str, str]] = [
    ("shorter", "s"),
    ("longer", "l"),
    ("regenerate", "r"),
    ("more", "m"),
    ("tone", "t witty"),
    ("free", "make it more surprising"),
    ("chosen", "2 s"),
    ("chosen-free", "make the second one more playful"),
]

# The kinds whose first brief runs a refinement chain in --quick mode: a one-line kind, short prose, a multi-line
# kind and a list, so every path is scored on each shape of answer.
QUICK_CHAIN_KINDS = ("slogan", "tweet", "poem", "names")


@dataclass
class Recorded:
    """What one line produced: the final reply (if any), every other reply, and timings."""

    replies: list[Reply] = field(default_factory=list)
    final: Reply | None = None
    first_text_s: float | None = None
    elapsed_s: float = 0.0


class RecordingStream:
    def __init__(self, responder: RecordingResponder) -> None:
        self.responder = responder

    async def begin_part(self, index: int, total: int) -> None:
        return None

    async def write(self, delta: str) -> None:
        rec = self.responder.current
        if rec.first_text_s is None and delta.strip():
            rec.first_text_s = time.monotonic() - self.responder.started

    async def status(self, text: str) -> None:
        return None

    async def finish(self, reply: Reply) -> str:
        self.responder.current.final = reply
        return await self.responder.send(reply)


class RecordingResponder:
    """Records replies like a chat client would show them; one per conversation."""

    def __init__(self) -> None:
        self.current = Recorded()
        self.started = time.monotonic()
        self.count = 0

    async def defer(self) -> None:
        return None

    async def send(self, reply: Reply) -> str:
        self.current.replies.append(reply)
        self.count += 1
        return f"bench-{id(self)}-{self.count}"

    async def edit(self, message_ref: str, reply: Reply) -> None:
        return None

    def stream(self, title: str) -> RecordingStream:
        return RecordingStream(self)

    async def open_thread(self, message_ref: str, name: str) -> tuple[str, RecordingResponder]:
        return f"thread-{message_ref}", self


class Session:
    """One conversation driven like the terminal: shortcut keys refer to the last reply's actions."""

    def __init__(self, chorus: Any, channel: str) -> None:
        self.chorus = chorus
        self.conversation = Conversation(platform="bench", workspace="quality", channel=channel)
        self.user = User(id="writer", name="writer", is_moderator=True)
        self.keys: dict[str, ReplyAction] = {}
        self.responder = RecordingResponder()

    async def say(self, line: str) -> Recorded:
        event = to_event(line, self.user, self.keys, self.conversation)
        self.responder.current = Recorded()
        self.responder.started = time.monotonic()
        await asyncio.wait_for(self.chorus.handle(event, self.responder), timeout=600)
        rec = self.responder.current
        rec.elapsed_s = time.monotonic() - self.responder.started
        for reply in rec.replies:
            if reply.actions:
                self.keys = {a.key.split()[0]: a for a in reply.actions if a.key}
        return rec


async def _asks(chorus: Any, generation_id: int | None) -> list[str]:
    """The instructions the model saw for a stored result (their echoes count as meta-text)."""
    from bots.feedback import ask_for, first_turn

    if generation_id is None:
        return []
    record = await chorus.store.get_generation(generation_id)
    if record is None:
        return []
    lineage = await chorus.store.lineage(record)
    spec, first_ask = first_turn(lineage[0], chorus.settings)
    asks = [spec.system, first_ask.replace(record.prompt, " ")]
    if record.instruction:
        asks.append(ask_for(record.instruction, chorus.settings))
    return asks


class Scorer:
    def __init__(self, chorus: Any, embedder: Any) -> None:
        self.chorus = chorus
        self.embedder = embedder
        self._cache: dict[str, list[float]] = {}

    async def vectors(self, texts: list[str]) -> list[list[float]]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for text, vector in zip(missing, await self.embedder.embed(missing), strict=True):
                self._cache[text] = vector
        return [self._cache[t] for t in texts]

    async def score(self, kind: str, brief: str, rec: Recorded) -> list[dict[str, Any]]:
        reply = rec.final
        if reply is None or not reply.parts:
            # Nothing shown is one failed variant: every check fails.
            text = " ".join(p for r in rec.replies for p in r.parts)
            return [{"text": text, "checks": dict.fromkeys(CHECKS, False), "relevance": None, "passed": False}]
        parts = list(reply.parts)
        asks = await _asks(self.chorus, reply.generation_id)
        record = await self.chorus.store.get_generation(reply.generation_id) if reply.generation_id else None
        finishes = list(record.params.get("finish_reasons", [])) if record is not None else []
        brief_vector, *vectors = await self.vectors([brief, *parts])
        scored = []
        for index, text in enumerate(parts):
            relevance = cosine(brief_vector, vectors[index])
            others = parts[:index] + parts[index + 1 :]
            score = score_variant(text, kind, asks=asks, relevance=relevance, others=others)
            scored.append(
                {
                    "text": text,
                    "checks": score.checks,
                    "relevance": round(relevance, 3),
                    "passed": score.passed,
                    "finish": finishes[index] if index < len(finishes) and len(finishes) == len(parts) else "",
                }
            )
        return scored


def _words(text: str) -> int:
    return len(text.split())


def _refinement_extra(path: str, before: list[str], after: list[str]) -> dict[str, bool]:
    """Checks only a refinement has: shorter is shorter, longer is longer, a chosen variant leaves the rest."""
    if not after:
        return {"effect": False}
    if path == "shorter":
        pairs = list(zip(before, after, strict=False))
        return {"effect": bool(pairs) and all(_words(new) < _words(old) for old, new in pairs)}
    if path == "longer":
        pairs = list(zip(before, after, strict=False))
        return {"effect": bool(pairs) and all(_words(new) > _words(old) for old, new in pairs)}
    if path in ("chosen", "chosen-free"):
        if len(after) != len(before) or len(before) < 2:
            return {"effect": False}
        others_kept = all(after[i] == before[i] for i in range(len(before)) if i != 1)
        if path == "chosen":
            return {"effect": others_kept and _words(after[1]) < _words(before[1])}
        return {"effect": others_kept and not near_duplicate(after[1], before[1])}
    if path == "more":
        # New ones: none is a near-copy of any variant already shown.
        return {"effect": not any(near_duplicate(new, old) for new in after for old in before)}
    # Regenerate, a tone or a free instruction must change what it reworks, not hand the same text back.
    pairs = list(zip(before, after, strict=False))
    return {"effect": bool(pairs) and not any(near_duplicate(new, old) for old, new in pairs)}


async def run_brief(
    chorus: Any, scorer: Scorer, kind: str, brief: str, tone: str, n: int, channel: str, refine: bool
) -> dict[str, Any]:
    session = Session(chorus, channel)
    tone_flag = f" --tone {tone}" if tone != "neutral" else ""
    rec = await session.say(f"/create {kind} {brief}{tone_flag} --n {n}")
    variants = await scorer.score(kind, brief, rec)
    result: dict[str, Any] = {
        "kind": kind,
        "brief": brief,
        "tone": tone,
        "elapsed_s": round(rec.elapsed_s, 2),
        "first_text_s": None if rec.first_text_s is None else round(rec.first_text_s, 2),
        "footer": rec.final.footer if rec.final else "",
        "variants": variants,
        "refinements": [],
    }
    if not refine or rec.final is None:
        return result
    before = list(rec.final.parts)
    for path, line in REFINEMENTS:
        step = await session.say(line)
        scored = await scorer.score(kind, brief, step)
        after = list(step.final.parts) if step.final else []
        extra = _refinement_extra(path, before, after)
        for item in scored:
            item["checks"] = {**item["checks"], **extra}
            item["passed"] = all(item["checks"].values())
        result["refinements"].append(
            {"path": path, "line": line, "elapsed_s": round(step.elapsed_s, 2), "variants": scored}
        )
        if after:
            before = after
    return result


async def latency(chorus: Any, runs: int, ks: list[int]) -> dict[str, Any]:
    """3-variant /create of a short kind, one after another (nothing else running), end to end, for each best_of
    in `ks`; the k values take turns within each round so a change in machine load hits them alike."""
    base = chorus.settings
    timings: dict[int, list[float]] = {k: [] for k in ks}
    try:
        for index in range(runs):
            for k in ks:
                generation = base.generation.model_copy(update={"best_of": k})
                chorus.settings = base.model_copy(update={"generation": generation})
                session = Session(chorus, f"latency-{index}-{k}")
                rec = await session.say(f"/create slogan {BRIEFS['slogan'][index % 4][0]} --n 3")
                timings[k].append(rec.elapsed_s)
    finally:
        chorus.settings = base
    return {
        "runs": runs,
        "by_best_of": {
            str(k): {"elapsed_s": [round(t, 2) for t in ts], "median_s": round(statistics.median(ts), 2)}
            for k, ts in timings.items()
        },
    }


def _rate(items: list[dict[str, Any]]) -> float | None:
    return round(sum(1 for i in items if i["passed"]) / len(items), 3) if items else None


def summarize(briefs: list[dict[str, Any]]) -> dict[str, Any]:
    creates = [v | {"kind": b["kind"]} for b in briefs for v in b["variants"]]
    refined = [
        v | {"kind": b["kind"], "path": r["path"]} for b in briefs for r in b["refinements"] for v in r["variants"]
    ]
    by_kind: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in creates:
        by_kind[item["kind"]].append(item)
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in refined:
        by_path[item["path"]].append(item)
    path_checks = {
        path: {
            check: round(sum(1 for i in items if i["checks"].get(check, True)) / len(items), 3)
            for check in [*CHECKS, "effect"]
        }
        for path, items in by_path.items()
    }
    finishes: dict[str, int] = defaultdict(int)
    for item in creates + refined:
        finishes[item.get("finish") or "?"] += 1
    checks = [*CHECKS, "effect"]
    per_check = {}
    for check in checks:
        relevant = [i for i in creates + refined if check in i["checks"]]
        if relevant:
            per_check[check] = round(sum(1 for i in relevant if i["checks"][check]) / len(relevant), 3)
    return {
        "variants": len(creates),
        "pass_rate": _rate(creates),
        "refined_variants": len(refined),
        "refined_pass_rate": _rate(refined),
        "all_pass_rate": _rate(creates + refined),
        "per_kind": {kind: {"variants": len(v), "pass_rate": _rate(v)} for kind, v in sorted(by_kind.items())},
        "per_path": {path: {"variants": len(v), "pass_rate": _rate(v)} for path, v in by_path.items()},
        "per_check": per_check,
        "per_path_check": path_checks,
        "finish_reasons": dict(finishes),
        "create_elapsed_s_median": round(statistics.median(b["elapsed_s"] for b in briefs), 2) if briefs else None,
    }


class PenalizedGenerator:
    """Sets repetition_penalty on every request (the studio has no setting for it yet), to measure it."""

    def __init__(self, inner: Any, penalty: float) -> None:
        self.inner = inner
        self.penalty = penalty

    def stream(self, request: Any) -> Any:
        import dataclasses

        return self.inner.stream(dataclasses.replace(request, repetition_penalty=self.penalty))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def machine() -> dict[str, Any]:
    """The machine (shared with the other benches), and how this run found it."""
    return machine_info() | {"note": "2-core shared VM, loaded (8 engineers building and testing at once)"}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from bots.store import Store
    from chorus.compose import build_chorus, build_generator
    from config import load_settings
    from generation.embeddings import MiniLMEmbedder

    home = tempfile.mkdtemp(prefix="chorus-quality-")
    env = dict(os.environ)
    env["CHORUS_STORE__URL"] = f"sqlite+aiosqlite:///{home}/bench.db"
    env["CHORUS_LIMITS__QUOTA_PER_MINUTE"] = "0"
    if args.url:
        env["CHORUS_GENERATION__URL"] = args.url
    if args.best_of:
        env["CHORUS_GENERATION__BEST_OF"] = str(args.best_of)
    # The product's per-variant time budget exists for a responsive chat; on a loaded shared machine it would cut
    # variants for reasons that have nothing to do with the text, so the scorecard gives it room (see --time-budget).
    env["CHORUS_GENERATION__TIME_BUDGET_S"] = str(args.time_budget)
    if args.no_examples:
        for kind in load_settings(args.config, env=env).kinds:
            env[f"CHORUS_KINDS__{kind.upper()}__FEW_SHOT"] = "0"
    settings = load_settings(args.config, env=env)
    store = Store(settings.store_url)
    await store.start()
    generator = build_generator(settings)
    if args.repetition_penalty != 1.0:
        generator = PenalizedGenerator(generator, args.repetition_penalty)
    warmup = getattr(generator, "warmup", None)
    if warmup is not None:
        await warmup()
    embedder = MiniLMEmbedder()
    await embedder.warmup()
    chorus = build_chorus(settings, store, generator, embedder=embedder, drops=False)
    scorer = Scorer(chorus, embedder)
    per_kind = 2 if args.quick else 4
    n = 2 if args.quick else 3
    kinds = [k for k in BRIEFS if k in settings.kinds and (not args.kinds or k in args.kinds)]
    # Refinement chains are sequential (seven steps each), so they run on a spread of kinds to keep a run short:
    # one-line, short prose, multi-line and list kinds.
    refine_kinds = set(args.refine_kinds or (QUICK_CHAIN_KINDS if args.quick else kinds[::3]))
    jobs = []
    for kind in kinds:
        for index, (brief, tone) in enumerate(BRIEFS[kind][:per_kind]):
            chain = index == 0 and kind in refine_kinds
            if chain or not args.chains_only:
                jobs.append((kind, brief, tone, chain))
    gate = asyncio.Semaphore(args.concurrency)
    # One unscored /create first: the engine's first batches (new shapes, cold caches) are far slower than the rest.
    await Session(chorus, "warmup").say("/create slogan a warm-up --n 2")
    started = time.monotonic()

    async def one(number: int, job: tuple[str, str, str, bool]) -> dict[str, Any]:
        kind, brief, tone, refine = job
        async with gate:
            result = await run_brief(chorus, scorer, kind, brief, tone, n, f"brief-{number}", refine)
            print(f"  {kind:<12} {_rate(result['variants']):.2f}  {brief}", file=sys.stderr, flush=True)
            return result

    try:
        briefs = await asyncio.gather(*(one(i, job) for i, job in enumerate(jobs)))
        scored_s = time.monotonic() - started
        ks = sorted({getattr(settings.generation, "best_of", 1), *args.latency_k})
        timing = await latency(chorus, 2 if args.quick else 3, ks) if ks and not args.chains_only else {}
        health = await generator.health()
    finally:
        await chorus.close()
    report = {
        "label": args.label,
        "mode": "quick" if args.quick else "full",
        "machine": machine() | {"loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "model": health.model,
        "generation_url": settings.generation.url,
        "best_of": getattr(settings.generation, "best_of", 1),
        "repetition_penalty": args.repetition_penalty,
        "few_shot": not args.no_examples,
        "variants_per_create": n,
        "concurrency": args.concurrency,
        "time_budget_s": args.time_budget,
        "scored_s": round(scored_s, 1),
        "summary": summarize(list(briefs)),
        "latency": timing,
        "briefs": list(briefs),
    }
    return report


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


def render(report: dict[str, Any]) -> str:
    s = report["summary"]
    m = report["machine"]
    lines = [
        f"### Quality scorecard — {report['label']} ({report['mode']})",
        "",
        f"Model {report['model'] or '?'}{' at ' + report['generation_url'] if report['generation_url'] else ''}; "
        f"best_of {report['best_of']}; repetition_penalty {report.get('repetition_penalty', 1.0)}; "
        f"few-shot examples {'on' if report.get('few_shot', True) else 'off'}; "
        f"{report['variants_per_create']} variants per /create; "
        f"{report['concurrency']} briefs at a time; time budget {report.get('time_budget_s', 60)} s per variant; "
        f"{m['cpu_model']}, {m['os_cpu_count']} CPUs — {m['note']}; "
        f"load average {m['loadavg_start'][0]} → {m['loadavg_end'][0]}; {m['date']}; scoring run "
        f"{report['scored_s']} s.",
        "",
        f"**/create variants passing every check: {_pct(s['pass_rate'])}** ({s['variants']} variants); "
        f"refinements: {_pct(s['refined_pass_rate'])} ({s['refined_variants']}); all: {_pct(s['all_pass_rate'])}.",
        "",
        "| Kind | Variants | Pass every check |",
        "|---|---:|---:|",
    ]
    for kind, row in s["per_kind"].items():
        lines.append(f"| {kind} | {row['variants']} | {_pct(row['pass_rate'])} |")
    lines += ["", "| Check | Pass rate (creates + refinements) |", "|---|---:|"]
    for check, rate in s["per_check"].items():
        lines.append(f"| {check} | {_pct(rate)} |")
    if s["per_path"]:
        lines += ["", "| Refinement path | Variants | Pass every check (incl. effect) |", "|---|---:|---:|"]
        for path, row in s["per_path"].items():
            lines.append(f"| {path} | {row['variants']} | {_pct(row['pass_rate'])} |")
        checks = [*CHECKS, "effect"]
        lines += ["", "| Refinement path | " + " | ".join(checks) + " |", "|---|" + "---:|" * len(checks)]
        for path, row in s.get("per_path_check", {}).items():
            lines.append(f"| {path} | " + " | ".join(_pct(row.get(c)) for c in checks) + " |")
    if s.get("finish_reasons"):
        reasons = ", ".join(f"{name} {count}" for name, count in sorted(s["finish_reasons"].items()))
        lines += ["", f"How variants ended (stop = the model finished; length/time = a budget stopped it): {reasons}."]
    t = report["latency"]
    if t:
        lines += ["", "| Latency: 3-variant `/create slogan` alone | Median (s) | Runs (s) |", "|---|---:|---|"]
        for k, row in t["by_best_of"].items():
            lines.append(f"| best_of {k} | {row['median_s']} | {row['elapsed_s']} |")
    lines += ["", f"Median /create in the scoring run (briefs concurrent): {s['create_elapsed_s_median']} s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 briefs per kind, 2 variants, fewer refinements")
    parser.add_argument("--best-of", type=int, default=0, help="candidates per variant (generation.best_of)")
    parser.add_argument("--url", default="", help="an OpenAI-compatible generation.url instead of the embedded model")
    parser.add_argument("--config", default=None, help="a Chorus TOML config")
    parser.add_argument("--kinds", nargs="*", default=[], help="only these kinds")
    parser.add_argument("--concurrency", type=int, default=4, help="briefs running at once")
    parser.add_argument("--time-budget", type=float, default=600.0, help="generation.time_budget_s for the run")
    parser.add_argument("--no-examples", action="store_true", help="send no few-shot examples (to measure them)")
    parser.add_argument(
        "--latency-k", type=int, nargs="*", default=[1, 2, 4], help="best_of values timed in the latency section"
    )
    parser.add_argument("--refine-kinds", nargs="*", default=[], help="kinds whose first brief runs a refinement chain")
    parser.add_argument(
        "--chains-only", action="store_true", help="only the briefs with a refinement chain, no latency section"
    )
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="set on every generation request")
    parser.add_argument("--label", default="run")
    parser.add_argument("--out", default="", help="JSON path (default bench/results/quality-<label>.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = asyncio.run(run(args))
    markdown = render(report)
    print(markdown)
    out = Path(args.out) if args.out else RESULTS / f"quality-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    out.with_suffix(".md").write_text(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
    main()
