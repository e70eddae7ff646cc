"""The Discord adapter (#4): discord.py app commands, streaming edits, persistent components, reactions."""
