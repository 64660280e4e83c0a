"""Tables the detector writes: alerts, rings and their members (Alembic owns the schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: timestamps must carry a zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


class Alert(Base):
    """One flagged account, from its first flag on; analysts triage it."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_key: Mapped[str] = mapped_column(String(300), unique=True)
    account_id: Mapped[str] = mapped_column(String(128), index=True)
    ring_id: Mapped[str | None] = mapped_column(String(64), index=True)
    score: Mapped[float] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16), index=True)
    status: Mapped[str] = mapped_column(String(32), default="open", index=True)
    action: Mapped[str] = mapped_column(String(16))
    first_flagged_ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    last_scored_ts: Mapped[datetime] = mapped_column(UTCDateTime)
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)


class Ring(Base):
    """A candidate ring of linked, flagged accounts."""

    __tablename__ = "rings"

    ring_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    score: Mapped[float] = mapped_column(Float)
    first_flagged_ts: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    evidence: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now, onupdate=_now)


class RingMember(Base):
    """Membership of an account in a ring."""

    __tablename__ = "ring_members"
    __table_args__ = (Index("ix_ring_members_account_id", "account_id"),)

    ring_id: Mapped[str] = mapped_column(String(64), ForeignKey("rings.ring_id", ondelete="CASCADE"), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(128), primary_key=True)
