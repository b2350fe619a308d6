"""`llmflow-airgap plan`: the plan `install --dry-run` prints, from platform.yaml and the
lockfile alone (no bundle), built by the same code — compared line by line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from install_world import OVERLAY_HOST, InstallWorld, build_install_world
from oci_world import World

from llmflow_airgap.cli import main
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.plan import normalise_bundle_path, replace_push_images

SITE = "registry.site.example:5000"


@pytest.fixture(scope="module")
def install_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    return build_install_world(oci_world, tmp_path_factory.mktemp("plan-world"))


@pytest.fixture(scope="module")
def dify_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    return build_install_world(oci_world, tmp_path_factory.mktemp("plan-dify"), with_dify=True)


def _out(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[str]:
    assert main(args) == 0
    return capsys.readouterr().out.splitlines()


def _plan(world: InstallWorld, profile: str, *extra: str) -> list[str]:
    args = ["plan", "--platform", str(world.platform_file), "--lock", str(world.lockfile)]
    return [*args, "--profile", profile, "--registry", SITE, "--work-dir", "work", *extra]


def _dry_run(world: InstallWorld, profile: str, *extra: str) -> list[str]:
    args = ["install", str(world.bundle), "--registry", SITE, "--profile", profile]
    return [*args, "--work-dir", "work", "--dry-run", *extra]


@pytest.mark.parametrize("profile", ["minimal", "ha"])
def test_plan_is_the_dry_run_without_the_bundle(
    install_world: InstallWorld, profile: str, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = _out(capsys, _plan(install_world, profile))
    dry_run = _out(capsys, _dry_run(install_world, profile))
    normalised = normalise_bundle_path(dry_run, install_world.bundle)
    assert replace_push_images(planned, []) == replace_push_images(normalised, [])
    text = "\n".join(planned)
    assert "kubectl" not in text
    # namespaces server-side applied before the first release, the rest after the last one
    before = planned.index(
        "Namespaces, before the releases (server-side apply, field manager llmflow-airgap):"
    )
    first = next(i for i, line in enumerate(planned) if line.startswith("   1. "))
    after = planned.index(
        "Manifests, after every release (server-side apply, field manager llmflow-airgap):"
    )
    assert before < planned.index("  manifests/policies/k8s/namespaces.yaml") < first < after
    assert planned.index("  manifests/platform/manifests/routes.yaml") > after
    assert ("  manifests/platform/manifests/ha-autoscaling.yaml" in planned) == (profile == "ha")
    # image pins come from the lockfile, as install applies them
    assert f"{SITE}/llmflowtest/worker:1.0@{install_world.worker_digest}" in text


def test_plan_lists_the_lockfiles_images_where_the_bundle_would_give_blob_counts(
    install_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = _out(capsys, _plan(install_world, "minimal"))
    start = planned.index(f"Push images to {SITE} (step push-images):")
    section = planned[start + 1 : planned.index("", start)]
    lock = load_lockfile(install_world.lockfile)
    for image in lock.images:
        target = f"{SITE}/{image.repository.split('/', 1)[1]}:{image.tag}"
        assert f"  {image.reference}@{image.digest} -> {target}" in section
    assert section[-1].startswith(f"  {len(lock.images)} images from the lockfile")
    assert planned[0].startswith("Install plan: llmflow-install-test 0.2.0, profile minimal, ")
    assert "bundle <bundle>" in planned[0]


def test_plan_json_matches_the_dry_run_json(
    install_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    planned = json.loads("\n".join(_out(capsys, [*_plan(install_world, "ha"), "--json"])))
    dry_run = json.loads("\n".join(_out(capsys, [*_dry_run(install_world, "ha"), "--json"])))
    for key in ("releases", "manifests", "charts", "lockSha256", "postInstall", "notes"):
        assert planned[key] == dry_run[key], key
    assert planned["bundle"] is None
    assert {i["source"] for i in planned["images"]} == {i["source"] for i in dry_run["images"]}


def test_plan_of_tenant_releases_matches_the_dry_run(
    dify_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = ["--tenant", "dept-a"]
    planned = _out(capsys, _plan(dify_world, "minimal", *tenant))
    dry_run = normalise_bundle_path(
        _out(capsys, _dry_run(dify_world, "minimal", *tenant)), dify_world.bundle
    )
    assert replace_push_images(planned, []) == replace_push_images(dry_run, [])
    assert any(line.startswith("   3. dept-a/dify: dify 0.37.0") for line in planned)


def test_plan_defaults_to_platform_yamls_registry(
    install_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--platform", str(install_world.platform_file)]
    planned = _out(capsys, [*args, "--lock", str(install_world.lockfile), "--profile", "minimal"])
    assert planned[0].endswith(f"registry {OVERLAY_HOST}")


def test_plan_needs_the_lockfile(
    install_world: InstallWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["plan", "--platform", str(install_world.platform_file)]
    assert main([*args, "--lock", str(tmp_path / "absent.lock.yaml")]) == 2
    assert "run `llmflow-airgap lock` first" in capsys.readouterr().err


def test_plan_refuses_a_lockfile_of_another_platform_yaml(
    install_world: InstallWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changed = tmp_path / "platform" / "platform.yaml"
    changed.parent.mkdir()
    changed.write_text(install_world.platform_file.read_text() + "# edited\n")
    args = ["plan", "--platform", str(changed), "--lock", str(install_world.lockfile)]
    assert main(args) == 2
    assert "is not the platform.yaml the bundle was locked from" in capsys.readouterr().err
