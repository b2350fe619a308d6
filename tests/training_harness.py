"""Real components for the fine-tuning tests: the training environment (``.venv-train``, made
by ``.ci/train-env.sh``), a real MLflow tracking server on PostgreSQL, and a small alpaca
dataset in exactly the layout ``llmflow.training.datasets.materialize`` writes.

Nothing is downloaded. Tests skip with the reason when ``.venv-train`` is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from vllm_harness import free_port

REPO = Path(__file__).resolve().parents[1]
TRAIN_VENV = Path(os.environ.get("LLMFLOW_TRAIN_VENV", REPO / ".venv-train"))
TRAIN_PYTHON = TRAIN_VENV / "bin" / "python"
TRAIN_STAMP = TRAIN_VENV / ".llmflow-train-env"

# The tiny Llama of tests/vllm_harness.py has <|system|>, <|user|>, <|assistant|> and </s> as
# special tokens and a chat template "<|user|>\n...</s>\n<|assistant|>\n": LLaMA-Factory's
# ``zephyr`` template writes the same turns (``<|user|>\n{content}</s><|assistant|>\n``), so
# the adapter is trained on the prompt format vLLM serves it with.
TINY_TEMPLATE = "zephyr"
TINY_LORA_TARGET = ["q_proj", "v_proj"]  # module names of LlamaAttention, present in the tiny model

TRAIN_RECORDS = [
    {"instruction": "연차 휴가는 며칠인가요?", "input": "", "output": "연차 휴가는 15일입니다."},
    {"instruction": "What is LLMFlow?", "input": "", "output": "An air-gapped LLM platform."},
    {"instruction": "서울의 다음 도시는?", "input": "서울 부산", "output": "부산"},
    {"instruction": "Say hello", "input": "", "output": "Hello, world!"},
    {"instruction": "숫자를 세어 주세요", "input": "", "output": "0 1 2 3 4 5"},
    {"instruction": "날씨는 어떤가요?", "input": "", "output": "오늘 날씨가 좋습니다."},
    {"instruction": "Summarize", "input": "The quick brown fox jumps.", "output": "A fox jumps."},
    {"instruction": "문서를 요약해 주세요", "input": "안녕하세요.", "output": "인사입니다."},
]
VAL_RECORDS = [
    {"instruction": "연차 휴가는 며칠인가요?", "input": "", "output": "연차 휴가는 15일입니다."},
    {"instruction": "Say hello", "input": "", "output": "Hello, world!"},
    {"instruction": "날씨는 어떤가요?", "input": "", "output": "오늘 날씨가 좋습니다."},
]


def train_skip_reason() -> str | None:
    """Why the training environment cannot be used here, or None."""
    if not TRAIN_PYTHON.exists():
        return f"{TRAIN_VENV} is missing: run `bash .ci/train-env.sh` to create it"
    if not TRAIN_STAMP.exists():
        return f"{TRAIN_VENV} is incomplete (no stamp): rerun `bash .ci/train-env.sh`"
    return None


def write_alpaca_dataset(
    dest: Path,
    name: str,
    train: Sequence[dict[str, str]] = TRAIN_RECORDS,
    val: Sequence[dict[str, str]] = VAL_RECORDS,
    version: str = "v1",
) -> Path:
    """``dest/dataset_info.json`` (entries ``<name>_train``/``<name>_val``),
    ``dest/<name>_train.json``, ``dest/<name>_val.json`` and ``dest/manifest.json``, as the
    dataset side's ``materialize`` writes them."""
    dest.mkdir(parents=True, exist_ok=True)
    columns = {"prompt": "instruction", "query": "input", "response": "output"}
    info: dict[str, Any] = {}
    sha: dict[str, str] = {}
    for split, records in (("train", train), ("val", val)):
        file_name = f"{name}_{split}.json"
        body = json.dumps(list(records), ensure_ascii=False, indent=1).encode()
        (dest / file_name).write_bytes(body)
        sha[file_name] = hashlib.sha256(body).hexdigest()
        info[f"{name}_{split}"] = {"file_name": file_name, "formatting": "alpaca",
                                   "columns": columns}  # fmt: skip
    (dest / "dataset_info.json").write_text(json.dumps(info, indent=2))
    manifest = {
        "name": name,
        "version": version,
        "format": "alpaca",
        "counts": {"train": len(train), "val": len(val)},
        "sha256": sha,
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return dest


def with_database(uri: str, database: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def ensure_database(conninfo: str, database: str) -> str:
    """Create ``database`` on the server of ``conninfo`` (a libpq URI); its URI."""
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return with_database(conninfo, database)


@dataclass
class MlflowServer:
    """``mlflow server`` from ``.venv-train`` with a PostgreSQL backend store and proxied
    artifacts (``--serve-artifacts``: clients upload through the server, as in the cluster),
    job execution off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: no Huey consumer)."""

    backend_uri: str
    artifacts_dir: Path
    log_path: Path
    port: int = 0
    startup_timeout: float = 240.0
    proc: subprocess.Popen[bytes] | None = None
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MlflowServer:
        self.port = self.port or free_port()
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
        env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONUNBUFFERED": "1"})
        log = self.log_path.open("wb")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(TRAIN_VENV / "bin" / "mlflow"), "server",
             "--backend-store-uri", self.backend_uri,
             "--serve-artifacts", "--artifacts-destination", self.artifacts_dir.as_uri(),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"mlflow server exited:\n{self.log_tail()}")
                if time.monotonic() - t0 > self.startup_timeout:
                    raise TimeoutError(f"mlflow server not healthy:\n{self.log_tail()}")
                try:
                    with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.5)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def mlflow_server(conninfo: str, root: Path) -> Iterator[MlflowServer]:
    """A tracking server on a fresh database ``mlflow`` of the PostgreSQL at ``conninfo``."""
    # psycopg2 (in .venv-train, the driver MLflow documents); SQLAlchemy 2.1 maps a bare
    # postgresql:// to psycopg 3
    backend = "postgresql+psycopg2://" + ensure_database(conninfo, "mlflow").split("://", 1)[1]
    with MlflowServer(backend, root / "mlartifacts", root / "mlflow.log") as server:
        yield server


# --------------------------------------------------------------------------- Kubernetes Jobs


def fake_batch_kubernetes(token: str = "fake-sa-token") -> Any:
    """:class:`tenant_fakes.FakeKubernetes` plus what the training runner relies on, replayed
    from the Kubernetes v1.31 API contract (``batch/v1`` Job, ``v1`` ConfigMap and Pod):

    * ``configmaps`` and ``jobs`` by server-side apply; a Job gets the labels the API server
      defaults into its pod template (``batch.kubernetes.io/job-name``,
      ``batch.kubernetes.io/controller-uid``, and the legacy ``job-name``/``controller-uid``)
      and ``spec.completions``/``parallelism`` 1;
    * the Job controller, driven by the test: :meth:`start_pod` creates ``<job>-<5 chars>``
      with those labels and sets ``status.active``/``ready``; :meth:`finish` writes the
      terminal conditions as the controller does (success: ``SuccessCriteriaMet`` then
      ``Complete``; failure: ``FailureTarget`` then ``Failed`` with reason
      ``BackoffLimitExceeded``);
    * ``GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=&follow=`` — ``text/plain``; 400
      ``container "train" in pod ... is waiting to start: ContainerCreating`` before the
      container runs; with ``follow`` the stream ends when the container terminates;
    * ``DELETE`` of a Job answers the object, and with ``propagationPolicy: Background`` the
      garbage collector then removes its dependents: the Job's pods, and every object whose
      ``ownerReferences`` name the Job's uid (the ConfigMap).
    """
    import asyncio
    import copy
    import secrets

    import tenant_fakes
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    class FakeBatchKubernetes(tenant_fakes.FakeKubernetes):
        EXTRA: ClassVar[dict[str, tuple[str, str, bool]]] = {
            "configmaps": ("ConfigMap", "v1", True),
            "jobs": ("Job", "batch/v1", True),
            "pods": ("Pod", "v1", True),
        }

        def __init__(self) -> None:
            super().__init__(token)
            self.logs: dict[tuple[str, str], list[str]] = {}
            self.terminated: set[tuple[str, str]] = set()
            self.deletes: list[dict[str, Any]] = []
            log_route = Route("/api/v1/namespaces/{ns}/pods/{name}/log", self._log, methods=["GET"])
            self.app.router.routes.insert(0, log_route)

        def _resource(self, request: Request) -> Any:
            plural = request.path_params["plural"]
            if plural in self.EXTRA:
                kind, api_version, namespaced = self.EXTRA[plural]
                group = request.path_params.get("group")
                version = request.path_params["version"]
                if (f"{group}/{version}" if group else version) != api_version:
                    return tenant_fakes._status(404, "NotFound", "the server could not find "
                                                "the requested resource")  # fmt: skip
                return plural, kind, api_version, namespaced
            return super()._resource(request)

        async def _item(self, request: Request) -> Response:
            plural = request.path_params.get("plural")
            if request.method == "DELETE" and plural == "jobs":
                return await self._delete_job(request)
            response = await super()._item(request)
            if (
                plural == "jobs"
                and request.method == "PATCH"
                and response.status_code in (200, 201)
            ):
                key = ("jobs", request.path_params["ns"], request.path_params["name"])
                with self._lock:
                    job = self.objects[key]
                    uid = job["metadata"]["uid"]
                    spec = job.setdefault("spec", {})
                    spec.setdefault("completions", 1)
                    spec.setdefault("parallelism", 1)
                    labels = spec["template"].setdefault("metadata", {}).setdefault("labels", {})
                    name = job["metadata"]["name"]
                    labels.update({
                        "batch.kubernetes.io/job-name": name, "job-name": name,
                        "batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                    })  # fmt: skip
                    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                    job.setdefault("status", {})
                    body = copy.deepcopy(job)
                return JSONResponse(body, status_code=response.status_code)
            return response

        async def _delete_job(self, request: Request) -> Response:
            body = await request.body()
            self._record(request, body)
            if (denied := self._auth(request)) is not None:
                return denied
            options = json.loads(body or b"{}")
            self.deletes.append(options)
            ns, name = request.path_params["ns"], request.path_params["name"]
            with self._lock:
                job = self.objects.pop(("jobs", ns, name), None)
                if job is None:
                    return tenant_fakes._status(404, "NotFound", f'jobs.batch "{name}" not found',
                                                name=name, kind="jobs")  # fmt: skip
                if options.get("propagationPolicy") in ("Background", "Foreground"):
                    uid = job["metadata"]["uid"]
                    for key, obj in list(self.objects.items()):
                        meta = obj.get("metadata") or {}
                        owned = any(o.get("uid") == uid for o in meta.get("ownerReferences") or [])
                        pod_of = (meta.get("labels") or {}).get("batch.kubernetes.io/job-name")
                        if owned or (key[0] == "pods" and pod_of == name):
                            del self.objects[key]
                            self.terminated.add((key[1], key[2]))
            return JSONResponse(job)

        # -- the Job controller, driven by tests --------------------------------------
        def start_pod(self, ns: str, job: str, lines: Sequence[str] = ()) -> str:
            with self._lock:
                obj = self.objects[("jobs", ns, job)]
                pod = f"{job}-{secrets.token_hex(3)[:5]}"
                labels = dict(obj["spec"]["template"]["metadata"]["labels"])
                self.objects[("pods", ns, pod)] = {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": ns, "labels": labels,
                                 "creationTimestamp": "2026-01-01T00:00:01Z",
                                 "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job",
                                                      "name": job, "uid": obj["metadata"]["uid"],
                                                      "controller": True}]},
                    "spec": copy.deepcopy(obj["spec"]["template"]["spec"]),
                    "status": {"phase": "Running"},
                }  # fmt: skip
                obj["status"] = {"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:01Z"}
                self.logs[(ns, pod)] = list(lines)
            return pod

        def write_log(self, ns: str, pod: str, line: str) -> None:
            with self._lock:
                self.logs[(ns, pod)].append(line)

        def finish(self, ns: str, job: str, ok: bool) -> None:
            with self._lock:
                obj = self.objects[("jobs", ns, job)]
                if ok:
                    conds = [
                        {"type": "SuccessCriteriaMet", "status": "True",
                         "reason": "CompletionsReached", "message": "Reached expected number of "
                         "succeeded pods"},
                        {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                         "message": "Reached expected number of succeeded pods"},
                    ]  # fmt: skip
                    obj["status"] = {"succeeded": 1, "ready": 0, "conditions": conds}
                else:
                    conds = [
                        {"type": "FailureTarget", "status": "True",
                         "reason": "BackoffLimitExceeded",
                         "message": "Job has reached the specified backoff limit"},
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                         "message": "Job has reached the specified backoff limit"},
                    ]  # fmt: skip
                    obj["status"] = {"failed": 1, "ready": 0, "conditions": conds}
                for (kind, n, pod), p in self.objects.items():
                    if kind == "pods" and n == ns and p["metadata"]["labels"].get(
                        "batch.kubernetes.io/job-name") == job:  # fmt: skip
                        p["status"] = {"phase": "Succeeded" if ok else "Failed"}
                        self.terminated.add((ns, pod))

        async def _log(self, request: Request) -> Response:
            self._record(request)
            if (denied := self._auth(request)) is not None:
                return denied
            ns, pod = request.path_params["ns"], request.path_params["name"]
            container = request.query_params.get("container", "train")
            with self._lock:
                obj = self.objects.get(("pods", ns, pod))
                started = (ns, pod) in self.logs
            if obj is None:
                return tenant_fakes._status(404, "NotFound", f'pods "{pod}" not found')
            if not started:
                return tenant_fakes._status(
                    400, "BadRequest",
                    f'container "{container}" in pod "{pod}" is waiting to start: '
                    "ContainerCreating",
                )  # fmt: skip
            follow = request.query_params.get("follow") == "true"

            async def body() -> Any:
                sent = 0
                while True:
                    with self._lock:
                        lines = list(self.logs.get((ns, pod), []))
                        done = (ns, pod) in self.terminated
                    for line in lines[sent:]:
                        yield (line + "\n").encode()
                    sent = len(lines)
                    if not follow or done:
                        return
                    await asyncio.sleep(0.05)

            return StreamingResponse(body(), media_type="text/plain")

    return FakeBatchKubernetes()
