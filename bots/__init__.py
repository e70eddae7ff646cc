"""The platform-neutral product: events, replies, the router, commands, feedback and the store."""
