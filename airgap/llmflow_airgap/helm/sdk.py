"""Helm through `helm-python-sdk` (module `helm_python`): Helm's Go SDK over a C ABI.

No `helm` binary and no Go toolchain on the install host; the same library renders charts
offline in the tests. Imported lazily so that the rest of `llmflow_airgap` works without the
`helm` extra.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from llmflow_airgap.helm.base import HelmError, ReleaseInfo, ReleaseSpec


def _helm() -> ModuleType:
    try:
        import helm_python
    except ImportError as exc:
        raise HelmError(
            "helm-python-sdk is not installed: install llmflow-airgap[helm] or use "
            "--helm-driver binary"
        ) from exc
    return helm_python


class SdkHelmDriver:
    """`HelmDriver` backed by `helm_python.Config` and `helm_python.Chart`."""

    name = "helm-python-sdk"

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.context = context

    def _config(self, namespace: str) -> Any:
        helm = _helm()
        return helm.Config(
            kubeconfig_path=self.kubeconfig, kube_context=self.context, namespace=namespace
        )

    def render(self, spec: ReleaseSpec) -> dict[str, str]:
        """Render offline (no cluster contacted; `lookup` returns nothing)."""
        helm = _helm()
        try:
            with helm.Chart.load(spec.chart) as chart:
                rendered: dict[str, str] = chart.render(
                    spec.values, name=spec.name, namespace=spec.namespace, is_install=True
                )
        except helm.HelmError as exc:
            raise HelmError(f"render {spec.name} ({spec.chart.name}): {exc}") from exc
        return rendered

    def release(self, name: str, namespace: str) -> ReleaseInfo | None:
        """The release's current summary, or None when Helm knows no such release."""
        helm = _helm()
        with self._config(namespace) as config:
            try:
                data = config.status(name)
            except helm.HelmNotFoundError:
                return None
            except helm.HelmError as exc:
                raise HelmError(f"status {namespace}/{name}: {exc}") from exc
        return ReleaseInfo.from_helm_json(data, namespace)

    def upgrade_install(self, spec: ReleaseSpec) -> ReleaseInfo:
        """`helm upgrade --install --atomic --wait` through the SDK."""
        helm = _helm()
        wait = "watcher" if spec.wait else None
        with self._config(spec.namespace) as config, helm.Chart.load(spec.chart) as chart:
            try:
                try:
                    config.history(spec.name, max_revisions=1)
                    exists = True
                except helm.HelmNotFoundError:
                    exists = False
                if exists:
                    data = config.upgrade(
                        chart,
                        spec.name,
                        spec.values,
                        namespace=spec.namespace,
                        timeout=spec.timeout_s,
                        wait=wait,
                        rollback_on_failure=spec.atomic,
                        cleanup_on_fail=spec.atomic,
                    )
                else:
                    data = config.install(
                        chart,
                        spec.name,
                        spec.values,
                        namespace=spec.namespace,
                        timeout=spec.timeout_s,
                        wait=wait,
                        create_namespace=True,
                        rollback_on_failure=spec.atomic,
                    )
            except helm.HelmError as exc:
                raise HelmError(f"helm upgrade --install {spec.name}: {exc}") from exc
        return ReleaseInfo.from_helm_json(data, spec.namespace)
