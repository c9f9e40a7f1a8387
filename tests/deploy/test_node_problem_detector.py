"""The node-problem-detector plugin of deployments/node-problem-detector: its condition is the one the
flow's node-condition sentinel reads, its paths meet the DaemonSet's mounts, and its script answers the
plugin protocol (exit 1 when /var/run/reboot-required exists, 0 when not, 2 when it cannot look)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from aksmaint.params import SentinelOptions
from tests.support import ROOT

PLUGIN = ROOT / "deployments" / "node-problem-detector" / "reboot-required-plugin.yaml"


def docs() -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(PLUGIN.read_text()) if d}


def test_plugin_reports_the_condition_the_flow_reads():
    config = json.loads(docs()["ConfigMap"]["data"]["reboot-required.json"])
    assert config["plugin"] == "custom"
    (condition,) = config["conditions"]
    (rule,) = config["rules"]
    assert condition["type"] == rule["condition"] == SentinelOptions().condition_type
    assert rule["type"] == "permanent"


def test_daemonset_mounts_what_the_plugin_uses():
    d = docs()
    config = json.loads(d["ConfigMap"]["data"]["reboot-required.json"])
    pod = d["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    script = config["rules"][0]["path"]
    assert script == f"{mounts['plugin']}/check-reboot-required.sh"
    assert "check-reboot-required.sh" in d["ConfigMap"]["data"]
    assert volumes["plugin"]["configMap"]["name"] == d["ConfigMap"]["metadata"]["name"]
    assert volumes["host-var-run"]["hostPath"]["path"] == "/var/run"
    assert mounts["host-var-run"] == "/host/var/run"
    assert f"--config.custom-plugin-monitor={mounts['plugin']}/reboot-required.json" in container["command"]
    assert pod["serviceAccountName"] == d["ServiceAccount"]["metadata"]["name"]


@pytest.mark.parametrize(("present", "code"), [(True, 1), (False, 0)])
def test_script_follows_the_plugin_protocol(tmp_path: Path, present: bool, code: int):
    script = tmp_path / "check.sh"
    script.write_text(docs()["ConfigMap"]["data"]["check-reboot-required.sh"])
    sentinel = tmp_path / "run" / "reboot-required"
    sentinel.parent.mkdir()
    if present:
        sentinel.write_text("*** System restart required ***\n")
    result = subprocess.run(
        ["sh", str(script)], env={"REBOOT_REQUIRED_FILE": str(sentinel)}, capture_output=True, text=True
    )
    assert result.returncode == code
    assert ("exists" in result.stdout) == present


def test_script_says_unknown_when_the_host_folder_is_not_mounted(tmp_path: Path):
    script = tmp_path / "check.sh"
    script.write_text(docs()["ConfigMap"]["data"]["check-reboot-required.sh"])
    result = subprocess.run(
        ["sh", str(script)],
        env={"REBOOT_REQUIRED_FILE": str(tmp_path / "missing" / "reboot-required")},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
