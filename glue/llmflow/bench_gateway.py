"""``llmflow bench gateway``: the gateway's own cost, side by side with calling the upstream
directly, in one run.

Three processes: a scripted OpenAI-compatible upstream (instant answers, or after
``--upstream-latency-ms``; served on a bare asyncio protocol, :mod:`llmflow.gateway.raw_upstream`,
so that the baseline path costs little CPU), the gateway
(``llmflow serve`` on an embedded PostgreSQL, API key auth, policy, quota and usage ledger
on), and this load generator. Each concurrency level alternates direct and gateway rounds
so both see the same machine. Added latency = gateway percentile − direct percentile; it
includes the extra HTTP hop on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from llmflow.bench_gc import startup_frozen
from llmflow.gateway.scripted import free_port


@dataclass
class GatewayBenchOptions:
    concurrency: list[int] = field(default_factory=lambda: [1, 50, 200])
    requests: int = 2000
    rounds: int = 3
    streams: int = 50
    pii_guard: bool = False
    soak_s: float = 0.0
    soak_streams: int = 1000
    upstream_latency_ms: float = 0.0
    pin: bool = False
    cpu_latency_qos: bool = False
    """The scripted upstream waits this long before each non-streaming answer, as a model
    would. With an instant upstream, 50 and 200 concurrent requests measure how fast the
    three processes saturate the machine's cores, not the gateway's added latency."""


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextlib.contextmanager
def _process(
    args: list[str], env: dict[str, str], url: str, timeout_s: float, log: Path
) -> Iterator[int]:
    """Run a server until the block ends. Its output goes to ``log`` (a pipe nobody reads
    would block the server once full)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                err = log.read_bytes()[-2000:].decode(errors="replace")
                raise RuntimeError(f"{args[2:4]} exited early: {err}")
            try:
                if httpx.get(url, timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {timeout_s:.0f} s")
            time.sleep(0.2)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _load(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    n: int,
    concurrency: int,
    spread_s: float = 0.0,
) -> tuple[list[float], int]:
    """``n`` requests from ``concurrency`` closed-loop workers. With ``spread_s`` the workers
    start staggered across that window (the upstream's answer time): workers whose every
    request takes the same time would otherwise stay in lock-step and arrive as one burst,
    which independent clients do not."""
    body = {"model": "bench-chat", "messages": [{"role": "user", "content": "연차 휴가 일수"}]}
    payload = json.dumps(body).encode()
    send_headers = {**headers, "Content-Type": "application/json"}
    latencies: list[float] = []
    errors = 0
    queue = iter(range(n))

    async def worker(k: int) -> None:
        nonlocal errors
        if spread_s:
            await asyncio.sleep(spread_s * k / concurrency)
        for _ in queue:
            t = time.perf_counter()
            try:
                async with client.post(url, data=payload, headers=send_headers) as r:
                    answer = await r.read()
                    ok = r.status == 200
                    if not ok:
                        _note_error(f"HTTP {r.status}: {answer[:300].decode(errors='replace')}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok = False
                _note_error(f"{type(exc).__name__}: {exc}")
            latencies.append((time.perf_counter() - t) * 1000)
            errors += 0 if ok else 1

    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return latencies, errors


ERROR_SAMPLES: list[str] = []
"""The first errors the load generator saw, reported with the numbers."""


def _note_error(text: str) -> None:
    if len(ERROR_SAMPLES) < 10:
        ERROR_SAMPLES.append(text)


@contextlib.contextmanager
def _generator_gc_paused() -> Iterator[None]:
    """Keep this process's own garbage collections out of the timings. The load generator
    imports most of llmflow (~600k tracked objects); a full collection in it took 25 to
    290 ms and stalled every request in flight, which at 200 concurrent decided the p99 of
    whichever path happened to be measured. Collected between phases instead, as timing
    tools do."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def _ttft(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], n: int
) -> list[float]:
    body = {"model": "bench-chat", "stream": True,
            "messages": [{"role": "user", "content": "첫 토큰까지의 시간"}]}  # fmt: skip
    out: list[float] = []
    for _ in range(n):
        t = time.perf_counter()
        first: float | None = None
        async with client.post(url, json=body, headers=headers) as r:
            async for raw in r.content:  # lines; read to the end: the connection is reused
                line = raw.decode()
                if first is None and line.startswith("data: {") and '"content"' in line:
                    first = (time.perf_counter() - t) * 1000
        if first is not None:
            out.append(first)
    return out


async def _soak(
    client: aiohttp.ClientSession, url: str, headers: dict[str, str], streams: int, seconds: float
) -> dict[str, Any]:
    body = {"model": "bench-chat", "stream": True,
            "messages": [{"role": "user", "content": " ".join(["토큰"] * 40)}]}  # fmt: skip
    stop = time.monotonic() + seconds
    done = errors = 0

    async def one() -> None:
        nonlocal done, errors
        while time.monotonic() < stop:
            try:
                async with client.post(url, json=body, headers=headers) as r:
                    ok = r.status == 200
                    async for _ in r.content.iter_any():
                        pass
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            done += 1
            errors += 0 if ok else 1

    await asyncio.gather(*(one() for _ in range(streams)))
    return {"streams": streams, "seconds": seconds, "completed": done, "errors": errors}


def run_gateway_bench(opts: GatewayBenchOptions) -> dict[str, Any]:
    """Run the benchmark; returns the numbers (printing is the CLI's job)."""
    from llmflow.runtime import Runtime
    from llmflow.settings import Settings

    up_port, gw_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    result: dict[str, Any] = {
        "pii_guard": opts.pii_guard,
        "upstream_latency_ms": opts.upstream_latency_ms,
        "cpu_latency_qos": opts.cpu_latency_qos,
        "levels": [],
    }
    with (
        tempfile.TemporaryDirectory(prefix="llmflow-bench-gw-") as tmp,
        _cpu_latency_qos(opts.cpu_latency_qos),
    ):
        data_dir = Path(tmp)
        models = [{"name": "bench-chat", "backends": [{"url": upstream}]}]
        env = {
            **os.environ,
            "LLMFLOW_DATA_DIR": str(data_dir),
            "LLMFLOW_GATEWAY__MODELS": json.dumps(models),
            "LLMFLOW_GATEWAY__PII_GUARD": "true" if opts.pii_guard else "false",
            "LLMFLOW_GATEWAY__DEFAULT_QUOTA": json.dumps(
                {"requests_per_minute": 10_000_000, "tokens_per_day": 10_000_000_000}
            ),
            "LLMFLOW_JOBS__IN_PROCESS_WORKER": "false",
            "LLMFLOW_LOG_LEVEL": "WARNING",
        }
        settings = Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]

        async def make_key() -> str:
            rt = await Runtime.open(settings)
            try:
                issued = await rt.api_keys.create("bench", roles=["model"], name="bench")
                return issued.key
            finally:
                await rt.close()

        key = asyncio.run(make_key())
        headers = {"Authorization": f"Bearer {key}"}
        chunk_delay = "0.05" if opts.soak_s else "0"
        up_cmd = [sys.executable, "-m", "llmflow.gateway.scripted", "--port", str(up_port),
                  "--raw", "--chunk-delay", chunk_delay,
                  "--delay", str(opts.upstream_latency_ms / 1000)]  # fmt: skip
        gw_cmd = [sys.executable, "-m", "llmflow.cli", "serve", "--port", str(gw_port)]
        with (
            _process(up_cmd, env, f"{upstream}/health", 30, data_dir / "upstream.log") as up_pid,
            _process(gw_cmd, env, f"{gateway}/healthz", 120, data_dir / "gateway.log") as gw_pid,
        ):
            own_cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            result["pinned"] = _pin(opts.pin, gw_pid, up_pid, data_dir)
            try:
                result.update(asyncio.run(_measure(opts, upstream, gateway, headers, gw_pid)))
            finally:
                if result["pinned"] and own_cpus:  # this process goes back to every CPU
                    os.sched_setaffinity(0, own_cpus)
        if keep_log := os.environ.get("LLMFLOW_BENCH_GATEWAY_LOG"):
            shutil.copyfile(data_dir / "gateway.log", keep_log)
    return result


def _database_processes(data_dir: Path) -> list[int]:
    """The embedded PostgreSQL under ``data_dir``: its postmaster (which detaches from the
    gateway that started it, so is found by its data directory on the command line) and
    every process below it (Linux ``/proc``)."""
    marker = str(data_dir).encode()
    children: dict[int, list[int]] = {}
    roots: list[int] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(proc.name))
        if marker in command and b"postgres" in command:
            roots.append(int(proc.name))
    out, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


@contextlib.contextmanager
def _cpu_latency_qos(on: bool) -> Iterator[None]:
    """With ``on``, ask the kernel for 0 µs CPU wake-up latency until the block ends (the PM
    QoS request lasts while the file stays open). Idle CPUs then poll rather than halt; on
    a virtual machine a halted vCPU takes tens of microseconds to wake, and each of a
    request's four loopback hops can wake one."""
    if not on:
        yield
        return
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
    except OSError as exc:
        raise RuntimeError(
            f"--cpu-latency-qos needs /dev/cpu_dma_latency (Linux, root): {exc.strerror}"
        ) from exc
    try:
        os.write(fd, (0).to_bytes(4, sys.byteorder, signed=True))
        yield
    finally:
        os.close(fd)


def _pin(
    pin: bool, gateway_pid: int, upstream_pid: int, data_dir: Path
) -> dict[str, list[int]] | None:
    """With ``pin``, the gateway gets the last CPU to itself and the upstream and this load
    generator share the others, so that the gateway's added latency is not the time it waits
    for a CPU the other two hold (Linux; needs at least two CPUs). The gateway's embedded
    PostgreSQL (the postmaster serving ``data_dir`` and its processes; backends forked later
    inherit its CPUs) goes with the others too: in a deployment the database is a service
    of its own."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if not pin or len(cpus) < 2:
        return None
    gateway_cpus, others = {cpus[-1]}, set(cpus[:-1])
    os.sched_setaffinity(gateway_pid, gateway_cpus)
    for pid in (upstream_pid, os.getpid(), *_database_processes(data_dir)):
        with contextlib.suppress(ProcessLookupError):  # a backend that has just exited
            os.sched_setaffinity(pid, others)
    return {"gateway": sorted(gateway_cpus), "upstream_load_and_database": sorted(others)}


async def _measure(
    opts: GatewayBenchOptions, upstream: str, gateway: str, headers: dict[str, str], gw_pid: int
) -> dict[str, Any]:
    with startup_frozen():  # start-up objects: the collections between phases skip them
        return await _measure_frozen(opts, upstream, gateway, headers, gw_pid)


async def _measure_frozen(
    opts: GatewayBenchOptions, upstream: str, gateway: str, headers: dict[str, str], gw_pid: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"levels": []}
    # aiohttp, not httpx: httpx's pool costs the generator more CPU per request than the
    # gateway adds, and the three processes share the machine's cores.
    # idle connections closed before uvicorn's 5 s keep-alive does it from the other side
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=3.0)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        direct_url, gw_url = f"{upstream}/v1/chat/completions", f"{gateway}/v1/chat/completions"
        await _load(client, gw_url, headers, 200, 20)  # warm-up: policy, quota, pools
        await _load(client, direct_url, {}, 200, 20)
        spread = opts.upstream_latency_ms / 1000
        for c in opts.concurrency:
            direct: list[float] = []
            via: list[float] = []
            errors = {"direct": 0, "gateway": 0}
            per_round = max(1, opts.requests // opts.rounds)
            for _ in range(opts.rounds):
                with _generator_gc_paused():
                    lat, err = await _load(client, direct_url, {}, per_round, c, spread)
                direct += lat
                errors["direct"] += err
                with _generator_gc_paused():
                    lat, err = await _load(client, gw_url, headers, per_round, c, spread)
                via += lat
                errors["gateway"] += err
            d50, d99 = _percentile(direct, 50), _percentile(direct, 99)
            g50, g99 = _percentile(via, 50), _percentile(via, 99)
            out["levels"].append({
                "concurrency": c, "requests": len(via), "errors": errors,
                "direct_p50_ms": d50, "direct_p99_ms": d99,
                "gateway_p50_ms": g50, "gateway_p99_ms": g99,
                "added_p50_ms": g50 - d50, "added_p99_ms": g99 - d99,
                "ratio_p50": g50 / d50 if d50 else None,
            })  # fmt: skip
        with _generator_gc_paused():
            d_ttft = await _ttft(client, direct_url, {}, opts.streams)
        with _generator_gc_paused():
            g_ttft = await _ttft(client, gw_url, headers, opts.streams)
        out["ttft"] = {
            "direct_p50_ms": statistics.median(d_ttft) if d_ttft else None,
            "gateway_p50_ms": statistics.median(g_ttft) if g_ttft else None,
        }
        if opts.soak_s:
            before = _rss_mb(gw_pid)
            series: list[float] = []

            async def sample_rss() -> None:
                while True:
                    await asyncio.sleep(max(1.0, opts.soak_s / 12))
                    series.append(_rss_mb(gw_pid))

            sampler = asyncio.create_task(sample_rss())
            try:
                soak = await _soak(client, gw_url, headers, opts.soak_streams, opts.soak_s)
            finally:
                sampler.cancel()
            half = series[len(series) // 2 :]
            soak.update({
                "gateway_rss_mb_before": before, "gateway_rss_mb_after": _rss_mb(gw_pid),
                "gateway_rss_mb_series": series,
                # growth over the second half, once pools and buffers have reached their size
                "gateway_rss_mb_second_half_growth": (half[-1] - half[0]) if len(half) > 1 else 0.0,
            })  # fmt: skip
            out["soak"] = soak
    out["error_samples"] = list(ERROR_SAMPLES)
    out["pii_guard_ms_per_kb"] = _pii_cost()
    return out


def _pii_cost() -> dict[str, float]:
    """CPU milliseconds per KB of prompt for the PII guard (pseudonymise), in-process."""
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.config import Surface, default_config_path, load_config
    from llmflow.pii.engine import PiiEngine
    from llmflow.settings import Settings

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    guard = PiiGuard(PiiEngine(load_config(default_config_path(settings.policies_dir))), b"x")
    sentence = "김도현 과장(010-4582-7104, dh.kim@corp.kr)에게 연차 휴가 규정을 요약해 보내 줘. "
    out: dict[str, float] = {}
    for kb in (1, 4, 16):
        text = (sentence * (kb * 1024 // len(sentence.encode()) + 1))[: kb * 1024 // 3]
        size_kb = len(text.encode()) / 1024
        t = time.process_time()
        for _ in range(5):
            guard.apply(text, Surface.PROMPT)
        out[f"{kb}KB"] = (time.process_time() - t) / 5 * 1000 / size_kb
    return out
