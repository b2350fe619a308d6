"""Contract checks against the plugin daemon's own artefacts (not copied into this repo).

Point ``LLMFLOW_TEST_DIFY_PLUGIN_DAEMON_SRC`` at a checkout of langgenius/dify-plugin-daemon
at tag 0.6.1 (commit 6b1510814fec6d488498e412a69f78ead8f7e496); the test reads:

* ``integration/plugin/testdata/langgenius-agent_0.0.14.difypkg`` — a package signed by
  Dify's production signer (marketplace), and ``pkg/license/public_key/PUBLIC_KEY.pem`` —
  the official key the daemon always trusts. Our reader and the independent check must both
  accept it: that ties our understanding of the format to bytes Go code produced.
* ``pkg/plugin_packager/testdata/keys/test_key_pair_1.*.pem`` — keys made by the daemon's
  ``GenerateKeyPair``: our loader must read them, and a package we re-sign with one must
  verify with its public key.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from dify_plugin_fake import daemon_unique_identifier, daemon_verify, make_wheel

from llmflow_airgap.difyplugin import (
    load_plugin_private_key,
    load_plugin_public_key,
    read_package,
    repackage,
    requirement_names,
    verify_package,
)

SRC = Path(os.environ.get("LLMFLOW_TEST_DIFY_PLUGIN_DAEMON_SRC", "/nonexistent"))
AGENT = SRC / "integration/plugin/testdata/langgenius-agent_0.0.14.difypkg"
OFFICIAL = SRC / "pkg/license/public_key/PUBLIC_KEY.pem"
KEYS = SRC / "pkg/plugin_packager/testdata/keys"

pytestmark = [
    pytest.mark.skipif(
        not AGENT.is_file(),
        reason="set LLMFLOW_TEST_DIFY_PLUGIN_DAEMON_SRC to a dify-plugin-daemon 0.6.1 checkout",
    ),
    pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing"),
]


def test_marketplace_package_verifies_with_the_official_key() -> None:
    data = AGENT.read_bytes()
    ours = verify_package(data, [load_plugin_public_key(OFFICIAL)])
    assert ours.ok, ours.reason
    assert ours.unique_identifier == daemon_unique_identifier(data)
    assert ours.unique_identifier.startswith("langgenius/agent:0.0.14@")
    assert daemon_verify(data, [OFFICIAL]) == (True, "")
    assert not daemon_verify(data, [KEYS / "test_key_pair_1.public.pem"])[0]


def test_resigned_marketplace_package_verifies_with_a_daemon_made_key(tmp_path: Path) -> None:
    data = AGENT.read_bytes()
    package = read_package(data)
    requirements = (package.file("requirements.txt") or b"").decode()
    wheels = []
    for name in requirement_names(requirements):
        version = requirements.split("==", 1)[1].strip() if "==" in requirements else "0.0.1"
        wheel = make_wheel(tmp_path, name, version, "STUB = True\n")
        wheels.append((wheel.name, wheel.read_bytes()))
    key = load_plugin_private_key(KEYS / "test_key_pair_1.private.pem")
    result = repackage(data, wheels, key)
    assert result.category == "langgenius"
    assert daemon_verify(result.data, [KEYS / "test_key_pair_1.public.pem"]) == (True, "")
    assert not daemon_verify(result.data, [OFFICIAL])[0]
    assert result.unique_identifier == daemon_unique_identifier(result.data)
    assert (
        result.unique_identifier
        != verify_package(data, [load_plugin_public_key(OFFICIAL)]).unique_identifier
    )
