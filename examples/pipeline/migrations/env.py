"""Alembic environment of the pipeline example.

The database URL comes from ``DATABASE_URL`` (``postgres://`` or
``postgresql://``; it is rewritten to ``postgresql+psycopg://``).

No advisory lock is taken here: when run under pgboot, pgboot itself holds
the migration lock while this command runs.
"""

from __future__ import annotations

import sys
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, pool

# alembic.ini's prepend_sys_path covers the usual case (cwd = examples/pipeline);
# this keeps "domain" importable when alembic is run with -c from elsewhere.
_SRC = Path(__file__).resolve().parent.parent / "src"
if str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from domain import metadata, sqlalchemy_url  # noqa: E402

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# For "alembic revision --autogenerate".
target_metadata = metadata


def run_migrations_offline() -> None:
    """Emit SQL to stdout ("alembic upgrade head --sql") without connecting."""
    # Only the dialect matters offline; a URL is optional here.
    try:
        url = sqlalchemy_url()
    except RuntimeError:
        url = "postgresql+psycopg://"
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )

    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Connect and run the migrations."""
    connectable = create_engine(sqlalchemy_url(), poolclass=pool.NullPool)

    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)

        with context.begin_transaction():
            context.run_migrations()

    connectable.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
