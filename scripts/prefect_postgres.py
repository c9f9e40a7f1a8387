"""A local PostgreSQL and a Prefect server that uses it: the production shape, on one machine.

Prefect's default SQLite database is for trying things out. With about ten node runs writing at once
it answers 503 "database is locked". This module starts a private PostgreSQL cluster in a folder of
its own, creates the `prefect` database and user, and runs `prefect server start` against it.

As a command (what `make prefect-server` runs), it stays in the foreground until Ctrl-C:

    python scripts/prefect_postgres.py [--dir .cache/postgres] [--port 4200]

From Python (the e2e tests do this):

    with PostgresPrefect(workdir) as server:
        print(server.api_url)

PostgreSQL refuses to run as root, so as root its programs run as the `postgres` user, which must
own the data folder and be able to reach it.
"""

from __future__ import annotations

import argparse
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tasks.prefect_api import server_environment

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = ROOT / ".cache" / "postgres"
DATABASE = "prefect"
DB_USER = "prefect"
SERVICE_USER = "postgres"


def free_port() -> int:
    """A TCP port nobody listens on right now, so that parallel sessions do not collide."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir() -> Path:
    """Where initdb and pg_ctl live: Debian puts them under /usr/lib/postgresql/<version>/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(versions)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise FileNotFoundError("PostgreSQL server programs not found: run scripts/ensure-postgres.sh")


def prefect_cli() -> str:
    """The `prefect` command of the running interpreter's environment, so that versions match."""
    beside = Path(sys.executable).with_name("prefect")
    if beside.is_file():
        return str(beside)
    found = shutil.which("prefect")
    if not found:
        raise FileNotFoundError("the prefect command is not installed")
    return found


def stop_process_group(
    proc: subprocess.Popen, timeout: float = 20, signals: Sequence[int] = (signal.SIGTERM, signal.SIGKILL)
) -> None:
    """Send the process group we started each of ``signals`` in turn (SIGTERM, then SIGKILL what is left),
    waiting up to ``timeout`` seconds after each."""
    for sig in signals:
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue


class LocalPostgres:
    """A private PostgreSQL cluster in ``workdir``: data in ``data/``, socket in ``run/``, log in ``postgres.log``."""

    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None):
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password or secrets.token_urlsafe(18)
        self.bindir = postgres_bindir()
        self.data = workdir / "data"
        self.sockets = workdir / "run"
        self.log = workdir / "postgres.log"

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's server takes in PREFECT_API_DATABASE_CONNECTION_URL."""
        return f"postgresql+asyncpg://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def _as_owner(self, *args: str) -> list[str]:
        """The command run as the data folder's owner: initdb and pg_ctl refuse to run as root."""
        if os.geteuid() != 0:
            return list(args)
        return ["runuser", "-u", SERVICE_USER, "--", *args]

    def _run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            self._as_owner(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,  # Ctrl-C in the terminal must not reach PostgreSQL directly
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}):\n{result.stderr[-2000:]}")
        return result.stdout

    def _pg_ctl(self, *args: str) -> list[str]:
        return [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]

    def _prepare_folders(self) -> None:
        """Create the folders and hand them to the postgres user (when we are root)."""
        self.sockets.mkdir(parents=True, exist_ok=True)
        self.data.mkdir(parents=True, exist_ok=True)
        self.data.chmod(0o700)  # initdb and the server insist on it
        if os.geteuid() == 0:
            user = pwd.getpwnam(SERVICE_USER)
            for path in (self.workdir, self.data, self.sockets):
                os.chown(path, user.pw_uid, user.pw_gid)
            probe = subprocess.run(self._as_owner("test", "-w", str(self.data)), check=False)
            if probe.returncode != 0:
                raise PermissionError(
                    f"the {SERVICE_USER} user cannot reach {self.data}: pick a folder whose parents it can enter"
                )

    def _initdb(self) -> None:
        """Create the cluster once; a data folder that already has one is reused as it is."""
        if (self.data / "PG_VERSION").exists():
            return
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "--username=postgres",
            "--auth-local=trust",  # only the socket in our own folder: the superuser sets things up
            "--auth-host=scram-sha-256",  # TCP, which Prefect uses, needs the password
            "--encoding=UTF8",
            "--no-instructions",
        )

    def start(self) -> None:
        """Start the server on 127.0.0.1, then make sure the database and its user exist."""
        self._prepare_folders()
        self._initdb()
        self.stop()  # a server an earlier, killed session left behind: its port is not ours to know
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.sockets}",
                "-c synchronous_commit=off",  # a local server: faster writes, a crash loses the last few
            )
        )
        self._run(*self._pg_ctl("-l", str(self.log), "-w", "-o", options, "start"))
        self._create_database()

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Run SQL as the superuser over the private socket; unaligned rows, ``|`` between columns."""
        return self._run(
            str(self.bindir / "psql"),
            "-h",
            str(self.sockets),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-XAtq",
            "-c",
            sql,
        )

    def _create_database(self) -> None:
        """The user gets this run's password every start, so a reused folder needs no stored secret."""
        has_user = self.psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{DB_USER}'", database="postgres")
        verb = "ALTER" if has_user.strip() else "CREATE"
        self.psql(f"{verb} ROLE {DB_USER} LOGIN PASSWORD '{self.password}'", database="postgres")
        has_db = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'", database="postgres")
        if not has_db.strip():
            self.psql(f"CREATE DATABASE {DATABASE} OWNER {DB_USER}", database="postgres")

    def running(self) -> bool:
        """Whether pg_ctl sees a server on our data folder."""
        if not (self.data / "postmaster.pid").exists():
            return False
        status = subprocess.run(
            self._as_owner(*self._pg_ctl("status")),
            capture_output=True,
            check=False,
        )
        return status.returncode == 0

    def stop(self) -> None:
        """Fast shutdown: open connections are closed, committed data stays."""
        if self.running():
            self._run(*self._pg_ctl("-m", "fast", "-w", "stop"))


class PostgresPrefect:
    """A Prefect server on a local PostgreSQL; ``workdir=None`` uses a temporary folder removed on stop."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        server_log: Path | None = None,
        cwd: Path = ROOT,
    ):
        self._temporary = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="prefect-postgres-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.postgres = LocalPostgres(self.workdir)
        self.port = port or free_port()
        self.env = dict(os.environ if env is None else env)
        self.server_log = server_log or self.workdir / "prefect-server.log"
        self.cwd = cwd
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The value to export as PREFECT_API_URL."""
        return f"{self.url}/api"

    def server_env(self) -> dict[str, str]:
        """The server's environment: the caller's, plus the database URL and the task-run recorder's
        batching (``tasks.prefect_api.SERVER_RECORDER_SETTINGS``)."""
        return {
            **server_environment(self.env),
            "PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": self.env.get("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        }

    def start(self, timeout: float = 180) -> str:
        """Start PostgreSQL, then the Prefect server; the API URL once /api/health answers."""
        self.postgres.start()
        try:
            self.start_server(timeout)
        except BaseException:
            self.stop()
            raise
        return self.api_url

    def start_server(self, timeout: float = 180) -> None:
        """Start `prefect server start` on our port and wait until it is healthy."""
        log = self.server_log.open("a")
        self.process = subprocess.Popen(
            [prefect_cli(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.server_env(),
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own copy
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=5) as http:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    raise RuntimeError(f"prefect server exited:\n{self.server_log.read_text()[-3000:]}")
                try:
                    if http.get(f"{self.api_url}/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"prefect server did not answer within {timeout}s; see {self.server_log}")

    def stop_server(self) -> None:
        """SIGTERM the Prefect server; PostgreSQL keeps running."""
        if self.process is not None:
            stop_process_group(self.process)
            self.process = None

    def restart_server(self, down_seconds: float = 0, timeout: float = 180) -> None:
        """Stop the Prefect server, stay down for ``down_seconds``, start it on the same port and database."""
        self.stop_server()
        time.sleep(down_seconds)
        self.start_server(timeout)

    def stop(self) -> None:
        """Stop the server, then PostgreSQL; a temporary folder goes too."""
        self.stop_server()
        self.postgres.stop()
        if self._temporary:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresPrefect:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run PostgreSQL and the Prefect server in the foreground until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="PostgreSQL's folder (reused)")
    parser.add_argument("--port", type=int, default=4200, help="the Prefect server's port")
    args = parser.parse_args(argv)
    server = PostgresPrefect(args.dir.resolve(), port=args.port)
    # Ctrl-C even when started in the background (where SIGINT is ignored), and SIGTERM: the finally runs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.start()
        print(f"Prefect server on PostgreSQL (data in {server.workdir}). In another shell:", flush=True)
        print(f"  export PREFECT_API_URL={server.api_url}", flush=True)
        print(f"UI: {server.url}   log: {server.server_log}   Ctrl-C stops both.", flush=True)
        assert server.process is not None
        return server.process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
