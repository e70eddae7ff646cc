"""Chorus settings: the packaged default.toml, a user TOML file, then CHORUS_* environment variables."""

from config.settings import (
    ConfigError,
    KindSpec,
    Settings,
    default_config_path,
    load_settings,
)

__all__ = ["ConfigError", "KindSpec", "Settings", "default_config_path", "load_settings"]
