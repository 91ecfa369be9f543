"""The project's exceptions: one base, a few specific ones with messages a person can act on."""

from __future__ import annotations


class CitizenLookupError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(CitizenLookupError):
    """A setting is missing or invalid; the message names the setting."""


class CredentialsUnavailable(ConfigurationError):
    """A connection's stored credentials cannot be opened with this process's credentials key.

    The key was rotated on some processes and not others, or the row was sealed under a key
    that is gone: webhooks answer 503 (the provider retries), never 500.
    """


class AuthenticationFailed(CitizenLookupError):
    """A provider request failed authentication; becomes HTTP 403."""


class MalformedPayload(CitizenLookupError):
    """A provider request could not be parsed; becomes HTTP 400."""


class NotFound(CitizenLookupError):
    """A named object (connection, citizen) does not exist."""


class DatabaseError(CitizenLookupError):
    """The database failed during a job; the message names the error, never row values."""


class InvalidStateChange(CitizenLookupError):
    """A connection cannot move from its state to the one asked for."""


class SendError(CitizenLookupError):
    """Sending a reply through a provider failed.

    ``retryable`` is true for 5xx, 429 and network failures (RQ retries the job with backoff);
    false for other 4xx answers, which will not succeed on a second try. ``retry_after`` is the
    provider's ``Retry-After`` (seconds) on a 429 or 503: nothing is sent to it before then.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code
        self.retry_after = retry_after
