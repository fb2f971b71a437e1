"""Database URL handling shared by the web app and Alembic's env.py."""

from __future__ import annotations

import os

_DRIVER_SCHEME = "postgresql+psycopg"


def sqlalchemy_url(raw: str | None = None) -> str:
    """Return ``DATABASE_URL`` (or ``raw``) as a SQLAlchemy URL for psycopg 3.

    ``postgres://`` and ``postgresql://`` (the forms libpq, sqlx and most
    platforms hand out) become ``postgresql+psycopg://``; every other part of
    the URL, query parameters included, is kept as is.
    """
    url = raw if raw is not None else os.environ.get("DATABASE_URL", "")
    url = url.strip()
    if not url:
        raise RuntimeError("DATABASE_URL is not set")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RuntimeError("DATABASE_URL is not a URL (expected postgres://...)")
    if scheme in ("postgres", "postgresql", "postgresql+psycopg"):
        return f"{_DRIVER_SCHEME}://{rest}"
    raise RuntimeError(
        f"DATABASE_URL has unsupported scheme {scheme!r} (expected postgres:// or postgresql://)"
    )
