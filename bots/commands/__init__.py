"""The slash commands. `COMMANDS` is the catalogue of every command Chorus ships, in the order /help and the
platforms list them; `CORE_COMMANDS` are the ones the core answers itself. The others come with their feature's
plug-in (bots/create_plugin.py, bots/brainstorm/plugin.py, scheduler/plugin.py)."""

from bots.brainstorm.command import BRAINSTORM
from bots.commands.create import CREATE, REMIX
from bots.commands.drops import DROPS, STATS
from bots.commands.forget import FORGET
from bots.commands.help import HELP
from bots.commands.history import HISTORY
from bots.commands.mydata import MYDATA
from bots.router import CommandSpec

COMMANDS: tuple[CommandSpec, ...] = (CREATE, REMIX, BRAINSTORM, DROPS, STATS, HISTORY, MYDATA, FORGET, HELP)
CORE_COMMANDS: tuple[CommandSpec, ...] = (HISTORY, MYDATA, FORGET, HELP)

__all__ = ["COMMANDS", "CORE_COMMANDS"]
