-- The tables Chorus made with create_all before it had migrations (bots/store.py, scheduler/models.py and
-- adapters/slack/ledger.py at d37fac6), as sqlite DDL: the starting point of the upgrade test.

CREATE TABLE generations (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	platform VARCHAR(32) NOT NULL, 
	workspace VARCHAR(255) NOT NULL, 
	channel VARCHAR(255) NOT NULL, 
	thread VARCHAR(255), 
	user_id VARCHAR(255) NOT NULL, 
	user_name VARCHAR(255) NOT NULL, 
	kind VARCHAR(64) NOT NULL, 
	tone VARCHAR(64) NOT NULL, 
	prompt TEXT NOT NULL, 
	instruction TEXT NOT NULL, 
	variants JSON NOT NULL, 
	params JSON NOT NULL, 
	version INTEGER NOT NULL, 
	parent_id INTEGER, 
	root_id INTEGER NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	message_ref VARCHAR(255), 
	created_at DATETIME NOT NULL, 
	CONSTRAINT uq_generations_root_version UNIQUE (root_id, version), 
	FOREIGN KEY(parent_id) REFERENCES generations (id) ON DELETE SET NULL
);

CREATE INDEX ix_generations_conversation ON generations (platform, workspace, channel, thread, id);

CREATE INDEX ix_generations_user ON generations (platform, user_id);

CREATE INDEX ix_generations_message_ref ON generations (platform, message_ref);

CREATE TABLE brainstorm_sessions (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	platform VARCHAR(32) NOT NULL, 
	workspace VARCHAR(255) NOT NULL, 
	channel VARCHAR(255) NOT NULL, 
	thread VARCHAR(255), 
	thread_name VARCHAR(255) NOT NULL, 
	topic TEXT NOT NULL, 
	starter_id VARCHAR(255) NOT NULL, 
	starter_name VARCHAR(255) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	round INTEGER NOT NULL, 
	rounds INTEGER NOT NULL, 
	minutes FLOAT NOT NULL, 
	deadline DATETIME, 
	kickoff_ref VARCHAR(255), 
	themes JSON NOT NULL, 
	next_steps JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	closed_at DATETIME, 
	expires_at DATETIME
);

CREATE INDEX ix_brainstorm_thread ON brainstorm_sessions (platform, workspace, thread);

CREATE INDEX ix_brainstorm_channel ON brainstorm_sessions (platform, workspace, channel, status);

CREATE TABLE drop_channels (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	"key" VARCHAR(800) NOT NULL, 
	platform VARCHAR(32) NOT NULL, 
	workspace VARCHAR(255) NOT NULL, 
	channel VARCHAR(255) NOT NULL, 
	thread VARCHAR(255), 
	enabled BOOLEAN NOT NULL, 
	paused BOOLEAN NOT NULL, 
	pause_reason TEXT NOT NULL, 
	kinds JSON NOT NULL, 
	cadence VARCHAR(120) NOT NULL, 
	time VARCHAR(16) NOT NULL, 
	tz VARCHAR(64) NOT NULL, 
	quiet VARCHAR(16) NOT NULL, 
	topics JSON NOT NULL, 
	learn_topics BOOLEAN NOT NULL, 
	mined JSON NOT NULL, 
	planner JSON NOT NULL, 
	auto_hour INTEGER, 
	last_slot_at DATETIME, 
	enabled_by VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	CONSTRAINT uq_drop_channels_key UNIQUE ("key")
);

CREATE TABLE drop_runs (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	run_key VARCHAR(900) NOT NULL, 
	channel_key VARCHAR(800) NOT NULL, 
	platform VARCHAR(32) NOT NULL, 
	scheduled_for DATETIME NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	next_attempt_at DATETIME, 
	"plan" JSON, 
	generation_id INTEGER, 
	title TEXT NOT NULL, 
	text TEXT NOT NULL, 
	embedding JSON, 
	message_ref VARCHAR(255), 
	note TEXT NOT NULL, 
	reward FLOAT, 
	engagement JSON, 
	settled BOOLEAN NOT NULL, 
	posted_at DATETIME, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT uq_drop_runs_run_key UNIQUE (run_key)
);

CREATE INDEX ix_drop_runs_generation ON drop_runs (generation_id);

CREATE INDEX ix_drop_runs_status ON drop_runs (status);

CREATE INDEX ix_drop_runs_message ON drop_runs (platform, message_ref);

CREATE INDEX ix_drop_runs_channel ON drop_runs (channel_key, scheduled_for);

CREATE TABLE drop_activity (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	platform VARCHAR(32) NOT NULL, 
	workspace VARCHAR(255) NOT NULL, 
	channel VARCHAR(255) NOT NULL, 
	hour_of_week INTEGER NOT NULL, 
	count INTEGER NOT NULL, 
	CONSTRAINT uq_drop_activity_bucket UNIQUE (platform, workspace, channel, hour_of_week)
);

CREATE TABLE feedback (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	generation_id INTEGER NOT NULL, 
	platform VARCHAR(32) NOT NULL, 
	user_id VARCHAR(255) NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	value VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	FOREIGN KEY(generation_id) REFERENCES generations (id) ON DELETE CASCADE
);

CREATE INDEX ix_feedback_generation_id ON feedback (generation_id);

CREATE INDEX ix_feedback_user ON feedback (platform, user_id);

CREATE TABLE engagement_events (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	platform VARCHAR(32) NOT NULL, 
	workspace VARCHAR(255) NOT NULL, 
	channel VARCHAR(255) NOT NULL, 
	thread VARCHAR(255), 
	user_id VARCHAR(255), 
	generation_id INTEGER, 
	kind VARCHAR(32) NOT NULL, 
	value TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	FOREIGN KEY(generation_id) REFERENCES generations (id) ON DELETE SET NULL
);

CREATE INDEX ix_engagement_user ON engagement_events (platform, user_id);

CREATE INDEX ix_engagement_events_generation_id ON engagement_events (generation_id);

CREATE INDEX ix_engagement_conversation ON engagement_events (platform, workspace, channel, thread, created_at);

CREATE TABLE brainstorm_ideas (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	session_id INTEGER NOT NULL, 
	number INTEGER NOT NULL, 
	round INTEGER NOT NULL, 
	platform VARCHAR(32) NOT NULL, 
	user_id VARCHAR(255) NOT NULL, 
	user_name VARCHAR(255) NOT NULL, 
	text TEXT NOT NULL, 
	source VARCHAR(16) NOT NULL, 
	message_ref VARCHAR(255), 
	merged_into INTEGER, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT uq_brainstorm_idea_number UNIQUE (session_id, number), 
	FOREIGN KEY(session_id) REFERENCES brainstorm_sessions (id) ON DELETE CASCADE, 
	FOREIGN KEY(merged_into) REFERENCES brainstorm_ideas (id) ON DELETE SET NULL
);

CREATE INDEX ix_brainstorm_idea_user ON brainstorm_ideas (platform, user_id);

CREATE INDEX ix_brainstorm_ideas_session_id ON brainstorm_ideas (session_id);

CREATE INDEX ix_brainstorm_idea_ref ON brainstorm_ideas (platform, message_ref);

CREATE TABLE brainstorm_votes (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	idea_id INTEGER NOT NULL, 
	session_id INTEGER NOT NULL, 
	platform VARCHAR(32) NOT NULL, 
	user_id VARCHAR(255) NOT NULL, 
	created_at DATETIME NOT NULL, 
	CONSTRAINT uq_brainstorm_vote UNIQUE (idea_id, platform, user_id), 
	FOREIGN KEY(idea_id) REFERENCES brainstorm_ideas (id) ON DELETE CASCADE, 
	FOREIGN KEY(session_id) REFERENCES brainstorm_sessions (id) ON DELETE CASCADE
);

CREATE INDEX ix_brainstorm_vote_user ON brainstorm_votes (platform, user_id);

CREATE INDEX ix_brainstorm_votes_idea_id ON brainstorm_votes (idea_id);

CREATE INDEX ix_brainstorm_votes_session_id ON brainstorm_votes (session_id);

CREATE TABLE slack_events (
	event_id VARCHAR(64) NOT NULL, 
	seen_at DATETIME NOT NULL, 
	PRIMARY KEY (event_id)
);

CREATE INDEX ix_slack_events_seen_at ON slack_events (seen_at);
