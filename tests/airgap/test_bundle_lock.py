"""`llmflow-airgap lock` against a real OCI registry (Debian's `docker-registry`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from oci_world import (
    MODEL_REVISION,
    World,
    chart_tgz,
    digest_of,
    push_multiplatform,
    tar_gz,
)

from llmflow_airgap.cli import main
from llmflow_airgap.errors import LockfileError, RegistryError
from llmflow_airgap.lock import LockRequest, create_lock, resolve_image
from llmflow_airgap.lockfile import load_lockfile, lockfile_json_schema
from llmflow_airgap.registry import DOCKER_MANIFEST, OCI_INDEX, RegistryClient


def test_lock_pins_index_and_every_platform(oci_world: World, lockfile: Path) -> None:
    lock = load_lockfile(lockfile)
    images = {i.reference: i for i in lock.images}
    assert set(images) == {
        "docker.io/llmflowtest/web:1.0",
        "docker.io/llmflowtest/worker:1.0",
        oci_world.api_reference,
    }
    web = images["docker.io/llmflowtest/web:1.0"]
    assert web.digest == oci_world.web.digest
    assert web.media_type == OCI_INDEX
    assert {p.platform: p.digest for p in web.platforms} == oci_world.web.platforms
    assert sorted(web.components) == ["api", "web"]
    # skopeo pushed this one as a Docker schema 2 manifest: one platform, read from its config
    api = images[oci_world.api_reference]
    assert api.media_type == DOCKER_MANIFEST
    assert [(p.platform, p.digest) for p in api.platforms] == [("linux/amd64", api.digest)]
    assert api.pinned == f"ghcr.io/llmflowtest/api:2.0@{api.digest}"


def test_lock_pins_charts_models_and_wheels(oci_world: World, lockfile: Path) -> None:
    lock = load_lockfile(lockfile)
    charts = {c.name: c for c in lock.charts}
    assert charts["webchart"].source == "https"
    assert charts["webchart"].url == "https://charts.example.com/stable/webchart-1.2.3.tgz"
    assert charts["webchart"].digest == digest_of(chart_tgz("webchart", "1.2.3"))
    assert charts["apichart"].source == "oci"
    assert charts["apichart"].digest == digest_of(chart_tgz("apichart", "1.2.3"))
    assert charts["apichart"].manifest_digest is not None
    (model,) = lock.models
    assert model.revision == MODEL_REVISION
    snapshot = oci_world.models_dir / "models--llmflow--tiny-model" / "snapshots" / MODEL_REVISION
    assert {f.path: f.sha256 for f in model.files} == {
        rel: "sha256:" + hashlib.sha256((snapshot / rel).read_bytes()).hexdigest()
        for rel in ("config.json", "model.safetensors", "tokenizer/tokenizer.json")
    }
    (wheel,) = lock.wheels
    assert (wheel.name, wheel.version) == ("llmflow-testpkg", "0.1.0")


def test_lockfile_matches_its_published_schema(lockfile: Path) -> None:
    document = yaml.safe_load(lockfile.read_text(encoding="utf-8"))
    jsonschema.validate(document, lockfile_json_schema())
    document["images"][0]["digest"] = "sha256:short"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, lockfile_json_schema())


def test_moved_tag_changes_the_lock(oci_world: World) -> None:
    registry = oci_world.registry
    with RegistryClient(oci_world.registry_mirrors | {"127.0.0.1": registry.url}) as client:
        first = push_multiplatform(
            client,
            registry,
            "docker.io",
            "llmflowtest/moving",
            "3.1",
            {"amd64": [tar_gz({"v": b"1"})], "arm64": [tar_gz({"v": b"1-arm"})]},
        )
        before = resolve_image(client, "docker.io/llmflowtest/moving:3.1", ["web"])
        second = push_multiplatform(
            client,
            registry,
            "docker.io",
            "llmflowtest/moving",
            "3.1",
            {"amd64": [tar_gz({"v": b"2"})], "arm64": [tar_gz({"v": b"2-arm"})]},
        )
        after = resolve_image(client, "docker.io/llmflowtest/moving:3.1", ["web"])
        # the old content is still reachable by the digest the first lock recorded
        pinned = client.get_manifest("docker.io", "llmflowtest/moving", before.digest)
    assert before.digest == first.digest
    assert after.digest == second.digest != before.digest
    assert {p.digest for p in after.platforms}.isdisjoint(p.digest for p in before.platforms)
    assert pinned.digest == before.digest


def test_chart_from_a_local_directory(oci_world: World, tmp_path: Path) -> None:
    charts_dir = tmp_path / "charts"
    charts_dir.mkdir()
    archive = chart_tgz("webchart", "1.2.3")
    (charts_dir / "webchart-1.2.3.tgz").write_bytes(archive)
    lock = create_lock(
        LockRequest(
            platform_file=oci_world.platform_file,
            registry_mirrors=oci_world.registry_mirrors,
            charts_dir=charts_dir,
            skip_models=True,
        )
    )
    web_chart = next(c for c in lock.charts if c.name == "webchart")
    assert (web_chart.source, web_chart.url) == ("file", "webchart-1.2.3.tgz")
    assert web_chart.digest == digest_of(archive)
    assert lock.models == [] and lock.wheels == []


def test_missing_model_snapshot_is_an_operator_error(
    oci_world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    with pytest.raises(LockfileError, match=MODEL_REVISION):
        create_lock(
            LockRequest(
                platform_file=oci_world.platform_file,
                registry_mirrors=oci_world.registry_mirrors,
                chart_mirrors=oci_world.chart_mirrors,
                models_dir=empty,
            )
        )
    out = tmp_path / "lock.json"
    code = main(
        [
            "lock",
            "--json",
            "--platform",
            str(oci_world.platform_file),
            "-o",
            str(out),
            "--registry-mirror",
            f"docker.io={oci_world.registry.url}",
            "--registry-mirror",
            f"ghcr.io={oci_world.registry.url}",
            "--chart-mirror",
            f"https://charts.example.com={oci_world.chart_server.url}",
        ]
    )
    assert code == 2
    assert not out.exists()
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "error"
    assert "--models-dir" in events[-1]["message"]


def test_unknown_tag_names_the_image(oci_world: World) -> None:
    with (
        RegistryClient(oci_world.registry_mirrors) as client,
        pytest.raises(RegistryError, match=r"llmflowtest/web:9\.9: HTTP 404"),
    ):
        resolve_image(client, "docker.io/llmflowtest/web:9.9", ["web"])
