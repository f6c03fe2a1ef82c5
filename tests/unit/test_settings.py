"""Settings: read once from the environment, one clear error naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.rate_limit import RateLimit
from router.settings import Settings, SettingsError, normalize_database_url


def test_defaults_when_environment_is_empty() -> None:
    """With nothing set, the contract's defaults apply and no database URL is given."""
    s = Settings.from_env({})
    assert s.database_url is None
    assert s.max_body_bytes == 1_048_576
    assert (s.db_pool_min, s.db_pool_max) == (2, 16)
    assert (s.log_level, s.log_format) == ("info", "json")
    assert s.dlq_max_replays == 5
    assert s.routes_file is None
    assert s.sender_rate_limit is None


def test_sender_rate_limit_and_burst() -> None:
    """SENDER_RATE_LIMIT per second or minute; the burst defaults to one second's worth."""
    assert Settings.from_env({"SENDER_RATE_LIMIT": "6000/min"}).sender_rate_limit == RateLimit(
        100.0, 100
    )
    limit = Settings.from_env({"SENDER_RATE_LIMIT": "2/s", "SENDER_RATE_BURST": "10"})
    assert limit.sender_rate_limit == RateLimit(2.0, 10)


def test_keys_are_comma_separated_and_admin_falls_back_to_api_keys() -> None:
    """API_KEY holds several keys; without ADMIN_API_KEY the API keys are the admin keys."""
    s = Settings.from_env({"API_KEY": " a, b ,,c"})
    assert s.api_keys == {"a", "b", "c"}
    assert s.admin_keys == {"a", "b", "c"}
    t = Settings.from_env({"API_KEY": "a", "ADMIN_API_KEY": "root"})
    assert t.admin_keys == {"root"}
    assert t.route_keys == {"a", "root"}


def test_psycopg_prefix_is_accepted() -> None:
    """A postgresql+psycopg:// URL is normalized to what psycopg expects."""
    s = Settings.from_env({"DATABASE_URL": "postgresql+psycopg://u@h:5432/db"})
    assert s.database_url == "postgresql://u@h:5432/db"
    assert s.database_read_url is None
    replica = Settings.from_env({"DATABASE_READ_URL": "postgres://u@replica/db"})
    assert replica.database_read_url == "postgresql://u@replica/db"
    assert normalize_database_url("postgres://x/y") == "postgresql://x/y"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MAX_BODY_BYTES": "lots"}, "MAX_BODY_BYTES"),
        ({"MAX_BODY_BYTES": "0"}, "MAX_BODY_BYTES"),
        ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN"),
        ({"DB_POOL_MIN": "8", "DB_POOL_MAX": "4"}, "DB_POOL_MAX"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"DATABASE_READ_URL": "mysql://x"}, "DATABASE_READ_URL"),
        ({"API_KEY": " , "}, "API_KEY"),
        ({"DLQ_MAX_REPLAYS": "0"}, "DLQ_MAX_REPLAYS"),
        ({"SENDER_RATE_LIMIT": "fast"}, "SENDER_RATE_LIMIT"),
        ({"SENDER_RATE_LIMIT": "5/s", "SENDER_RATE_BURST": "x"}, "SENDER_RATE_BURST"),
    ],
)
def test_malformed_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    """A malformed value raises one error whose message names the variable."""
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert variable in str(info.value)
    assert "\n" not in str(info.value)


def test_server_refuses_to_start_without_api_key() -> None:
    """require_api_key fails when no key is configured and passes when one is."""
    with pytest.raises(SettingsError, match="API_KEY"):
        Settings.from_env({}).require_api_key()
    Settings.from_env({"API_KEY": "k"}).require_api_key()


def test_routes_file_and_log_settings_are_read() -> None:
    """ROUTES_FILE becomes a path; log settings are case-insensitive."""
    s = Settings.from_env(
        {"ROUTES_FILE": "/tmp/r.toml", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "Console"}
    )
    assert s.routes_file == Path("/tmp/r.toml")
    assert (s.log_level, s.log_format) == ("debug", "console")


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start."""
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.max_body_bytes = 1  # type: ignore[misc]
