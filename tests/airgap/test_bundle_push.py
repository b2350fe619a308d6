"""Install step 1: push a verified bundle into a second real registry, digests unchanged."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from oci_world import LocalRegistry, World, needs_tool

from llmflow_airgap.cli import main
from llmflow_airgap.events import Reporter
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.push import push_bundle

IMAGES = ("llmflowtest/web:1.0", "llmflowtest/worker:1.0", "llmflowtest/api:2.0")


@pytest.fixture
def site_registry(oci_world: World, tmp_path: Path) -> Iterator[LocalRegistry]:
    registry = LocalRegistry(tmp_path / "site").start()
    try:
        yield registry
    finally:
        registry.stop()


def _catalog(registry: LocalRegistry) -> list[str]:
    repositories: list[str] = httpx.get(f"{registry.url}/v2/_catalog").json()["repositories"]
    return repositories


def _raw_digest(registry: LocalRegistry, image: str) -> str:
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/{image}"],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _events(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")
    ]


def test_dry_run_prints_the_plan_and_touches_nothing(
    built_bundle: Path, site_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["push", str(built_bundle), "--registry", site_registry.host, "--dry-run"])
    assert code == 0
    out = capsys.readouterr().out
    assert f"docker.io/llmflowtest/web:1.0 -> {site_registry.host}/llmflowtest/web:1.0" in out
    assert "3 images, 10 unique blobs" in out
    assert _catalog(site_registry) == []


@needs_tool("skopeo")
@pytest.mark.parametrize("chunked", [False, True], ids=["monolithic", "chunked"])
def test_push_keeps_every_digest_and_never_uploads_twice(
    chunked: bool,
    oci_world: World,
    built_bundle: Path,
    site_registry: LocalRegistry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["push", "--json", str(built_bundle), "--registry", site_registry.host]
    args += ["--public-key", str(oci_world.public_key)]
    if chunked:
        args += ["--chunk-size", "1M"]
    assert main(args) == 0
    first = _events(capsys)
    outcomes = [e["outcome"] for e in first if e["event"] == "push.blob"]
    # the base layer is shared by three repositories: uploaded once, mounted into the others
    assert outcomes.count("mounted") >= 2
    uploaded = [e["digest"] for e in first if e.get("outcome") == "uploaded"]
    assert len(uploaded) == len(set(uploaded)) == 10
    lock = load_lockfile(built_bundle / "platform.lock.yaml")
    source = {i.reference.split("/", 1)[1]: i.digest for i in lock.images}
    for image in IMAGES:
        assert _raw_digest(site_registry, image) == source[image]
        assert _raw_digest(oci_world.registry, image) == source[image]
    # a second run (say, after an interruption) finds everything and uploads nothing
    assert main([*args[:5], "--skip-verify"]) == 0
    second = _events(capsys)
    assert {e["outcome"] for e in second if e["event"] == "push.blob"} == {"exists"}
    done = next(e for e in second if e["event"] == "push.done")
    assert done["uploaded"] == 0 and done["bytesUploaded"] == 0


def test_push_refuses_a_tampered_bundle(
    oci_world: World, built_bundle: Path, site_registry: LocalRegistry, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(built_bundle, bundle)
    (bundle / "images" / "extra.tar").write_bytes(b"payload")
    args = ["push", str(bundle), "--registry", site_registry.host]
    assert main([*args, "--public-key", str(oci_world.public_key)]) == 1
    assert _catalog(site_registry) == []


class Killed(Exception):
    """Stands in for a push process killed mid-blob."""


@needs_tool("skopeo")
def test_killed_push_resumes_mid_blob_and_sends_nothing_twice(
    oci_world: World, built_bundle: Path, site_registry: LocalRegistry, tmp_path: Path
) -> None:
    state = tmp_path / "push-state.json"
    big = oci_world.big_layer
    chunk = 1024 * 1024

    def kill(digest: str, sent: int) -> None:
        if digest == big and sent >= 2 * chunk:
            raise Killed

    first = io.StringIO()
    with pytest.raises(Killed):
        push_bundle(
            built_bundle,
            site_registry.host,
            Reporter(json_lines=True, out=first),
            chunk_size=chunk,
            state_file=state,
            on_chunk=kill,
        )
    saved = json.loads(state.read_text())["uploads"]
    assert saved[f"llmflowtest/worker@{big}"]["offset"] == 2 * chunk
    sent_before = sum(
        e["sent"]
        for e in map(json.loads, first.getvalue().splitlines())
        if e["event"] == "push.blob"
    )

    second = io.StringIO()
    result = push_bundle(
        built_bundle,
        site_registry.host,
        Reporter(json_lines=True, out=second),
        chunk_size=chunk,
        state_file=state,
    )
    events = [json.loads(line) for line in second.getvalue().splitlines()]
    resumed = [e for e in events if e["event"] == "push.resumed"]
    assert [(e["digest"], e["offset"]) for e in resumed] == [(big, 2 * chunk)]
    unique = {e["digest"]: e["size"] for e in events if e["event"] == "push.blob"}
    # every byte crossed the wire exactly once over the two runs
    assert sent_before + 2 * chunk + result.bytes_uploaded == sum(unique.values())
    assert json.loads(state.read_text())["uploads"] == {}
    lock = load_lockfile(built_bundle / "platform.lock.yaml")
    worker = next(i for i in lock.images if "worker" in i.reference)
    assert _raw_digest(site_registry, "llmflowtest/worker:1.0") == worker.digest
