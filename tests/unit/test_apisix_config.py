"""The generated APISIX standalone config: schema-valid, wired the way the OPA policy expects.

The JSON schema (platform/apisix/apisix-standalone.schema.json) transcribes the fields and
enums of APISIX 3.18's own Lua schemas (route, upstream, openid-connect, opa, limit-count,
prometheus); APISIX itself cannot run here.
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from llmflow.apisix import (
    TENANT_HEADER,
    TENANT_KEY_VAR,
    build_apisix_config,
    build_config_overrides,
    load_route_list,
    render_apisix,
    render_apisix_yaml,
)
from llmflow.auth.policy import EmbeddedPolicy
from llmflow.errors import InvalidRequest

REPO = Path(__file__).resolve().parents[2]
APISIX_DIR = REPO / "platform" / "apisix"
ROUTES = APISIX_DIR / "routes.yaml"
SCHEMA = json.loads((APISIX_DIR / "apisix-standalone.schema.json").read_text())
APISIX_DECISION = "llmflow/apisix/decision"


@pytest.fixture(scope="module")
def rendered() -> str:
    return render_apisix(ROUTES)


@pytest.fixture(scope="module")
def config(rendered: str) -> dict[str, Any]:
    doc = yaml.safe_load(rendered)
    assert isinstance(doc, dict)
    return doc


def test_ends_with_end_marker(rendered: str) -> None:
    # apisix/core/config_yaml.lua reads the last 10 bytes and requires "#END\s*$"
    assert rendered.endswith("#END\n")
    assert "#END" in rendered.encode()[-10:].decode()


def test_valid_against_apisix_schemas(config: dict[str, Any]) -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft7Validator(SCHEMA).iter_errors(config), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_rejects_a_misspelt_plugin_field(config: dict[str, Any]) -> None:
    broken = copy.deepcopy(config)
    broken["routes"][0]["plugins"]["opa"]["with_routes"] = True
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)
    broken = copy.deepcopy(config)
    broken["routes"][0]["plugins"]["limit-count"]["key_type"] = "header"
    assert not jsonschema.Draft7Validator(SCHEMA).is_valid(broken)


def test_checked_in_file_is_current(rendered: str) -> None:
    assert (APISIX_DIR / "apisix.yaml").read_text(encoding="utf-8") == rendered, (
        "platform/apisix/apisix.yaml is stale: run llmflow apisix render"
    )


def _oidc_routes(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in config["routes"] if "openid-connect" in r["plugins"]]


def test_rate_limit_key_is_the_header_opa_sets(config: dict[str, Any]) -> None:
    routes = _oidc_routes(config)
    assert routes
    for route in routes:
        plugins = route["plugins"]
        assert TENANT_HEADER in plugins["opa"]["send_headers_upstream"]
        assert plugins["limit-count"]["key_type"] == "var"
        # nginx names the variable of header X-Tenant-Id http_x_tenant_id
        assert plugins["limit-count"]["key"] == "http_" + TENANT_HEADER.lower().replace("-", "_")
        assert plugins["limit-count"]["key"] == TENANT_KEY_VAR
        # Nothing may read the tenant variable before opa (APISIX caches ctx.var per request
        # under the looked-up name): no route vars, and only these plugins on the route.
        assert "vars" not in route
        assert set(plugins) == {"openid-connect", "opa", "limit-count", "prometheus"}


def test_audience_and_issuer_are_checked(config: dict[str, Any]) -> None:
    for route in _oidc_routes(config):
        oidc = route["plugins"]["openid-connect"]
        assert oidc["bearer_only"] is True and oidc["use_jwks"] is True
        assert oidc["claim_validator"]["audience"]["required"] is True
        assert oidc["claim_validator"]["issuer"]["valid_issuers"]


def test_secrets_are_references_only(config: dict[str, Any]) -> None:
    def walk(value: Any, key: str = "") -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif "secret" in key or "password" in key:
            assert isinstance(value, str) and value.startswith(("$env://", "$secret://")), key

    walk(config)


def test_config_overrides_for_standalone_mode() -> None:
    overrides = build_config_overrides(load_route_list(ROUTES))
    assert overrides["deployment"] == {
        "role": "data_plane",
        "role_data_plane": {"config_provider": "yaml"},
    }
    assert overrides["nginx_config"]["envs"] == ["OIDC_CLIENT_SECRET"]
    # the chart must enable every plugin the routes use
    values = yaml.safe_load((REPO / "helm-values" / "apisix" / "values.yaml").read_text())
    assert set(overrides["plugins"]) <= set(values["apisix"]["plugins"])


# ---------------------------------------------------------------- routes against the policy


def _token(claims: dict[str, Any]) -> str:
    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k'})}.{part(claims)}.c2ln"


def _opa_input(route: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
    """What APISIX's opa plugin posts for this route (helper.lua: upstream removed)."""
    matched = {k: v for k, v in route.items() if k != "upstream"}
    token = _token(claims)
    return {
        "type": "http",
        "request": {
            "scheme": "https",
            "method": "GET",
            "host": "api.llmflow.example",
            "port": 443,
            "path": route["uris"][0],
            "headers": {"authorization": f"Bearer {token}", "x-access-token": token},
            "query": {},
        },
        "var": {
            "server_addr": "10.0.0.5",
            "server_port": "9443",
            "remote_addr": "10.1.2.3",
            "remote_port": "50000",
            "timestamp": 1767225600,
        },
        "route": matched,
    }


@pytest.fixture(scope="module")
def gateway_policy() -> EmbeddedPolicy:
    return EmbeddedPolicy(REPO / "policies" / "opa", extra_entrypoints=(APISIX_DECISION,))


def test_generated_routes_work_with_the_gateway_policy(
    config: dict[str, Any], gateway_policy: EmbeddedPolicy
) -> None:
    routes = load_route_list(ROUTES)
    audience = routes.oidc.audience
    for route in _oidc_routes(config):
        viewer = {"tenant": "dept-hr", "aud": [audience], "realm_access": {"roles": ["viewer"]}}
        result = gateway_policy.evaluate(APISIX_DECISION, _opa_input(route, viewer))
        assert result["allow"] is True, (route["id"], result)
        assert result["headers"] == {TENANT_HEADER: "dept-hr"}
        stranger = dict(viewer, aud=["some-other-client"])
        result = gateway_policy.evaluate(APISIX_DECISION, _opa_input(route, stranger))
        assert (result["allow"], result["status_code"]) == (False, 401)


# ---------------------------------------------------------------- route list mistakes


def _route_list(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ROUTES.read_text())
    for dotted, value in changes.items():
        target = doc
        *path, last = dotted.split(".")
        for key in path:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[last] = value
    return doc


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"oidc.client_secret": "hunter2"}, "must be a $env:// or $secret:// reference"),
        ({"routes.0.service": "nowhere"}, "undeclared service(s) ['nowhere']"),
        ({"routes.0.roles": ["admin"]}, "unknown role(s) ['admin']"),
        ({"routes.1.id": "glue-retrieval"}, "duplicate route id(s) ['glue-retrieval']"),
        ({"routes.2.roles": ["viewer"]}, "they need auth: oidc"),
        ({"apisix_version": "3.11"}, "APISIX 3.18 or later"),
        ({"opa.policy": "llmflow/authz"}, "opa.policy"),
        ({"oidc.discovery": "http://keycloak/realms/llmflow"}, "oidc.discovery"),
    ],
)
def test_route_list_mistakes_are_named(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(_route_list(**changes)))
    with pytest.raises(InvalidRequest) as info:
        load_route_list(path)
    assert message in info.value.detail


def test_render_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "apisix.yaml"
    text = render_apisix(ROUTES, out)
    assert out.read_text() == text
    assert not list(tmp_path.glob(".*.tmp"))
    assert text == render_apisix_yaml(load_route_list(ROUTES))
    assert build_apisix_config(load_route_list(ROUTES)) == yaml.safe_load(text)


def test_shipped_configmap_is_the_rendered_route_list() -> None:
    """platform/manifests/apisix-routes.yaml (installed by the bundle) is what
    `llmflow apisix render --configmap` produces from platform/apisix/routes.yaml."""
    from llmflow.apisix import render_apisix
    from llmflow.commands_apisix import configmap

    shipped = (APISIX_DIR.parent / "manifests" / "apisix-routes.yaml").read_text(encoding="utf-8")
    assert shipped == configmap(render_apisix(ROUTES)), (
        "platform/manifests/apisix-routes.yaml is stale: run "
        "llmflow apisix render --configmap --output platform/manifests/apisix-routes.yaml"
    )
    import yaml

    doc = yaml.safe_load(shipped)
    assert doc["data"]["apisix.yaml"].rstrip().endswith("#END")
