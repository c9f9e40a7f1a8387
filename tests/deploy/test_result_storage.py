"""The result storage block prefect.yaml gives the kubernetes work pool can be loaded in the flow image.

A flow-run Job resolves PREFECT_DEFAULT_RESULT_STORAGE_BLOCK (``<block type slug>/<block name>``) by
importing the collection that defines that block type. The image installs exactly what uv.lock exports
(docker/Dockerfile), so the block type must load with the locked dependencies, and every distribution
that loading it imports must be in that export.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.deploy.test_docker import stages
from tests.support import ROOT

# what a flow-run Job does with the setting: load the image's collections, find the block type by its slug,
# and build a client for its container (which needs the blob-storage extra, imported lazily)
LOAD_BLOCK = """
import json, sys
from importlib.metadata import packages_distributions
from prefect.blocks.core import Block
from prefect.filesystems import WritableFileSystem
from importlib.metadata import entry_points
before = set(sys.modules)
# what load_prefect_collections() does in the image, where only the image's distributions are installed
# (this virtualenv also has dev-only collections, such as the kubernetes worker's)
import prefect._internal.plugins.collections as collections
in_image = set(sys.argv[2].split(","))
collections._collections = {  # Prefect's own cache of loaded collections: it loads no others then
    entry.name: entry.load()
    for entry in entry_points(group="prefect.collections")
    if entry.dist.name.lower().replace("_", "-") in in_image
}
block_class = Block.get_block_class_from_key(sys.argv[1])
credentials_class = block_class.model_fields["credentials"].annotation
credentials = credentials_class(connection_string=(
    "DefaultEndpointsProtocol=https;AccountName=aksmaint;AccountKey=a2V5;EndpointSuffix=core.windows.net"
))
credentials.get_container_client("aks-maintenance-results")
top = {name.split(".")[0] for name in set(sys.modules) - before}
owners = packages_distributions()
print(json.dumps({
    "class": f"{block_class.__module__}.{block_class.__qualname__}",
    "slug": block_class.get_block_type_slug(),
    "writable": issubclass(block_class, WritableFileSystem),
    "distributions": sorted({d for name in top for d in owners.get(name, [])}),
}))
"""


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def result_storage_setting() -> str:
    pools = yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["work_pools"]
    return pools["kubernetes"]["job_variables"]["env"]["PREFECT_DEFAULT_RESULT_STORAGE_BLOCK"]


def block_type_slug() -> str:
    slug, _, name = result_storage_setting().partition("/")
    assert slug and name, "PREFECT_DEFAULT_RESULT_STORAGE_BLOCK must read <block type slug>/<block name>"
    return slug


def image_requirements() -> set[str]:
    """The distribution names the image installs: the Dockerfile's own `uv export` command, run here."""
    (export,) = [args for keyword, args in stages()[0] if keyword == "RUN" and "uv export" in args]
    command = shlex.split(export)
    if "-o" in command:  # print instead of writing the file inside the image
        at = command.index("-o")
        del command[at : at + 2]
    uv = [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]
    exported = subprocess.run([*uv, *command[1:]], cwd=ROOT, capture_output=True, text=True, check=True)
    return {
        normalize(line.split("==")[0])
        for line in exported.stdout.splitlines()
        if line and not line[0].isspace() and "==" in line
    }


@pytest.fixture(scope="module")
def loaded_block() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_BLOCK, block_type_slug(), ",".join(sorted(image_requirements()))],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_result_storage_block_type_loads_and_can_store_results(loaded_block):
    assert loaded_block["slug"] == block_type_slug()
    assert loaded_block["class"] == "prefect_azure.blob_storage.AzureBlobStorageContainer"
    assert loaded_block["writable"], "result storage must be a writable file system block"


def test_everything_the_block_imports_is_installed_by_the_image(loaded_block):
    installed = image_requirements()
    needed = {normalize(d) for d in loaded_block["distributions"]}
    assert {"prefect-azure", "azure-storage-blob"} <= needed
    assert needed - installed == set(), "the flow image would miss these; add them to pyproject.toml"
