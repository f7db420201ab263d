"""An environment's operations indexed by when they started: the newest operation (the
dashboard's overview, the last drill, history) is read from the index's end, not found by
sorting every operation the environment ever had.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_operations_project_env", table_name="operations")
    op.create_index("ix_operations_project_env_started", "operations", ["project", "env", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_operations_project_env_started", table_name="operations")
    op.create_index("ix_operations_project_env", "operations", ["project", "env"])
