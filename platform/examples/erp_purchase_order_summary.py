"""Sample ERP integration: summarise a purchase order with a tenant's Dify workflow app.

The ERP authenticates as a Keycloak machine client (client credentials), runs the app
``po-summary`` through LLMFlow's facade with an Idempotency-Key derived from the PO number
(a retried batch job never runs the same PO twice), and prints the summary.

    export KEYCLOAK_TOKEN_URL=https://sso.llmflow.example/auth/realms/llmflow/protocol/openid-connect/token
    export ERP_CLIENT_ID=erp-sap-finance ERP_CLIENT_SECRET_FILE=/run/secrets/erp-client-secret
    python erp_purchase_order_summary.py --api https://api.llmflow.example po.json

``po.json``: ``{"po_number": "PO-2026-0042", "vendor": "한빛상사", "lines": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from llmflow_client import FacadeError, KeycloakClientCredentials, LlmflowApps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("po_file", type=Path, help="purchase order as JSON")
    parser.add_argument(
        "--api", default=os.environ.get("LLMFLOW_API", "https://api.llmflow.example")
    )
    parser.add_argument("--app", default="po-summary")
    parser.add_argument("--token-url", default=os.environ.get("KEYCLOAK_TOKEN_URL", ""))
    parser.add_argument("--client-id", default=os.environ.get("ERP_CLIENT_ID", "erp-sap-finance"))
    args = parser.parse_args(argv)

    secret_file = os.environ.get("ERP_CLIENT_SECRET_FILE")
    secret = (
        Path(secret_file).read_text().strip()
        if secret_file
        else os.environ.get("ERP_CLIENT_SECRET", "")
    )
    if not args.token_url or not secret:
        parser.error("set KEYCLOAK_TOKEN_URL and ERP_CLIENT_SECRET_FILE (or ERP_CLIENT_SECRET)")
    po = json.loads(args.po_file.read_text(encoding="utf-8"))
    inputs = {
        "po_number": str(po["po_number"]),
        "vendor": str(po.get("vendor", "")),
        "lines": json.dumps(po.get("lines", []), ensure_ascii=False),
    }
    credentials = KeycloakClientCredentials(args.token_url, args.client_id, secret)
    try:
        with LlmflowApps(args.api, credentials) as apps:
            run = apps.run(args.app, inputs=inputs, idempotency_key=f"po-summary:{po['po_number']}")
    except FacadeError as exc:
        print(f"LLMFlow refused the run: {exc}", file=sys.stderr)
        return 1
    if run.status != "succeeded":
        print(f"run {run.id} failed: {run.error}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"run_id": run.id, "replayed": run.replayed, **(run.outputs or {})},
            ensure_ascii=False,
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
