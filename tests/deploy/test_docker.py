"""docker/Dockerfile, checked without a Docker engine: what it copies exists and is in the build context,
the install comes from uv.lock, the base image is Prefect's at the locked version, it runs as a non-root
user, and the flows of prefect.yaml import from exactly the files the image gets."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), " ".join(rest.split())))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        result[-1].append((keyword, args))
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def copies(stage: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(sources, destination) of the COPY instructions that read the build context."""
    out = []
    for keyword, args in stage:
        if keyword == "COPY" and "--from=" not in args:
            parts = [p for p in args.split() if not p.startswith("--")]
            out.append((parts[:-1], parts[-1]))
    return out


def locked_version(package: str) -> str:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def in_build_context(path: str) -> bool:
    """.dockerignore's verdict for a top-level path (the last matching pattern wins)."""
    included = True
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern):
            included = negate
    return included


def test_every_copy_source_exists_and_is_in_the_build_context():
    sources = [s for stage in stages() for srcs, _ in copies(stage) for s in srcs]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert in_build_context(source), f"COPY {source}: excluded by .dockerignore"


def test_dependencies_are_installed_from_the_lock_file():
    lock_stage, final = stages()[0], final_stage()
    assert any("uv.lock" in srcs for srcs, _ in copies(lock_stage))
    (export,) = [a for k, a in lock_stage if k == "RUN" and "uv export" in a]
    assert "--frozen" in export and "--no-dev" in export
    runs = [a for k, a in final if k == "RUN"]
    assert any("--require-hashes -r /tmp/requirements.txt" in r and "--no-deps" in r for r in runs)
    # the project itself goes in without resolving anything again
    assert any(re.search(r"pip install .*--no-deps \.(\s|$)", r) for r in runs)


def test_the_lock_exports_with_the_command_the_image_uses():
    uv = [shutil.which("uv")] if shutil.which("uv") else ["python3", "-m", "uv"]
    exported = subprocess.run(
        [*uv, "export", "--frozen", "--no-dev", "--no-emit-project", "--format", "requirements-txt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"prefect=={locked_version('prefect')}" in exported
    assert "--hash=sha256:" in exported
    assert "pytest==" not in exported  # no dev dependencies


def test_base_image_is_prefects_at_the_locked_version():
    keyword, base = final_stage()[0]
    match = re.fullmatch(r"prefecthq/prefect:(\d+\.\d+\.\d+)-python(\d+\.\d+)", base)
    assert match, base
    assert match.group(1) == locked_version("prefect")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11" and tuple(map(int, match.group(2).split("."))) >= (3, 11)
    # the worker of deployments/kubernetes runs the same Prefect version
    worker = [d for d in yaml.safe_load_all((ROOT / "deployments/kubernetes/worker.yaml").read_text()) if d]
    (deployment,) = [d for d in worker if d["kind"] == "Deployment"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.startswith(f"prefecthq/prefect:{locked_version('prefect')}-")


def test_runs_as_a_non_root_user():
    final = final_stage()
    users = [a for k, a in final if k == "USER"]
    assert users, "no USER instruction"
    assert users[-1].split(":")[0] not in ("root", "0")
    last_user = max(i for i, (k, _) in enumerate(final) if k == "USER")
    assert all(k != "RUN" for k, _ in final[last_user:]), "RUN after USER would run as that user"
    assert any("useradd" in a and f"--uid {users[-1]}" in a for k, a in final if k == "RUN")


def test_pull_step_folder_is_the_image_workdir():
    final = final_stage()
    workdir = [a for k, a in final if k == "WORKDIR"][-1]
    env = " ".join(a for k, a in final if k == "ENV")
    assert f"AKSMAINT_PROJECT_DIR={workdir}" in env
    pull = yaml.safe_load((ROOT / "prefect.yaml").read_text())["pull"]
    assert (
        pull[0]["prefect.deployments.steps.set_working_directory"]["directory"]
        == "{{ $AKSMAINT_PROJECT_DIR }}"
    )


def entrypoints() -> list[str]:
    deployments = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
    return sorted({d["entrypoint"] for d in deployments})


@pytest.fixture(scope="module")
def image_tree(tmp_path_factory) -> Path:
    """The files the final stage copies, laid out as in the image's work directory."""
    tree = tmp_path_factory.mktemp("image")
    for sources, dest in copies(final_stage()):
        for source in sources:
            src = ROOT / source
            target = tree / (dest.removeprefix("./") if dest not in ("./", ".") else src.name)
            if src.is_dir():
                shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, tree / src.name)
    return tree


def test_flow_entrypoints_import_from_the_files_the_image_gets(image_tree):
    """Load each prefect.yaml entrypoint as a worker would, with only the copied files on the path."""
    script = (
        "import sys\n"
        f"sys.path = [p for p in sys.path if p not in ('', {str(ROOT)!r})]\n"
        f"sys.path.insert(0, {str(image_tree)!r})\n"
        "from prefect.flows import load_flow_from_entrypoint\n"
        "import flows, aksmaint, tasks\n"
        f"assert flows.__file__.startswith({str(image_tree)!r}), flows.__file__\n"
        "for entry in sys.argv[1:]:\n"
        "    flow = load_flow_from_entrypoint(entry)\n"
        "    print(entry, flow.name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *entrypoints()],
        cwd=image_tree,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    names = dict(line.split() for line in result.stdout.splitlines())
    assert names == {
        "flows/cluster_upgrade.py:cluster_upgrade": "cluster-upgrade",
        "flows/fleet.py:fleet": "fleet",
        "flows/node_maintenance.py:node_maintenance": "node-maintenance",
    }
