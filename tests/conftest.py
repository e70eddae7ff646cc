"""Fixtures shared by the suite; the classes behind them live in support.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings
from support import TestBot, make_bot, settings_for


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
async def testbot(settings: Settings) -> AsyncIterator[TestBot]:
    bot = await make_bot(settings)
    yield bot
    await bot.chorus.close()
