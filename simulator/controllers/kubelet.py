"""The kubelet: starting pods on their node and reporting their status.

``Kubelet`` owns starting the container of each bound pod when its node is up, host commands run
through nsenter, readiness after a probe's delay, a pod's exit (or the reboot its command asks for),
image pulls that fail on Windows, and the pod status it writes.
"""

from __future__ import annotations

import ipaddress
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
from simulator.controllers.nodes import NodeLifecycle
from simulator.hosts import CommandResult, Host, run_host_command, split_host_command
from simulator.indexes import (
    is_terminal,
    is_terminating,
)
from simulator.k8s.store import now_rfc3339


class Kubelet(NodeLifecycle):
    """The kubelet of every node: pod start, container status, host commands."""

    def _kubelet_start_pods(self) -> None:
        for key in sorted(self._to_start):
            pod = self.store.get(PODS, *key)
            if pod is None:
                self._to_start.discard(key)
                continue
            host = self.hosts.get(pod["spec"]["nodeName"])
            if host is None and self.store.get(NODES, "", pod["spec"]["nodeName"]) is None:
                # the pod garbage collector's part: a pod bound to a node that does not exist goes
                self._to_start.discard(key)
                self.store.remove(PODS, *key)
                continue
            if host is None or host.state != "up":
                continue  # started when the node is Ready again
            self._to_start.discard(key)
            uid = pod["metadata"]["uid"]
            if uid in self._started or is_terminating(pod) or is_terminal(pod):
                continue
            self._started.add(uid)
            self._start_pod(pod, host)

    def _start_pod(self, pod: dict, host: Host) -> None:
        """The kubelet starts the pod's container: it runs after CONTAINER_START_SECONDS; an nsenter host
        command runs on the host at once and the pod finishes when the command's simulated time is up."""
        container = pod["spec"]["containers"][0]
        argv = list(container.get("command", [])) + list(container.get("args", []))
        host_command = split_host_command(argv)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        uid = pod["metadata"]["uid"]
        start = ContainerStart(key, uid, host, host.boots)
        if host.windows and not runs_on(pod["spec"], {OS_LABEL: "windows"}):
            self.after(CONTAINER_START_SECONDS, lambda: self._image_pull_failed(key, uid))
            return
        result = None if host_command is None else self._nsenter(pod, host, host_command)
        self.after(CONTAINER_START_SECONDS, lambda: self._container_running(start, container))
        if result is not None:
            self.after(
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

    def _started_pod(self, start: ContainerStart) -> dict | None:
        """The pod of ``start`` while its container still runs: the same pod, not terminating, on a host that
        is up and has not rebooted since; None otherwise."""
        current = self.store.get(PODS, *start.key)
        if current is None or current["metadata"]["uid"] != start.uid or is_terminating(current):
            return None
        host = start.host
        return current if host.boots == start.boot and host.state == "up" else None

    def _container_running(self, start: ContainerStart, container: dict) -> None:
        """The container runs: the pod is Running, and Ready now or, with a readiness probe, after its delay."""
        current = self._started_pod(start)
        if current is None:
            return
        probe = container.get("readinessProbe")
        self._write_pod_status(current, "Running", ready=not probe)
        if probe:
            self.after(probe.get("initialDelaySeconds", 0), lambda: self._container_ready(start))

    def _container_ready(self, start: ContainerStart) -> None:
        current = self._started_pod(start)
        if current is not None:
            self._write_pod_status(current, "Running", ready=True)

    def _container_exited(self, start: ContainerStart, result: CommandResult) -> None:
        """The host command is done: its output is the pod's log, and the pod Succeeded or Failed by its exit
        code, unless the command asked for a reboot: then the node reboots instead."""
        current = self._started_pod(start)
        if current is None:
            return
        self.logs[start.uid] = result.output
        self.host_changed(start.host.node_name)
        if result.reboot:
            self.reboot_node(start.host.node_name, requested_by=f"pod {start.key[0]}/{start.key[1]}")
            return
        code = result.exit_code
        self._write_pod_status(current, "Succeeded" if code == 0 else "Failed", ready=False, exit_code=code)

    def _image_pull_failed(self, key: tuple[str, str], uid: str) -> None:
        """A Linux image on a Windows node: the pod stays Pending, its container waiting on the pull."""
        pod = self.store.get(PODS, *key)
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
        self.store.update_internal(PODS, {**pod, "status": status})

    def _write_pod_status(self, pod: dict, phase: str, ready: bool, exit_code: int | None = None) -> None:
        stamp = now_rfc3339()
        status = dict(pod.get("status", {}))
        if not status.get("podIP"):
            self._ip_counter += 1
            status["podIP"] = str(ipaddress.ip_address("10.244.128.0") + self._ip_counter)
            status["podIPs"] = [{"ip": status["podIP"]}]
            node = self.store.get(NODES, "", pod["spec"]["nodeName"])
            status["hostIP"] = node["status"]["addresses"][0]["address"] if node else ""
            status["startTime"] = stamp
        status["phase"] = phase
        status["conditions"] = [
            {"type": "Initialized", "status": "True", "lastTransitionTime": stamp},
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": stamp},
            {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": stamp},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp},
        ]
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
        status["containerStatuses"] = [
            {
                "name": container["name"],
                "image": container.get("image", ""),
                "imageID": "",
                "ready": ready,
                "restartCount": 0,
                "started": True,
                "state": state,
                "containerID": f"containerd://{uuid.uuid4().hex}",
            }
        ]
        self.store.update_internal(PODS, {**pod, "status": status})
