"""Cluster mode takes a DSN: the same migrations, keys and knowledge bases on a PostgreSQL
server we did not start ourselves (Debian's PostgreSQL binaries, started here as a separate
server, as an operator's database would be)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server_dsn() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("Debian PostgreSQL 15 binaries are not installed")
    # not under pytest's tmp dir: that is private to root and the server runs as postgres
    base = Path(tempfile.mkdtemp(prefix="llmflow-pg-"))
    data = base / "data"
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' system user to run the server as")
        shutil.chown(data.parent, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(PG_BIN / "initdb"), "-D", str(data), "-U", user, "--auth=trust"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    subprocess.run(
        [
            *run_as,
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(data.parent / "log"),
            "-o",
            f"-p {port} -k {data.parent} -h 127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [
                *run_as,
                str(PG_BIN / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                user,
                "llmflow_test",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql://{user}@127.0.0.1:{port}/llmflow_test"
    finally:
        subprocess.run(
            [*run_as, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


async def test_cluster_profile_on_a_dsn(server_dsn: str, tmp_path: Path) -> None:
    from llmflow.runtime import Runtime
    from llmflow.settings import Settings

    settings = Settings(
        profile="cluster",
        data_dir=tmp_path,
        database={"dsn": server_dsn},
        milvus={"uri": str(tmp_path / "milvus.db")},
        object_store={"backend": "filesystem"},
        embedding={"provider": "local", "model": "all-MiniLM-L6-v2", "languages": ["en"]},
        policy={"mode": "embedded"},
        graph={"store": "postgres"},
        _env_file=None,
    )  # type: ignore[call-arg]
    assert not settings.database.embedded and not settings.jobs.in_process_worker
    rt = await Runtime.open(settings)
    try:
        assert rt.db.server is None  # nothing started: the DSN's server is used
        key = await rt.api_keys.create("dept-hr", ["rules"])
        assert (await rt.api_keys.authenticate(key.key)).tenant_id == "dept-hr"
        await rt.knowledge_bases.create("dept-hr", "rules")
        assert [kb.name for kb in await rt.knowledge_bases.list("dept-hr")] == ["rules"]
    finally:
        await rt.close()
    # migrating again is a no-op on an up-to-date schema
    rt = await Runtime.open(settings)
    await rt.close()
