"""imap channels: checkpoints, fetched messages, health; queue channel and archive

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 02:58:42.731030
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "channel_health",
        sa.Column("channel", sa.String(length=320), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel"),
    )
    op.create_table(
        "imap_checkpoints",
        sa.Column("channel", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("boundary_uid", sa.BigInteger(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", "folder"),
    )
    op.create_table(
        "imap_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("channel", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("queue_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("acked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["inbound_queue.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "channel", "folder", "uidvalidity", "uid", name="uq_imap_messages_channel_uid"
        ),
    )
    with op.batch_alter_table("imap_messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_imap_messages_channel_digest", ["channel", "digest"], unique=False
        )
        batch_op.create_index(
            "ix_imap_messages_channel_message_id", ["channel", "message_id"], unique=False
        )
        batch_op.create_index(
            "ix_imap_messages_pending", ["channel", "folder", "acked"], unique=False
        )

    with op.batch_alter_table("inbound_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=320), nullable=True))
        batch_op.add_column(
            sa.Column("archive", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    """Revert this revision."""
    with op.batch_alter_table("inbound_queue", schema=None) as batch_op:
        batch_op.drop_column("archive")
        batch_op.drop_column("channel")

    with op.batch_alter_table("imap_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_imap_messages_pending")
        batch_op.drop_index("ix_imap_messages_channel_message_id")
        batch_op.drop_index("ix_imap_messages_channel_digest")

    op.drop_table("imap_messages")
    op.drop_table("imap_checkpoints")
    op.drop_table("channel_health")
