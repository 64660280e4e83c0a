"""Domain errors that carry their HTTP status, so the API maps them without guessing."""

from __future__ import annotations


class DistillguardError(Exception):
    """Base error; `status_code` is what the API answers with."""

    status_code: int = 500
    title: str = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(DistillguardError):
    """A requested resource does not exist."""

    status_code = 404
    title = "Not found"


class BadRequest(DistillguardError):
    """The request is well-formed HTTP but its content is not acceptable."""

    status_code = 400
    title = "Bad request"


class Conflict(DistillguardError):
    """The request conflicts with the current state (e.g. an invalid transition)."""

    status_code = 409
    title = "Conflict"


class InputError(DistillguardError):
    """An input file or option cannot be used (CLI-level)."""

    status_code = 422
    title = "Unprocessable input"


class ModelMismatch(DistillguardError):
    """A saved model artefact does not match the running code's libraries or features."""

    status_code = 409
    title = "Model artefact mismatch"


class Unauthorized(DistillguardError):
    """No API key, or a key that is unknown or revoked."""

    status_code = 401
    title = "Unauthorized"


class Forbidden(DistillguardError):
    """The API key is valid but its scope does not allow this operation."""

    status_code = 403
    title = "Forbidden"


class TooManyRequests(DistillguardError):
    """The API key has used up its request budget; retry after `retry_after` seconds."""

    status_code = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = retry_after
