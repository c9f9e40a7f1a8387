"""The kubelet part that runs containers as local processes, on a cluster whose scenario says
``runs_pods`` (the management cluster, where the worker's Jobs run).

``PodProcesses`` runs the first container of a pod that has a ``command`` or, with none, ``args``, as an
image whose entrypoint execs its arguments does (``Kubelet`` hands it those pods; other pods stay
simulated there): the pod gets its IP, its volumes are written under the simulator's state folder,
the process starts in its own mount and UTS namespaces, and the pod's phase and container status
follow it. ``restartPolicy`` decides what an exit means; restarts back off as kubelet's do (10 s
doubling to 5 min, times ``time_scale``). A delete or an eviction sends SIGTERM to the process group
and SIGKILL after ``terminationGracePeriodSeconds`` of real time (a real process shuts down in real
time, whatever the scenario's time scale). A pod that leaves the store any other way (node reboot,
node removed, forced delete) has its process killed at once, as a real reboot does.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.controllers.admission import Admission
from simulator.controllers.common import CONFIGMAPS, NAMESPACES, PODS, SECRETS, ContainerStart
from simulator.controllers.pod_status import container_entry, pod_conditions, running_pod, status_with_ip
from simulator.controllers.state import ClusterState
from simulator.hosts import Host, split_host_command
from simulator.k8s.store import now_rfc3339
from simulator.podruntime.env import EnvError, container_env, expand
from simulator.podruntime.logs import PodLogs
from simulator.podruntime.process import ContainerProcess, Mount, isolation_problem
from simulator.podruntime.volumes import Volumes, token_lifetime
from simulator.service_accounts import ServiceAccountIssuer

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BACKOFF_SECONDS, BACKOFF_MAX_SECONDS = 10.0, 300.0


@dataclass
class PodRun:
    """The process side of one started pod."""

    start: ContainerStart
    task: asyncio.Task | None = None
    process: ContainerProcess | None = None
    volumes: Volumes | None = None
    refresh: asyncio.TimerHandle | None = None
    on_exit: list[Callable[[], None]] = field(default_factory=list)


class PodProcesses:
    """Containers as local processes, for the pods of a cluster that runs them.

    ``admission`` publishes the root CA once the runtime is attached; ``service_accounts`` issues the
    tokens of the pods' projected volumes."""

    def __init__(self, state: ClusterState, admission: Admission, service_accounts: ServiceAccountIssuer):
        self.state = state
        self.admission = admission
        self.service_accounts = service_accounts
        self.pod_logs = PodLogs()
        self._runs: dict[str, PodRun] = {}  # pod uid -> its process side
        self._isolation: str | None = None  # why processes cannot be isolated here, once checked
        self._isolation_checked = False
        self.pod_folder: Path | None = None

    def attach_runtime(self, api_port: int, ca_pem: str, state_dir: Path) -> None:
        """Where processes reach the API server, the CA that signed its certificate (published in every
        namespace as ``kube-root-ca.crt``), and the folder pods' volumes are written under."""
        self.state.api_port, self.state.ca_pem, self.pod_folder = api_port, ca_pem, state_dir / "pods"
        for namespace in self.state.store.list(NAMESPACES):
            self.admission.publish_root_ca(namespace["metadata"]["name"])

    def runs_as_process(self, pod: dict) -> bool:
        container = pod["spec"]["containers"][0]
        # no command: the image's entrypoint runs the args (Prefect's images end theirs with exec "$@")
        argv = list(container.get("command") or container.get("args") or [])
        return self.state.scenario.cluster.runs_pods and bool(argv) and split_host_command(argv) is None

    def start_pod(self, pod: dict, host: Host) -> None:
        """Start the pod's process (``runs_as_process`` says it has one)."""
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        run = PodRun(ContainerStart(key, pod["metadata"]["uid"], host, host.boots))
        self._runs[run.start.uid] = run
        run.task = self.state.loop.create_task(self._run_pod(run))

    def stop_processes(self) -> None:
        """Kill every process this cluster started (the simulator is stopping)."""
        for run in self._runs.values():
            if run.refresh is not None:
                run.refresh.cancel()
            if run.process is not None:
                run.process.kill()

    # ---- one pod's life ------------------------------------------------------------------
    async def _run_pod(self, run: PodRun) -> None:
        try:
            await self._run_container(run)
        finally:
            if run.refresh is not None:
                run.refresh.cancel()
            for callback in run.on_exit:
                callback()
            if run.volumes is not None:
                shutil.rmtree(run.volumes.root, ignore_errors=True)

    async def _run_container(self, run: PodRun) -> None:
        if not self._isolation_checked:
            self._isolation = await asyncio.to_thread(isolation_problem)
            if self.pod_folder is None:
                self._isolation = "the simulator's runtime is not attached: no folder for pod volumes"
            self._isolation_checked = True
        pod = running_pod(self.state.store, run.start)
        if pod is None:
            return
        if self._isolation:
            self.state.emit_event(pod, "FailedCreatePodSandBox", self._isolation, "Warning")
            self._write_process_status(pod, "Failed", {"waiting": {"reason": "ContainerCreating"}}, 0)
            return
        pod = self._write_process_status(pod, "Pending", {"waiting": {"reason": "ContainerCreating"}}, 0)
        container = pod["spec"]["containers"][0]
        try:
            assert self.pod_folder is not None
            run.volumes = Volumes(pod, self.pod_folder / run.start.uid, self._lookup, self._token_issuer(pod))
            run.volumes.prepare()
            env = container_env(pod, container, self._lookup, self.state.api_port)
        except EnvError as exc:
            self.state.emit_event(pod, "Failed", f"Error: {exc}", "Warning")
            state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            self._write_process_status(pod, "Pending", state, 0)
            return
        self._schedule_refresh(run)
        restarts, last = 0, dict[str, Any]()
        while (pod := running_pod(self.state.store, run.start)) is not None:
            code, started = await self._run_once(run, pod, container, env, restarts, last)
            pod = running_pod(self.state.store, run.start)
            if pod is None or code is None:
                return
            terminated = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": started,
                "finishedAt": now_rfc3339(),
            }
            policy = pod["spec"].get("restartPolicy", "Always")
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                phase = "Succeeded" if code == 0 else "Failed"
                self._write_process_status(pod, phase, {"terminated": terminated}, restarts)
                return
            delay = min(BACKOFF_SECONDS * 2**restarts, BACKOFF_MAX_SECONDS) * self.state.scale
            waiting = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off restarting {container['name']}",
                }
            }
            self._write_process_status(pod, "Running", waiting, restarts, {"terminated": terminated})
            restarts, last = restarts + 1, {"terminated": terminated}
            await asyncio.sleep(delay)

    async def _run_once(
        self, run: PodRun, pod: dict, container: dict, env: dict[str, str], restarts: int, last: dict
    ) -> tuple[int | None, str]:
        """Start the container once and wait for it; the exit code, or None when it could not start."""
        argv = [
            expand(a, env) for a in list(container.get("command") or []) + list(container.get("args") or [])
        ]
        assert run.volumes is not None
        mounts = [
            Mount(
                run.volumes.folders[m["name"]] / m.get("subPath", ""), m["mountPath"], bool(m.get("readOnly"))
            )
            for m in container.get("volumeMounts") or []
            if m["name"] in run.volumes.folders
        ]
        working_dir = container.get("workingDir") or ""
        process = ContainerProcess(
            argv,
            env,
            pod["metadata"]["name"],
            mounts,
            working_dir if working_dir and Path(working_dir).is_dir() else str(PROJECT_ROOT),
            self.pod_logs.start(run.start.uid, container["name"]),
        )
        started = now_rfc3339()
        try:
            await process.start()
        except OSError as exc:
            self.state.emit_event(pod, "Failed", f"Error: failed to start container: {exc}", "Warning")
            self._write_process_status(
                pod, "Failed", {"waiting": {"reason": "StartError", "message": str(exc)}}, restarts
            )
            return None, started
        run.process = process
        self.state.record(
            "container_started",
            pod["spec"]["nodeName"],
            pod=f"{run.start.key[0]}/{run.start.key[1]}",
            pid=process.pid,
        )
        self._write_process_status(pod, "Running", {"running": {"startedAt": started}}, restarts, last)
        code = await process.wait()
        run.process = None
        self.state.record(
            "container_exited",
            pod["spec"]["nodeName"],
            pod=f"{run.start.key[0]}/{run.start.key[1]}",
            exit_code=code,
        )
        return code, started

    # ---- deletion and removal ------------------------------------------------------------
    def terminate(self, pod: dict, grace: int, finish: Callable[[], None]) -> bool:
        """Stop a pod's process (SIGTERM, SIGKILL after ``grace``), calling ``finish`` when it is gone;
        False when the pod runs none (its end is then simulated)."""
        run = self._runs.get(pod["metadata"]["uid"])
        if run is None or run.process is None:
            return False
        process = run.process
        process.send(signal.SIGTERM)
        killer = self.state.loop.call_later(grace, process.kill)
        run.on_exit += [killer.cancel, finish]
        return True

    def pod_removed(self, uid: str) -> None:
        run = self._runs.pop(uid, None)
        if run is not None and run.process is not None:
            run.process.kill()
        self.pod_logs.forget(uid)

    # ---- volumes and tokens --------------------------------------------------------------
    def _lookup(self, kind: str, namespace: str, name: str) -> dict | None:
        rt = {"Secret": SECRETS, "ConfigMap": CONFIGMAPS}[kind]
        return self.state.store.get(rt, namespace, name)

    def _token_issuer(self, pod: dict) -> Callable[[str | None, int], tuple[str, float]]:
        """Tokens for the pod's service account, bound to the pod and its node. ``expirationSeconds``
        is simulated time, like every duration of the scenario."""
        meta, spec = pod["metadata"], pod["spec"]

        def issue(audience: str | None, expiration: int) -> tuple[str, float]:
            audiences = [audience] if audience else list(self.service_accounts.api_audiences)
            token = self.service_accounts.issue(
                meta["namespace"],
                spec.get("serviceAccountName") or "default",
                audiences,
                expiration * self.state.scale,
                pod_name=meta["name"],
                pod_uid=meta["uid"],
                node_name=spec.get("nodeName"),
            )
            return token, token_lifetime(token)

        return issue

    def _schedule_refresh(self, run: PodRun) -> None:
        """Rewrite the pod's volumes when its first token is due (80 % of its lifetime, at most 24 h)."""
        volumes = run.volumes
        if volumes is None or volumes.refresh_in is None:
            return

        def refresh() -> None:
            if running_pod(self.state.store, run.start) is None:
                return
            with contextlib.suppress(EnvError):
                volumes.prepare()
            self._schedule_refresh(run)

        run.refresh = self.state.loop.call_later(volumes.refresh_in, refresh)

    # ---- status --------------------------------------------------------------------------
    def _write_process_status(
        self, pod: dict, phase: str, state: dict, restarts: int, last_state: dict | None = None
    ) -> dict:
        """The pod's status with its first container in ``state``; the pod IP is given on first write."""
        stamp = now_rfc3339()
        status = status_with_ip(self.state, pod, stamp, host_ips=True)
        running = "running" in state
        status["phase"] = phase
        status["conditions"] = pod_conditions(running, stamp, sandbox=True)
        container = pod["spec"]["containers"][0]
        previous = (status.get("containerStatuses") or [{}])[0]
        container_id = previous.get("containerID") if not running else f"containerd://{uuid.uuid4().hex}"
        entry = {
            **container_entry(container, running, restarts, running, state),
            "lastState": last_state or {},
        }
        if container_id:
            entry["containerID"] = container_id
        status["containerStatuses"] = [entry]
        return self.state.store.update_internal(PODS, {**pod, "status": status})
