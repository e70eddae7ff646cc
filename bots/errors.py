"""Errors whose message is meant for the person who typed the command."""


class UserError(Exception):
    """Bad input or a refused request. The router shows the message, ephemerally, and nothing else happens."""
