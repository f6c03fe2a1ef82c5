"""Alembic environment: raw SQL migrations, URL from the router's settings, never alembic.ini."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from router.embedded_db import resolve_database_url
from router.settings import Settings


def _url() -> str:
    # A caller (router migrate, the tests) may hand the URL over explicitly.
    given = context.config.attributes.get("database_url")
    url = given if isinstance(given, str) else resolve_database_url(Settings.from_env())
    return "postgresql+psycopg://" + url.removeprefix("postgresql://")


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=None, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
