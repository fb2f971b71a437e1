"""FastAPI app of the pipeline example.

Run from examples/pipeline::

    uvicorn app.main:app --app-dir src --host 127.0.0.1 --port 8000

The database URL comes from ``DATABASE_URL``. The engine is created on first
use, so importing this module never connects to the database.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, create_engine, make_url, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from domain import JobKind, sqlalchemy_url

# uvicorn configures this logger, so warnings show up in its output.
log = logging.getLogger("uvicorn.error")

app = FastAPI(title="pipeline")

_engine: Engine | None = None
_engine_lock = threading.Lock()


def get_engine() -> Engine:
    """Return the process-wide engine, creating it on first call."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                url = make_url(sqlalchemy_url())
                connect_args: dict[str, Any] = {}
                if "connect_timeout" not in url.query:
                    # Fail fast instead of hanging on an unreachable host.
                    connect_args["connect_timeout"] = 5
                _engine = create_engine(
                    url, pool_pre_ping=True, connect_args=connect_args
                )
    return _engine


@app.get("/health")
def health() -> JSONResponse:
    """200 ``{"status": "ok"}`` when ``SELECT 1`` succeeds, 503 otherwise."""
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1")).scalar_one()
    except (SQLAlchemyError, RuntimeError) as exc:
        log.warning("health check failed: %s", exc)
        return JSONResponse(
            status_code=503, content={"status": "unavailable", "error": type(exc).__name__}
        )
    return JSONResponse(status_code=200, content={"status": "ok"})


@app.get("/job-kinds")
def job_kinds() -> list[dict[str, Any]]:
    """The rows of ``job_kinds`` (seeded by migration 0003), ordered by id."""
    with Session(get_engine()) as session:
        rows = session.scalars(select(JobKind).order_by(JobKind.id)).all()
        return [
            {"id": k.id, "code": k.code, "description": k.description} for k in rows
        ]
