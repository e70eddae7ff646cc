"""Settings models and the loader that layers default.toml, a user file and the environment.

A wrong value is reported as one line naming where it came from (file or environment variable), the key, the value
and what is allowed, because that is what someone editing a config file needs to fix it.
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "CHORUS_"
# The longest tone name: the remix form's tone field (a Discord text input) and its default take no more, and a
# tone is shown on buttons, select options and result footers on every platform.
MAX_TONE_CHARS = 40
ENV_DELIMITER = "__"

# The environment load_settings() was given; tests pass their own instead of mutating os.environ.
_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("chorus_config_environment", default=None)


class ConfigError(Exception):
    """A configuration problem, already phrased for the person who has to fix it."""


class _GivenEnvironment(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRONMENT.get()
        if env is None:
            return super()._load_env_vars()
        return parse_env_vars(env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChorusSection(_Section):
    home: str = ""
    platform: Literal["terminal", "discord", "slack"] = "terminal"


class ModelSection(_Section):
    source: Literal["embedded", "hf", "gguf", "fake"] = "embedded"
    path: str = ""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class GenerationSection(_Section):
    url: str = ""
    api_key_env: str = ""
    # The model name sent to generation.url (Ollama and LM Studio serve several); empty = the first one listed.
    model: str = ""
    temperature: float = Field(0.8, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    time_budget_s: float = Field(60.0, gt=0.0)
    max_context_turns: int = Field(6, ge=0, le=50)
    # Candidates generated per variant (decoded together); the best by the quality checks is shown.
    best_of: int = Field(1, ge=1, le=8)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        if not value:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number from 0 to 65535)
        except ValueError as exc:
            raise ValueError(f"not a URL ({exc}); e.g. http://gpu-box:8000/v1") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://gpu-box:8000/v1")
        return value


class EngineSection(_Section):
    """The in-process engine: continuous batching by default, or the simple one-at-a-time generator."""

    kind: Literal["batching", "simple"] = "batching"
    # auto: bfloat16 where the hardware runs it natively (CUDA; a CPU with AMX or AVX512-BF16), else model.dtype.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_batch: int = Field(16, ge=1, le=512)
    max_queue: int = Field(64, ge=0)
    max_seq_len: int = Field(2048, ge=16)
    prefill_chunk: int = Field(256, ge=1)
    interactive_reserve: int = Field(4, ge=0)
    # int8: Linear weights stored as int8 (a quarter of float32's bytes per token); teacher-forced greedy top-1 agrees
    # with float32 on 95% of tokens with the embedded model on a VNNI CPU, and refinements drift, so it is off unless
    # chosen (docs/benchmarks.md).
    quantize: Literal["none", "int8"] = "none"
    # CPU threads for the model's matrix products; 0 = one per core. On a host whose cores other work keeps busy,
    # fewer threads than cores decode faster (threads that wait on each other spin while the others are descheduled).
    threads: int = Field(0, ge=0, le=256)

    @model_validator(mode="after")
    def _reserve_leaves_room(self) -> EngineSection:
        if self.interactive_reserve >= self.max_batch:
            raise ValueError(
                f"interactive_reserve ({self.interactive_reserve}) must be smaller than max_batch ({self.max_batch})"
            )
        return self


class LimitsSection(_Section):
    max_prompt_chars: int = Field(1000, ge=1)
    max_variants: int = Field(5, ge=1, le=10)
    quota_per_minute: int = Field(20, ge=0)
    stream_edit_interval_s: float = Field(1.0, ge=0.0)


# SQLAlchemy drivers that run under asyncio; the store is async, so a plain `sqlite://` or `postgresql://` is refused.
ASYNC_DRIVERS = frozenset({"aiosqlite", "asyncpg", "psycopg", "psycopg_async", "aiomysql", "asyncmy", "aioodbc"})


class StoreSection(_Section):
    url: str = ""
    # A database host that accepts connections but never answers is reported after this long.
    connect_timeout_s: float = Field(5.0, gt=0.0, le=300.0)
    # Results (and the feedback on them) older than this are deleted; 0 keeps them until the person /forgets.
    retention_days: int = Field(0, ge=0)
    # Engagement signals (replies, reactions, clicks) feed the drops planner for a day or so; 0 keeps them.
    engagement_days: int = Field(90, ge=0)
    # A /mydata file stays on the server this long, for the terminal (which shows its path) to open.
    exports_hours: float = Field(24.0, gt=0.0)

    @field_validator("url")
    @classmethod
    def _url_is_async(cls, value: str) -> str:
        if not value:
            return value
        scheme = value.split("://", 1)[0] if "://" in value else ""
        dialect, _, driver = scheme.partition("+")
        example = "e.g. sqlite+aiosqlite:////path/chorus.db or postgresql+asyncpg://user@host/chorus"
        if not dialect:
            raise ValueError(f"not a database URL; {example}")
        if driver not in ASYNC_DRIVERS:
            raise ValueError(f"{scheme}:// needs an async driver ({', '.join(sorted(ASYNC_DRIVERS))}); {example}")
        return value


class ModerationSection(_Section):
    blocklist: list[str] = Field(default_factory=list)


class TerminalSection(_Section):
    user: str = "you"


class DiscordSection(_Section):
    """The Discord adapter. The token never sits in a config file: it comes from `token_env` or `token_file`."""

    token_env: str = "CHORUS_DISCORD_TOKEN"
    token_file: str = ""
    # None: one gateway connection; a number: AutoShardedClient with that many shards.
    shard_count: int | None = Field(None, ge=1)
    # The shards this process runs (0-based, each below shard_count); empty: all of them. Several processes on one
    # database each take a share of the shards (docs/deployment.md).
    shard_ids: list[int] = Field(default_factory=list)
    api_base_url: str = ""
    gateway_url: str = ""
    sync_guilds: list[str] = Field(default_factory=list)
    message_content_intent: bool = False
    # Interaction tokens live 15 minutes; a job that outlives this is delivered as a channel message instead.
    interaction_token_ttl_s: float = Field(840.0, gt=0.0)
    # If a handler has not answered an interaction by then, the adapter defers it (Discord expires it at 3 s).
    ack_deadline_s: float = Field(2.0, gt=0.0, le=2.9)
    # Defer commands and buttons that generate as soon as they arrive, before discord.py and the core process them.
    defer_on_receipt: bool = True
    reconnect_delay_s: float = Field(5.0, ge=0.0)

    @model_validator(mode="after")
    def _shard_ids_fit(self) -> DiscordSection:
        if not self.shard_ids:
            return self
        if self.shard_count is None:
            raise ValueError("shard_ids needs shard_count: the total number of shards across all processes")
        wrong = sorted({i for i in self.shard_ids if not 0 <= i < self.shard_count})
        if wrong:
            raise ValueError(
                f"shard_ids {wrong} are not shards of shard_count = {self.shard_count} (they count from 0 to "
                f"{self.shard_count - 1})"
            )
        if len(set(self.shard_ids)) != len(self.shard_ids):
            raise ValueError("shard_ids lists a shard twice")
        return self


class SlackSection(_Section):
    """The Slack adapter. Keys ending in `_env` name the environment variable that holds the secret."""

    mode: Literal["socket", "http"] = "socket"
    bot_token_env: str = "CHORUS_SLACK_BOT_TOKEN"
    app_token_env: str = "CHORUS_SLACK_APP_TOKEN"
    signing_secret_env: str = "CHORUS_SLACK_SIGNING_SECRET"
    # Multi-workspace install: OAuth with the installations kept in the Chorus database (HTTP mode only).
    oauth: bool = False
    client_id_env: str = "CHORUS_SLACK_CLIENT_ID"
    client_secret_env: str = "CHORUS_SLACK_CLIENT_SECRET"
    api_base_url: str = "https://slack.com/api/"
    native_streaming: bool = False
    admins: list[str] = Field(default_factory=list)
    command_prefix: str = ""
    host: str = "0.0.0.0"
    port: int = Field(3000, ge=0, le=65535)
    path: str = "/slack/events"

    @model_validator(mode="after")
    def _oauth_needs_http(self) -> SlackSection:
        if self.oauth and self.mode != "http":
            raise ValueError('oauth = true needs mode = "http" (Slack redirects the installing browser to Chorus)')
        return self


def _unicode_emoji(value: str) -> str:
    """Emoji settings hold the emoji itself: reactions reach the core as Unicode, so a name like ':+1:' or 'heart'
    (Slack's spelling) would never match and is refused with what to write instead."""
    if value.strip().isascii():
        raise ValueError(f"write the emoji itself (e.g. 👍), not a name like {value.strip()!r}")
    return value


class BrainstormSection(_Section):
    """Collaborative brainstorming sessions (/brainstorm)."""

    minutes: float = Field(10.0, gt=0.0, le=1440.0)
    rounds: int = Field(2, ge=1, le=10)
    vote_emoji: str = Field("👍", min_length=1)
    self_vote: bool = False
    max_ideas_per_round: int = Field(100, ge=1, le=5000)
    retention_days: int = Field(30, ge=0)
    seed_ideas: int = Field(4, ge=3, le=5)
    yes_and_ideas: int = Field(3, ge=2, le=4)
    max_themes: int = Field(8, ge=2, le=20)
    merge_threshold: float = Field(0.9, gt=0.0, le=1.0)
    embed_chars: int = Field(1000, ge=16)
    # The in-process model also reads each idea as it arrives: a second view for themes (bots.brainstorm.reading).
    model_reads_ideas: bool = True
    # An OpenAI-compatible embeddings service (vLLM, TEI, Ollama, `chorus serve`); empty = the embedded MiniLM.
    embedding_url: str = ""
    embedding_model: str = ""
    embedding_api_key_env: str = ""
    # Or a sentence-transformers model directory on this machine (`chorus pull --embedder …` prints it), run
    # in-process instead of MiniLM; `chorus serve` then serves it at /v1/embeddings.
    embedding_path: str = ""

    @field_validator("vote_emoji")
    @classmethod
    def _vote_emoji_is_unicode(cls, value: str) -> str:
        return _unicode_emoji(value)

    @model_validator(mode="after")
    def _one_embedder(self) -> BrainstormSection:
        if self.embedding_url and self.embedding_path:
            raise ValueError("set embedding_url (a service) or embedding_path (a model on this machine), not both")
        return self


class ExampleSpec(_Section):
    """A few-shot example for a kind: a brief and the answer a good copywriter would give (for one tone, or any)."""

    prompt: str
    answer: str
    tone: str = ""


class KindSpec(_Section):
    """One content kind: how to prompt for it, when to stop, and worked examples that show the model the format."""

    description: str
    system: str
    template: str
    max_new_tokens: int = Field(ge=1, le=4096)
    stop: list[str] = Field(default_factory=list)
    examples: list[ExampleSpec] = Field(default_factory=list)
    # How many examples go into each prompt: those written for the asked tone first, then tone-free ones.
    few_shot: int = Field(2, ge=0, le=8)

    @field_validator("template")
    @classmethod
    def _template_has_prompt(cls, value: str) -> str:
        if "{prompt}" not in value:
            raise ValueError("the template must contain {prompt}")
        return value


# How much each reaction on a drop counts towards its engagement (anything not listed counts 1; 👎 counts against).
# The one definition: the planner and the bench import it, and `[drops.reaction_weights]` replaces it.
DEFAULT_REACTION_WEIGHTS: dict[str, float] = {
    "👍": 1.0,
    "❤️": 2.0,
    "❤": 2.0,
    "🔥": 2.0,
    "😂": 1.5,
    "🎉": 1.5,
    "👀": 0.5,
    "👎": -2.0,
}
DEFAULT_REPLY_WEIGHT = 3.0
DEFAULT_CLICK_WEIGHT = 2.0


class DropsSection(_Section):
    """Scheduled content drops and the engagement planner."""

    # Kinds offered by `/drops enable` by default; names from [drops.kinds] or the top-level [kinds].
    default_kinds: list[str] = Field(default_factory=lambda: ["prompt", "idea", "story", "question"], min_length=1)
    # Drop-only kinds (a writing prompt, a question); the template's {prompt} is the drop's topic.
    kinds: dict[str, KindSpec] = Field(default_factory=dict)
    topics: list[str] = Field(default_factory=lambda: ["everyday life"], min_length=1)
    default_tz: str = "UTC"
    # `--time auto` posts here until the channel's activity says better.
    default_hour: int = Field(18, ge=0, le=23)
    misfire_grace_s: int = Field(3600, ge=1)
    engagement_window_h: float = Field(24.0, gt=0)
    max_attempts: int = Field(4, ge=1, le=20)
    retry_base_s: float = Field(30.0, gt=0)
    admin_channel: str = ""
    similarity_threshold: float = Field(0.9, gt=0.0, le=1.0)
    max_regenerations: int = Field(2, ge=0, le=10)
    leader_poll_s: float = Field(15.0, gt=0)
    tick_s: float = Field(15.0, gt=0)
    reaction_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_REACTION_WEIGHTS))
    reply_weight: float = DEFAULT_REPLY_WEIGHT
    click_weight: float = DEFAULT_CLICK_WEIGHT
    # Retention: finished drop runs older than this many days are deleted (0 keeps them); /stats images are deleted
    # this many hours after they were drawn. Engagement and feedback follow [store] (engagement_days, retention_days).
    keep_runs_days: int = Field(180, ge=0)
    keep_stats_images_h: float = Field(24.0, ge=0)

    @field_validator("default_tz")
    @classmethod
    def _default_tz_is_a_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(available_timezones()), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ValueError(f"not a time zone{hint}; use an IANA name such as Europe/Berlin or UTC") from None
        return value

    @field_validator("reaction_weights")
    @classmethod
    def _weights_are_keyed_by_emoji(cls, value: dict[str, float]) -> dict[str, float]:
        for emoji in value:
            _unicode_emoji(emoji)
        return value


class RefineSection(_Section):
    """The instruction sent to the model for each refinement action."""

    shorter: str = "Make it shorter. Answer with the new version only."
    longer: str = "Make it longer. Answer with the new version only."
    tone: str = "Rewrite it in a {tone} tone. Answer with the new version only."
    more: str = "Write a new one in the same style. Answer with it only."
    free: str = "{instruction}"


class LengthSpec(_Section):
    """One answer length: how much to scale a kind's max_new_tokens by, and a line added to the ask."""

    scale: float = Field(gt=0.0, le=8.0)
    instruction: str = ""


LENGTH_TOKEN_CAP = 4096


class LengthsSection(_Section):
    """`/create ... --length short|medium|long`; medium is today's length, so it scales by 1 and adds nothing."""

    default: Literal["short", "medium", "long"] = "medium"
    short: LengthSpec = LengthSpec(scale=0.5, instruction="Keep it brief.")
    medium: LengthSpec = LengthSpec(scale=1.0)
    long: LengthSpec = LengthSpec(scale=2.0, instruction="Make it rich and detailed.")

    @property
    def names(self) -> tuple[str, ...]:
        return ("short", "medium", "long")

    def get(self, name: str) -> LengthSpec:
        return getattr(self, name)

    def tokens(self, name: str, max_new_tokens: int) -> int:
        """A kind's max_new_tokens at this length, at least 1 and at most LENGTH_TOKEN_CAP."""
        return max(1, min(LENGTH_TOKEN_CAP, round(max_new_tokens * self.get(name).scale)))


class Settings(BaseSettings):
    """Everything Chorus reads from configuration. Build it with load_settings()."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    chorus: ChorusSection = ChorusSection()
    model: ModelSection = ModelSection()
    generation: GenerationSection = GenerationSection()
    engine: EngineSection = EngineSection()
    limits: LimitsSection = LimitsSection()
    store: StoreSection = StoreSection()
    moderation: ModerationSection = ModerationSection()
    terminal: TerminalSection = TerminalSection()
    discord: DiscordSection = DiscordSection()
    slack: SlackSection = SlackSection()
    brainstorm: BrainstormSection = BrainstormSection()
    drops: DropsSection = DropsSection()
    tones: list[str] = Field(default_factory=lambda: ["neutral"], min_length=1)
    kinds: dict[str, KindSpec] = Field(default_factory=dict, min_length=1)
    remix: KindSpec = KindSpec(
        description="rewrite text",
        system="You rewrite text.",
        template="Rewrite in a {tone} tone: {prompt}",
        max_new_tokens=160,
    )
    refine: RefineSection = RefineSection()
    lengths: LengthsSection = LengthsSection()
    sources: tuple[str, ...] = Field(default=(), exclude=True)
    # Dotted key -> where its value came from ("environment variable CHORUS_STORE__URL", a file path).
    origins: dict[str, str] = Field(default_factory=dict, exclude=True)

    @field_validator("tones")
    @classmethod
    def _tones_fit_every_platform(cls, tones: list[str]) -> list[str]:
        for tone in tones:
            if not tone.strip():
                raise ValueError("a tone cannot be empty")
            if len(tone) > MAX_TONE_CHARS:
                raise ValueError(
                    f"the tone {tone!r} is {len(tone)} characters; a tone can be at most {MAX_TONE_CHARS} "
                    "(Discord's remix form takes no more)"
                )
        return tones

    @model_validator(mode="after")
    def _default_drop_kinds_exist(self) -> Settings:
        known = [*self.drops.kinds, *self.kinds]
        unknown = [kind for kind in self.drops.default_kinds if kind not in known]
        if unknown:
            raise ValueError(
                f"{self.origin('drops.default_kinds')}: [drops] default_kinds names {unknown[0]!r}, which is not a "
                f"kind; kinds: {', '.join(known)}"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over files; files arrive as init kwargs from load_settings().
        return (_GivenEnvironment(settings_cls), init_settings)

    @property
    def home_dir(self) -> Path:
        return Path(self.chorus.home).expanduser()

    def origin(self, dotted: str) -> str:
        """Where a setting's value came from, for error messages: a variable, a file, or the defaults."""
        parts = dotted.split(".")
        for depth in range(len(parts), 0, -1):
            found = self.origins.get(".".join(parts[:depth]))
            if found:
                return found
        return f"the defaults ({default_config_path()})"

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite+aiosqlite:///{self.home_dir / 'chorus.db'}"


def default_config_path() -> Path:
    return Path(__file__).with_name("default.toml")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _has_path(data: Mapping[str, Any], loc: tuple[Any, ...]) -> bool:
    node: Any = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True


def _env_name(loc: tuple[Any, ...], env: Mapping[str, str]) -> str | None:
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_DELIMITER.join(str(part) for part in loc[:depth])
        for key in env:
            if key.upper() == name.upper():
                return key
    return None


def _describe(error: Mapping[str, Any], user: Mapping[str, Any], user_path: Path | None, env: Mapping[str, str]) -> str:
    loc = tuple(part for part in error["loc"] if not isinstance(part, int))
    section, key = (loc[:-1], loc[-1]) if len(loc) > 1 else ((), loc[0] if loc else "?")
    dotted = ".".join(str(part) for part in loc)
    env_key = _env_name(loc, env)
    if env_key is not None:
        where = f"environment variable {env_key}"
    elif user_path is not None and _has_path(user, loc):
        where = str(user_path)
    else:
        where = str(default_config_path())
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(section)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.7)
        hint += f". Did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key {dotted!r}{hint}"
    value = error.get("input")
    table = f"[{'.'.join(str(p) for p in section)}] " if section else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:  # a check across sections: its message says where and what
        return message
    if isinstance(value, Mapping):  # a check across one table's keys: the message names them
        prefix = f"{ENV_PREFIX}{ENV_DELIMITER.join(str(part) for part in loc)}{ENV_DELIMITER}".upper()
        where = next((f"environment variable {k}" for k in env if k.upper().startswith(prefix)), where)
        return f"{where}: [{dotted}] {message}"
    return f"{where}: {table}{key} = {value!r} is not allowed: {message}"


def _allowed_keys(section: tuple[Any, ...]) -> list[str]:
    model: Any = Settings
    for part in section:
        fields = getattr(model, "model_fields", {})
        if part in fields:
            model = fields[part].annotation
        elif section and section[0] == "kinds":
            model = KindSpec
        else:
            return []
    return sorted(name for name in getattr(model, "model_fields", {}) if name not in ("sources", "origins"))


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load default.toml, then the user file (argument or CHORUS_CONFIG), then CHORUS_* variables."""
    env = os.environ if env is None else env
    data = _read_toml(default_config_path())
    user_path = Path(path) if path else (Path(env["CHORUS_CONFIG"]) if env.get("CHORUS_CONFIG") else None)
    user: dict[str, Any] = {}
    sources = [str(default_config_path())]
    if user_path is not None:
        user = _read_toml(user_path)
        data = _merge(data, user)
        sources.append(str(user_path))
    if not data["chorus"].get("home"):
        data["chorus"]["home"] = env.get("CHORUS_HOME") or str(Path.home() / ".cache" / "chorus")
    scoped_env = {key: value for key, value in env.items() if key.upper().startswith(ENV_PREFIX)}
    _check_env_sections(scoped_env)
    origins = {key: str(user_path) for key in _dotted_keys(user)}
    origins |= {_env_dotted(key): f"environment variable {key}" for key in scoped_env if ENV_DELIMITER in key}
    origins |= {key[len(ENV_PREFIX) :].lower(): f"environment variable {key}" for key in scoped_env}
    token = _ENVIRONMENT.set(scoped_env)
    try:
        return Settings(**data, sources=tuple(sources), origins=origins)
    except ValidationError as exc:
        lines = [_describe(error, user, user_path, scoped_env) for error in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
    except SettingsError as exc:
        raise ConfigError(_describe_unparsable(exc, scoped_env)) from None
    finally:
        _ENVIRONMENT.reset(token)


def _env_dotted(key: str) -> str:
    return ".".join(key[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER))


def _dotted_keys(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys.append(dotted)
        if isinstance(value, Mapping):
            keys += _dotted_keys(value, dotted + ".")
    return keys


def _check_env_sections(env: Mapping[str, str]) -> None:
    """A CHORUS_SECTION__KEY variable whose section does not exist is a typo, never silently ignored."""
    sections = sorted(name for name in Settings.model_fields if name not in ("sources", "origins"))
    for key in env:
        if ENV_DELIMITER not in key:
            continue  # CHORUS_TONES, or a secret some `*_env` setting names (CHORUS_DISCORD_TOKEN)
        section = key[len(ENV_PREFIX) :].split(ENV_DELIMITER, 1)[0].lower()
        if section in sections:
            continue
        close = difflib.get_close_matches(section, sections, n=1)
        hint = f"; did you mean {ENV_PREFIX}{close[0].upper()}{ENV_DELIMITER}…?" if close else ""
        raise ConfigError(
            f"environment variable {key}: there is no setting section {section!r}{hint} "
            f"(sections: {', '.join(sections)})"
        )


def _json_shape(path: list[str]) -> str:
    """ "list" or "table" for a setting the environment gives as JSON, "" for a plain value."""
    model: Any = Settings
    annotation: Any = None
    for part in path:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return "table" if getattr(annotation, "__origin__", None) is dict else ""
        annotation = model = fields[part].annotation
    origin = getattr(annotation, "__origin__", None)
    if origin is list:
        return "list"
    if origin is dict or (isinstance(model, type) and issubclass(model, BaseModel)):
        return "table"
    return ""


def _describe_unparsable(exc: SettingsError, env: Mapping[str, str]) -> str:
    """pydantic-settings could not parse a list or table from the environment: name the variable and the fix."""
    for key, value in env.items():
        if key.upper() == ENV_PREFIX + "CONFIG" or key.upper() == ENV_PREFIX + "HOME":
            continue
        try:
            json.loads(value)
        except ValueError:
            path = key[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
            shape = _json_shape(path)
            if f'"{path[0]}"' in str(exc) and shape:
                example = f'["{value}"]' if shape == "list" else '{"name": ...}'
                return (
                    f"environment variable {key}: {value!r} is not JSON; a {shape} set in the environment is "
                    f"JSON, e.g. {key}='{example}'"
                )
    return f"the environment: {exc}"
