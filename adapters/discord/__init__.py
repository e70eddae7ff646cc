"""The Discord adapter: discord.py app commands, streaming edits, persistent components, reactions."""
