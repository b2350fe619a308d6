"""Contract replay of Dify 1.14.2's plugin console endpoints, with the plugin daemon's
package checks re-implemented independently of `llmflow_airgap.difyplugin`.

The daemon side (langgenius/dify-plugin-daemon tag 0.6.1, commit 6b1510814fec): a package is
a zip; the signed bytes are the SHA-256 of every entry in central-directory order followed by
the decimal creation time (`pkg/plugin_packager/decoder/verifier.go`); the zip comment holds
`{"signature": base64, "time": n}` (`decoder/zip.go` `decode`); the signature is RSA PKCS#1
v1.5 over SHA-256 (`pkg/utils/encryption/rsa.go`) with `RSA PUBLIC KEY` PEM keys; the unique
identifier is `author/name:version@sha256(sorted sha256(name)+sha256(content))`
(`decoder/checksum.go`); directory entries cannot be read by the walk. This module checks
signatures with the `openssl` command line, not with the signer's code.

The console side (langgenius/dify `api/controllers/console/workspace/plugin.py`,
`core/plugin/entities/plugin_daemon.py`): `POST .../plugin/upload/pkg` (multipart `pkg`) →
`{unique_identifier, manifest, verification}`; `POST .../plugin/install/pkg`
`{plugin_unique_identifiers}` → `{all_installed, task_id}`; `GET .../plugin/tasks/<id>` →
`{task: {id, created_at, updated_at, status, total_plugins, completed_plugins, plugins:
[{plugin_unique_identifier, plugin_id, status, message, icon, labels}]}}` with statuses
pending/running/success/failed; `GET .../plugin/list?page&page_size` → `{plugins, total}`.
Daemon errors come back as HTTP 400 `{"code": "plugin_error", "message": ...}`; a missing or
wrong admin key as 401.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tempfile
import uuid
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BASE = "/console/api/workspaces/current/plugin"
MAX_PLUGIN_PACKAGE_SIZE = 52428800  # daemon .env.example, uncompressed bytes
BAD_SIGNATURE = (
    "plugin verification has been enabled, and the plugin you want to install has a bad signature"
)


# ----------------------------------------------------------- independent daemon checks


def _entries(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(i.filename, archive.read(i)) for i in archive.infolist()], archive.comment


def daemon_verify(data: bytes, public_keys: list[Path]) -> tuple[bool, str]:
    """Does any key verify the package, as the daemon's VerifyPluginWithPublicKeys decides?"""
    try:
        entries, comment = _entries(data)
    except (zipfile.BadZipFile, zlib.error) as exc:
        return False, f"not a zip: {exc}"
    if any(name.endswith("/") for name, _ in entries):
        return False, "directory entry: the daemon cannot read it as a file"
    for name, _ in entries:
        # zip.Reader.Open accepts only fs.ValidPath names
        if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
            return False, f"entry {name!r} cannot be opened"
    try:
        meta = json.loads(comment)
        signature = base64.b64decode(meta["signature"])
        created = int(meta["time"])
    except (ValueError, KeyError, TypeError) as exc:
        return False, f"no signature in the zip comment: {exc}"
    payload = b"".join(hashlib.sha256(body).digest() for _, body in entries)
    payload += str(created).encode()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "payload").write_bytes(payload)
        (work / "sig").write_bytes(signature)
        for number, key in enumerate(public_keys):
            spki = work / f"key{number}.pem"
            converted = subprocess.run(
                [
                    "openssl",
                    "rsa",
                    "-RSAPublicKey_in",
                    "-in",
                    str(key),
                    "-pubout",
                    "-out",
                    str(spki),
                ],
                capture_output=True,
                timeout=30,
            )
            if converted.returncode != 0:
                continue  # not an `RSA PUBLIC KEY` PEM: the daemon's LoadPublicKey refuses it
            checked = subprocess.run(
                [
                    "openssl",
                    "dgst",
                    "-sha256",
                    "-verify",
                    str(spki),
                    "-signature",
                    str(work / "sig"),
                    str(work / "payload"),
                ],
                capture_output=True,
                timeout=30,
            )
            if checked.returncode == 0:
                return True, ""
    return False, "no trusted key verifies the signature"


def daemon_unique_identifier(data: bytes) -> str:
    """`author/name:version@checksum` as the daemon computes it."""
    entries, _ = _entries(data)
    manifest = yaml.safe_load(dict(entries)["manifest.yaml"])
    hashed = sorted((name, hashlib.sha256(body).digest()) for name, body in entries)
    blob = b"".join(hashlib.sha256(name.encode()).digest() + digest for name, digest in hashed)
    author = manifest.get("author")
    prefix = f"{author}/" if author else ""
    checksum = hashlib.sha256(blob).hexdigest()
    return f"{prefix}{manifest['name']}:{manifest['version']}@{checksum}"


# ------------------------------------------------------------------ the console fake


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class _Task:
    id: str
    identifiers: list[str]
    script: list[str]
    polls: int = 0
    created_at: str = field(default_factory=_now)


class DifyPluginFake(LocalServer):
    """One Dify workspace with a plugin daemon that trusts `trusted_keys`.

    `task_script` is the sequence of task states successive polls report; a plugin whose id
    is in `fail_plugins` ends `failed` with the daemon's message for a dependency error.
    """

    def __init__(
        self,
        admin_key: str,
        workspace_id: str,
        trusted_keys: list[Path],
        *,
        task_script: list[str] | None = None,
        fail_plugins: set[str] | None = None,
    ) -> None:
        super().__init__()
        self.admin_key = admin_key
        self.workspace_id = workspace_id
        self.trusted_keys = trusted_keys
        self.task_script = task_script or ["pending", "running", "success"]
        self.fail_plugins = fail_plugins or set()
        self.uploaded: dict[str, dict[str, Any]] = {}
        self.installed: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, _Task] = {}
        self.calls: list[tuple[str, str]] = []
        self.app = Starlette(
            routes=[
                Route(f"{BASE}/upload/pkg", self._upload, methods=["POST"]),
                Route(f"{BASE}/install/pkg", self._install, methods=["POST"]),
                Route(f"{BASE}/tasks/{{task_id}}", self._task, methods=["GET"]),
                Route(f"{BASE}/list", self._list, methods=["GET"]),
            ]
        )

    def _denied(self, request: Request) -> JSONResponse | None:
        self.calls.append((request.method, request.url.path))
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.admin_key}" or (
            request.headers.get("x-workspace-id") != self.workspace_id
        ):
            return JSONResponse(
                {"code": "unauthorized", "message": "Invalid Authorization token.", "status": 401},
                status_code=401,
            )
        return None

    @staticmethod
    def _plugin_error(message: str) -> JSONResponse:
        return JSONResponse({"code": "plugin_error", "message": message}, status_code=400)

    async def _upload(self, request: Request) -> JSONResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        form = await request.form()
        upload = form.get("pkg")
        if upload is None or isinstance(upload, str):
            return JSONResponse(
                {"code": "invalid_param", "message": "pkg is required", "status": 400}, 400
            )
        data = await upload.read()
        try:
            entries, _ = _entries(data)
        except (zipfile.BadZipFile, zlib.error):
            return self._plugin_error("zip: not a valid zip file".replace("zip", "difypkg"))
        if sum(len(body) for _, body in entries) > MAX_PLUGIN_PACKAGE_SIZE:
            return self._plugin_error("plugin package size is too large")
        ok, reason = daemon_verify(data, self.trusted_keys)
        if not ok:
            return self._plugin_error(f"{BAD_SIGNATURE} ({reason})")
        identifier = daemon_unique_identifier(data)
        files = dict(entries)
        manifest = yaml.safe_load(files["manifest.yaml"])
        verification = json.loads(files.get(".verification.dify.json", b"null"))
        self.uploaded[identifier] = manifest
        return JSONResponse(
            {"unique_identifier": identifier, "manifest": manifest, "verification": verification}
        )

    async def _install(self, request: Request) -> JSONResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        identifiers = body.get("plugin_unique_identifiers")
        if not isinstance(identifiers, list) or not all(isinstance(i, str) for i in identifiers):
            return JSONResponse(
                {"code": "invalid_param", "message": "plugin_unique_identifiers", "status": 400},
                400,
            )
        for identifier in identifiers:
            if identifier not in self.uploaded and identifier not in self.installed:
                return self._plugin_error(f"plugin not found: {identifier}")
        todo = [i for i in identifiers if i not in self.installed]
        if not todo:
            return JSONResponse({"all_installed": True, "task_id": ""})
        task = _Task(str(uuid.uuid4()), todo, list(self.task_script))
        self.tasks[task.id] = task
        return JSONResponse({"all_installed": False, "task_id": task.id})

    def _plugin_status(self, task: _Task, identifier: str, state: str) -> dict[str, Any]:
        plugin_id = identifier.split(":", 1)[0]
        manifest = self.uploaded.get(identifier, {})
        failed = plugin_id in self.fail_plugins and state in ("success", "failed")
        return {
            "plugin_unique_identifier": identifier,
            "plugin_id": plugin_id,
            "status": "failed" if failed else state,
            "message": "failed to init environment: no matching distribution" if failed else "",
            "icon": manifest.get("icon", ""),
            "labels": manifest.get("label", {"en_US": plugin_id}),
            "source": "package",
        }

    async def _task(self, request: Request) -> JSONResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        task = self.tasks.get(request.path_params["task_id"])
        if task is None:
            return self._plugin_error("task not found")
        state = task.script[min(task.polls, len(task.script) - 1)]
        task.polls += 1
        plugins = [self._plugin_status(task, i, state) for i in task.identifiers]
        if state == "success" and any(p["status"] == "failed" for p in plugins):
            state = "failed"
        if state == "success":
            for identifier in task.identifiers:
                self._install_one(identifier)
        done = sum(1 for p in plugins if p["status"] in ("success", "failed"))
        return JSONResponse(
            {
                "task": {
                    "id": task.id,
                    "created_at": task.created_at,
                    "updated_at": _now(),
                    "status": state,
                    "total_plugins": len(task.identifiers),
                    "completed_plugins": done,
                    "plugins": plugins,
                }
            }
        )

    def _install_one(self, identifier: str) -> None:
        if identifier in self.installed:
            return
        manifest = self.uploaded[identifier]
        plugin_id = identifier.split(":", 1)[0]
        self.installed[identifier] = {
            "id": str(uuid.uuid4()),
            "created_at": _now(),
            "updated_at": _now(),
            "name": manifest.get("name"),
            "plugin_id": plugin_id,
            "plugin_unique_identifier": identifier,
            "version": manifest.get("version"),
            "checksum": identifier.rsplit("@", 1)[1],
            "declaration": manifest,
            "installation_id": str(uuid.uuid4()),
            "tenant_id": self.workspace_id,
            "endpoints_setups": 0,
            "endpoints_active": 0,
            "runtime_type": "local",
            "source": "package",
            "meta": {},
        }

    async def _list(self, request: Request) -> JSONResponse:
        if (denied := self._denied(request)) is not None:
            return denied
        page = int(request.query_params.get("page", "1"))
        size = int(request.query_params.get("page_size", "256"))
        if not 1 <= size <= 256 or page < 1:
            return JSONResponse({"code": "invalid_param", "message": "page", "status": 400}, 400)
        items = list(self.installed.values())
        chunk = items[(page - 1) * size : page * size]
        return JSONResponse({"plugins": chunk, "total": len(items)})


# --------------------------------------------------------------- test packages and wheels


def make_wheel(directory: Path, name: str, version: str, module_body: str) -> Path:
    """A valid pure-Python wheel (METADATA, WHEEL, RECORD with hashes) built in the test."""
    directory.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": module_body.encode(),
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: llmflow-test\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, body in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(body)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name_in_zip, body in files.items():
            archive.writestr(name_in_zip, body)
    return path


def plugin_files(
    author: str = "llmflow",
    name: str = "echo_tool",
    version: str = "0.0.1",
    requirements: str = "llmflow-echo-dep==0.1.0\n",
) -> dict[str, bytes]:
    """The files of a tiny but complete tool plugin, as `dify plugin package` lays them out."""
    manifest = {
        "version": version,
        "type": "plugin",
        "author": author,
        "name": name,
        "label": {"en_US": "Echo"},
        "description": {"en_US": "Echoes its input (LLMFlow test plugin)"},
        "icon": "icon.svg",
        "resource": {"memory": 268435456, "permission": {}},
        "plugins": {"tools": ["provider/echo.yaml"]},
        "meta": {
            "version": "0.0.1",
            "arch": ["amd64", "arm64"],
            "runner": {"language": "python", "version": "3.12", "entrypoint": "main"},
        },
        "created_at": "2026-01-01T00:00:00Z",
    }
    provider = {
        "identity": {
            "author": author,
            "name": "echo",
            "label": {"en_US": "Echo"},
            "description": {"en_US": "Echo"},
            "icon": "icon.svg",
        },
        "tools": ["tools/echo.yaml"],
        "extra": {"python": {"source": "provider/echo.py"}},
    }
    files: dict[str, bytes] = {
        "manifest.yaml": yaml.safe_dump(manifest, sort_keys=False).encode(),
        "README.md": b"# Echo\n",
        "_assets/icon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "provider/echo.yaml": yaml.safe_dump(provider, sort_keys=False).encode(),
        "provider/echo.py": b"from dify_plugin import ToolProvider\n",
        "tools/echo.yaml": b"identity:\n  name: echo\n",
        "main.py": (
            b"from dify_plugin import Plugin, DifyPluginEnv\n"
            b"plugin = Plugin(DifyPluginEnv())\n"
            b"if __name__ == '__main__':\n    plugin.run()\n"
        ),
    }
    if requirements:
        files["requirements.txt"] = requirements.encode()
    return files


def zip_files(files: dict[str, bytes], comment: bytes = b"") -> bytes:
    """Zip `files` in order, file entries only (as the daemon's packager writes them)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in files.items():
            archive.writestr(name, body)
        archive.comment = comment
    return buffer.getvalue()
