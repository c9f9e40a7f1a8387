"""The HTTP face of the ARM emulator: the containerservice REST API as an ASGI app.

Served by the same HTTPS server as the Kubernetes API: ``routes.route`` sends ``/subscriptions/...`` here
and everything else to the Kubernetes API. Requests need the same bearer token, land in the same
audit log and meet the same injected faults. Paths match case-insensitively, as ARM's do.

Status codes, async headers and operation bodies follow real AKS as azure-cli's recorded sessions show
it (docs/arm-fidelity.md): no Retry-After and no ETag header on any answer.
"""

from __future__ import annotations

import json
import uuid

from starlette.requests import Request
from starlette.responses import Response

from simulator.arm import profiles
from simulator.arm.emulator import ArmEmulator
from simulator.arm.errors import ArmError
from simulator.arm.kubeconfig import user_kubeconfig
from simulator.arm.routes import ROUTES, Route
from simulator.arm.state import PROVIDER, Operation
from simulator.arm.versions import kubernetes_versions
from simulator.entra import TokenProblem
from simulator.k8s.errors import ApiError
from simulator.scenario import OperationFailureSpec
from simulator.simulation import STATIC_TOKEN_USER

OPERATIONS_API_VERSION = "2016-03-30"  # the api-version AKS puts in its operation URLs

_ARM_TOKEN_ERRORS = {
    TokenProblem.audience: (
        "InvalidAuthenticationTokenAudience",
        "The access token has been obtained for wrong audience or resource.",
    ),
    TokenProblem.expired: (
        "ExpiredAuthenticationToken",
        "The access token expiry UTC time is earlier than current UTC time.",
    ),
    TokenProblem.invalid: ("InvalidAuthenticationToken", "The access token is invalid."),
}


def _json(body: object, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json", headers=headers)


class ArmAPI:
    """ASGI application serving the containerservice API of one simulated cluster."""

    def __init__(self, emulator: ArmEmulator):
        self.arm = emulator
        self.sim = emulator.sim

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    def _authenticate(self, request: Request) -> str:
        """The user of the simulator's own token, or of an Entra ID token for ARM's audience (the
        endpoint's URL): its ``oid``."""
        header = request.headers.get("authorization")
        if header is None:
            raise ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            )
        token = header.removeprefix("Bearer ")
        if token == self.sim.token:
            return STATIC_TOKEN_USER
        entra = self.sim.entra
        audiences = [self.arm.kube_api, self.arm.kube_api + "/"]  # ARM is served at the same URL
        claims = entra.verify(token, audiences) if entra else TokenProblem.invalid
        if not isinstance(claims, dict):
            raise ArmError(401, *_ARM_TOKEN_ERRORS[claims])
        return str(claims.get("oid") or claims.get("appid"))

    def _match(self, request: Request) -> tuple[Route | None, dict, bool]:
        path = request.url.path
        known_path = False
        for r in ROUTES:
            match = r.pattern.match(path)
            if match:
                known_path = True
                if r.method == request.method:
                    return r, match.groupdict(), True
        return None, {}, known_path

    async def handle(self, request: Request) -> Response:
        sim = self.sim
        path = request.url.path
        route_, params, known_path = self._match(request)
        verb = route_.verb if route_ else request.method.lower()
        entry = sim.audit.start(request, verb, None)
        entry.update(
            api="arm",
            group=PROVIDER,
            resource=route_.resource if route_ else None,
            name=params.get("pool") or params.get("config") or params.get("op") or params.get("name"),
            mutating=bool(route_ and route_.mutating),
        )
        try:
            entry["user"] = self._authenticate(request)
            if path.startswith("/_sim/arm/"):
                response = await self._observation(request)
            else:
                await self._faults(request, verb, path)
                if route_ is None:
                    if known_path:
                        raise ArmError(
                            405,
                            "MethodNotAllowed",
                            f"The requested resource does not support http method '{request.method}'.",
                        )
                    raise ArmError(
                        404,
                        "InvalidResourceType",
                        f"The resource path '{path}' is not served by the simulated AKS.",
                    )
                if not request.query_params.get("api-version"):
                    raise ArmError(
                        400,
                        "MissingApiVersionParameter",
                        "The api-version query parameter (?api-version=) is required for all requests.",
                    )
                self._check_scope(params)
                response = await getattr(self, route_.handler)(request, params)
        except ArmError as exc:
            response = exc.response()
        except Exception as exc:  # the server must answer, as ARM does, with an error body
            sim.cluster.record("simulator_error", None, path=path, error=repr(exc))
            response = ArmError(500, "InternalServerError", f"Internal error: {exc!r}").response()
        response.headers["x-ms-request-id"] = str(uuid.uuid4())
        sim.audit.finish(entry, response.status_code)
        return response

    async def _faults(self, request: Request, verb: str, path: str) -> None:
        """Fault rules, latency and the random error and throttle rates, as for the Kubernetes API."""
        faults = self.sim.faults
        try:
            await faults.apply(request, verb, path)
        except ApiError as exc:
            raise ArmError(exc.code, exc.reason, exc.message, exc.headers) from exc
        roll = faults.rng.random() if faults.error_rate or faults.throttle_rate else 1.0
        if roll < faults.error_rate:
            raise ArmError(500, "InternalServerError", "Internal error occurred: injected fault")
        if roll < faults.error_rate + faults.throttle_rate:
            raise ArmError(
                429, "TooManyRequests", "Too many requests, please try again later.", {"Retry-After": "1"}
            )

    def _check_scope(self, params: dict) -> None:
        spec = self.arm.mc.spec
        if params.get("sub") and params["sub"].lower() != spec.subscription_id.lower():
            raise ArmError(
                404, "SubscriptionNotFound", f"The subscription '{params['sub']}' could not be found."
            )
        if params.get("rg") and params["rg"].lower() != spec.resource_group.lower():
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{params['rg']}' could not be found."
            )
        if params.get("name") and params["name"].lower() != spec.name.lower():
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{PROVIDER}/managedClusters/{params['name']}' "
                f"under resource group '{spec.resource_group}' was not found. For more details please "
                "go to https://aka.ms/ARMResourceNotFoundFix",
            )

    # ---- helpers -----------------------------------------------------------------------
    async def _body(self, request: Request) -> dict:
        try:
            body = json.loads(await request.body() or b"{}")
        except json.JSONDecodeError as exc:
            raise ArmError(
                400,
                "InvalidRequestContent",
                f"The request content was invalid and could not be deserialized: {exc}",
            ) from exc
        if not isinstance(body, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        return body

    def _operation_urls(self, request: Request, op: Operation) -> dict[str, str]:
        spec = self.arm.mc.spec
        base = str(request.base_url).rstrip("/")
        where = f"{base}/subscriptions/{spec.subscription_id}/providers/{PROVIDER}/locations/{spec.location}"
        version = OPERATIONS_API_VERSION
        return {
            "Azure-AsyncOperation": f"{where}/operations/{op.id}?api-version={version}",
            "Location": f"{where}/operationresults/{op.id}?api-version={version}",
        }

    def _lro(self, request: Request, op: Operation, body: object, status: int) -> Response:
        """A long-running operation's first answer, with the resource in ``body``. A PUT carries
        Azure-AsyncOperation only; a POST carries Location too."""
        headers = self._operation_urls(request, op)
        if request.method == "PUT":
            headers.pop("Location")
        return _json(body, status, headers)

    @staticmethod
    def _check_if_match(request: Request, etag: str) -> None:
        wanted = request.headers.get("if-match")
        if wanted is None or wanted.strip() == "*":
            return
        tags = {t.strip().removeprefix("W/").strip('"') for t in wanted.split(",")}
        if etag not in tags:
            raise ArmError(
                412,
                "PreconditionFailed",
                f"Operation failed because the If-Match header value "
                f'{wanted} does not match the current eTag "{etag}" of the resource.',
            )

    # ---- managed cluster ---------------------------------------------------------------
    async def get_cluster(self, request: Request, params: dict) -> Response:
        return _json(self.arm.render_cluster())

    async def list_clusters(self, request: Request, params: dict) -> Response:
        return _json({"value": [self.arm.render_cluster()]})

    async def put_cluster(self, request: Request, params: dict) -> Response:
        body = await self._body(request)
        self._check_if_match(request, self.arm.mc.etag)
        if request.headers.get("if-none-match", "").strip() == "*":
            raise ArmError(
                412, "PreconditionFailed", "The managed cluster already exists (If-None-Match: *)."
            )
        op = self.arm.put_cluster(body)
        return self._lro(request, op, self.arm.render_cluster(), 200)

    async def get_upgrade_profile(self, request: Request, params: dict) -> Response:
        return _json(profiles.upgrade_profile(self.arm.mc, self.arm.pools.values(), self.arm.region))

    async def get_available_pool_versions(self, request: Request, params: dict) -> Response:
        return _json(profiles.available_pool_versions(self.arm.mc, self.arm.region))

    async def list_user_credential(self, request: Request, params: dict) -> Response:
        arm = self.arm
        return _json(user_kubeconfig(arm.mc.spec, arm.kube_api, arm.ca_pem, self.sim.token, self.sim.entra))

    async def abort_cluster(self, request: Request, params: dict) -> Response:
        before = self.arm.render_cluster()  # AKS answers with the cluster as the abort found it
        return self._lro(request, self.arm.abort(None), before, 202)

    # ---- agent pools -------------------------------------------------------------------
    async def list_pools(self, request: Request, params: dict) -> Response:
        return _json({"value": [self.arm.render_pool(p) for p in self.arm.pools.values()]})

    async def get_pool(self, request: Request, params: dict) -> Response:
        return _json(self.arm.render_pool(self.arm.pool(params["pool"])))

    async def put_pool(self, request: Request, params: dict) -> Response:
        body = await self._body(request)
        try:
            pool = self.arm.pool(params["pool"])
        except ArmError as exc:
            raise ArmError(
                400,
                "NotSupportedBySimulator",
                f"Creating agent pool {params['pool']} is not modelled by the simulated AKS.",
            ) from exc
        self._check_if_match(request, pool.etag)
        op = self.arm.put_pool(pool, body)
        return self._lro(request, op, self.arm.render_pool(pool), 200)

    async def get_pool_upgrade_profile(self, request: Request, params: dict) -> Response:
        pool = self.arm.pool(params["pool"])
        return _json(profiles.pool_upgrade_profile(self.arm.mc, pool, self.arm.region))

    async def upgrade_node_image(self, request: Request, params: dict) -> Response:
        """202 even when the pool already runs the latest image: real AKS starts an operation then
        too, never a 304 (docs/arm-fidelity.md)."""
        pool = self.arm.pool(params["pool"])
        op = self.arm.upgrade_node_image(pool)
        return self._lro(request, op, self.arm.render_pool(pool), 202)

    async def abort_pool(self, request: Request, params: dict) -> Response:
        pool = self.arm.pool(params["pool"])
        before = self.arm.render_pool(pool)  # as for the cluster: the pool as the abort found it
        return self._lro(request, self.arm.abort(pool), before, 202)

    # ---- maintenance configurations ----------------------------------------------------
    async def list_maintenance(self, request: Request, params: dict) -> Response:
        return _json({"value": self.arm.maintenance_configurations()})

    async def get_maintenance(self, request: Request, params: dict) -> Response:
        return _json(self.arm.maintenance_configuration(params["config"]))

    # ---- locations and operations ------------------------------------------------------
    async def kubernetes_versions(self, request: Request, params: dict) -> Response:
        if params["loc"].replace(" ", "").lower() != self.arm.mc.spec.location.lower():
            return _json({"values": []})
        return _json(kubernetes_versions(self.arm.region))

    def _operation(self, params: dict) -> Operation:
        op = self.arm.operations.get(params["op"])
        if op is None:
            raise ArmError(404, "NotFound", f"Operation {params['op']} was not found.")
        return op

    async def operation_status(self, request: Request, params: dict) -> Response:
        return _json(self._operation(params).status_body())

    async def operation_result(self, request: Request, params: dict) -> Response:
        """202 while the operation runs, then 204 with no body; both name this URL in Location."""
        op = self._operation(params)
        location = {"Location": str(request.url)}
        if not op.done:
            return Response(status_code=202, headers=location)
        if op.status != "Succeeded":
            return _json({"error": op.error}, 400)
        return Response(status_code=204, headers=location)

    # ---- simulator controls ------------------------------------------------------------
    async def _observation(self, request: Request) -> Response:
        """``/_sim/arm/operations`` (GET) and ``/_sim/arm/faults`` (POST ``{"fail_next_operation": ...}``)."""
        if request.method == "GET" and request.url.path == "/_sim/arm/operations":
            return _json(
                [
                    {
                        **op.status_body(),
                        "kind": op.kind,
                        "target": op.target,
                        "percentComplete": round(op.percent, 1),
                    }
                    for op in self.arm.operations.values()
                ]
            )
        if request.method == "POST" and request.url.path == "/_sim/arm/faults":
            body = await self._body(request)
            failure = body.get("fail_next_operation")
            self.arm.fail_next = OperationFailureSpec(**failure) if failure is not None else None
            return _json({"fail_next_operation": failure})
        raise ArmError(404, "NotFound", f"no simulator endpoint {request.method} {request.url.path}")
