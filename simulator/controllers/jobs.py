"""The Job controller (batch/v1): pods from a Job's template until it completes or fails.

``JobController`` owns a Job's defaults and labels at creation, the pods it creates (named
``<job>-<5 characters>``, labelled and owned as Kubernetes does), retries up to ``backoffLimit``,
the status counts and the terminal conditions as Kubernetes 1.31+ writes them (``SuccessCriteriaMet``
then ``Complete``; ``FailureTarget`` then ``Failed``, the terminal one once no pod is left running),
deletion with a propagation policy, and ``ttlSecondsAfterFinished``.
"""

from __future__ import annotations

import copy
import uuid

from simulator.controllers.common import JOBS, PODS, check_preconditions, name_suffix
from simulator.controllers.pods import PodLifecycle
from simulator.controllers.state import ClusterState
from simulator.indexes import controller_of, is_ready, is_terminal, is_terminating
from simulator.k8s.errors import ApiError, invalid
from simulator.k8s.store import now_rfc3339

CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"
JOB_TRACKING = "batch.kubernetes.io/job-tracking"
SUCCESS = (
    "SuccessCriteriaMet",
    "Complete",
    "CompletionsReached",
    "Reached expected number of succeeded pods",
)
FAILURE = ("FailureTarget", "Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")


def job_finished(job: dict) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class JobController:
    """The Job controller and the Job API's creation and deletion rules; ``pod_lifecycle`` creates and deletes
    the Jobs' pods."""

    def __init__(self, state: ClusterState, pod_lifecycle: PodLifecycle):
        self.state = state
        self.pod_lifecycle = pod_lifecycle
        self._job_keys: dict[str, tuple[str, str]] = {}  # Job uid -> (namespace, name)
        self._ttl_scheduled: set[str] = set()  # uids of finished Jobs waiting for their TTL

    def create_job(self, body: dict) -> dict:
        """A Job as the API server stores it: its defaults, selector and the pod labels it implies."""
        job = copy.deepcopy(body)
        meta, spec = job["metadata"], job.setdefault("spec", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + name_suffix(self.state.rng)
        name = meta.get("name", "")
        template = spec.get("template") or {}
        pod_spec = template.get("spec") or {}
        if not pod_spec.get("containers"):
            raise invalid("Job", name, "spec.template.spec.containers", "Required value", "batch")
        policy = pod_spec.get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            problem = f'Unsupported value: "{policy}"' if policy else "Required value"
            raise invalid(
                "Job",
                name,
                "spec.template.spec.restartPolicy",
                f'{problem}: supported values: "OnFailure", "Never"',
                "batch",
            )
        uid = str(uuid.uuid4())
        labels = {CONTROLLER_UID: uid, JOB_NAME: name, "controller-uid": uid, "job-name": name}
        template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        spec["template"] = template
        spec.setdefault("selector", {"matchLabels": {CONTROLLER_UID: uid}})
        for key, value in (
            ("parallelism", 1),
            ("completions", 1),
            ("backoffLimit", 6),
            ("completionMode", "NonIndexed"),
            ("suspend", False),
            ("podReplacementPolicy", "TerminatingOrFailed"),
        ):
            spec.setdefault(key, value)
        job["status"] = {}
        return self.state.store.create(JOBS, job, uid=uid)

    def delete_job(
        self, namespace: str, name: str, propagation: str | None, preconditions: dict | None
    ) -> dict:
        """Delete a Job. Foreground and Background delete its pods (gracefully); the batch/v1 default,
        Orphan, leaves them without an owner."""
        job = self.state.store.must_get(JOBS, namespace, name)
        check_preconditions(job, preconditions, "jobs")
        for pod in self._job_pods(job):
            if propagation in ("Foreground", "Background"):
                if not is_terminating(pod):
                    self.pod_lifecycle.start_graceful_delete(pod, None)
            else:
                meta = {**pod["metadata"], "ownerReferences": []}
                self.state.store.update_internal(PODS, {**pod, "metadata": meta})
        return self.state.store.remove(JOBS, namespace, name)

    def job_changed(self, old: dict | None, new: dict | None) -> None:
        job = new or old
        assert job is not None
        uid = job["metadata"]["uid"]
        if new is None:
            self._job_keys.pop(uid, None)
            return
        self._job_keys[uid] = (job["metadata"]["namespace"], job["metadata"]["name"])
        self.state.jobs_dirty.add(uid)

    def _job_pods(self, job: dict) -> list[dict]:
        uid = job["metadata"]["uid"]
        return [
            p
            for p in self.state.store.list(PODS, job["metadata"]["namespace"])
            if (controller_of(p) or {}).get("uid") == uid
        ]

    def reconcile(self) -> None:
        uids, self.state.jobs_dirty = self.state.jobs_dirty, set()
        for uid in sorted(uids):
            key = self._job_keys.get(uid)
            job = self.state.store.get(JOBS, *key) if key else None
            if job is not None and job["metadata"]["uid"] == uid:
                self._reconcile_job(job)

    def _reconcile_job(self, job: dict) -> None:
        spec, status = job["spec"], dict(job.get("status") or {})
        if job_finished(job):
            self._expire_after_ttl(job)
            return
        pods = self._job_pods(job)
        running = [p for p in pods if not is_terminal(p) and not is_terminating(p)]
        terminating = [p for p in pods if is_terminating(p) and not is_terminal(p)]
        phases = [p.get("status", {}).get("phase") for p in pods]
        succeeded = max(phases.count("Succeeded"), status.get("succeeded", 0))
        failed = max(phases.count("Failed"), status.get("failed", 0))
        conditions = list(status.get("conditions") or [])
        completions = spec.get("completions") or 1
        outcome = (
            FAILURE if failed > spec.get("backoffLimit", 6) else SUCCESS if succeeded >= completions else None
        )
        if outcome is not None:
            # the outcome is known: the pods still running go, and the terminal condition waits for them
            for pod in running:
                self.pod_lifecycle.start_graceful_delete(pod, None)
            terminating += [p for p in running if self.state.store.get(PODS, *_key(p)) is not None]
            running = []
            _add_condition(conditions, outcome[0], outcome[2], outcome[3])
            if not terminating:
                _add_condition(conditions, outcome[1], outcome[2], outcome[3])
        elif not spec.get("suspend"):
            for _ in range(min(spec.get("parallelism", 1), completions - succeeded) - len(running)):
                created = self._create_job_pod(job)
                if created is None:
                    break
                running.append(created)
        counts = {"active": len(running), "succeeded": succeeded, "failed": failed}
        self._set_job_status(job, status, counts, running, terminating, conditions)

    def _set_job_status(
        self,
        job: dict,
        status: dict,
        counts: dict[str, int],
        running: list[dict],
        terminating: list[dict],
        conditions: list[dict],
    ) -> None:
        """Write the Job's status when it changed; a Job that just finished starts its TTL."""
        # active, succeeded and failed are left out when 0 (omitempty); ready and terminating are not
        new_status: dict = {
            "startTime": status.get("startTime") or now_rfc3339(),
            **{k: v for k, v in counts.items() if v},
            "ready": sum(1 for p in running if is_ready(p)),
            "terminating": len(terminating),
            "uncountedTerminatedPods": {},
        }
        if conditions:
            new_status["conditions"] = conditions
        if any(c["type"] == "Complete" for c in conditions):
            new_status["completionTime"] = now_rfc3339()
        if new_status == status:
            return
        job = self.state.store.update_internal(JOBS, {**job, "status": new_status})
        if job_finished(job):
            where = f"{job['metadata']['namespace']}/{job['metadata']['name']}"
            self.state.record("job_finished", None, job=where, condition=conditions[-1]["type"])
            self._expire_after_ttl(job)

    def _create_job_pod(self, job: dict) -> dict | None:
        """One pod from the Job's template; a refused creation is a FailedCreate event, as in Kubernetes."""
        template = copy.deepcopy(job["spec"]["template"])
        meta = template.get("metadata") or {}
        name = job["metadata"]["name"]
        pod = {
            "metadata": {
                "name": f"{name}-{name_suffix(self.state.rng)}",
                "generateName": f"{name}-",
                "namespace": job["metadata"]["namespace"],
                "labels": meta.get("labels", {}),
                "annotations": {**(meta.get("annotations") or {}), JOB_TRACKING: ""},
                "ownerReferences": [_owner_ref(job)],
            },
            "spec": template["spec"],
        }
        try:
            created = self.pod_lifecycle.create_pod(pod)
        except ApiError as exc:
            self.state.emit_event(
                job, "FailedCreate", f"Error creating: {exc.message}", "Warning", "job-controller"
            )
            return None
        self.state.emit_event(
            job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component="job-controller"
        )
        return created

    def _expire_after_ttl(self, job: dict) -> None:
        """``ttlSecondsAfterFinished``: the TTL-after-finished controller deletes the Job and its pods."""
        ttl = job["spec"].get("ttlSecondsAfterFinished")
        uid = job["metadata"]["uid"]
        if ttl is None or uid in self._ttl_scheduled:
            return
        self._ttl_scheduled.add(uid)
        namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]

        def expire() -> None:
            self._ttl_scheduled.discard(uid)
            current = self.state.store.get(JOBS, namespace, name)
            if current is not None and current["metadata"]["uid"] == uid:
                self.delete_job(namespace, name, "Foreground", None)
                self.state.record("job_expired", None, job=f"{namespace}/{name}")

        self.state.after(ttl, expire)


def _key(pod: dict) -> tuple[str, str]:
    return pod["metadata"]["namespace"], pod["metadata"]["name"]


def _owner_ref(job: dict) -> dict:
    return {
        "apiVersion": job["apiVersion"],
        "kind": "Job",
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _add_condition(conditions: list[dict], type_: str, reason: str, message: str) -> None:
    if any(c["type"] == type_ for c in conditions):
        return
    stamp = now_rfc3339()
    conditions.append(
        {
            "type": type_,
            "status": "True",
            "lastProbeTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
    )
