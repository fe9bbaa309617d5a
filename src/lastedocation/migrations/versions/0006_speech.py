"""speech: datasets and models have a kind (text or speech)

A speech dataset is an archive of audio files with their transcripts; a speech model
is a Whisper model (CTranslate2 for serving, Transformers for fine-tuning). Every row
stored before this revision is text.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name in ("datasets", "models"):
        with op.batch_alter_table(name) as table:
            table.add_column(
                sa.Column("kind", sa.String(16), nullable=False, server_default="text")
            )


def downgrade() -> None:
    for name in ("datasets", "models"):
        with op.batch_alter_table(name) as table:
            table.drop_column("kind")
