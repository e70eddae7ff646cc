"""Builds one Chorus: the generator, the embedder, and the features, installed as plug-ins. The one place a feature
is switched on; a new feature is one more line in `features()`.

Heavy and optional packages (the model libraries, the scheduler, the platform adapters) are imported only here and
only when configured, so a terminal-only install never loads discord.py or torch.
"""

from __future__ import annotations

import logging
import os
import sys

from bots.app import Chorus
from bots.plugin import Plugin
from bots.store import Store
from config import Settings
from generation.types import Embedder, Generator

_log = logging.getLogger("chorus")


def progress(line: str) -> None:
    """Setup progress (model conversion, loading) for the person at the terminal, on stderr."""
    print(line, file=sys.stderr, flush=True)


def features(*, drops: bool = True) -> list[Plugin]:
    """Every feature Chorus ships, as plug-ins, in the order they see events: brainstorm threads and replies to
    drops before create/refine, which treats any leftover reply as a refinement (it is `catch_all`)."""
    from bots.brainstorm.plugin import BrainstormPlugin
    from bots.create_plugin import CreatePlugin

    installed: list[Plugin] = [CreatePlugin(), BrainstormPlugin()]
    if drops:
        from scheduler.plugin import DropsPlugin

        installed.append(DropsPlugin())
    return installed


def build_chorus(
    settings: Settings, store: Store, generator: Generator, *, embedder: Embedder | None = None, drops: bool = True
) -> Chorus:
    """A Chorus with every feature installed; `drops=False` leaves out the scheduler (tests attach their own)."""
    return Chorus(settings, store, generator, embedder=embedder, plugins=features(drops=drops))


def build_generator(settings: Settings) -> Generator:
    """The configured generator. Raises ModelUnavailable with the command to run when no model is usable."""
    if settings.generation.url:
        from generation.remote import RemoteGenerator

        key_env = settings.generation.api_key_env
        return RemoteGenerator(
            settings.generation.url,
            api_key=os.environ.get(key_env) if key_env else None,
            model=settings.generation.model or None,
        )
    if settings.model.source == "fake":
        from generation.fake import FakeGenerator

        return FakeGenerator()
    from generation.models import prepare_model

    spec = prepare_model(settings, progress=progress)
    engine = settings.engine
    if engine.kind == "simple":
        from generation.local import LocalGenerator

        return LocalGenerator(
            spec,
            device=settings.model.device,
            dtype=settings.model.dtype,
            max_queue=engine.max_queue,
            threads=engine.threads,
        )
    from generation.engine import BatchingEngine

    return BatchingEngine(
        spec,
        device=settings.model.device,
        dtype=engine.dtype,
        fallback_dtype=settings.model.dtype,
        max_batch=engine.max_batch,
        max_queue=engine.max_queue,
        max_seq_len=engine.max_seq_len,
        prefill_chunk=engine.prefill_chunk,
        interactive_reserve=engine.interactive_reserve,
        quantize=engine.quantize,
        threads=engine.threads,
    )


def build_embedder(settings: Settings) -> Embedder | None:
    """The embedder for brainstorm themes and drop de-duplication: `brainstorm.embedding_url` when set, else the
    model in `brainstorm.embedding_path`, else the embedded all-MiniLM-L6-v2 when its package is installed; None
    means brainstorm themes fall back to one group. It remembers recent vectors, so ideas embedded as they are posted
    are not embedded again when their round ends."""
    from generation.embeddings import CachingEmbedder
    from generation.embeddings import build_embedder as configured_embedder

    embedder = configured_embedder(settings)
    return CachingEmbedder(embedder) if embedder is not None else None


async def run_platform(chorus: Chorus) -> int:
    """Hand Chorus to the configured platform's adapter, imported only now (the others may not be installed)."""
    platform = chorus.settings.chorus.platform
    if platform == "discord":
        from adapters.discord.app import run_discord

        return await run_discord(chorus)
    if platform == "slack":
        from adapters.slack.app import run_slack

        return await run_slack(chorus)
    from adapters.terminal.app import run_terminal

    return await run_terminal(chorus)
