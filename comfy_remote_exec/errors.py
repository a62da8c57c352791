"""One error family for the whole project.

Every failure that crosses a boundary (HTTP, the wire, the extension's toasts)
is a `RemoteExecError`: it carries a machine-readable `code`, the HTTP `status`
it maps to, whether a retry may help, and the job and node it concerns.
Transport errors are translated into these at one boundary per client, so the
rest of the code never sees a bare httpx or aiohttp exception.
"""

from __future__ import annotations

from typing import Any


class RemoteExecError(Exception):
    """Base error. `retryable` False means the same request will fail again."""

    code = "error"
    status = 500
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retryable: bool | None = None,
        job_id: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        details: dict[str, Any] | None = None,
        log_tail: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retryable is not None:
            self.retryable = retryable
        self.job_id = job_id
        self.node_id = node_id
        self.node_type = node_type
        self.details = details or {}
        self.log_tail = log_tail or []

    def to_dict(self) -> dict[str, Any]:
        """The wire form (see `protocol.ErrorInfo`)."""
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        for key in ("job_id", "node_id", "node_type"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.details:
            out["details"] = self.details
        if self.log_tail:
            out["log_tail"] = self.log_tail
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, status: int | None = None) -> RemoteExecError:
        """The error from its wire form, as the class its code names (when one does)."""
        klass = _BY_CODE.get(str(data.get("code")), cls)
        return klass(
            str(data.get("message") or data.get("code") or "remote error"),
            code=str(data.get("code") or "error"),
            status=status,
            retryable=bool(data.get("retryable", False)),
            job_id=data.get("job_id"),
            node_id=data.get("node_id"),
            node_type=data.get("node_type"),
            details=data.get("details") or {},
            log_tail=list(data.get("log_tail") or []),
        )

    def __str__(self) -> str:
        where = f" (node {self.node_id})" if self.node_id else ""
        return f"{self.message}{where}"


class BadRequest(RemoteExecError):
    """The request itself is wrong; nothing was written."""

    code = "bad_request"
    status = 400


class Unauthorized(RemoteExecError):
    code = "unauthorized"
    status = 401


class NotFound(RemoteExecError):
    code = "not_found"
    status = 404


class Conflict(RemoteExecError):
    code = "conflict"
    status = 409


class PayloadTooLarge(RemoteExecError):
    code = "too_large"
    status = 413


class RemoteUnavailable(RemoteExecError):
    """The remote (or the ComfyUI behind it) cannot answer now; a retry may work."""

    code = "unavailable"
    status = 503
    retryable = True


class JobFailed(RemoteExecError):
    """A job ran and failed: ComfyUI's error, the node, and the log tail."""

    code = "job_failed"
    status = 500


class ConfigError(RemoteExecError):
    """The configuration cannot work: no endpoint, an unknown backend, an unsafe file."""

    code = "config_error"
    status = 500


class ProtocolMismatch(RemoteExecError):
    """The two sides speak different wire protocol versions."""

    code = "protocol_mismatch"
    status = 400


# Codes whose class a receiver may want to catch (`from_dict` rebuilds them).
_BY_CODE: dict[str, type[RemoteExecError]] = {ProtocolMismatch.code: ProtocolMismatch,
                                             "model_conflict": Conflict}
