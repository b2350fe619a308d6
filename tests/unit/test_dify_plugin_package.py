"""Repackaging and re-signing `.difypkg` files, checked by an independent implementation of
the plugin daemon's verification (`dify_plugin_fake.daemon_verify`, openssl CLI), plus
tampering, key-format and offline-install checks."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import zipfile
from pathlib import Path

import pytest
from dify_plugin_fake import (
    daemon_unique_identifier,
    daemon_verify,
    make_wheel,
    plugin_files,
    zip_files,
)

from llmflow_airgap.difyplugin import (
    DifyPluginError,
    download_wheels,
    generate_plugin_keypair,
    load_plugin_private_key,
    load_plugin_public_key,
    plugin_requirements,
    read_package,
    repackage,
    requirement_names,
    verify_package,
    write_signed,
)
from llmflow_airgap.errors import SigningKeyError

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl CLI missing")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plugin-keys")
    generate_plugin_keypair(root / "ours.key", root / "ours.pub")
    generate_plugin_keypair(root / "other.key", root / "other.pub")
    return {
        "private": root / "ours.key",
        "public": root / "ours.pub",
        "other_private": root / "other.key",
        "other_public": root / "other.pub",
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_wheel(
        tmp_path_factory.mktemp("wheels"), "llmflow-echo-dep", "0.1.0", "ECHO = 'offline ok'\n"
    )


def _repackaged(keys: dict[str, Path], wheel: Path, source: bytes | None = None) -> bytes:
    key = load_plugin_private_key(keys["private"])
    result = repackage(source or zip_files(plugin_files()), [(wheel.name, wheel.read_bytes())], key)
    return result.data


def _rezip(
    data: bytes, change: dict[str, bytes | None], extra: dict[str, bytes] | None = None
) -> bytes:
    """Rewrite a package keeping its zip comment (the signature): the attacker's move."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        files = {i.filename: archive.read(i) for i in archive.infolist()}
        comment = archive.comment
    for name, body in change.items():
        if body is None:
            files.pop(name)
        else:
            files[name] = body
    files.update(extra or {})
    return zip_files(files, comment)


def test_resigned_package_passes_the_daemon_check(keys: dict[str, Path], wheel: Path) -> None:
    data = _repackaged(keys, wheel)
    ok, reason = daemon_verify(data, [keys["public"]])
    assert ok, reason
    package = read_package(data)
    names = [e.name for e in package.entries]
    assert names[-1] == ".verification.dify.json"
    assert json.loads(package.file(".verification.dify.json") or b"") == {
        "authorized_category": "community"
    }
    assert "wheels/llmflow_echo_dep-0.1.0-py3-none-any.whl" in names
    assert not any(n.endswith("/") for n in names)
    requirements = (package.file("requirements.txt") or b"").decode()
    assert requirements.splitlines()[1:4] == [
        "--no-index",
        "--find-links ./wheels",
        "llmflow-echo-dep==0.1.0",
    ]
    # the daemon's identifier, computed independently, is the one our code predicts
    check = verify_package(data, [load_plugin_public_key(keys["public"])])
    assert check.ok and check.unique_identifier == daemon_unique_identifier(data)
    assert check.unique_identifier.startswith("llmflow/echo_tool:0.0.1@")
    comment = json.loads(zipfile.ZipFile(io.BytesIO(data)).comment)
    assert sorted(comment) == ["signature", "time"] and isinstance(comment["time"], int)


def test_public_key_is_the_pkcs1_pem_the_daemon_loads(keys: dict[str, Path]) -> None:
    text = keys["public"].read_text()
    assert text.startswith("-----BEGIN RSA PUBLIC KEY-----\n")
    assert text.endswith("-----END RSA PUBLIC KEY-----\n")
    assert keys["private"].read_text().startswith("-----BEGIN RSA PRIVATE KEY-----\n")
    assert keys["private"].stat().st_mode & 0o777 == 0o600
    modulus = subprocess.run(
        ["openssl", "rsa", "-RSAPublicKey_in", "-in", str(keys["public"]), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "4096 bit" in modulus.stdout


@pytest.mark.parametrize(
    "tamper",
    ["changed-byte", "extra-file", "removed-file", "swapped-requirements", "changed-time"],
)
def test_tampered_package_is_refused(keys: dict[str, Path], wheel: Path, tamper: str) -> None:
    data = _repackaged(keys, wheel)
    package = read_package(data)
    main = package.file("main.py") or b""
    if tamper == "changed-byte":
        bad = _rezip(data, {"main.py": main[:-1] + bytes([main[-1] ^ 1])})
    elif tamper == "extra-file":
        bad = _rezip(data, {}, {"sitecustomize.py": b"import os\n"})
    elif tamper == "removed-file":
        bad = _rezip(data, {"README.md": None})
    elif tamper == "swapped-requirements":
        bad = _rezip(data, {"requirements.txt": b"llmflow-echo-dep==0.1.0\n"})
    else:
        comment = json.loads(package.comment)
        comment["time"] += 1
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = {i.filename: archive.read(i) for i in archive.infolist()}
        bad = zip_files(files, json.dumps(comment, separators=(",", ":")).encode())
    ok, _ = daemon_verify(bad, [keys["public"]])
    assert not ok
    assert not verify_package(bad, [load_plugin_public_key(keys["public"])]).ok


def test_wrong_key_is_refused(keys: dict[str, Path], wheel: Path) -> None:
    data = _repackaged(keys, wheel)
    ok, reason = daemon_verify(data, [keys["other_public"]])
    assert not ok and "no trusted key" in reason
    # any one trusted key is enough, as THIRD_PARTY_SIGNATURE_VERIFICATION_PUBLIC_KEYS lists
    assert daemon_verify(data, [keys["other_public"], keys["public"]])[0]


def test_marketplace_signature_is_replaced_not_duplicated(
    keys: dict[str, Path], wheel: Path
) -> None:
    marketplace = load_plugin_private_key(keys["other_private"])
    entries = read_package(zip_files(plugin_files(author="langgenius"))).entries
    signed = write_signed(entries, marketplace, "langgenius", created_at=1_700_000_000)
    assert daemon_verify(signed, [keys["other_public"]])[0]
    ours = _repackaged(keys, wheel, signed)
    names = [e.name for e in read_package(ours).entries]
    assert names.count(".verification.dify.json") == 1
    assert daemon_verify(ours, [keys["public"]])[0]
    assert not daemon_verify(ours, [keys["other_public"]])[0]
    # a langgenius plugin keeps its category (ENFORCE_LANGGENIUS_PLUGIN_SIGNATURES)
    assert read_package(ours).verification() == {"authorized_category": "langgenius"}


def test_entry_names_that_escape_are_refused(keys: dict[str, Path], wheel: Path) -> None:
    data = _repackaged(keys, wheel)
    bad = _rezip(data, {}, {"tools/../main.py": b"import os\n"})
    assert not daemon_verify(bad, [keys["public"]])[0]
    assert (
        "not a plain path" in verify_package(bad, [load_plugin_public_key(keys["public"])]).reason
    )


def test_directory_entries_are_refused_by_both_checks(keys: dict[str, Path], wheel: Path) -> None:
    data = _repackaged(keys, wheel)
    bad = _rezip(data, {}, {"provider/": b""})
    assert not daemon_verify(bad, [keys["public"]])[0]
    assert not verify_package(bad, [load_plugin_public_key(keys["public"])]).ok


def test_pyproject_plugin_becomes_a_requirements_plugin(keys: dict[str, Path], wheel: Path) -> None:
    files = plugin_files(requirements="")
    files["pyproject.toml"] = (
        b'[project]\nname = "echo"\nversion = "0.0.1"\ndependencies = ["llmflow-echo-dep>=0.1"]\n'
    )
    files["uv.lock"] = (
        b"version = 1\n"
        b'[[package]]\nname = "echo"\nversion = "0.0.1"\nsource = { virtual = "." }\n'
        b'[[package]]\nname = "llmflow-echo-dep"\nversion = "0.1.0"\n'
        b'source = { registry = "https://pypi.org/simple" }\n'
    )
    source = zip_files(files)
    requirements, constraints = plugin_requirements(read_package(source))
    assert requirements == "llmflow-echo-dep>=0.1\n"
    assert constraints == "llmflow-echo-dep==0.1.0\n"
    data = _repackaged(keys, wheel, source)
    package = read_package(data)
    names = {e.name for e in package.entries}
    assert "pyproject.toml" not in names and "uv.lock" not in names
    assert b"--no-index" in (package.file("requirements.txt") or b"")
    assert daemon_verify(data, [keys["public"]])[0]


def test_requirements_that_cannot_install_offline_are_refused(
    keys: dict[str, Path], wheel: Path
) -> None:
    with pytest.raises(DifyPluginError, match="URL or path"):
        requirement_names("git+https://github.com/x/y.git\n")
    with pytest.raises(DifyPluginError, match="cannot be repackaged"):
        requirement_names("-e .\n")
    assert requirement_names(
        "# c\n-i https://pypi.org/simple\nDify_Plugin[x]>=0.4 ; python_version>'3'\n"
    ) == ["dify-plugin"]
    source = zip_files(plugin_files(requirements="llmflow-echo-dep\nrequests>=2\n"))
    key = load_plugin_private_key(keys["private"])
    with pytest.raises(DifyPluginError, match="no wheel for requests"):
        repackage(source, [(wheel.name, wheel.read_bytes())], key)


def test_key_loading_is_as_strict_as_the_daemon(keys: dict[str, Path], tmp_path: Path) -> None:
    trailing = tmp_path / "trailing.pem"
    trailing.write_bytes(keys["public"].read_bytes() + b"\n")
    with pytest.raises(SigningKeyError, match="after its PEM block"):
        load_plugin_public_key(trailing)
    spki = tmp_path / "spki.pem"
    subprocess.run(
        [
            "openssl",
            "rsa",
            "-RSAPublicKey_in",
            "-in",
            str(keys["public"]),
            "-pubout",
            "-out",
            str(spki),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(SigningKeyError, match="RSA PUBLIC KEY"):
        load_plugin_public_key(spki)
    with pytest.raises(SigningKeyError, match="exists"):
        generate_plugin_keypair(keys["private"], tmp_path / "x.pub")


def _python312() -> str | None:
    if shutil.which("uv") is None:
        return None
    found = subprocess.run(
        ["uv", "python", "find", "3.12", "--no-python-downloads"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    for candidate in sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12")):
        return str(candidate)
    return None


def test_repackaged_plugin_installs_with_no_index(
    keys: dict[str, Path], wheel: Path, tmp_path: Path
) -> None:
    """What the daemon runs (`uv venv --python 3.12`, `uv pip install -r requirements.txt`
    in the plugin directory, an environment of VIRTUAL_ENV, PATH and UV_CACHE_DIR only),
    with a dead index URL to prove nothing is fetched."""
    python = _python312()
    if python is None:
        pytest.skip("uv with a CPython 3.12 is needed to replay the daemon's install")
    data = _repackaged(keys, wheel)
    work = tmp_path / "plugin"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(work)
    env = {
        "PATH": os.environ["PATH"],
        "UV_CACHE_DIR": str(tmp_path / "uv-cache"),
        "UV_INDEX_URL": "http://127.0.0.1:9/simple",
        "UV_PYTHON_DOWNLOADS": "never",
        "HOME": str(tmp_path),
    }
    venv = subprocess.run(
        ["uv", "venv", ".venv", "--python", python],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert venv.returncode == 0, venv.stderr
    env["VIRTUAL_ENV"] = str(work / ".venv")
    installed = subprocess.run(
        ["uv", "pip", "install", "-r", "requirements.txt"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert installed.returncode == 0, installed.stderr
    run = subprocess.run(
        [
            str(work / ".venv" / "bin" / "python"),
            "-c",
            "import llmflow_echo_dep as m; print(m.ECHO)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout.strip() == "offline ok", run.stderr


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_pip_download_fetches_wheels_for_the_daemon_platform(tmp_path: Path) -> None:
    pip = shutil.which("pip3") or shutil.which("pip")
    if pip is None or not _pypi_reachable():
        pytest.skip("pip and a reachable PyPI are needed for the connected-side download")
    download_wheels("six==1.16.0\n", tmp_path / "wh", ["x86_64"], [pip])
    assert sorted(p.name for p in (tmp_path / "wh").iterdir()) == [
        "six-1.16.0-py2.py3-none-any.whl"
    ]


def test_verify_plugin_command(keys: dict[str, Path], wheel: Path, tmp_path: Path) -> None:
    from llmflow_airgap.cli import main

    package = tmp_path / "echo.difypkg"
    package.write_bytes(_repackaged(keys, wheel))
    assert main(["verify-plugin", str(package), "--public-key", str(keys["public"])]) == 0
    assert main(["verify-plugin", str(package), "--public-key", str(keys["other_public"])]) == 1
    both = ["--public-key", str(keys["other_public"]), "--public-key", str(keys["public"])]
    assert main(["verify-plugin", str(package), *both]) == 0
