"""The Kubernetes runner: one batch/v1 Job per attempt in the tenant's namespace.

Kubernetes API contract used (v1.31, the platform's minimum):

* ``PATCH /api/v1/namespaces/{ns}/configmaps/{name}?fieldManager=llmflow&force=true``
  (server-side apply, ``application/apply-patch+yaml``) — the job's config and dataset,
  mounted read-only at ``/job``; applied again with an ``ownerReference`` to the Job once the
  Job exists, so that the garbage collector removes it with the Job.
* ``PATCH /apis/batch/v1/namespaces/{ns}/jobs/{name}`` (server-side apply) — the Job:
  ``backoffLimit`` 0 (retries are the job service's, which resumes from the last checkpoint),
  ``restartPolicy: Never``, ``nvidia.com/gpu`` in ``limits`` (extended resources are
  requested through limits; the request defaults to the limit), the shared PVC at
  ``/workspace`` for outputs, a memory-backed ``/dev/shm``.
* ``GET .../jobs/{name}`` — status from ``status.conditions``: ``Complete`` (or
  ``SuccessCriteriaMet``) ``True`` succeeded, ``Failed`` ``True`` failed (``reason``,
  ``message``), else ``status.active``/``ready`` running, else pending; 404 after a delete.
* ``GET /api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name=<name>`` and
  ``GET .../pods/{pod}/log?container=train&follow=true`` — logs (a 400 while the container is
  still waiting to start).
* ``DELETE .../jobs/{name}`` with ``DeleteOptions{propagationPolicy: Background}`` — cancel:
  the Job goes at once, its pods (SIGTERM, grace period) and the ConfigMap after it.

The client is the tenant control plane's :class:`~llmflow.tenancy.k8s_api.KubernetesApi`
(bearer token, CA, in-cluster service account), reused for its connection and error handling.

Data size: the dataset travels in the ConfigMap, which the API server caps at 1 MiB; a larger
dataset is refused with that reason (ARCHITECTURE: object-store staging is the next step).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from llmflow.errors import InvalidRequest, ServiceUnavailable
from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.k8s_api import KubernetesApi
from llmflow.tenancy.k8s_manifests import FIELD_MANAGER, namespace_of
from llmflow.training.config import JobPaths, dump_yaml
from llmflow.training.runners.base import Runner, RunRequest, RunState, RunStatus
from llmflow.training.settings import TrainingSettings

CONFIGMAP_LIMIT = 1_000_000
"""Bytes of data a ConfigMap may hold (the API server refuses objects over 1 MiB)."""
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
WORKSPACE = "/workspace"
JOB_MOUNT = "/job"


def job_name(job_id: str, attempt: int) -> str:
    """``llmflow-train-<12 hex>-a<attempt>``: a DNS label (≤ 63), unique per attempt."""
    return f"llmflow-train-{job_id[:12]}-a{attempt}"


def _labels(tenant_id: str, job_id: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "llamafactory",
        "app.kubernetes.io/component": "training",
        "app.kubernetes.io/part-of": "llmflow",
        "app.kubernetes.io/managed-by": FIELD_MANAGER,
        "llmflow.io/tenant": tenant_id,
        "llmflow.io/training-job": job_id,
    }


def _key(name: str) -> str:
    """A ConfigMap key for a file name (keys allow ``[-._a-zA-Z0-9]``)."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name)


def configmap_manifest(request: RunRequest, namespace: str, name: str) -> dict[str, Any]:
    """The job's config, DeepSpeed config and dataset files as one ConfigMap."""
    data: dict[str, str] = {"config.yaml": dump_yaml(request.config)}
    if request.deepspeed_config is not None:
        data["ds_config.json"] = json.dumps(request.deepspeed_config, indent=2)
    for path in sorted(request.data_dir.iterdir()):
        if path.is_file() and path.suffix in (".json", ".jsonl"):
            data[_key("data." + path.name)] = path.read_text(encoding="utf-8")
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    if size > CONFIGMAP_LIMIT:
        raise InvalidRequest(
            f"the dataset and config of this job take {size:,} bytes; the kubernetes runner "
            f"carries them in a ConfigMap, limited to {CONFIGMAP_LIMIT:,} bytes: use a smaller "
            "dataset version (max_samples) or the local runner"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": _labels(request.tenant_id, request.job_id),
        },
        "data": data,
    }


def job_manifest(
    request: RunRequest,
    settings: TrainingSettings,
    namespace: str,
    name: str,
    configmap: dict[str, Any],
) -> dict[str, Any]:
    """The batch/v1 Job of one attempt."""
    labels = _labels(request.tenant_id, request.job_id)
    items = [
        {"key": key, "path": key.replace("data.", "data/", 1) if key.startswith("data.") else key}
        for key in configmap["data"]
    ]
    env = [
        {"name": "HF_HUB_OFFLINE", "value": "1"},
        {"name": "TRANSFORMERS_OFFLINE", "value": "1"},
        {"name": "HF_DATASETS_OFFLINE", "value": "1"},
        {"name": "DISABLE_VERSION_CHECK", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        *({"name": k, "value": v} for k, v in sorted(request.env.items())),
    ]
    if request.gpus > 1:
        env.append({"name": "FORCE_TORCHRUN", "value": "1"})  # DeepSpeed / DDP over the GPUs
    resources: dict[str, Any] = {
        "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
        "limits": {"memory": settings.memory_limit},
    }
    if request.gpus > 0:
        resources["limits"]["nvidia.com/gpu"] = str(request.gpus)
    mounts = [
        {"name": "job", "mountPath": JOB_MOUNT, "readOnly": True},
        {"name": "workspace", "mountPath": WORKSPACE},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    volumes: list[dict[str, Any]] = [
        {"name": "job", "configMap": {"name": configmap["metadata"]["name"], "items": items}},
        {"name": "workspace", "persistentVolumeClaim": {"claimName": settings.pvc_name}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
    ]
    if settings.models_pvc_name:
        mounts.append({"name": "models", "mountPath": "/models", "readOnly": True})
        volumes.append(
            {
                "name": "models",
                "persistentVolumeClaim": {"claimName": settings.models_pvc_name, "readOnly": True},
            }
        )
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [
            {
                "name": "train",
                "image": settings.image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["llamafactory-cli", "train", f"{JOB_MOUNT}/config.yaml"],
                "workingDir": WORKSPACE,
                "env": env,
                "resources": resources,
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": volumes,
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if request.gpus > 0:
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if settings.active_deadline_seconds:
        spec["activeDeadlineSeconds"] = settings.active_deadline_seconds
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }


def status_of(job: dict[str, Any] | None) -> RunStatus:
    """A Job's state from its conditions (``Complete``/``SuccessCriteriaMet``, ``Failed``)."""
    if job is None:
        return RunStatus(RunState.CANCELLED, "the Job no longer exists (deleted)")
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") in ("Complete", "SuccessCriteriaMet"):
            return RunStatus(RunState.SUCCEEDED)
        if cond.get("type") == "Failed":
            reason = cond.get("reason") or "Failed"
            return RunStatus(RunState.FAILED, f"{reason}: {cond.get('message') or ''}".strip())
    if (status.get("active") or 0) > 0 or (status.get("ready") or 0) > 0:
        return RunStatus(RunState.RUNNING)
    return RunStatus(RunState.PENDING)


class KubernetesRunner(Runner):
    name = "kubernetes"
    use_cpu = False

    def __init__(self, api: KubernetesApi, settings: TrainingSettings, namespace_prefix: str = ""):
        self.api = api
        self.settings = settings
        self.namespace_prefix = namespace_prefix

    def _ns(self, tenant_id: str) -> str:
        return namespace_of(tenant_id, self.namespace_prefix)

    def paths(self, tenant_id: str, job_id: str, train: str, val: str | None) -> JobPaths:
        return JobPaths(
            dataset_dir=f"{JOB_MOUNT}/data",
            output_dir=f"{WORKSPACE}/training/{job_id}/output",
            train_dataset=train,
            eval_dataset=val,
            deepspeed_config=None,
        )

    async def _call(self, method: str, path: str, what: str, **kw: Any) -> Any:
        try:
            response = await self.api._request(method, path, what, **kw)
        except TenantReconcileError as exc:
            raise ServiceUnavailable(str(exc)) from exc
        return response

    async def _apply(self, manifest: dict[str, Any], plural: str, prefix: str) -> dict[str, Any]:
        meta = manifest["metadata"]
        path = f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
        response = await self._call(
            "PATCH",
            path,
            f"apply {manifest['kind']} {meta['namespace']}/{meta['name']}",
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            content=json.dumps(manifest).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        if response.status_code not in (200, 201):
            raise ServiceUnavailable(str(self.api._fail(response, f"apply {manifest['kind']}")))
        body: dict[str, Any] = response.json()
        return body

    async def start(self, request: RunRequest) -> str:
        ns = self._ns(request.tenant_id)
        name = job_name(request.job_id, request.attempt)
        config = dict(request.config)
        if request.deepspeed_config is not None:
            config["deepspeed"] = f"{JOB_MOUNT}/ds_config.json"
        request = RunRequest(
            job_id=request.job_id,
            tenant_id=request.tenant_id,
            attempt=request.attempt,
            data_dir=request.data_dir,
            config=config,
            env=request.env,
            gpus=request.gpus,
            deepspeed_config=request.deepspeed_config,
        )
        configmap = configmap_manifest(request, ns, name)
        await self._apply(configmap, "configmaps", "/api/v1")
        job = await self._apply(
            job_manifest(request, self.settings, ns, name, configmap), "jobs", "/apis/batch/v1"
        )
        # The Job owns its ConfigMap: deleting the Job (cancel, TTL) collects it.
        configmap["metadata"]["ownerReferences"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": name,
                "uid": job["metadata"]["uid"],
                "blockOwnerDeletion": False,
            }
        ]
        await self._apply(configmap, "configmaps", "/api/v1")
        return name

    async def _get_job(self, tenant_id: str, name: str) -> dict[str, Any] | None:
        path = f"/apis/batch/v1/namespaces/{self._ns(tenant_id)}/jobs/{name}"
        response = await self._call("GET", path, f"get Job {name}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ServiceUnavailable(str(self.api._fail(response, f"get Job {name}")))
        body: dict[str, Any] = response.json()
        return body

    async def status(self, tenant_id: str, handle: str) -> RunStatus:
        return status_of(await self._get_job(tenant_id, handle))

    async def _pod(self, tenant_id: str, name: str) -> str | None:
        path = f"/api/v1/namespaces/{self._ns(tenant_id)}/pods"
        response = await self._call(
            "GET",
            path,
            f"list pods of {name}",
            params={"labelSelector": f"{JOB_NAME_LABEL}={name}"},
        )
        if response.status_code != 200:
            raise ServiceUnavailable(str(self.api._fail(response, f"list pods of {name}")))
        items = response.json().get("items") or []
        if not items:
            return None
        newest = max(items, key=lambda p: p["metadata"].get("creationTimestamp") or "")
        pod: str = newest["metadata"]["name"]
        return pod

    async def logs(self, tenant_id: str, handle: str, *, follow: bool) -> AsyncIterator[bytes]:
        ns = self._ns(tenant_id)
        while True:
            pod = await self._pod(tenant_id, handle)
            if pod is not None:
                path = f"/api/v1/namespaces/{ns}/pods/{pod}/log"
                params = {"container": "train", **({"follow": "true"} if follow else {})}
                request = self.api._client.build_request("GET", path, params=params)
                response = await self.api._client.send(request, stream=True)
                try:
                    if response.status_code == 200:
                        async for chunk in response.aiter_bytes():
                            yield chunk
                        return
                    await response.aread()
                    if response.status_code != 400:  # 400: container still waiting to start
                        raise ServiceUnavailable(str(self.api._fail(response, f"logs of {pod}")))
                finally:
                    await response.aclose()
            if not follow or (await self.status(tenant_id, handle)).state.finished:
                return
            await asyncio.sleep(2.0)

    async def cancel(self, tenant_id: str, handle: str) -> None:
        path = f"/apis/batch/v1/namespaces/{self._ns(tenant_id)}/jobs/{handle}"
        response = await self._call(
            "DELETE",
            path,
            f"delete Job {handle}",
            json={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
        )
        if response.status_code not in (200, 202, 404):
            raise ServiceUnavailable(str(self.api._fail(response, f"delete Job {handle}")))

    async def latest_checkpoint(self, tenant_id: str, job_id: str) -> str | None:
        """None: the output lives on the tenant's PVC, out of this process' reach, and
        LLaMA-Factory resumes from the newest checkpoint of an existing ``output_dir`` itself
        (``hparams/parser.py``: ``get_last_checkpoint`` when ``resume_from_checkpoint`` is
        unset and ``overwrite_output_dir`` is false, as our configs say)."""
        return None

    async def aclose(self) -> None:
        await self.api.aclose()
