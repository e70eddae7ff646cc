"""The terminal channel: try Chorus without any token, and script it through stdin."""
