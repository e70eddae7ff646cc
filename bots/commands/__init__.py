"""The slash commands. Adapters register their platform commands from `COMMANDS`, never by hand."""

from bots.brainstorm.command import BRAINSTORM
from bots.commands.create import CREATE, REMIX
from bots.commands.drops import DROPS, STATS
from bots.commands.forget import FORGET
from bots.commands.help import HELP
from bots.commands.history import HISTORY
from bots.commands.mydata import MYDATA
from bots.router import CommandSpec

COMMANDS: tuple[CommandSpec, ...] = (CREATE, REMIX, BRAINSTORM, DROPS, STATS, HISTORY, MYDATA, FORGET, HELP)

__all__ = ["COMMANDS"]
