"""Opaque page cursors: a kind letter and the last id seen."""

from __future__ import annotations

import base64
import binascii

from core.errors import BadRequest

MAX_ID = 2**31 - 1  # ids are 32-bit integers on PostgreSQL: larger ones cannot be compared


def encode_cursor(last_id: int, kind: str = "a") -> str:
    """Opaque cursor for the next page."""
    return base64.urlsafe_b64encode(f"{kind}:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str = "a") -> int:
    """The id a cursor points after; a malformed cursor is the client's error."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != kind or not value.isdigit():
            raise ValueError(raw)
        last_id = int(value)
        if not 0 < last_id <= MAX_ID:
            raise ValueError(raw)
        return last_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid cursor {cursor!r}: pass back the next_cursor of a previous page") from exc
