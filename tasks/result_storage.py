"""The pre-flight check of result storage: can this run write and read its results?

Prefect persists a run's result only when the run ends, and each task's result when the task ends. With a
result storage block that cannot be used (a container that does not exist, a refused key, an account
that cannot be reached), that write fails after the nodes were rebooted, and the fleet flow cannot read
the run's report. So the flows check the storage first: they write a small probe object and read it back,
before their first request to a cluster. A problem fails the run with one line that names the block and
the cause.

The check runs only when a block is the default result storage (``PREFECT_DEFAULT_RESULT_STORAGE_BLOCK``
or the server's default). Local files, Prefect's own default, need no check. The probe has one fixed
name, so each run overwrites it: the container holds one probe object, never more.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from io import BytesIO
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from prefect.filesystems import LocalFileSystem, WritableFileSystem
from prefect.results import aget_default_result_storage
from prefect.settings import get_current_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from aksmaint.errors import MaintenanceError

PROBE = "aksmaint-result-storage-probe"
ATTEMPTS = 3  # a connection that fails three times, a second apart, fails the check
RETRY_SECONDS = 1.0
OVERWRITE: dict[str, Any] = {"overwrite": True}  # prefect-azure's kwargs are typed as dicts


class ResultStorageError(MaintenanceError):
    """The default result storage block cannot be loaded, written or read."""


async def acheck_result_storage() -> None:
    """Raise ResultStorageError when the default result storage block cannot store this run's results."""
    name = get_current_settings().results.default_storage_block or "the server's default"
    storage = await aget_default_result_storage()  # Prefect itself fails a run whose block does not exist
    if isinstance(storage, LocalFileSystem):
        return
    probe = f"written by a flow run at {datetime.now(UTC).isoformat(timespec='seconds')}".encode()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            read = await write_and_read(storage, probe)
            break
        except Exception as exc:
            if attempt == ATTEMPTS or not isinstance(
                azure_error(exc), (ServiceRequestError, ServiceResponseError)
            ):
                raise ResultStorageError(f"result storage {name}: {storage_problem(storage, exc)}") from exc
            await asyncio.sleep(RETRY_SECONDS)
    if read != probe:
        raise ResultStorageError(f"result storage {name}: the probe object read back is not what was written")


async def write_and_read(storage: WritableFileSystem, probe: bytes) -> bytes:
    """Write the probe object and read it back. The Azure SDK would retry a connection for a minute with its
    own backoff; the probe tries once per attempt (``retry_total=0``), so a wrong address fails in seconds."""
    # prefect-azure takes a second and a half to import: only a storage loaded from its block has it loaded
    azure = sys.modules.get("prefect_azure.blob_storage")
    if azure is None or not isinstance(storage, azure.AzureBlobStorageContainer):
        await storage.write_path(PROBE, probe)
        return await storage.read_path(PROBE)
    once: dict[str, Any] = {"retry_total": 0}
    await storage.upload_from_file_object(BytesIO(probe), PROBE, **once, **OVERWRITE)
    read = BytesIO()
    await storage.download_object_to_file_object(PROBE, read, **once)
    return read.getvalue()


def check_result_storage() -> None:
    """``acheck_result_storage`` for the synchronous flows."""
    run_coro_as_sync(acheck_result_storage())


def storage_problem(storage: WritableFileSystem, exc: BaseException) -> str:
    """What went wrong, in a few words. The Azure SDK's error is found in the exception's chain (prefect-azure
    wraps some in a RuntimeError)."""
    container = getattr(storage, "container_name", "")
    cause = azure_error(exc)
    if isinstance(cause, HttpResponseError) and cause.status_code:
        code = error_code(cause)
        status = f"{cause.status_code} {code}".strip()
        if code == "ContainerNotFound":
            return f"container {container!r} does not exist"
        # Azure says AuthenticationFailed for a wrong key; Azurite says AuthorizationFailure with Azure's text
        if code == "AuthenticationFailed" or "failed to authenticate" in str(cause.message):
            return f"the account key was refused ({status})"
        if cause.status_code == 403:
            return f"access to container {container!r} was refused ({status})"
        return f"the storage account answered {status}"
    if isinstance(cause, ClientAuthenticationError):  # no status: no token could be had
        return f"no Azure credential for the storage account: {first_line(cause)}"
    if isinstance(cause, (ServiceRequestError, ServiceResponseError)):
        return f"the storage account cannot be reached: {first_line(cause)}"
    return f"{type(exc).__name__}: {first_line(exc)}"


def error_code(error: HttpResponseError) -> str:
    """The storage service's error code (the SDK gives a StorageErrorCode, a string or nothing)."""
    code = getattr(error, "error_code", None)
    return str(getattr(code, "value", code) or "")


def azure_error(exc: BaseException) -> BaseException:
    """The first Azure SDK error in the chain of causes, else ``exc`` itself."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (HttpResponseError, ServiceRequestError, ServiceResponseError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return exc


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
