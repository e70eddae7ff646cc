"""Platform adapters: translate platform payloads to core events and render core replies. One package each."""
