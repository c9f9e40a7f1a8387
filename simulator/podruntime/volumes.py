"""A pod's volumes as files, written the way kubelet's atomic writer writes them.

Each version of a volume's files lives in its own timestamped folder; ``..data`` is a symlink to the
current one, swapped by a rename; each file is a symlink through ``..data``. A reader therefore sees
either the old file or the new one, never a half-written one. Projected service-account tokens are
issued through ``issue_token`` and rewritten before they expire (see ``Volumes.refresh_in``).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from simulator.podruntime.env import EnvError, Lookup, field_value

# (audience or None for the API server's, expirationSeconds) -> (token, its lifetime in real seconds)
IssueToken = Callable[[str | None, int], tuple[str, float]]
DAY_SECONDS = 24 * 3600.0
REFRESH_FRACTION = 0.8  # kubelet refreshes a projected token at 80 % of its lifetime


class AtomicDir:
    """One volume's folder, updated as a whole."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)

    def write(self, files: dict[str, bytes], mode: int = 0o644) -> None:
        stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        version = self.path / stamp
        version.mkdir()
        for relative, content in files.items():
            target = version / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        data = self.path / "..data"
        old = os.readlink(data) if data.is_symlink() else None
        tmp = self.path / "..data_tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(stamp)
        tmp.rename(data)
        for top in {Path(relative).parts[0] for relative in files}:
            link = self.path / top
            if not link.is_symlink():
                link.symlink_to(f"..data/{top}")
        if old and old != stamp:
            shutil.rmtree(self.path / old, ignore_errors=True)


@dataclass
class Volumes:
    """The files of a pod's volumes under ``root`` (one folder per volume), and when to refresh them."""

    pod: dict
    root: Path
    lookup: Lookup
    issue_token: IssueToken
    folders: dict[str, Path] = field(default_factory=dict)  # volume name -> folder to bind-mount
    refresh_in: float | None = None  # real seconds until a token must be rewritten

    def prepare(self) -> None:
        """Write every volume's files; raise EnvError when a Secret or ConfigMap is missing."""
        self.refresh_in = None
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            if "hostPath" in volume:
                self.folders[name] = Path(volume["hostPath"]["path"])
                continue
            folder = AtomicDir(self.root / name)
            self.folders[name] = folder.path
            if "emptyDir" in volume:
                continue
            files = self._files(volume)
            if files is not None:
                mode = next(
                    (volume[k].get("defaultMode") for k in volume if isinstance(volume[k], dict)), None
                )
                folder.write(files, mode or 0o644)

    def _files(self, volume: dict) -> dict[str, bytes] | None:
        if "projected" in volume:
            files: dict[str, bytes] = {}
            for source in volume["projected"].get("sources") or []:
                files |= self._source_files(source)
            return files
        for kind in ("configMap", "secret", "downwardAPI"):
            if kind in volume:
                return self._source_files({kind: volume[kind]})
        return None

    def _source_files(self, source: dict) -> dict[str, bytes]:
        if "serviceAccountToken" in source:
            spec = source["serviceAccountToken"]
            token, lifetime = self.issue_token(spec.get("audience"), spec.get("expirationSeconds", 3600))
            due = min(REFRESH_FRACTION * lifetime, DAY_SECONDS)
            self.refresh_in = due if self.refresh_in is None else min(self.refresh_in, due)
            return {spec["path"]: token.encode()}
        if "downwardAPI" in source:
            return {
                item["path"]: field_value(self.pod, item["fieldRef"]["fieldPath"]).encode()
                for item in source["downwardAPI"].get("items") or []
                if "fieldRef" in item
            }
        for key, kind, name_key in (("configMap", "ConfigMap", "name"), ("secret", "Secret", "secretName")):
            if key not in source:
                continue
            ref = source[key]
            name = ref.get(name_key) or ref.get("name", "")
            obj = self.lookup(kind, self.pod["metadata"]["namespace"], name)
            if obj is None:
                if ref.get("optional"):
                    return {}
                raise EnvError(f'{kind.lower()} "{name}" not found')
            values = _values(obj)
            items = ref.get("items")
            if not items:
                return values
            return {item["path"]: values[item["key"]] for item in items if item["key"] in values}
        return {}


def _values(obj: dict) -> dict[str, bytes]:
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    return data | {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}


def token_lifetime(token: str) -> float:
    """A JWT's lifetime (``exp`` - ``iat``) in seconds, read without checking its signature."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return float(claims["exp"] - claims["iat"])
