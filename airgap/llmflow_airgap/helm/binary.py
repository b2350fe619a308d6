"""Helm through a `helm` executable (the one shipped in the bundle under `tools/helm`).

Values go to a file in the install's work directory (never `/tmp`, never the command line),
and the cluster credentials through `--kubeconfig`, so no token shows up in `ps`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from llmflow_airgap.helm.base import HelmError, ReleaseInfo, ReleaseSpec

# Helm's own --timeout covers the wait; this margin only catches a hung process.
_PROCESS_MARGIN_S = 120


class BinaryHelmDriver:
    """`HelmDriver` that runs `helm upgrade --install --atomic --wait ...`."""

    name = "helm-binary"

    def __init__(
        self,
        binary: Path,
        work_dir: Path,
        kubeconfig: Path | None = None,
        context: str | None = None,
    ) -> None:
        self.binary = binary
        self.work_dir = work_dir
        self.kubeconfig = kubeconfig
        self.context = context

    def _cluster_args(self) -> list[str]:
        args: list[str] = []
        if self.kubeconfig is not None:
            args += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            args += ["--kube-context", self.context]
        return args

    def _values_file(self, spec: ReleaseSpec) -> Path:
        folder = self.work_dir / "values"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{spec.namespace}--{spec.name}.json"
        tmp = path.with_name(path.name + ".tmp")
        # JSON is YAML, and json.dumps keeps `tag@sha256:...` strings exactly as they are.
        tmp.write_text(json.dumps(spec.values, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def _run(self, args: list[str], timeout_s: int) -> str:
        command = [str(self.binary), *args]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, check=False
            )
        except FileNotFoundError as exc:
            raise HelmError(f"helm binary {self.binary} not found") from exc
        except subprocess.TimeoutExpired as exc:
            raise HelmError(f"{' '.join(args[:3])}: helm did not finish in {timeout_s}s") from exc
        if done.returncode != 0:
            raise HelmError(f"helm {' '.join(args[:3])}: {done.stderr.strip() or done.stdout}")
        return done.stdout

    def upgrade_install_args(self, spec: ReleaseSpec, values_file: Path) -> list[str]:
        """The exact `helm` arguments of a release (shown by `--dry-run` too)."""
        args = ["upgrade", "--install", spec.name, str(spec.chart)]
        args += ["--namespace", spec.namespace, "--create-namespace"]
        if spec.atomic:
            args.append("--atomic")
        if spec.wait:
            args.append("--wait")
        args += ["--timeout", f"{spec.timeout_s}s", "-f", str(values_file), "-o", "json"]
        return [*args, *self._cluster_args()]

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        """Run `helm upgrade --install` and read the release it reports."""
        values = self._values_file(spec)
        out = self._run(self.upgrade_install_args(spec, values), spec.timeout_s + _PROCESS_MARGIN_S)
        return ReleaseInfo.from_helm_json(_json_object(out, spec.name), spec.namespace)

    def render(self, spec: ReleaseSpec) -> dict[str, str]:
        """`helm template` (offline); the whole stream under one key."""
        values = self._values_file(spec)
        args = ["template", spec.name, str(spec.chart), "--namespace", spec.namespace]
        return {"manifest.yaml": self._run([*args, "-f", str(values)], 300)}

    def release(self, name: str, namespace: str) -> ReleaseInfo | None:
        """`helm status -o json`; None when the release does not exist."""
        args = ["status", name, "--namespace", namespace, "-o", "json", *self._cluster_args()]
        try:
            out = self._run(args, 120)
        except HelmError as exc:
            if "not found" in str(exc):
                return None
            raise
        return ReleaseInfo.from_helm_json(_json_object(out, name), namespace)


def _json_object(text: str, name: str) -> dict[str, Any]:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise HelmError(f"helm output for {name} is not JSON: {text[:200]}") from exc
    if not isinstance(data, dict):
        raise HelmError(f"helm output for {name} is not a release object")
    return data
