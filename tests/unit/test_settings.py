"""Settings: what start-up refuses, with one line naming the variable."""

from __future__ import annotations


def test_production_refuses_the_embedded_redis_and_sqlite_with_one_line_each() -> None:
    import pytest
    from pydantic import ValidationError

    from runtime.settings import Settings

    with pytest.raises(ValidationError, match="needs REDIS_URL"):
        Settings(env="production", database_url="postgresql://db/x")
    with pytest.raises(ValidationError, match="needs DATABASE_URL"):
        Settings(env="production", redis_url="redis://r:6379/0")
    ok = Settings(env="production", redis_url="redis://r:6379/0", database_url="postgresql://db/x")
    assert ok.env == "production"
