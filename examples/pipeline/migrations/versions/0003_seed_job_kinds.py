"""seed job kinds

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 14:31:16.851618

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# A lightweight table description: data migrations must not import the
# application's models, which keep changing after this revision.
JOB_KINDS = sa.table(
    "job_kinds",
    sa.column("code", sa.String),
    sa.column("description", sa.Text),
)

SEED = [
    {"code": "build", "description": "Compile and package the sources"},
    {"code": "test", "description": "Run the test suite"},
    {"code": "deploy", "description": "Roll the package out"},
]


def upgrade() -> None:
    """Insert the seed rows into job_kinds."""
    # Data migration: a plain INSERT (no ON CONFLICT). Running it a second
    # time would violate uq_job_kinds_code, which proves it runs exactly once.
    op.bulk_insert(JOB_KINDS, SEED)


def downgrade() -> None:
    """Remove the seed rows again."""
    op.execute(
        JOB_KINDS.delete().where(JOB_KINDS.c.code.in_([row["code"] for row in SEED]))
    )
