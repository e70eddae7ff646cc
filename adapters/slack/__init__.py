"""The Slack channel: slack-bolt AsyncApp in Socket Mode or HTTP mode, Block Kit replies, streamed edits."""
