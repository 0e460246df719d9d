"""Domain errors. Views and the API turn them into HTTP answers; services raise them."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, *, details: list[dict] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class Invalid(DomainError):
    """Bad input: the message says what; `details` lists every problem (with line numbers)."""

    status_code = 400


class Forbidden(DomainError):
    status_code = 403


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The request raced something: an expired lease, a task already submitted or re-leased."""

    status_code = 409


class TooLarge(DomainError):
    status_code = 413
