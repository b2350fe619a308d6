"""The Kubernetes runner: the Job manifest against the Kubernetes JSON schemas
(``kubernetes-validate``, strict), and the runner's behaviour against the API contract
(server-side apply, Job conditions, pod logs, delete with ``propagationPolicy: Background``
and garbage collection of the ConfigMap the Job owns), replayed by a local API server
(tests/training_harness.py). Then a whole job through ``TrainingService`` with that runner:
durable record in the embedded PostgreSQL, config checked by LLaMA-Factory's parser when
``.venv-train`` exists."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from training_harness import fake_batch_kubernetes, write_alpaca_dataset

from llmflow.tenancy.k8s_api import KubernetesApi
from llmflow.training.config import DatasetRef, TrainingSpec, llamafactory_config
from llmflow.training.runners.base import RunRequest, RunState
from llmflow.training.runners.kubernetes import (
    CONFIGMAP_LIMIT,
    KubernetesRunner,
    configmap_manifest,
    job_manifest,
    job_name,
)
from llmflow.training.settings import TrainingSettings

pytestmark = pytest.mark.integration
K8S_VERSION = "1.31.0"
NS = "dept-ml"
TOKEN = "train-sa-token"


@pytest.fixture
def k8s() -> Iterator[Any]:
    fake = fake_batch_kubernetes(TOKEN)
    fake.start()
    fake.objects[("namespaces", "", NS)] = {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}
    }  # fmt: skip
    try:
        yield fake
    finally:
        fake.stop()


def _request(tmp_path: Path, gpus: int = 2, deepspeed: bool = True) -> RunRequest:
    data = write_alpaca_dataset(tmp_path / "data", "faq")
    spec = TrainingSpec(
        name="faq", base_model="/models/qwen2.5-7b", dataset=DatasetRef(name="faq", version="v1"),
        method="qlora", gpus=gpus, deepspeed="z2" if deepspeed else None,
    )  # fmt: skip
    settings = TrainingSettings()
    runner = KubernetesRunner(KubernetesApi("http://unused"), settings)
    paths = runner.paths(NS, "0123456789abcdef0123456789abcdef", "faq_train", "faq_val")
    cfg = llamafactory_config(spec, paths, run_name="faq-01234567", template="qwen")
    from llmflow.training.config import deepspeed_config

    return RunRequest(
        job_id="0123456789abcdef0123456789abcdef", tenant_id=NS, attempt=1, data_dir=data,
        config=cfg, env={"MLFLOW_TRACKING_URI": "http://mlflow.llmflow-mlops:5000",
                         "MLFLOW_EXPERIMENT_NAME": f"tenants/{NS}", "MLFLOW_RUN_ID": "r1"},
        gpus=gpus, deepspeed_config=deepspeed_config("z2", "bf16") if deepspeed else None,
    )  # fmt: skip


def test_job_and_configmap_manifests_validate_against_kubernetes_schemas(tmp_path: Path) -> None:
    request = _request(tmp_path)
    settings = TrainingSettings(
        models_pvc_name="llmflow-models",
        node_selector={"gpu": "a100"},
        active_deadline_seconds=86_400,
        service_account="trainer",
    )
    name = job_name(request.job_id, 1)
    cm = configmap_manifest(request, NS, name)
    job = job_manifest(request, settings, NS, name, cm)
    for doc in (cm, job):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert name == "llmflow-train-0123456789ab-a1" and len(name) <= 63
    pod = job["spec"]["template"]["spec"]
    train = pod["containers"][0]
    assert train["image"] == "docker.io/hiyouga/llamafactory:0.9.4"
    assert train["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert "nvidia.com/gpu" not in train["resources"]["requests"]
    assert train["command"] == ["llamafactory-cli", "train", "/job/config.yaml"]
    env = {e["name"]: e["value"] for e in train["env"]}
    assert env["MLFLOW_EXPERIMENT_NAME"] == f"tenants/{NS}" and env["FORCE_TORCHRUN"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    mounts = {m["mountPath"]: m for m in train["volumeMounts"]}
    assert mounts["/models"]["readOnly"] and mounts["/job"]["readOnly"] and "/workspace" in mounts
    items = {i["path"] for i in pod["volumes"][0]["configMap"]["items"]}
    assert {"config.yaml", "ds_config.json", "data/dataset_info.json", "data/faq_train.json",
            "data/faq_val.json"} <= items  # fmt: skip
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["dataset_dir"] == "/job/data" and cfg["output_dir"].startswith("/workspace/")
    assert cfg["quantization_bit"] == 4 and cfg["report_to"] == "mlflow"
    assert json.loads(cm["data"]["ds_config.json"])["zero_optimization"]["stage"] == 2


def test_a_dataset_over_the_configmap_limit_is_refused_with_the_reason(tmp_path: Path) -> None:
    from llmflow.errors import InvalidRequest

    request = _request(tmp_path, gpus=1, deepspeed=False)
    big = [{"instruction": "x" * 1000, "input": "", "output": "y"}] * (CONFIGMAP_LIMIT // 1000)
    write_alpaca_dataset(request.data_dir, "faq", train=big)
    with pytest.raises(InvalidRequest, match="ConfigMap, limited to"):
        configmap_manifest(request, NS, "x")


async def test_runner_replays_the_job_lifecycle(k8s: Any, tmp_path: Path) -> None:
    request = _request(tmp_path)
    api = KubernetesApi(k8s.url, token=TOKEN)
    runner = KubernetesRunner(api, TrainingSettings())
    try:
        handle = await runner.start(request)
        job = k8s.get("jobs", NS, handle)
        cm = k8s.get("configmaps", NS, handle)
        assert job is not None and cm is not None
        assert cm["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]
        applies = [w for w in k8s.writes() if w["method"] == "PATCH"]
        assert all(w["content_type"] == "application/apply-patch+yaml" for w in applies)
        assert all(w["query"]["fieldManager"] == "llmflow" for w in applies)
        assert (await runner.status(NS, handle)).state is RunState.PENDING

        # logs before the container runs: nothing yet, no error
        assert [c async for c in runner.logs(NS, handle, follow=False)] == []
        pod = k8s.start_pod(NS, handle, ["step 1 loss 2.0"])
        assert (await runner.status(NS, handle)).state is RunState.RUNNING

        async def follow() -> bytes:
            return b"".join([c async for c in runner.logs(NS, handle, follow=True)])

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.3)
        k8s.write_log(NS, pod, "step 2 loss 1.5")
        k8s.finish(NS, handle, ok=True)
        text = (await asyncio.wait_for(task, 10)).decode()
        assert "step 1 loss 2.0" in text and "step 2 loss 1.5" in text
        log_calls = [e for e in k8s.log if e["path"].endswith("/log")]
        assert log_calls[-1]["query"] == {"container": "train", "follow": "true"}
        assert (await runner.status(NS, handle)).state is RunState.SUCCEEDED

        # a failing second attempt, then cancel of a third
        failing = await runner.start(dataclasses.replace(request, attempt=2))
        k8s.start_pod(NS, failing)
        k8s.finish(NS, failing, ok=False)
        status = await runner.status(NS, failing)
        assert status.state is RunState.FAILED and "BackoffLimitExceeded" in status.message

        third = await runner.start(dataclasses.replace(request, attempt=3))
        k8s.start_pod(NS, third)
        await runner.cancel(NS, third)
        assert k8s.deletes[-1] == {"kind": "DeleteOptions", "apiVersion": "v1",
                                   "propagationPolicy": "Background"}  # fmt: skip
        assert k8s.get("jobs", NS, third) is None and k8s.get("configmaps", NS, third) is None
        assert not [k for k in k8s.objects if k[0] == "pods" and k[2].startswith(third)]
        assert (await runner.status(NS, third)).state is RunState.CANCELLED
        await runner.cancel(NS, third)  # idempotent: 404 is fine
    finally:
        await runner.aclose()


async def test_an_unauthorised_runner_gets_a_clear_error(k8s: Any, tmp_path: Path) -> None:
    from llmflow.errors import ServiceUnavailable

    runner = KubernetesRunner(KubernetesApi(k8s.url, token="wrong"), TrainingSettings())
    try:
        with pytest.raises(ServiceUnavailable, match="401"):
            await runner.start(_request(tmp_path))
    finally:
        await runner.aclose()


async def test_training_service_drives_a_kubernetes_job(
    runtime: Any, k8s: Any, tmp_path: Path
) -> None:
    from llmflow.training import jobs as jobs_module
    from llmflow.training.jobs import TrainingService

    async def materialize(rt: Any, tenant: str, name: str, version: str, dest: Path) -> Path:
        return write_alpaca_dataset(dest, name, version=version)

    settings = TrainingSettings(runner="kubernetes", work_dir=tmp_path, max_attempts=2,
                                vllm_adapter_root="/adapters")  # fmt: skip
    runner = KubernetesRunner(KubernetesApi(k8s.url, token=TOKEN), settings)
    service = TrainingService(runtime, settings, runner=runner, materialize=materialize)
    jobs_module.POLL_S = 0.05
    try:
        spec = TrainingSpec(name="faq", base_model="/models/m", gpus=1, template="qwen",
                            dataset=DatasetRef(name="faq", version="v1"))  # fmt: skip
        job = await service.submit(NS, "u-dev", spec)
        first = job_name(job.id, 1)
        for _ in range(600):  # preparing (parser check in .venv-train) then the Job
            if k8s.get("jobs", NS, first) is not None:
                break
            await asyncio.sleep(0.1)
        k8s.start_pod(NS, first)
        k8s.finish(NS, first, ok=False)  # attempt 1 fails: retried as attempt 2
        second = job_name(job.id, 2)
        for _ in range(200):
            if k8s.get("jobs", NS, second) is not None:
                break
            await asyncio.sleep(0.05)
        k8s.start_pod(NS, second)
        k8s.finish(NS, second, ok=True)
        done = await service.wait(NS, job.id, timeout_s=30)
        assert done.status.value == "succeeded", done.error
        assert done.attempt == 2 and done.runner == "kubernetes"
        assert done.output_dir == f"/workspace/training/{job.id}/output"
        assert service.lora_path(done) == f"/adapters/{job.id}/output"
        assert done.config is not None and done.config["dataset_dir"] == "/job/data"
        # durable: another reader sees the same record
        from llmflow.training.store import TrainingJobStore

        again = await TrainingJobStore(runtime.sessions).get(NS, job.id)
        assert again.status == done.status and again.lineage["dataset_name"] == "faq"
    finally:
        jobs_module.POLL_S = 1.0
        await service.aclose()
