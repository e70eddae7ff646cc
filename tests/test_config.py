"""Configuration: defaults, a user file, environment overrides, and errors that say where and what."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from config import ConfigError, load_settings
from generation.models import ModelSpec

KINDS = ["slogan", "tagline", "tweet", "post", "headline", "story", "poem", "lyrics", "ad", "names", "outline"]


def test_defaults_have_every_content_kind_with_a_template() -> None:
    settings = load_settings(env={})
    for kind in [*KINDS, "description"]:
        spec = settings.kinds[kind]
        assert "{prompt}" in spec.template and spec.system and spec.max_new_tokens > 0


def test_home_defaults_to_chorus_home_and_the_store_lives_there(tmp_path: Path) -> None:
    settings = load_settings(env={"CHORUS_HOME": str(tmp_path)})
    assert settings.home_dir == tmp_path
    assert settings.store_url == f"sqlite+aiosqlite:///{tmp_path / 'chorus.db'}"


def test_user_file_overrides_one_key_of_a_kind_and_adds_a_kind(tmp_path: Path) -> None:
    user = tmp_path / "chorus.toml"
    user.write_text(
        '[kinds.slogan]\nmax_new_tokens = 12\n\n[kinds.haiku]\ndescription = "a haiku"\nsystem = "You write haiku."\n'
        'template = "A haiku about {prompt}"\nmax_new_tokens = 30\n'
    )
    settings = load_settings(user, env={})
    assert settings.kinds["slogan"].max_new_tokens == 12
    assert settings.kinds["slogan"].system.startswith("You are a sharp copywriter")  # the rest is kept
    assert settings.kinds["haiku"].description == "a haiku"


def test_config_file_comes_from_chorus_config_and_env_beats_it(tmp_path: Path) -> None:
    user = tmp_path / "chorus.toml"
    user.write_text("[limits]\nmax_prompt_chars = 300\nmax_variants = 4\n")
    settings = load_settings(env={"CHORUS_CONFIG": str(user), "CHORUS_LIMITS__MAX_PROMPT_CHARS": "200"})
    assert settings.limits.max_prompt_chars == 200
    assert settings.limits.max_variants == 4


def test_wrong_type_names_the_file_the_key_the_value_and_what_is_allowed(tmp_path: Path) -> None:
    user = tmp_path / "bad.toml"
    user.write_text('[limits]\nmax_variants = "five"\n\n[model]\ndevice = "tpu"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(user, env={})
    message = str(caught.value)
    assert f"{user}: [limits] max_variants = 'five'" in message and "valid integer" in message
    assert f"{user}: [model] device = 'tpu'" in message and "'cpu', 'cuda' or 'auto'" in message


def test_a_tone_too_long_for_discords_remix_form_is_named_at_load(tmp_path: Path) -> None:
    long = "cheerful but still businesslike and a little bit cheeky"  # 55 characters
    user = tmp_path / "chorus.toml"
    user.write_text(f'tones = ["neutral", "{long}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(user, env={})
    message = str(caught.value)
    assert str(user) in message and repr(long) in message and "at most 40" in message
    with pytest.raises(ConfigError, match="a tone cannot be empty"):
        load_settings(env={"CHORUS_TONES": '["neutral", " "]'})
    assert load_settings(env={"CHORUS_TONES": json.dumps(["x" * 40])}).tones == ["x" * 40]


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"environment variable CHORUS_GENERATION__TOP_P: .*top_p = '7'"):
        load_settings(env={"CHORUS_GENERATION__TOP_P": "7"})


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    user = tmp_path / "typo.toml"
    user.write_text("[model]\ndevcie = 'cpu'\n")
    with pytest.raises(
        ConfigError, match=r"unknown key 'model.devcie'; allowed keys here: device, dtype, path, source"
    ):
        load_settings(user, env={})


def test_a_misspelt_section_gets_the_closest_one_and_no_internal_names(tmp_path: Path) -> None:
    # `[limts]` listed "origins" (bookkeeping, not a setting) among the allowed keys, and suggested nothing.
    user = tmp_path / "typo.toml"
    user.write_text("[limts]\nmax_variants = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(user, env={})
    message = str(caught.value)
    assert message.endswith("Did you mean 'limits'?") and "origins" not in message and "sources" not in message


def test_lengths_are_configurable_and_typos_in_them_list_the_allowed_keys(tmp_path: Path) -> None:
    settings = load_settings(env={"CHORUS_LENGTHS__SHORT__SCALE": "0.25"})
    assert settings.lengths.tokens("short", 100) == 25 and settings.lengths.tokens("long", 3000) == 4096
    assert settings.lengths.default == "medium" and settings.lengths.medium.instruction == ""
    user = tmp_path / "lengths.toml"
    user.write_text("[lengths.tiny]\nscale = 0.1\n\n[lengths.long]\nscael = 3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(user, env={})
    message = str(caught.value)
    assert "unknown key 'lengths.tiny'; allowed keys here: default, long, medium, short" in message
    assert "unknown key 'lengths.long.scael'; allowed keys here: instruction, scale" in message
    user.write_text('[lengths]\ndefault = "huge"\n')
    with pytest.raises(
        ConfigError, match=r"\[lengths\] default = 'huge' is not allowed: .*'short', 'medium' or 'long'"
    ):
        load_settings(user, env={})


def test_template_without_prompt_placeholder_is_refused(tmp_path: Path) -> None:
    user = tmp_path / "kind.toml"
    user.write_text("[kinds.slogan]\ntemplate = 'Write a slogan'\n")
    with pytest.raises(ConfigError, match=r"\[kinds.slogan\] template = 'Write a slogan'.*must contain \{prompt\}"):
        load_settings(user, env={})


def test_a_misspelt_default_drop_time_zone_is_named_at_load(tmp_path: Path) -> None:
    # Before: accepted, and every `/drops enable` then told the moderator "Unknown time zone 'Europe/Berln'".
    user = tmp_path / "chorus.toml"
    user.write_text('[drops]\ndefault_tz = "Europe/Berln"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(user, env={})
    assert str(caught.value) == (
        f"{user}: [drops] default_tz = 'Europe/Berln' is not allowed: not a time zone (did you mean Europe/Berlin?); "
        "use an IANA name such as Europe/Berlin or UTC"
    )
    assert load_settings(env={"CHORUS_DROPS__DEFAULT_TZ": "America/New_York"}).drops.default_tz == "America/New_York"


def test_a_default_drop_kind_that_is_not_a_kind_is_named_at_load() -> None:
    # Before: accepted, and every `/drops enable` without --kinds was refused with "Unknown kind 'sonnet'".
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"CHORUS_DROPS__DEFAULT_KINDS": '["poem", "sonnet"]'})
    message = str(caught.value)
    assert message.startswith("environment variable CHORUS_DROPS__DEFAULT_KINDS: [drops] default_kinds names 'sonnet'")
    assert "which is not a kind; kinds: prompt, idea, question, slogan" in message and "\n" not in message


def test_a_check_across_a_tables_keys_names_them_without_printing_the_table() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"CHORUS_ENGINE__MAX_BATCH": "2"})
    # Before: "…default.toml: engine = {'kind': 'batching', 'dtype': 'auto', …} is not allowed: interactive_reserve…"
    assert str(caught.value) == (
        "environment variable CHORUS_ENGINE__MAX_BATCH: [engine] interactive_reserve (4) must be smaller than "
        "max_batch (2)"
    )


def test_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[limits\n")
    with pytest.raises(ConfigError, match=f"{broken}: not valid TOML"):
        load_settings(broken, env={})


async def test_engine_quantize_reaches_the_engine_and_a_wrong_value_names_the_choices(
    embedded_spec: ModelSpec,
) -> None:
    with pytest.raises(ConfigError, match=r"CHORUS_ENGINE__QUANTIZE.*int4.*none.*int8"):
        load_settings(env={"CHORUS_ENGINE__QUANTIZE": "int4"})
    from chorus.compose import build_generator

    env = {"CHORUS_ENGINE__QUANTIZE": "int8", "CHORUS_MODEL__PATH": str(embedded_spec.path)}
    engine = build_generator(load_settings(env=env))
    try:
        await engine.warmup()
        detail = (await engine.health()).detail
        if "int8 weights" not in detail:
            pytest.skip("this torch has no quantized CPU engine")
        # dtype "auto" with int8 on a CPU is float32 (int8 layers take and give float32), whatever the CPU.
        assert "(float32, int8 weights)" in detail
    finally:
        await engine.close()


async def test_engine_threads_sets_the_cpu_threads_the_model_runs_on(embedded_spec: ModelSpec) -> None:
    import torch

    with pytest.raises(ConfigError, match=r"CHORUS_ENGINE__THREADS.*greater than or equal to 0"):
        load_settings(env={"CHORUS_ENGINE__THREADS": "-1"})
    from chorus.compose import build_generator

    before = torch.get_num_threads()
    env = {"CHORUS_ENGINE__THREADS": "1", "CHORUS_MODEL__PATH": str(embedded_spec.path)}
    engine = build_generator(load_settings(env=env))
    try:
        await engine.warmup()
        assert f"({engine.dtype}), 1 thread;" in (await engine.health()).detail  # dtype: what this CPU runs
    finally:
        await engine.close()
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", [":+1:", "thumbsup", "+1"])
def test_emoji_settings_take_the_emoji_and_a_name_says_what_to_write(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"CHORUS_BRAINSTORM__VOTE_EMOJI.*write the emoji itself \(e.g. 👍\)"):
        load_settings(env={"CHORUS_BRAINSTORM__VOTE_EMOJI": name})
    user = tmp_path / "weights.toml"
    user.write_text(f'[drops.reaction_weights]\n"{name}" = 2.0\n')
    with pytest.raises(ConfigError, match=r"write the emoji itself"):
        load_settings(user, env={})
    assert load_settings(env={"CHORUS_BRAINSTORM__VOTE_EMOJI": "🎉"}).brainstorm.vote_emoji == "🎉"
