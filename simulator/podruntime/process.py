"""One run of a container as a local process, in its own mount and UTS namespaces.

``unshare --mount --uts --propagation private`` gives the process a private mount table and hostname;
a small ``sh`` prelude sets the hostname to the pod's name, bind-mounts the pod's volume folders at
their mount paths (``/var/run/secrets/kubernetes.io/serviceaccount`` and the like, as a container
sees them), changes to the working directory and then ``exec``s the container's command, which keeps
the process id. The image is ignored: the command runs with the project's own programs. Output (stdout
and stderr together) goes to the container's log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from simulator.podruntime.logs import ContainerLog

UNSHARE = ["unshare", "--mount", "--uts", "--propagation", "private", "--"]


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = False


def isolation_problem() -> str | None:
    """Why containers cannot run in their own namespaces here, or None when they can."""
    if shutil.which("unshare") is None:
        return "unshare is not installed: cannot give the container its own mount and UTS namespaces"
    try:
        probe = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if probe.returncode != 0:
        return f"unshare failed: {probe.stderr.strip() or probe.returncode}"
    return None


def prelude(hostname: str, mounts: list[Mount], working_dir: str) -> str:
    """The shell lines run inside the new namespaces before the container's command."""
    lines = ["set -e", f"hostname {shlex.quote(hostname)}"]
    for mount in mounts:
        target = shlex.quote(mount.target)
        lines += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(mount.source))} {target}"]
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    lines += [f"cd {shlex.quote(working_dir)}", 'exec "$@"']
    return "\n".join(lines)


@dataclass
class ContainerProcess:
    """A started container process: its output pumped into ``log``, its exit awaited with ``wait``."""

    argv: list[str]
    env: dict[str, str]
    hostname: str
    mounts: list[Mount]
    working_dir: str
    log: ContainerLog
    _process: asyncio.subprocess.Process | None = None
    _pump: asyncio.Task | None = None
    signals: list[int] = field(default_factory=list)

    async def start(self) -> None:
        script = prelude(self.hostname, self.mounts, self.working_dir)
        self._process = await asyncio.create_subprocess_exec(
            *UNSHARE,
            "sh",
            "-c",
            script,
            "container",
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # its own process group, so a signal reaches its children too
        )
        self._pump = asyncio.get_running_loop().create_task(self._read_output())

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        while chunk := await self._process.stdout.read(65536):
            self.log.write(chunk)

    async def wait(self) -> int:
        """The exit code as Kubernetes reports it: 128 + the signal for a killed process."""
        assert self._process is not None and self._pump is not None
        code = await self._process.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            # the process group may keep the pipe open after the main process ended
            await asyncio.wait_for(asyncio.shield(self._pump), timeout=2)
        self.log.finish()
        return 128 - code if code < 0 else code

    def send(self, signum: int) -> None:
        """Signal the whole process group; a group already gone is fine."""
        if self._process is None:
            return
        self.signals.append(signum)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def kill(self) -> None:
        self.send(signal.SIGKILL)
