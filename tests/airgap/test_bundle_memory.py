"""`build` and `verify` stream: peak memory does not grow with the size of a blob.

A 200 MiB layer goes through the real registry; the build runs in a fresh interpreter so
that `ru_maxrss` measures it alone. Numbers are printed (`pytest -s`) for the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import yaml
from oci_world import OCI_LAYER_TAR, World, platform_document, push_platform_manifest

from llmflow_airgap.digests import sha256_file
from llmflow_airgap.registry import RegistryClient

LAYER_MIB = 200
# Allowed growth of peak RSS over the interpreter with everything imported.
MAX_GROWTH_MIB = 48


class _RandomStream:
    def read(self, size: int = -1) -> bytes:
        return os.urandom(size if size > 0 else 1024 * 1024)


def _big_layer(path: Path) -> tuple[Path, str]:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("opt/weights.bin")
        info.size = LAYER_MIB * 1024 * 1024
        tar.addfile(info, _RandomStream())  # type: ignore[arg-type]
    digest, _ = sha256_file(path)
    return path, digest


SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from llmflow_airgap.build import BuildRequest, build_bundle
    from llmflow_airgap.lock import LockRequest, create_lock
    from llmflow_airgap.lockfile import dump_lockfile
    from llmflow_airgap.verify import verify_bundle

    args = json.loads(sys.argv[1])
    root = Path(args["root"])
    mirrors = args["mirrors"]
    def rss_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    baseline = rss_mib()
    lock = create_lock(LockRequest(Path(args["platform"]), registry_mirrors=mirrors))
    dump_lockfile(lock, root / "big.lock.yaml")
    started = time.monotonic()
    result = build_bundle(BuildRequest(root / "big.lock.yaml", root / "bundle",
                                       Path(args["key"]), registry_mirrors=mirrors))
    build_s = time.monotonic() - started
    after_build = rss_mib()
    started = time.monotonic()
    ok = verify_bundle(root / "bundle", Path(args["pub"])).ok
    verify_s = time.monotonic() - started
    print(json.dumps({"baseline_mib": baseline, "after_build_mib": after_build,
                      "after_verify_mib": rss_mib(), "build_s": build_s, "verify_s": verify_s,
                      "bundle_bytes": result.bundle_bytes,
                      "unique_blob_bytes": result.unique_blob_bytes, "verified": ok}))
    """
)


def test_build_memory_stays_flat_with_a_200_mib_layer(oci_world: World, tmp_path: Path) -> None:
    layer, layer_digest = _big_layer(tmp_path / "layer.tar")
    registry = oci_world.registry
    with RegistryClient({"127.0.0.1": registry.url}) as client:
        push_platform_manifest(
            client,
            registry.host,
            "llmflowtest/big",
            "amd64",
            [(layer, layer_digest)],
            OCI_LAYER_TAR,
            tag="1.0",
        )
    layer.unlink()
    platform = platform_document(
        ["docker.io/llmflowtest/big:1.0"], ["docker.io/llmflowtest/big:1.0"], "x", "apichart"
    )
    components = platform["components"]
    assert isinstance(components, list)
    platform["components"] = [components[1]]
    platform["monitoring"] = {"provisionedBy": "api", "ruleFiles": [], "dashboards": []}
    platform_file = tmp_path / "platform.yaml"
    platform_file.write_text(yaml.safe_dump(platform), encoding="utf-8")
    args = {
        "root": str(tmp_path),
        "platform": str(platform_file),
        "mirrors": oci_world.registry_mirrors,
        "key": str(oci_world.private_key),
        "pub": str(oci_world.public_key),
    }
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    numbers = json.loads(run.stdout.strip().splitlines()[-1])
    print("\nbuild memory:", json.dumps(numbers, indent=1))
    assert numbers["verified"] is True
    assert numbers["unique_blob_bytes"] >= LAYER_MIB * 1024 * 1024
    assert numbers["bundle_bytes"] <= 1.02 * numbers["unique_blob_bytes"]
    assert numbers["after_build_mib"] - numbers["baseline_mib"] < MAX_GROWTH_MIB
    assert numbers["after_verify_mib"] - numbers["baseline_mib"] < MAX_GROWTH_MIB
