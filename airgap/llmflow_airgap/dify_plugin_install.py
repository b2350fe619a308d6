"""Post-install step: install the bundle's re-signed Dify plugins into a Dify workspace.

The same console-API contract as the glue's `llmflow dify plugins install`
(`glue/llmflow/dify/plugins.py`, replayed by `tests/dify_plugin_fake.py`), restated here as a
small synchronous client because the install host carries only this package (no glue). The
calls of Dify 1.14.2 (`api/controllers/console/workspace/plugin.py`), all under
`/console/api/workspaces/current/plugin` with `Authorization: Bearer <ADMIN_API_KEY>` and
`X-WORKSPACE-ID` (Dify then acts as that workspace's owner):

1. `GET /list?page=&page_size=256` — what is installed; a plugin whose unique identifier is
   listed is skipped, so the step is idempotent;
2. `POST /upload/pkg` (multipart `pkg`) — the daemon checks our signature; its
   `unique_identifier` must be the one `dify-plugins/index.json` promises;
3. `POST /install/pkg` `{"plugin_unique_identifiers": [...]}` → `{all_installed, task_id}`;
4. `GET /tasks/<task_id>` until `success`/`failed` (per plugin too), bounded by a timeout;
5. the list again: every plugin must be listed under the expected identifier.

The admin key is read from the namespace's `dify-credentials` Secret (created by install, see
`dify_cluster`) and never logged. The install host reaches Dify through an address the
operator gives (`--dify-console NAMESPACE=URL`): the Kubernetes service proxy cannot carry
Dify's own bearer token beside the API server's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import httpx

from llmflow_airgap.dify_cluster import read_admin_key
from llmflow_airgap.errors import AirgapError

if TYPE_CHECKING:
    from llmflow_airgap.install import PostInstallContext

PLUGIN_BASE: Final = "/console/api/workspaces/current/plugin"
INDEX_FILE: Final = "index.json"
LIST_PAGE_SIZE: Final = 256
TERMINAL: Final = frozenset({"success", "failed"})


class DifyPluginInstallError(AirgapError):
    """A plugin could not be uploaded, installed or confirmed."""


@dataclass(frozen=True)
class BundlePlugin:
    """One package of the bundle's `dify-plugins/index.json`."""

    plugin_id: str
    version: str
    path: Path
    unique_identifier: str


def read_index(directory: Path) -> list[BundlePlugin]:
    """The packages `build` indexed (an absent index means the bundle ships no plugins)."""
    index = directory / INDEX_FILE
    if not index.is_file():
        return []
    try:
        document = json.loads(index.read_text(encoding="utf-8"))
        return [
            BundlePlugin(
                str(e["id"]),
                str(e["version"]),
                directory / str(e["file"]),
                str(e["uniqueIdentifier"]),
            )
            for e in document["plugins"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DifyPluginInstallError(f"{index} is not a Dify plugin index: {exc}") from exc


@dataclass
class PluginResult:
    """What one run did."""

    installed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    task_id: str | None = None
    polls: int = 0


class DifyPluginClient:
    """Upload → install → poll → confirm against one workspace (one `httpx.Client`)."""

    def __init__(
        self,
        base_url: str,
        admin_key: str,
        workspace_id: str,
        *,
        timeout_s: float = 900.0,
        poll_interval_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/") + PLUGIN_BASE,
            headers={"Authorization": f"Bearer {admin_key}", "X-WORKSPACE-ID": workspace_id},
            timeout=httpx.Timeout(120.0, connect=10.0),
            transport=transport,
        )
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep

    def __enter__(self) -> DifyPluginClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise DifyPluginInstallError(f"Dify {method} {path}: {exc}") from exc
        if response.status_code == 401:
            raise DifyPluginInstallError(
                f"Dify refused the admin key on {method} {path} (401): check ADMIN_API_KEY_ENABLE "
                "and the workspace id"
            )
        try:
            body: Any = response.json() if response.content else {}
        except ValueError:
            body = {"message": response.text[:300]}
        if response.status_code >= 400:
            detail = body.get("message") if isinstance(body, dict) else str(body)
            raise DifyPluginInstallError(
                f"Dify {method} {path}: HTTP {response.status_code}: {detail}"
            )
        return body if isinstance(body, dict) else {}

    def installed(self) -> set[str]:
        """Unique identifiers of every plugin installed in the workspace."""
        found: set[str] = set()
        page = 1
        while True:
            body = self._call("GET", "/list", params={"page": page, "page_size": LIST_PAGE_SIZE})
            plugins = list(body.get("plugins") or [])
            found.update(str(p["plugin_unique_identifier"]) for p in plugins)
            if not plugins or len(found) >= int(body.get("total") or 0):
                return found
            page += 1

    def upload(self, plugin: BundlePlugin) -> None:
        """Upload one package; the daemon must decode it as the identifier the index states."""
        try:
            data = plugin.path.read_bytes()
        except OSError as exc:
            raise DifyPluginInstallError(f"cannot read {plugin.path}: {exc}") from exc
        files = {"pkg": (plugin.path.name, data, "application/octet-stream")}
        body = self._call("POST", "/upload/pkg", files=files)
        identifier = str(body.get("unique_identifier") or "")
        if identifier != plugin.unique_identifier:
            raise DifyPluginInstallError(
                f"{plugin.path.name}: Dify decoded it as {identifier or 'nothing'}, the bundle "
                f"index says {plugin.unique_identifier} (not the package that was signed)"
            )

    def wait(self, task_id: str) -> int:
        """Poll the install task until it ends; the number of polls. Raises on failure."""
        deadline = time.monotonic() + self.timeout_s
        polls = 0
        while True:
            task = dict(self._call("GET", f"/tasks/{task_id}").get("task") or {})
            polls += 1
            status = str(task.get("status", ""))
            if status in TERMINAL:
                failed = [
                    f"{p.get('plugin_unique_identifier')}: {p.get('message') or 'failed'}"
                    for p in task.get("plugins") or []
                    if p.get("status") != "success"
                ]
                if status == "failed" or failed:
                    raise DifyPluginInstallError(
                        f"install task {task_id} failed: {'; '.join(failed) or status}"
                    )
                return polls
            if time.monotonic() >= deadline:
                raise DifyPluginInstallError(
                    f"install task {task_id} still {status or 'unknown'} "
                    f"after {self.timeout_s:.0f}s"
                )
            self._sleep(self.poll_interval_s)

    def install(self, plugins: list[BundlePlugin]) -> PluginResult:
        """Install every plugin not installed yet and confirm the workspace lists them."""
        result = PluginResult()
        before = self.installed()
        pending = [p for p in plugins if p.unique_identifier not in before]
        result.skipped = [p.unique_identifier for p in plugins if p.unique_identifier in before]
        if not pending:
            return result
        for plugin in pending:
            self.upload(plugin)
        identifiers = [p.unique_identifier for p in pending]
        start = self._call("POST", "/install/pkg", json={"plugin_unique_identifiers": identifiers})
        if not start.get("all_installed"):
            task_id = str(start.get("task_id") or "")
            if not task_id:
                raise DifyPluginInstallError(
                    "install/pkg answered neither all_installed nor a task"
                )
            result.task_id = task_id
            result.polls = self.wait(task_id)
        after = self.installed()
        missing = [i for i in identifiers if i not in after]
        if missing:
            raise DifyPluginInstallError(
                "install reported success but the workspace does not list " + ", ".join(missing)
            )
        result.installed = identifiers
        return result


@dataclass
class DifyPluginsStep:
    """`post/dify-plugins/<namespace>`: the bundle's plugins into that namespace's Dify."""

    namespace: str
    console_url: str
    workspace_id: str
    plugins_dir: Path
    timeout_s: float = 900.0
    poll_interval_s: float = 2.0
    sleep: Callable[[float], None] = time.sleep
    transport: httpx.BaseTransport | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"dify-plugins/{self.namespace}"

    def describe(self) -> str:
        """One line for the plan."""
        count = len(read_index(self.plugins_dir))
        return (
            f"{count} re-signed plugin(s) of {self.plugins_dir.name}/ into workspace "
            f"{self.workspace_id} of {self.console_url} (console API, admin key from "
            f"{self.namespace}/dify-credentials; installed ones skipped)"
        )

    def run(self, context: PostInstallContext) -> None:
        """Install what is missing; report each plugin."""
        plugins = read_index(self.plugins_dir)
        if not plugins:
            context.reporter.event("dify-plugins.none", f"{self.name}: the bundle ships none")
            return
        if context.kube is None:
            raise DifyPluginInstallError(f"{self.name}: no Kubernetes access to read the admin key")
        key = read_admin_key(context.kube, self.namespace)
        with DifyPluginClient(
            self.console_url,
            key,
            self.workspace_id,
            timeout_s=self.timeout_s,
            poll_interval_s=self.poll_interval_s,
            sleep=self.sleep,
            transport=self.transport,
        ) as client:
            result = client.install(plugins)
        for identifier in result.installed:
            context.reporter.event(
                "dify-plugin.installed",
                f"  installed {identifier} into {self.namespace}",
                uniqueIdentifier=identifier,
                namespace=self.namespace,
            )
        for identifier in result.skipped:
            context.reporter.event(
                "dify-plugin.skipped",
                f"  {identifier}: already installed in {self.namespace}",
                uniqueIdentifier=identifier,
                namespace=self.namespace,
            )
