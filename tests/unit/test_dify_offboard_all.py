"""``llmflow dify offboard --all-tenants``: every tenant of the realm, one failure does not stop
the others, the exit status says something failed; shared mode keeps other tenants' members.

Keycloak and Dify cannot run here: keycloak_fixtures/fake_keycloak.py replays Keycloak's admin
REST API (python-keycloak talks to it on a real port) and tests/dify_members_fake.py replays
Dify 1.14.2's workspace-member endpoints.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from dify_members_fake import Account, FakeDifyConsole
from keycloak_fixtures.fake_keycloak import ADMIN_PASSWORD, ADMIN_USER, FakeKeycloak
from typer.testing import CliRunner

ADMIN_KEY = "dify-admin-key"

# username, email, tenant, in the tenant's group, realm role
PEOPLE = (
    ("alice", "alice@llmflow.test", "dept-hr", True, "viewer"),
    ("bob", "bob@llmflow.test", "dept-hr", False, "viewer"),  # left the tenant group
    ("carol", "carol@llmflow.test", "dept-finance", True, "developer"),
)
TENANTS = ("dept-hr", "dept-finance", "project-ai")


def _id(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    return response.headers["location"].rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def keycloak_url() -> Iterator[str]:
    server = FakeKeycloak()
    url = server.start()
    token = httpx.post(
        f"{url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": ADMIN_USER,
            "password": ADMIN_PASSWORD,
        },
    ).json()["access_token"]
    with httpx.Client(
        base_url=f"{url}/admin/realms", headers={"Authorization": f"Bearer {token}"}
    ) as kc:
        created = kc.post(f"{url}/admin/realms", json={"realm": "llmflow", "enabled": True})
        assert created.status_code == 201, created.text
        profile = kc.get("/llmflow/users/profile").json()
        profile["attributes"].append({"name": "tenant", "displayName": "Tenant"})
        kc.put("/llmflow/users/profile", json=profile)
        for role in ("developer", "viewer"):
            kc.post("/llmflow/roles", json={"name": role})
        top = _id(kc.post("/llmflow/groups", json={"name": "tenants"}))
        groups = {
            t: _id(kc.post(f"/llmflow/groups/{top}/children", json={"name": t})) for t in TENANTS
        }
        for username, email, tenant, in_group, role in PEOPLE:
            uid = _id(
                kc.post(
                    "/llmflow/users",
                    json={
                        "username": username,
                        "email": email,
                        "enabled": True,
                        "attributes": {"tenant": [tenant]},
                    },
                )
            )
            if in_group:
                kc.put(f"/llmflow/users/{uid}/groups/{groups[tenant]}")
            kc.post(f"/llmflow/users/{uid}/role-mappings/realm", json=[{"name": role}])
    yield url
    server.stop()


@pytest.fixture
def difys() -> Iterator[list[FakeDifyConsole]]:
    servers = [FakeDifyConsole(ADMIN_KEY), FakeDifyConsole(ADMIN_KEY)]
    for s in servers:
        s.start()
    yield servers
    for s in servers:
        s.stop()


def add_member(dify: FakeDifyConsole, email: str, role: str) -> None:
    account = Account(str(uuid.uuid4()), email, email.split("@")[0], "pw", "active")
    dify.accounts[account.id] = account
    dify.workspace.members[account.id] = role


def instance(dify: FakeDifyConsole) -> dict[str, Any]:
    return {
        "api_url": dify.url,
        "web_url": dify.web_url,
        "workspace_id": dify.workspace.id,
        "admin_api_key": ADMIN_KEY,
    }


def cli() -> typer.Typer:
    """``llmflow`` with the ``dify`` group as ``main()`` mounts it."""
    from llmflow.commands_dify import register

    app = typer.Typer()
    app.command()(lambda: None)
    register(app)
    return app


def offboard(
    args: list[str], keycloak_url: str, instances: dict[str, Any], tmp_path: Path
) -> tuple[int, dict[str, Any], str]:
    env = {
        "LLMFLOW_DATA_DIR": str(tmp_path / "data"),
        "LLMFLOW_KEYCLOAK__SERVER_URL": keycloak_url,
        "LLMFLOW_KEYCLOAK__USERNAME": ADMIN_USER,
        "LLMFLOW_KEYCLOAK__PASSWORD": ADMIN_PASSWORD,
        "LLMFLOW_DIFY_SSO__INSTANCES": json.dumps(instances),
    }
    result = CliRunner().invoke(cli(), ["dify", "offboard", *args], env=env)
    document = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, document, result.output


def test_all_tenants_processes_every_tenant_and_fails_at_the_end(
    keycloak_url: str, difys: list[FakeDifyConsole], tmp_path: Path
) -> None:
    hr, finance = difys
    add_member(hr, "alice@llmflow.test", "admin")
    add_member(hr, "bob@llmflow.test", "normal")
    add_member(finance, "carol@llmflow.test", "editor")
    add_member(finance, "mallory@llmflow.test", "editor")  # never in Keycloak
    # project-ai is a tenant of the realm with no Dify configured: it fails, the others run.
    instances = {"dept-hr": instance(hr), "dept-finance": instance(finance)}

    code, dry, _ = offboard(["--all-tenants", "--dry-run"], keycloak_url, instances, tmp_path)
    assert code == 1
    assert hr.role_of("bob@llmflow.test") == "normal"  # a dry run changes nothing

    code, doc, output = offboard(["--all-tenants"], keycloak_url, instances, tmp_path)
    assert code == 1, output
    assert doc["failed"] == ["project-ai"]
    by_tenant = {w["tenants"][0]: w for w in doc["workspaces"]}
    assert set(by_tenant) == set(TENANTS)
    assert "no Dify instance" in by_tenant["project-ai"]["error"]
    assert by_tenant["dept-hr"]["removed"] == ["bob@llmflow.test"]
    assert by_tenant["dept-hr"]["role_changed"] == [
        {"email": "alice@llmflow.test", "from": "admin", "to": "normal"}
    ]
    assert by_tenant["dept-finance"]["removed"] == ["mallory@llmflow.test"]
    assert dry["workspaces"] == doc["workspaces"]
    assert hr.role_of("bob@llmflow.test") is None and hr.role_of("alice@llmflow.test") == "normal"
    assert finance.role_of("mallory@llmflow.test") is None
    assert finance.role_of("carol@llmflow.test") == "editor"
    assert hr.role_of("owner@llmflow.test") == "owner"

    # Once every tenant has a Dify, the run succeeds (and changes nothing more).
    project_ai = FakeDifyConsole(ADMIN_KEY)
    project_ai.start()
    try:
        instances["project-ai"] = instance(project_ai)
        code, doc, output = offboard(["--all-tenants"], keycloak_url, instances, tmp_path)
    finally:
        project_ai.stop()
    assert code == 0, output
    assert doc["failed"] == [] and all(not w["removed"] for w in doc["workspaces"])


def test_one_unreachable_dify_does_not_stop_the_others(
    keycloak_url: str, difys: list[FakeDifyConsole], tmp_path: Path
) -> None:
    hr, finance = difys
    add_member(finance, "mallory@llmflow.test", "editor")
    gone = instance(hr) | {"admin_api_key": "wrong-key"}  # Dify answers 401
    instances = {"dept-hr": gone, "dept-finance": instance(finance)}
    code, doc, output = offboard(["--all-tenants"], keycloak_url, instances, tmp_path)
    assert code == 1, output
    assert doc["failed"] == ["dept-hr", "project-ai"]
    errors = {w["tenants"][0]: w.get("error", "") for w in doc["workspaces"]}
    assert "401" in errors["dept-hr"] and errors["dept-finance"] == ""
    assert finance.role_of("mallory@llmflow.test") is None
    assert "dept-hr" in output


def test_shared_workspace_keeps_every_tenants_members(
    keycloak_url: str, difys: list[FakeDifyConsole], tmp_path: Path
) -> None:
    shared = difys[0]
    add_member(shared, "alice@llmflow.test", "normal")
    add_member(shared, "carol@llmflow.test", "editor")
    add_member(shared, "bob@llmflow.test", "normal")
    instances = {"*": instance(shared)}
    # --tenant in shared mode: the one workspace is reconciled against all its tenants.
    code, doc, output = offboard(["--tenant", "dept-hr"], keycloak_url, instances, tmp_path)
    assert code == 0, output
    [workspace] = doc["workspaces"]
    assert workspace["tenants"] == sorted(TENANTS)
    assert workspace["removed"] == ["bob@llmflow.test"]
    assert shared.role_of("carol@llmflow.test") == "editor"  # dept-finance's member stays
    assert shared.role_of("alice@llmflow.test") == "normal"


def test_tenant_or_all_tenants(tmp_path: Path) -> None:
    env = {"LLMFLOW_DATA_DIR": str(tmp_path / "data")}
    for args in ([], ["--tenant", "dept-hr", "--all-tenants"]):
        result = CliRunner().invoke(cli(), ["dify", "offboard", *args], env=env)
        assert result.exit_code == 2
        assert "exactly one of --tenant" in result.output.replace("\n", " ")
