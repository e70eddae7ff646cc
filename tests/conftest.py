"""Fixtures shared by the suite; the classes behind them live in support.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings, load_settings
from generation.models import ModelSpec, prepare_model
from generation.types import ModelUnavailable
from support import TestBot, make_bot, settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
async def testbot(settings: Settings) -> AsyncIterator[TestBot]:
    bot = await make_bot(settings)
    yield bot
    await bot.chorus.close()


@pytest.fixture(scope="session")
def embedded_spec() -> ModelSpec:
    """The real embedded model, in the same cache `make model` fills (converted there once if it is not yet).

    A missing model fails rather than skips: `make test` installs it, so its absence is a setup bug to see.
    """
    try:
        return prepare_model(load_settings(env={"CHORUS_HOME": os.environ.get("CHORUS_HOME", "")}))
    except ModelUnavailable as exc:
        pytest.fail(f"the embedded model is needed for slow tests: {exc}")
