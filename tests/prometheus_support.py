"""A real Prometheus for the alert blocker tests: Debian's ``/usr/bin/prometheus`` (``make prometheus``),
started on a free port of 127.0.0.1 with alerting rules on ``vector(1)`` that fire at once or stay
pending, evaluated every second."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from scripts.prefect_postgres import free_port

PROMETHEUS = Path("/usr/bin/prometheus")
START_TIMEOUT = 60  # seconds to ready and to the first evaluation, on a busy 2-core machine

# how long an alert's expression must hold before it fires, for the state it is to show
FOR = {"firing": "0s", "pending": "1h"}

# the alerts of the tests' Prometheus: a node alert that fires, one that stays pending, and the
# always-firing heartbeat that kured users filter out with --alert-filter-regexp=^Watchdog$
ALERTS = {"KubeNodeNotReady": "firing", "NodeDiskPressure": "pending", "Watchdog": "firing"}


class Prometheus:
    """One prometheus process in ``workdir`` whose rules make ``alerts`` (name -> "firing" or "pending")
    active; ``start`` returns once /api/v1/alerts shows exactly those states."""

    def __init__(self, workdir: Path, alerts: dict[str, str]) -> None:
        self.workdir = workdir
        self.alerts = alerts
        self.log = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Prometheus:
        if not PROMETHEUS.exists():
            pytest.fail(
                f"Debian's Prometheus is not installed ({PROMETHEUS} is missing): run `make prometheus`"
            )
        rules = self.workdir / "rules.yml"
        rules.write_text(
            yaml.safe_dump(
                {
                    "groups": [
                        {
                            "name": "aksmaint-tests",
                            "interval": "1s",
                            "rules": [
                                {"alert": name, "expr": "vector(1)", "for": FOR[state]}
                                for name, state in self.alerts.items()
                            ],
                        }
                    ]
                }
            )
        )
        config = self.workdir / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {"global": {"evaluation_interval": "1s"}, "rule_files": [str(rules)], "scrape_configs": []}
            )
        )
        port = free_port()  # the package's default 9090 may be taken
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        self._wait_until_alerts_show()
        return self

    def active(self) -> dict[str, str]:
        """The active alerts, name -> state, as /api/v1/alerts reports them."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        response.raise_for_status()
        return {a["labels"]["alertname"]: a["state"] for a in response.json()["data"]["alerts"]}

    def alert_queries(self) -> int:
        """How many times /api/v1/alerts was asked, from Prometheus's own request counter."""
        metrics = httpx.get(f"{self.url}/metrics", timeout=5).text
        counts = re.findall(
            r'^prometheus_http_requests_total\{[^}]*handler="/api/v1/alerts"[^}]*\} (\S+)$', metrics, re.M
        )
        return int(sum(float(c) for c in counts))

    def _wait_until_alerts_show(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        seen: dict[str, str] | str = "no answer yet"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(
                    f"prometheus exited with {self.process.returncode} before it was ready:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    seen = self.active()
                    if seen == self.alerts:
                        return
            except httpx.HTTPError as exc:
                seen = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        message = (
            f"prometheus at {self.url} did not show the alerts {self.alerts} within {START_TIMEOUT}s "
            f"(last seen: {seen}); its log:\n{self.tail()}"
        )
        self.stop()
        pytest.fail(message)

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
