"""`llmflow-airgap build` and `verify`: layout, dedupe, standard tools, tampering, resume."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from oci_world import World, needs_tool

from llmflow_airgap.build import BuildRequest, build_bundle
from llmflow_airgap.bundle import BLOBS_DIR, PARTIAL_DIR
from llmflow_airgap.cli import main
from llmflow_airgap.events import Reporter
from llmflow_airgap.lockfile import load_lockfile
from llmflow_airgap.signing import generate_keypair
from llmflow_airgap.verify import verify_bundle, verify_parts


def _run(*command: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)


def _referenced_blobs(layout: Path) -> dict[str, int]:
    """Every digest the layout's manifests reference, with how many manifests reference it."""
    counts: dict[str, int] = {}
    index = json.loads((layout / "index.json").read_text())
    pending = [d["digest"] for d in index["manifests"]]
    seen: set[str] = set()
    while pending:
        digest = pending.pop()
        if digest in seen:
            continue
        seen.add(digest)
        counts.setdefault(digest, 0)
        doc = json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())
        for child in doc.get("manifests", []):
            pending.append(child["digest"])
        for blob in [doc["config"], *doc["layers"]] if "layers" in doc else []:
            counts[blob["digest"]] = counts.get(blob["digest"], 0) + 1
    return counts


def test_one_layout_stores_shared_layers_once(oci_world: World, built_bundle: Path) -> None:
    layout = built_bundle / "images"
    counts = _referenced_blobs(layout)
    on_disk = {p.name for p in (layout / "blobs" / "sha256").iterdir()}
    assert on_disk == {d.split(":")[1] for d in counts}
    # the base layer is in 5 manifests (web and worker, both arches, and api) yet stored once
    assert counts[oci_world.shared_layer] == 5
    blob_bytes = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
    total = sum(p.stat().st_size for p in built_bundle.rglob("*") if p.is_file())
    other = total - blob_bytes
    assert other < 1024 * 1024  # charts, tiny model (512 KiB), wheel, metadata
    assert not (built_bundle / PARTIAL_DIR).exists()


@needs_tool("skopeo")
@needs_tool("umoci")
def test_layout_is_readable_by_skopeo_and_umoci(oci_world: World, built_bundle: Path) -> None:
    layout = built_bundle / "images"
    listed = _run("umoci", "ls", "--layout", str(layout))
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == [
        "docker.io/llmflowtest/web:1.0",
        "docker.io/llmflowtest/worker:1.0",
        "ghcr.io/llmflowtest/api:2.0",
    ]
    for arch in ("amd64", "arm64"):
        inspected = _run(
            "skopeo",
            "--override-arch",
            arch,
            "inspect",
            f"oci:{layout}:docker.io/llmflowtest/worker:1.0",
        )
        assert inspected.returncode == 0, inspected.stderr
        info = json.loads(inspected.stdout)
        assert info["Architecture"] == arch
        assert info["Digest"] in {
            oci_world.worker.digest,
            oci_world.worker.platforms[f"linux/{arch}"],
        }, info["Digest"]
        assert oci_world.shared_layer in info["Layers"]
    # the Docker v2 manifest is kept byte-for-byte, so its digest (the pin) still holds
    lock = load_lockfile(built_bundle / "platform.lock.yaml")
    api = next(i for i in lock.images if i.reference == oci_world.api_reference)
    stored = (layout / "blobs" / "sha256" / api.digest.split(":")[1]).read_bytes()
    assert "sha256:" + hashlib.sha256(stored).hexdigest() == api.digest


@needs_tool("sha256sum")
@needs_tool("openssl")
def test_standard_tools_check_the_bundle(oci_world: World, built_bundle: Path) -> None:
    sums = _run("sha256sum", "--strict", "-c", "checksums.txt", cwd=built_bundle)
    assert sums.returncode == 0, sums.stdout + sums.stderr
    listed = {
        line.split("  ", 1)[1] for line in (built_bundle / "checksums.txt").read_text().splitlines()
    }
    on_disk = {
        p.relative_to(built_bundle).as_posix() for p in built_bundle.rglob("*") if p.is_file()
    }
    assert listed == on_disk - {"checksums.txt"}
    ok = _run(
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(oci_world.public_key),
        "-rawin",
        "-in",
        "manifest.json",
        "-sigfile",
        "manifest.json.sig",
        cwd=built_bundle,
    )
    assert ok.returncode == 0 and "Signature Verified Successfully" in ok.stdout
    other = built_bundle.parent / "other-keys"
    generate_keypair(other / "k.pem", other / "k.pub.pem", overwrite=True)
    wrong = _run(
        "openssl",
        "pkeyutl",
        "-verify",
        "-pubin",
        "-inkey",
        str(other / "k.pub.pem"),
        "-rawin",
        "-in",
        "manifest.json",
        "-sigfile",
        "manifest.json.sig",
        cwd=built_bundle,
    )
    assert wrong.returncode != 0


def test_sbom_lists_everything_by_digest(oci_world: World, built_bundle: Path) -> None:
    sbom = json.loads((built_bundle / "sbom.cdx.json").read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    by_type: dict[str, list[dict[str, object]]] = {}
    for component in sbom["components"]:
        by_type.setdefault(component["type"], []).append(component)
    containers = {c["name"]: c for c in by_type["container"]}
    web = containers["docker.io/llmflowtest/web"]
    assert web["purl"] == (
        f"pkg:oci/web@{oci_world.web.digest.replace(':', '%3A')}"
        "?repository_url=docker.io/llmflowtest/web&tag=1.0"
    )
    assert web["hashes"] == [{"alg": "SHA-256", "content": oci_world.web.digest.split(":")[1]}]
    assert sorted(c["name"] for c in by_type["application"]) == ["apichart", "webchart"]
    (model,) = by_type["machine-learning-model"]
    assert str(model["purl"]).startswith("pkg:huggingface/llmflow/tiny-model@")
    (wheel,) = by_type["library"]
    assert str(wheel["purl"]).startswith("pkg:pypi/llmflow-testpkg@0.1.0")


def test_verify_accepts_the_bundle(
    oci_world: World, built_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["verify", "--json", str(built_bundle), "--public-key", str(oci_world.public_key)])
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "verify.done" and events[-1]["ok"] is True


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _some_blob(bundle: Path) -> Path:
    return max((bundle / BLOBS_DIR).iterdir(), key=lambda p: p.stat().st_size)


TAMPERING: dict[str, tuple[Callable[[Path], object], str, str]] = {
    "changed blob byte": (lambda b: _flip_byte(_some_blob(b)), "bad-blob", BLOBS_DIR),
    "changed model file": (
        lambda b: _flip_byte(b / "models/tiny/model.safetensors"),
        "changed",
        "models/tiny/model.safetensors",
    ),
    "missing chart": (
        lambda b: (b / "charts/webchart-1.2.3.tgz").unlink(),
        "missing",
        "charts/webchart-1.2.3.tgz",
    ),
    "extra file": (
        lambda b: (b / "wheels/evil-1.0-py3-none-any.whl").write_bytes(b"x"),
        "extra",
        "wheels/evil",
    ),
    "bad signature": (
        lambda b: _flip_byte(b / "manifest.json.sig"),
        "bad-signature",
        "manifest.json.sig",
    ),
    "edited manifest": (
        lambda b: (b / "manifest.json").write_text(
            (b / "manifest.json").read_text().replace('"size": 273', '"size": 274')
        ),
        "bad-signature",
        "manifest.json.sig",
    ),
    "edited checksums": (
        lambda b: (b / "checksums.txt").write_text((b / "checksums.txt").read_text()[1:]),
        "changed",
        "checksums.txt",
    ),
}


@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_verify_refuses_tampering(
    case: str,
    oci_world: World,
    built_bundle: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(built_bundle, bundle)
    tamper, kind, file_prefix = TAMPERING[case]
    tamper(bundle)
    code = main(["verify", "--json", str(bundle), "--public-key", str(oci_world.public_key)])
    assert code == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    problems = [e for e in events if e["event"] == "verify.problem"]
    assert any(p["kind"] == kind and p["file"].startswith(file_prefix) for p in problems), problems


def test_verify_refuses_the_wrong_key(
    built_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    assert main(["verify", str(built_bundle), "--public-key", str(tmp_path / "k.pub.pem")]) == 1
    err = capsys.readouterr().err
    assert "REFUSED manifest.json.sig" in err and "another key" in err


class Interrupted(Exception):
    """Stands in for a killed process at a precise byte."""


def test_interrupted_build_resumes_with_range(
    oci_world: World, lockfile: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    request = BuildRequest(
        lockfile=lockfile,
        output=out,
        signing_key=oci_world.private_key,
        registry_mirrors=oci_world.registry_mirrors,
        chart_mirrors=oci_world.chart_mirrors,
        models_dir=oci_world.models_dir,
        wheelhouse=oci_world.wheelhouse,
    )

    def cut(name: str, done: int) -> None:
        if name == oci_world.big_layer and done >= 2 * 1024 * 1024:
            raise Interrupted

    with pytest.raises(Interrupted):
        build_bundle(BuildRequest(**{**request.__dict__, "on_chunk": cut}))
    partial = out / PARTIAL_DIR / oci_world.big_layer.split(":")[1]
    kept = partial.stat().st_size
    assert kept >= 2 * 1024 * 1024
    assert not (out / "manifest.json").exists()  # a half-built bundle is never signed
    finished_before = {p.name for p in (out / BLOBS_DIR).iterdir()}

    err = io.StringIO()
    result = build_bundle(request, Reporter(err=err))
    assert result.resumed == [oci_world.big_layer]
    assert result.blobs_reused >= 1 and len(finished_before) >= 1
    missing_before = [p for p in (out / BLOBS_DIR).iterdir() if p.name not in finished_before]
    # exactly the bytes that were not on disk yet crossed the wire again: no restart from zero
    assert result.bytes_fetched == sum(p.stat().st_size for p in missing_before) - kept
    assert f"resumed {oci_world.big_layer[:19]}" in err.getvalue()
    percents = [
        float(line.split("(")[1].split("%")[0])
        for line in err.getvalue().splitlines()
        if "images:" in line
    ]
    assert percents == sorted(percents)
    assert verify_bundle(out, oci_world.public_key).ok


def test_rebuild_refetches_only_a_deleted_blob(
    oci_world: World, lockfile: Path, built_bundle: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    shutil.copytree(built_bundle, out)
    victim = _some_blob(out)
    victim.unlink()
    (out / "stray.txt").write_text("left behind by someone")
    result = build_bundle(
        BuildRequest(
            lockfile=lockfile,
            output=out,
            signing_key=oci_world.private_key,
            registry_mirrors=oci_world.registry_mirrors,
            chart_mirrors=oci_world.chart_mirrors,
            models_dir=oci_world.models_dir,
            wheelhouse=oci_world.wheelhouse,
        )
    )
    assert result.blobs_fetched == 1 and victim.exists()
    assert not (out / "stray.txt").exists()
    assert verify_bundle(out, oci_world.public_key).ok


@needs_tool("sha256sum")
def test_split_parts_reassemble(oci_world: World, built_bundle: Path, tmp_path: Path) -> None:
    parts_dir = built_bundle.parent / "parts"
    parts = sorted(parts_dir.glob("bundle.tar.part-*"))
    assert len(parts) >= 3 and all(p.stat().st_size <= 1024 * 1024 for p in parts)
    checked = _run("sha256sum", "--strict", "-c", "bundle.tar.sha256sums", cwd=parts_dir)
    assert checked.returncode == 0, checked.stdout
    whole = hashlib.sha256()
    for part in parts:
        whole.update(part.read_bytes())
    assert (parts_dir / "bundle.tar.sha256").read_text().split()[0] == whole.hexdigest()
    with tarfile.open(fileobj=io.BytesIO(b"".join(p.read_bytes() for p in parts))) as tar:
        tar.extractall(tmp_path, filter="data")
    assert verify_bundle(tmp_path / "bundle", oci_world.public_key).ok
    # a truncated part is caught before anyone unpacks it
    copy = tmp_path / "parts"
    shutil.copytree(parts_dir, copy)
    with (copy / parts[1].name).open("r+b") as handle:
        handle.truncate(1000)
    truncated = _run("sha256sum", "--strict", "-c", "bundle.tar.sha256sums", cwd=copy)
    assert truncated.returncode != 0 and f"{parts[1].name}: FAILED" in truncated.stdout
    assert main(["verify", str(parts_dir / "bundle.tar.sha256sums")]) == 0
    assert main(["verify", str(copy / "bundle.tar.sha256sums")]) == 1
    (copy / parts[0].name).unlink()
    refused = verify_parts(copy / "bundle.tar.sha256sums").problems
    assert [(p.file, p.kind) for p in refused] == [
        (parts[0].name, "missing"),
        (parts[1].name, "changed"),
    ]


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    private, public = tmp_path / "k.pem", tmp_path / "k.pub.pem"
    assert main(["keygen", "--private-key", str(private), "--public-key", str(public)]) == 0
    assert private.stat().st_mode & 0o777 == 0o600
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert main(["keygen", "--private-key", str(private), "--public-key", str(public)]) == 2
