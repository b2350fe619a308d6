"""Helm drivers: one interface (`base.HelmDriver`), one module per way of running Helm.

`sdk` drives Helm through `helm-python-sdk` (the `helm` extra; no binary needed), `binary`
runs a `helm` executable shipped in the bundle. `install` receives a driver and never knows
which one it has, the way an `httpx.Client` never knows its transport.
"""

from llmflow_airgap.helm.base import HelmDriver, HelmError, ReleaseInfo, ReleaseSpec

__all__ = ["HelmDriver", "HelmError", "ReleaseInfo", "ReleaseSpec"]
