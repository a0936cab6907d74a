"""Settings: what start-up refuses, with one line naming the variable."""

from __future__ import annotations

import pytest


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


def test_following_tryton_inside_serve_needs_the_tryton_erp_and_a_sane_interval() -> None:
    from pydantic import ValidationError

    from runtime.settings import Settings

    assert Settings().tryton_follow is False  # off unless asked for
    with pytest.raises(ValidationError, match="CROSSDOCK_TRYTON_FOLLOW needs CROSSDOCK_ERP=tryton"):
        Settings(tryton_follow=True)
    with pytest.raises(ValidationError, match="tryton_follow_s"):
        Settings(erp="tryton", tryton_follow=True, tryton_follow_s=0)
    on = Settings(erp="tryton", tryton_follow=True, tryton_follow_s=0.5)
    assert (on.tryton_follow, on.tryton_follow_s) == (True, 0.5)


def test_the_follow_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.settings import Settings

    monkeypatch.setenv("CROSSDOCK_ERP", "tryton")
    monkeypatch.setenv("CROSSDOCK_TRYTON_FOLLOW", "true")
    monkeypatch.setenv("CROSSDOCK_TRYTON_FOLLOW_S", "3")
    s = Settings()
    assert (s.tryton_follow, s.tryton_follow_s) == (True, 3.0)
