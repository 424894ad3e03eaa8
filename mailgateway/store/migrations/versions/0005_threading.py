"""threading: subject keys, content hashes, auto-reply reasons, bounces, delivery status

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 03:04:27.390463
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_key", sa.String(length=255), nullable=True))
        batch_op.create_index(
            "ix_conversations_subject", ["inbox", "contact_id", "subject_key"], unique=False
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("content_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("thread_detail", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("auto_reasons", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("bounce", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("delivery_status", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch_op.create_index(
            "uq_messages_inbox_content_hash", ["inbox", "content_hash"], unique=True
        )

    # Intake lower-cases recipient addresses, so reply tokens are lower-case from now on.
    op.execute(sa.text("UPDATE conversations SET reply_token = lower(reply_token)"))


def downgrade() -> None:
    """Revert this revision (reply tokens stay lower-case)."""
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("uq_messages_inbox_content_hash")
        batch_op.drop_column("delivery_error")
        batch_op.drop_column("delivery_status")
        batch_op.drop_column("bounce")
        batch_op.drop_column("auto_reasons")
        batch_op.drop_column("thread_detail")
        batch_op.drop_column("content_hash")

    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_index("ix_conversations_subject")
        batch_op.drop_column("subject_key")
