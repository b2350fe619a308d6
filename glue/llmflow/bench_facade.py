"""The ERP facade's own cost: ``POST /v1/apps/{app}/run`` vs calling Dify directly.

    python -m llmflow.bench_facade --calls 300 [--pii-guard]

One process: a scripted Dify workflow endpoint (``POST /v1/workflows/run``, a fixed blocking
answer as Dify 1.14.2 shapes it) on a loopback port, and the glue app in-process (ASGI, so
the glue's own HTTP parsing is not counted) on an embedded PostgreSQL in a temporary data
directory. Direct and facade calls alternate so both see the same machine, timed with the
objects of start-up frozen out of the garbage collector as the serving process runs
(:func:`llmflow.bench_gc.startup_frozen`); the added latency is facade percentile − direct
percentile: authentication (an LLMFlow API key here), the policy decision and its audit row,
the run record (insert + update), the sealed key, optionally the PII guard, and the
finished-run audit row.

The policy in ``policies_dir`` must know the ``app.run`` action (docs/erp-facade.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from llmflow.bench_gc import startup_frozen
from llmflow.settings import Settings

ANSWER = {
    "task_id": "6f1c5d9e-0000-4000-8000-000000000001",
    "workflow_run_id": "6f1c5d9e-0000-4000-8000-000000000002",
    "data": {
        "id": "6f1c5d9e-0000-4000-8000-000000000002",
        "workflow_id": "6f1c5d9e-0000-4000-8000-000000000003",
        "status": "succeeded",
        "outputs": {"summary": "요약: 발주서 PO-1, 납기 11월 30일, 금액 1,200,000원"},
        "error": None,
        "elapsed_time": 0.01,
        "total_tokens": 42,
        "total_steps": 3,
        "created_at": 1763800000,
        "finished_at": 1763800000,
    },
}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _scripted_dify() -> tuple[str, Any]:
    """A scripted Dify service API on a free loopback port (uvicorn in a thread)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def run(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse(ANSWER)

    app = Starlette(routes=[Route("/v1/workflows/run", run, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("scripted Dify did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


async def measure(settings: Settings, calls: int, pii_guard: bool) -> dict[str, Any]:
    """p50/p99 of direct and facade calls, alternating, after a warm-up."""
    from llmflow.api.app import create_app
    from llmflow.dify.facade import facade
    from llmflow.runtime import Runtime

    dify_url, server = _scripted_dify()
    rt = await Runtime.open(settings)
    try:
        rt.settings.facade = rt.settings.facade.model_copy(
            update={"allowed_kinds": ["service", "api_key"], "pii_guard": pii_guard}
        )
        app_key = "app-bench0000000000000000"
        await facade(rt).apps.register("bench", "po-summary", "workflow", dify_url, app_key)
        key = (await rt.api_keys.create("bench", name="bench", roles=["model"])).key
        api = create_app(rt.settings, runtime=rt)
        body = {"inputs": {"po_number": "PO-1", "memo": "납기 11월 30일"}}
        direct_body = {**body, "response_mode": "blocking", "user": "bench"}
        async with (
            httpx.AsyncClient(base_url=dify_url) as dify,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=api), base_url="http://llmflow.bench"
            ) as glue,
        ):
            auth = {"Authorization": f"Bearer {key}"}
            direct_auth = {"Authorization": f"Bearer {app_key}"}

            async def direct() -> float:
                start = time.perf_counter()
                r = await dify.post("/v1/workflows/run", json=direct_body, headers=direct_auth)
                r.raise_for_status()
                return (time.perf_counter() - start) * 1000

            async def via() -> float:
                start = time.perf_counter()
                r = await glue.post("/v1/apps/po-summary/run", json=body, headers=auth)
                if r.status_code != 200:
                    raise RuntimeError(f"facade answered {r.status_code}: {r.text[:300]}")
                return (time.perf_counter() - start) * 1000

            for _ in range(20):  # warm-up: pools, policy, PII engine
                await direct()
                await via()
            d: list[float] = []
            f: list[float] = []
            with startup_frozen():  # as the serving process after start-up
                for _ in range(calls):
                    d.append(await direct())
                    f.append(await via())
        result = {
            "calls": calls,
            "pii_guard": pii_guard,
            "direct_p50_ms": _percentile(d, 50),
            "direct_p99_ms": _percentile(d, 99),
            "facade_p50_ms": _percentile(f, 50),
            "facade_p99_ms": _percentile(f, 99),
            "facade_mean_ms": statistics.fmean(f),
        }
        result["added_p50_ms"] = result["facade_p50_ms"] - result["direct_p50_ms"]
        result["added_p99_ms"] = result["facade_p99_ms"] - result["direct_p99_ms"]
        return result
    finally:
        await rt.close()
        server.should_exit = True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="ERP facade overhead vs direct Dify calls")
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pii-guard", action="store_true", help="PII guard on (loads Presidio)")
    parser.add_argument("--policies-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="llmflow-bench-facade-") as tmp:
        overrides: dict[str, Any] = {"data_dir": Path(tmp)}
        if args.policies_dir is not None:
            overrides["policies_dir"] = args.policies_dir
        settings = Settings(**overrides)
        settings.audit = settings.audit.model_copy(update={"opensearch_url": None})
        result = asyncio.run(measure(settings, args.calls, args.pii_guard))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
