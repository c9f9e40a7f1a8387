"""The kubelet: starting pods on their node and reporting their status.

``Kubelet`` owns starting the container of each bound pod when its node is up, host commands run
through nsenter, readiness after a probe's delay, a pod's exit (or the reboot its command asks for),
image pulls that fail on Windows, and the pod status it writes. A pod that runs as a local process is
handed to ``PodProcesses``.
"""

from __future__ import annotations

import uuid
from typing import Any

from simulator.controllers.common import (
    CONTAINER_START_SECONDS,
    NODES,
    OS_LABEL,
    PODS,
    ContainerStart,
    runs_on,
)
from simulator.controllers.nodes import NodeController
from simulator.controllers.pod_status import container_entry, pod_conditions, running_pod, status_with_ip
from simulator.controllers.problem_detector import ProblemDetector
from simulator.controllers.processes import PodProcesses
from simulator.controllers.state import ClusterState
from simulator.hosts import CommandResult, Host, run_host_command, split_host_command
from simulator.indexes import (
    is_terminal,
    is_terminating,
)
from simulator.k8s.store import now_rfc3339


class Kubelet:
    """The kubelet of every node: pod start, container status, host commands.

    ``nodes`` reboots a node whose pod asks for it; ``detector`` looks again at a host a command
    changed; ``processes`` runs the pods that run as local processes."""

    def __init__(
        self, state: ClusterState, nodes: NodeController, detector: ProblemDetector, processes: PodProcesses
    ):
        self.state = state
        self.nodes = nodes
        self.detector = detector
        self.processes = processes

    def reconcile(self) -> None:
        """Start the containers of the pods bound to a node that is up."""
        for key in sorted(self.state.to_start):
            pod = self.state.store.get(PODS, *key)
            if pod is None:
                self.state.to_start.discard(key)
                continue
            host = self.state.hosts.get(pod["spec"]["nodeName"])
            if host is None and self.state.store.get(NODES, "", pod["spec"]["nodeName"]) is None:
                # the pod garbage collector's part: a pod bound to a node that does not exist goes
                self.state.to_start.discard(key)
                self.state.store.remove(PODS, *key)
                continue
            if host is None or host.state != "up":
                continue  # started when the node is Ready again
            self.state.to_start.discard(key)
            uid = pod["metadata"]["uid"]
            if uid in self.state.started or is_terminating(pod) or is_terminal(pod):
                continue
            self.state.started.add(uid)
            self._start_pod(pod, host)

    def _start_pod(self, pod: dict, host: Host) -> None:
        """The kubelet starts the pod's container: it runs after CONTAINER_START_SECONDS; an nsenter host
        command runs on the host at once and the pod finishes when the command's simulated time is up."""
        if self.processes.runs_as_process(pod):
            self.processes.start_pod(pod, host)
            return
        container = pod["spec"]["containers"][0]
        argv = list(container.get("command", [])) + list(container.get("args", []))
        host_command = split_host_command(argv)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        uid = pod["metadata"]["uid"]
        start = ContainerStart(key, uid, host, host.boots)
        if host.windows and not runs_on(pod["spec"], {OS_LABEL: "windows"}):
            self.state.after(CONTAINER_START_SECONDS, lambda: self._image_pull_failed(key, uid))
            return
        result = None if host_command is None else self._nsenter(pod, host, host_command)
        self.state.after(CONTAINER_START_SECONDS, lambda: self._container_running(start, container))
        if result is not None:
            self.state.after(
                CONTAINER_START_SECONDS + result.seconds, lambda: self._container_exited(start, result)
            )

    @staticmethod
    def _nsenter(pod: dict, host: Host, command: list[str]) -> CommandResult:
        """Run a pod's host command; entering the host's namespaces takes hostPID and a privileged container."""
        container = pod["spec"]["containers"][0]
        privileged = (container.get("securityContext") or {}).get("privileged")
        if not pod["spec"].get("hostPID") or not privileged:
            return CommandResult(
                1, "nsenter: reassociate to namespace 'ns/mnt' failed: Operation not permitted\n"
            )
        return run_host_command(host, command)

    def _container_running(self, start: ContainerStart, container: dict) -> None:
        """The container runs: the pod is Running, and Ready now or, with a readiness probe, after its delay."""
        current = running_pod(self.state.store, start)
        if current is None:
            return
        probe = container.get("readinessProbe")
        self._write_pod_status(current, "Running", ready=not probe)
        if probe:
            self.state.after(probe.get("initialDelaySeconds", 0), lambda: self._container_ready(start))

    def _container_ready(self, start: ContainerStart) -> None:
        current = running_pod(self.state.store, start)
        if current is not None:
            self._write_pod_status(current, "Running", ready=True)

    def _container_exited(self, start: ContainerStart, result: CommandResult) -> None:
        """The host command is done: its output is the pod's log, and the pod Succeeded or Failed by its exit
        code, unless the command asked for a reboot: then the node reboots instead."""
        current = running_pod(self.state.store, start)
        if current is None:
            return
        self.state.logs[start.uid] = result.output
        self.detector.host_changed(start.host.node_name)
        if result.reboot:
            self.nodes.reboot_node(start.host.node_name, requested_by=f"pod {start.key[0]}/{start.key[1]}")
            return
        code = result.exit_code
        self._write_pod_status(current, "Succeeded" if code == 0 else "Failed", ready=False, exit_code=code)

    def _image_pull_failed(self, key: tuple[str, str], uid: str) -> None:
        """A Linux image on a Windows node: the pod stays Pending, its container waiting on the pull."""
        pod = self.state.store.get(PODS, *key)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        container = pod["spec"]["containers"][0]
        status = {
            **pod.get("status", {}),
            "phase": "Pending",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "started": False,
                    "state": {
                        "waiting": {
                            "reason": "ErrImagePull",
                            "message": f"failed to pull image {container.get('image', '')}: no matching "
                            "manifest for windows(10.0.20348)/amd64 in the manifest list entries",
                        }
                    },
                }
            ],
        }
        self.state.store.update_internal(PODS, {**pod, "status": status})

    def _write_pod_status(self, pod: dict, phase: str, ready: bool, exit_code: int | None = None) -> None:
        stamp = now_rfc3339()
        status = status_with_ip(self.state, pod, stamp)
        status["phase"] = phase
        status["conditions"] = pod_conditions(ready, stamp)
        container = pod["spec"]["containers"][0]
        state: dict[str, dict[str, Any]]
        if exit_code is None:
            state = {"running": {"startedAt": stamp}}
        else:
            state = {
                "terminated": {
                    "exitCode": exit_code,
                    "reason": "Completed" if exit_code == 0 else "Error",
                    "startedAt": status.get("startTime", stamp),
                    "finishedAt": stamp,
                }
            }
        entry = container_entry(container, ready, 0, True, state)
        status["containerStatuses"] = [{**entry, "containerID": f"containerd://{uuid.uuid4().hex}"}]
        self.state.store.update_internal(PODS, {**pod, "status": status})
