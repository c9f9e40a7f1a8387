"""The project's Prefect servers batch their task-run writes, unless the operator's environment says
otherwise."""

from __future__ import annotations

from pathlib import Path

from scripts.prefect_postgres import PostgresPrefect
from tasks.prefect_api import SERVER_RECORDER_SETTINGS, server_environment

BATCH = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE"


def test_the_recorder_batches_unless_the_environment_sets_it():
    assert server_environment({"PATH": "/bin"}) == {"PATH": "/bin", **SERVER_RECORDER_SETTINGS}
    assert int(SERVER_RECORDER_SETTINGS[BATCH]) > 1
    assert server_environment({BATCH: "1"})[BATCH] == "1", "the operator's value wins"


def test_the_postgresql_backed_server_starts_with_the_batching(tmp_path: Path):
    server = PostgresPrefect(workdir=tmp_path, env={"PATH": "/bin"})

    env = server.server_env()

    assert {k: env[k] for k in SERVER_RECORDER_SETTINGS} == SERVER_RECORDER_SETTINGS
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
