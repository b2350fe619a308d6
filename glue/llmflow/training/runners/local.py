"""The local runner: ``llamafactory-cli train config.yaml`` as a subprocess of the training
environment (``.venv-train``), on this machine.

Each attempt runs under a small ``bash`` wrapper that writes the trainer's exit code next to
the config, in its own process group (``start_new_session``): the status survives this process
(a CLI submits, another process asks), and cancel reaches the whole tree (torchrun workers,
data loaders) with one ``killpg``. Output goes to ``train.log`` in the job directory, appended
across attempts, which the API streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from llmflow.errors import ServiceUnavailable
from llmflow.training.config import JobPaths, dump_yaml
from llmflow.training.runners.base import Runner, RunRequest, RunState, RunStatus
from llmflow.training.validate import train_env

_WRAPPER = 'cli="$1"; "$cli" train "$2"; code=$?; echo "$code" > "$3"; exit "$code"'
_MARK = "llmflow-train"
"""argv[0] of the wrapper: tells our process from an unrelated one that reused the pid."""
CANCEL_GRACE_S = 15.0


def job_dir(work_dir: Path, tenant_id: str, job_id: str) -> Path:
    """Where a job's files live on this machine."""
    return work_dir / tenant_id / job_id


class LocalRunner(Runner):
    name = "local"
    use_cpu = True

    def __init__(self, work_dir: Path, venv: Path, *, use_cpu: bool = True) -> None:
        self.work_dir = work_dir
        self.venv = venv
        self.use_cpu = use_cpu
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def _dir(self, tenant_id: str, job_id: str) -> Path:
        return job_dir(self.work_dir, tenant_id, job_id).resolve()

    def paths(self, tenant_id: str, job_id: str, train: str, val: str | None) -> JobPaths:
        d = self._dir(tenant_id, job_id)
        return JobPaths(
            dataset_dir=str(d / "data"),
            output_dir=str(d / "output"),
            train_dataset=train,
            eval_dataset=val,
            deepspeed_config=None,
        )

    async def start(self, request: RunRequest) -> str:
        cli = self.venv / "bin" / "llamafactory-cli"
        if not cli.exists():
            raise ServiceUnavailable(
                f"{cli} is missing: run `bash .ci/train-env.sh` to create the training environment"
            )
        d = self._dir(request.tenant_id, request.job_id)
        d.mkdir(parents=True, exist_ok=True)
        config = dict(request.config)
        if request.deepspeed_config is not None:
            ds = d / "ds_config.json"
            ds.write_text(json.dumps(request.deepspeed_config, indent=2))
            config["deepspeed"] = str(ds)
        cfg_path = d / f"attempt-{request.attempt}.yaml"
        cfg_path.write_text(dump_yaml(config), encoding="utf-8")
        exit_path = d / f"attempt-{request.attempt}.exit"
        exit_path.unlink(missing_ok=True)
        env = train_env(self.venv)
        env.update(request.env)
        if request.gpus == 0 or self.use_cpu:
            env["CUDA_VISIBLE_DEVICES"] = ""
        log = (d / "train.log").open("ab")
        log.write(f"=== llmflow: attempt {request.attempt} of job {request.job_id}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(
                ["bash", "-c", _WRAPPER, _MARK, str(cli), str(cfg_path), str(exit_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(d),
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()
        self._children[proc.pid] = proc
        return f"{proc.pid}|{request.attempt}|{d}"

    @staticmethod
    def _parse(handle: str) -> tuple[int, int, Path]:
        pid, attempt, directory = handle.split("|", 2)
        return int(pid), int(attempt), Path(directory)

    def _alive(self, pid: int) -> bool:
        child = self._children.get(pid)
        if child is not None:  # ours: poll() also reaps it, so no zombie looks alive
            if child.poll() is None:
                return True
            self._children.pop(pid, None)
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        state = stat[stat.rindex(")") + 2 :].split()[0]
        return state != "Z" and _MARK.encode() in cmdline

    async def status(self, tenant_id: str, handle: str) -> RunStatus:
        pid, attempt, d = self._parse(handle)
        exit_path = d / f"attempt-{attempt}.exit"
        alive = self._alive(pid)
        if alive:
            return RunStatus(RunState.RUNNING)
        if (d / f"attempt-{attempt}.cancelled").exists():
            return RunStatus(RunState.CANCELLED, "cancelled")
        try:
            code = int(exit_path.read_text().strip())
        except (OSError, ValueError):
            return RunStatus(RunState.FAILED, "the trainer ended without an exit status (killed?)")
        if code == 0:
            return RunStatus(RunState.SUCCEEDED)
        return RunStatus(RunState.FAILED, f"llamafactory-cli exited with {code}: {_tail(d)}")

    async def logs(self, tenant_id: str, handle: str, *, follow: bool) -> AsyncIterator[bytes]:
        _, _, d = self._parse(handle)
        async for chunk in follow_file(d / "train.log", lambda: self.status(tenant_id, handle),
                                       follow=follow):  # fmt: skip
            yield chunk

    async def cancel(self, tenant_id: str, handle: str) -> None:
        pid, attempt, d = self._parse(handle)
        if not self._alive(pid):
            return
        (d / f"attempt-{attempt}.cancelled").touch()
        for sig, wait in ((signal.SIGTERM, CANCEL_GRACE_S), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)
            deadline = asyncio.get_running_loop().time() + wait
            while self._alive(pid) and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            if not self._alive(pid):
                return

    async def latest_checkpoint(self, tenant_id: str, job_id: str) -> str | None:
        return latest_checkpoint(self._dir(tenant_id, job_id) / "output")


def latest_checkpoint(output_dir: Path) -> str | None:
    """The newest complete ``checkpoint-N`` (one with ``trainer_state.json``, written last)."""
    best: tuple[int, Path] | None = None
    for path in output_dir.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        complete = step.isdigit() and (path / "trainer_state.json").exists()
        if complete and (best is None or int(step) > best[0]):
            best = (int(step), path)
    return str(best[1]) if best else None


def _tail(d: Path, lines: int = 5) -> str:
    try:
        text = (d / "train.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:] if line.strip())[-800:]


async def follow_file(
    path: Path,
    status: Callable[[], Awaitable[RunStatus]],
    *,
    follow: bool,
    poll_s: float = 0.5,
    chunk: int = 64 * 1024,
) -> AsyncIterator[bytes]:
    """The file's bytes; with ``follow``, new bytes as they come until ``status()`` says the
    run has finished (then what remains)."""
    offset = 0
    while True:
        data = await asyncio.to_thread(_read_from, path, offset, chunk)
        if data:
            offset += len(data)
            yield data
            continue
        if not follow:
            return
        if (await status()).state.finished:
            rest = await asyncio.to_thread(_read_from, path, offset, 1 << 30)
            if rest:
                yield rest
            return
        await asyncio.sleep(poll_s)


def _read_from(path: Path, offset: int, size: int) -> bytes:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read(size)
    except FileNotFoundError:
        return b""
