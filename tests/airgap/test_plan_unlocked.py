"""`llmflow-airgap plan` on a plain checkout, before `lock`: the same plan as with the lockfile
(releases, order, values files, gates, manifests, cluster objects, post-install steps), with
every digest the lockfile would supply marked as resolved by `lock`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from install_world import InstallWorld, build_install_world
from oci_world import World

from llmflow_airgap.cli import main
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.plan import replace_section

SITE = "registry.site.example:5000"
UNRESOLVED = "<digest resolved by `lock`>"


@pytest.fixture(scope="module")
def install_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    return build_install_world(oci_world, tmp_path_factory.mktemp("plan-unlocked"))


@pytest.fixture(scope="module")
def dify_world(oci_world: World, tmp_path_factory: pytest.TempPathFactory) -> InstallWorld:
    root = tmp_path_factory.mktemp("plan-unlocked-dify")
    return build_install_world(oci_world, root, with_dify=True)


def _out(capsys: pytest.CaptureFixture[str], args: list[str]) -> list[str]:
    assert main(args) == 0
    return capsys.readouterr().out.splitlines()


def _plan(platform: Path, profile: str, *extra: str) -> list[str]:
    args = ["plan", "--platform", str(platform), "--profile", profile]
    return [*args, "--registry", SITE, "--work-dir", "work", *extra]


def _digests(world: InstallWorld) -> list[str]:
    lock = load_lockfile(world.lockfile)
    return [i.digest for i in lock.images] + [p.digest for i in lock.images for p in i.platforms]


def _comparable(lines: list[str], digests: list[str]) -> list[str]:
    """Everything but the header and the image and chart push sections, digests masked."""
    out = replace_section(lines[1:], "Push images to ", [])
    out = replace_section(out, "Push charts to ", [])
    text = "\n".join(out)
    for digest in digests:
        text = text.replace(digest, UNRESOLVED)
    return text.splitlines()


@pytest.mark.parametrize("profile", ["minimal", "ha"])
def test_plan_without_a_lockfile_is_the_locked_plan_without_digests(
    install_world: InstallWorld, profile: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # no platform.lock.yaml beside this platform.yaml, and no --lock
    assert not (install_world.platform_file.parent / "platform.lock.yaml").exists()
    unlocked = _out(capsys, _plan(install_world.platform_file, profile))
    locked = _out(
        capsys, _plan(install_world.platform_file, profile, "--lock", str(install_world.lockfile))
    )
    assert "(no lockfile: digests resolved by `lock`)" in unlocked[0]
    assert "(lock sha256:" in locked[0]
    digests = _digests(install_world)
    assert _comparable(unlocked, digests) == _comparable(locked, digests)
    text = "\n".join(unlocked)
    assert not any(d in text for d in digests if d != install_world.web_digest)
    assert f"{SITE}/llmflowtest/worker:1.0@{UNRESOLVED}" in text
    # a digest the overlay pins itself is kept: the lockfile will have to agree with it
    assert f"image sidecar.image: {SITE}/llmflowtest/web:1.0@{install_world.web_digest}" in text
    push = unlocked.index(f"Push images to {SITE} (step push-images):")
    section = unlocked[push + 1 : unlocked.index("", push)]
    assert f"  ghcr.io/llmflowtest/api:2.0 -> {SITE}/llmflowtest/api:2.0 (digest resolved by " in (
        "\n".join(section)
    )
    assert section[-1].startswith("  3 images from platform.yaml")
    charts = unlocked.index(f"Push charts to oci://{SITE}/charts:")
    assert unlocked[charts + 1].startswith("  chart/")
    assert unlocked[charts + 1].endswith("(digest resolved by `lock`)")


def test_plan_json_without_a_lockfile(
    install_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    unlocked = json.loads(
        "\n".join(_out(capsys, [*_plan(install_world.platform_file, "ha"), "--json"]))
    )
    args = [*_plan(install_world.platform_file, "ha"), "--lock", str(install_world.lockfile)]
    locked = json.loads("\n".join(_out(capsys, [*args, "--json"])))
    for key in ("manifests", "postInstall", "notes", "prepare", "preflight"):
        assert unlocked[key] == locked[key], key
    assert [(r["step"], r["valuesFiles"], r["gates"]) for r in unlocked["releases"]] == [
        (r["step"], r["valuesFiles"], r["gates"]) for r in locked["releases"]
    ]
    assert unlocked["lockSha256"] is None and unlocked["bundle"] is None
    assert {i["source"] for i in unlocked["images"]} == {i["source"] for i in locked["images"]}
    assert all(i["digest"] is None for i in unlocked["images"])
    assert [c["target"] for c in unlocked["charts"]] == [c["target"] for c in locked["charts"]]


def test_tenant_releases_are_planned_without_a_lockfile(
    dify_world: InstallWorld, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = ("--tenant", "dept-a")
    unlocked = _out(capsys, _plan(dify_world.platform_file, "minimal", *tenant))
    locked = _out(
        capsys,
        _plan(dify_world.platform_file, "minimal", *tenant, "--lock", str(dify_world.lockfile)),
    )
    digests = _digests(dify_world)
    assert _comparable(unlocked, digests) == _comparable(locked, digests)
    assert any(line.startswith("   3. dept-a/dify: dify 0.37.0") for line in unlocked)


def test_a_lockfile_beside_platform_yaml_is_used_by_default(
    install_world: InstallWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "checkout"
    shutil.copytree(
        install_world.root, root, ignore=shutil.ignore_patterns("bundle", "chart-src", "charts")
    )
    platform = root / "platform" / "platform.yaml"
    shutil.copy(install_world.lockfile, platform.with_name("platform.lock.yaml"))
    planned = _out(capsys, _plan(platform, "minimal"))
    assert f"{SITE}/llmflowtest/worker:1.0@{install_world.worker_digest}" in "\n".join(planned)
    assert "(no lockfile" not in planned[0]
