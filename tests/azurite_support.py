"""Azurite, Microsoft's Azure Storage emulator, for tests that store flow results in Azure Blob storage.

``make azurite`` (scripts/ensure-azurite.sh) installs a pinned release into .cache/azurite. The module-scoped
fixture ``azurite`` of tests/conftest.py starts its blob service once per test module:

    def test_results_land_in_blob_storage(azurite):
        azurite.create_container("results")
        block = AzureBlobStorageContainer(
            container_name="results",
            credentials=AzureBlobStorageCredentials(connection_string=azurite.connection_string),
        )
        ...
        assert azurite.blob_names("results") == [...]

Azurite listens on a free port of 127.0.0.1 and keeps its data in a temporary folder. It has one account,
``devstoreaccount1``, with a well-known key; Azure SDKs sign requests with it as they would with a real
account's key, and Azurite checks the signature (a wrong key gets 403 AuthenticationFailed).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

from scripts.prefect_postgres import free_port

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BLOB = ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
START_TIMEOUT = 30  # seconds; Azurite answers within one or two on a busy 2-core machine
ACCOUNT = "devstoreaccount1"
# Azurite's documented development key (the same for every installation; not a secret)
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def connection_string(blob_endpoint: str, key: str = ACCOUNT_KEY) -> str:
    """A storage connection string for the emulator's account at ``blob_endpoint``, signed with ``key``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};BlobEndpoint={blob_endpoint};"
    )


class Azurite:
    """One ``azurite-blob`` process. ``connection_string`` reaches it with the right key; ``blob_endpoint`` is
    ``http://127.0.0.1:<port>/devstoreaccount1``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "azurite.log"
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_endpoint)

    def start(self) -> Azurite:
        if not AZURITE_BLOB.exists():
            pytest.fail(f"Azurite is not installed ({AZURITE_BLOB} is missing): run `make azurite`")
        self.port = free_port()
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(AZURITE_BLOB),
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    str(self.port),
                    "--location",
                    str(data),
                    "--skipApiVersionCheck",  # the SDK may be newer than the emulator
                    "--loose",
                    "--silent",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self._wait_until_it_answers()
        return self

    def service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string)

    def create_container(self, name: str) -> None:
        with self.service() as service:
            service.create_container(name)

    def blob_names(self, container: str) -> list[str]:
        with self.service() as service:
            return sorted(b.name for b in service.get_container_client(container).list_blobs())

    def read_blob(self, container: str, name: str) -> bytes:
        with self.service() as service:
            return service.get_blob_client(container, name).download_blob().readall()

    def _wait_until_it_answers(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        seen = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"azurite-blob exited with {self.process.returncode}:\n{self.tail()}")
            try:
                # any HTTP answer means it listens; an unsigned request gets 403
                seen = str(httpx.get(f"{self.blob_endpoint}?comp=list", timeout=2).status_code)
                return
            except httpx.HTTPError as exc:
                seen = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
        self.stop()
        pytest.fail(f"azurite-blob did not answer on {self.blob_endpoint} within {START_TIMEOUT}s ({seen})")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
