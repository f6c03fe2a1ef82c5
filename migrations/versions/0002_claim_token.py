"""claim token: the outcome and the sweep are compare-and-set on the claim that owns a row

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A random token per claim: the final row replaces a claim only when the token matches,
    # so an outcome can never overwrite a row another request (or the sweeper) now owns.
    op.execute("ALTER TABLE signal_log ADD COLUMN claim_token text")


def downgrade() -> None:
    op.execute("ALTER TABLE signal_log DROP COLUMN claim_token")
