"""ARM errors: an HTTP status and the ``{"error": {"code", "message"}}`` body every Azure client parses."""

from __future__ import annotations

import json

from starlette.responses import Response


class ArmError(Exception):
    """A request ARM refuses; rendered as an ARM error body with the status code."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def response(self) -> Response:
        return Response(
            json.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=self.headers,
        )


class OperationError(Exception):
    """Why a long-running operation ended Failed: the ``error`` of its operation status."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def not_allowed(message: str, status: int = 400) -> ArmError:
    return ArmError(status, "OperationNotAllowed", message)
