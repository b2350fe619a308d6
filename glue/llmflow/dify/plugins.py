"""Install the bundle's re-signed Dify plugins through Dify's console API.

The offline bundle (`llmflow-airgap build`) ships `dify-plugins/`: each plugin repackaged
with its wheels and re-signed with our key, the public key the plugin daemon trusts, and an
`index.json` naming every package with the unique identifier the daemon must answer for it.
Installing goes through Dify's own extension point, never its database, with the calls of the
pinned Dify (`api/controllers/console/workspace/plugin.py`):

1. ``GET  /console/api/workspaces/current/plugin/list?page=&page_size=`` — what is installed
   (a plugin whose unique identifier is already there is skipped: re-runs are idempotent).
2. ``POST /console/api/workspaces/current/plugin/upload/pkg`` (multipart field ``pkg``) — the
   daemon decodes the package and checks its signature; the answer's ``unique_identifier``
   must equal the one the index promises (a different one means other bytes arrived).
3. ``POST /console/api/workspaces/current/plugin/install/pkg``
   ``{"plugin_unique_identifiers": [...]}`` → ``{"all_installed", "task_id"}``.
4. ``GET  /console/api/workspaces/current/plugin/tasks/{task_id}`` until the task is
   ``success`` or ``failed`` (daemon states ``pending``/``running``/``success``/``failed``,
   per plugin too), bounded by a timeout (the daemon's own PLUGIN_INSTALL_TIMEOUT is 15 min).
5. The list again: every plugin must now be installed under the expected identifier.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmflow.dify.client import DifyConsole, DifyError
from llmflow.errors import LLMFlowError

PLUGIN_BASE = "/workspaces/current/plugin"
INDEX_FILE = "index.json"
TERMINAL = frozenset({"success", "failed"})
LIST_PAGE_SIZE = 256  # the console API's maximum page size


class PluginInstallError(LLMFlowError):
    """A plugin could not be uploaded, installed or confirmed; the detail says which."""

    status = 502
    code = "dify_plugin_install_failed"
    title = "Dify plugin installation failed"


@dataclass(frozen=True)
class PluginFile:
    """One package to install, with the identifier the daemon must answer for it."""

    plugin_id: str
    version: str
    path: Path
    unique_identifier: str | None


@dataclass
class PluginOutcome:
    """What happened to one plugin."""

    plugin_id: str
    unique_identifier: str
    action: Literal["installed", "already-installed"]


@dataclass
class InstallReport:
    """The result of one `install_directory` run."""

    outcomes: list[PluginOutcome] = field(default_factory=list)
    task_id: str | None = None
    polls: int = 0


def read_plugin_dir(directory: Path) -> list[PluginFile]:
    """The packages of a bundle's `dify-plugins/` (its index), or every `.difypkg` of a plain
    directory (then without an expected identifier)."""
    index = directory / INDEX_FILE
    if not index.is_file():
        files = sorted(directory.glob("*.difypkg"))
        if not files:
            raise PluginInstallError(f"{directory} holds no {INDEX_FILE} and no .difypkg files")
        return [PluginFile(p.stem, "", p, None) for p in files]
    try:
        document = json.loads(index.read_text(encoding="utf-8"))
        entries = list(document["plugins"])
        return [
            PluginFile(
                str(e["id"]),
                str(e["version"]),
                directory / str(e["file"]),
                str(e["uniqueIdentifier"]),
            )
            for e in entries
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PluginInstallError(f"{index} is not a Dify plugin index: {exc}") from exc


Sleep = Callable[[float], Awaitable[None]]


class PluginInstaller:
    """Upload → install → poll → confirm, for one Dify workspace."""

    def __init__(
        self,
        console: DifyConsole,
        *,
        timeout_s: float = 900.0,
        poll_interval_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return await self.console.request(method, PLUGIN_BASE + path, **kwargs)
        except DifyError as exc:
            raise PluginInstallError(
                f"{method} {path}: {exc.status} {exc.code}: {exc.message}"
            ) from exc

    async def installed(self) -> dict[str, str]:
        """Unique identifier → plugin id of every plugin installed in the workspace."""
        found: dict[str, str] = {}
        page = 1
        while True:
            body = await self._call(
                "GET", "/list", params={"page": page, "page_size": LIST_PAGE_SIZE}
            )
            plugins = list((body or {}).get("plugins") or [])
            for plugin in plugins:
                found[str(plugin["plugin_unique_identifier"])] = str(plugin.get("plugin_id", ""))
            total = int((body or {}).get("total") or 0)
            if not plugins or len(found) >= total:
                return found
            page += 1

    async def upload(self, plugin: PluginFile) -> str:
        """Upload one package; the daemon's unique identifier for it."""
        try:
            data = plugin.path.read_bytes()
        except OSError as exc:
            raise PluginInstallError(f"cannot read {plugin.path}: {exc}") from exc
        body = await self._call(
            "POST",
            "/upload/pkg",
            files={"pkg": (plugin.path.name, data, "application/octet-stream")},
        )
        identifier = str((body or {}).get("unique_identifier") or "")
        if not identifier:
            raise PluginInstallError(f"upload of {plugin.path.name} returned no unique_identifier")
        if plugin.unique_identifier and identifier != plugin.unique_identifier:
            raise PluginInstallError(
                f"{plugin.path.name}: Dify decoded it as {identifier}, the bundle index says "
                f"{plugin.unique_identifier} (the package is not the one that was signed)"
            )
        return identifier

    async def wait(self, task_id: str) -> tuple[dict[str, Any], int]:
        """Poll the install task until it ends; raise unless every plugin succeeded.

        Returns the final task and how many polls it took."""
        deadline = self._clock() + self.timeout_s
        polls = 0
        while True:
            body = await self._call("GET", f"/tasks/{task_id}")
            polls += 1
            task: dict[str, Any] = dict((body or {}).get("task") or {})
            status = str(task.get("status", ""))
            if status in TERMINAL:
                failed = [
                    f"{p.get('plugin_unique_identifier')}: {p.get('message') or 'failed'}"
                    for p in task.get("plugins") or []
                    if p.get("status") != "success"
                ]
                if status == "failed" or failed:
                    raise PluginInstallError(f"install task {task_id} failed: {'; '.join(failed)}")
                return task, polls
            if self._clock() >= deadline:
                raise PluginInstallError(
                    f"install task {task_id} still {status or 'unknown'} "
                    f"after {self.timeout_s:.0f}s"
                )
            await self._sleep(self.poll_interval_s)

    async def install_directory(self, directory: Path) -> InstallReport:
        """Install every package of `directory` not installed yet, and confirm the result."""
        plugins = read_plugin_dir(directory)
        report = InstallReport()
        before = await self.installed()
        pending: list[tuple[PluginFile, str]] = []
        for plugin in plugins:
            if plugin.unique_identifier and plugin.unique_identifier in before:
                report.outcomes.append(
                    PluginOutcome(plugin.plugin_id, plugin.unique_identifier, "already-installed")
                )
                continue
            identifier = await self.upload(plugin)
            if identifier in before:
                report.outcomes.append(
                    PluginOutcome(plugin.plugin_id, identifier, "already-installed")
                )
                continue
            pending.append((plugin, identifier))
        if pending:
            start = await self._call(
                "POST",
                "/install/pkg",
                json={"plugin_unique_identifiers": [identifier for _, identifier in pending]},
            )
            start = start or {}
            if not start.get("all_installed"):
                task_id = str(start.get("task_id") or "")
                if not task_id:
                    raise PluginInstallError(
                        "install/pkg answered neither all_installed nor a task"
                    )
                report.task_id = task_id
                _, report.polls = await self.wait(task_id)
            after = await self.installed()
            missing = [identifier for _, identifier in pending if identifier not in after]
            if missing:
                raise PluginInstallError(
                    "install reported success but the workspace does not list " + ", ".join(missing)
                )
            for plugin, identifier in pending:
                plugin_id = plugin.plugin_id if plugin.unique_identifier else after[identifier]
                report.outcomes.append(PluginOutcome(plugin_id, identifier, "installed"))
        return report
