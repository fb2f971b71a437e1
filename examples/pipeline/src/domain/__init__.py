"""Domain layer of the pipeline example: SQLAlchemy models and DB settings."""

from domain.database import sqlalchemy_url
from domain.models import Base, Job, JobKind, metadata

__all__ = ["Base", "Job", "JobKind", "metadata", "sqlalchemy_url"]
