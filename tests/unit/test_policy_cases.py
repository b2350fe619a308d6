"""The authorization case table (policy_cases.yaml) run through the in-process Rego engine.

The same table is rendered into policies/opa/cases_test.rego for `opa test policies/opa`;
``test_opa_native_tests_mirror_the_table`` fails when the two drift apart. Regenerate with
``uv run python tests/unit/test_policy_cases.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmflow.auth.apikeys import Principal as ApiKeyPrincipal
from llmflow.auth.policy import (
    Decision,
    EmbeddedPolicy,
    PolicyError,
    build_policy_engine,
    build_policy_input,
    kb_resource,
    model_resource,
)
from llmflow.auth.policy.embedded import parse_decision_text
from llmflow.settings import PolicySettings, Settings

REPO = Path(__file__).resolve().parents[2]
OPA_DIR = REPO / "policies" / "opa"
CASES_FILE = Path(__file__).with_name("policy_cases.yaml")
NATIVE_TESTS = OPA_DIR / "cases_test.rego"
APISIX_DECISION = "llmflow/apisix/decision"

TABLE: dict[str, Any] = yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- building inputs from the table


def authz_input(case: dict[str, Any]) -> dict[str, Any]:
    if "input" in case:
        return dict(case["input"])
    subject = dict(TABLE["subjects"][case["subject"]])
    subject.update(case.get("subject_override", {}))
    return {
        "subject": subject,
        "action": case["action"],
        "resource": case["resource"],
        "context": case.get("context", {}),
    }


def _b64url(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsigned_jwt(claims: dict[str, Any]) -> str:
    """A token in Keycloak's shape; the signature is not checked past APISIX's openid-connect."""
    return f"{_b64url({'alg': 'RS256', 'typ': 'JWT', 'kid': 'test'})}.{_b64url(claims)}.c2ln"


def apisix_input(case: dict[str, Any]) -> dict[str, Any]:
    """The document APISIX's opa plugin posts (apisix/plugins/opa/helper.lua, 3.18)."""
    token = case.get("token") or unsigned_jwt(case["claims"])
    headers: dict[str, Any] = {"host": "llm.example.com", "user-agent": "curl/8.5.0"}
    where = case.get("token_header", "both")
    if where in ("both", "authorization"):
        headers["authorization"] = f"Bearer {token}"
    if where == "both":
        # openid-connect (rewrite phase) sets X-Access-Token to the token it verified.
        headers["x-access-token"] = token
    headers.update(case.get("headers", {}))
    route = json.loads(json.dumps(TABLE["apisix_route"]))
    doc: dict[str, Any] = {
        "type": "http",
        "request": {
            "scheme": "https",
            "method": "POST",
            "host": "llm.example.com",
            "port": 443,
            "path": "/v1/search",
            "headers": headers,
            "query": case.get("query", {}),
        },
        "var": {
            "server_addr": "10.0.0.5",
            "server_port": "9443",
            "remote_addr": "10.1.2.3",
            "remote_port": "53412",
            "timestamp": 1767225600,
        },
        "route": route,
    }
    if case.get("route_without") == "route":
        del doc["route"]
    elif case.get("route_without"):
        del route["plugins"][case["route_without"]]
    return doc


# ---------------------------------------------------------------- the engine


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(OPA_DIR, extra_entrypoints=(APISIX_DECISION,))


def test_table_is_large_enough_and_covers_every_action() -> None:
    actions = {authz_input(c).get("action") for c in TABLE["cases"]}
    assert len(TABLE["cases"]) >= 40
    assert {
        "kb.read",
        "kb.write",
        "kb.admin",
        "search",
        "ingest",
        "model.use",
        "training.submit",
        "tenant.admin",
        "audit.read",
    } <= actions
    names = [c["name"] for c in TABLE["cases"] + TABLE["apisix_cases"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", TABLE["cases"], ids=lambda c: c["name"])
async def test_authz_case(engine: EmbeddedPolicy, case: dict[str, Any]) -> None:
    decision = await engine.decide(authz_input(case))
    assert decision.allow is case["allow"], decision.reason
    assert case["reason"] in decision.reason


@pytest.mark.parametrize("case", TABLE["apisix_cases"], ids=lambda c: c["name"])
def test_apisix_case(engine: EmbeddedPolicy, case: dict[str, Any]) -> None:
    result = engine.evaluate(APISIX_DECISION, apisix_input(case))
    assert set(result) == {"allow", "reason", "status_code", "headers"}
    assert result["allow"] is case["allow"], result["reason"]
    assert result["status_code"] == case["status_code"]
    assert case["reason"] in result["reason"]
    if case["allow"]:
        assert result["headers"] == {"X-Tenant-Id": case["tenant"]}
    else:
        # a deny sets no tenant header: APISIX copies result.headers into the response
        assert result["headers"] == {}


async def test_concurrent_decisions_do_not_mix_inputs(engine: EmbeddedPolicy) -> None:
    """Decisions run in worker threads; each sees its own input (interpreters are pooled)."""
    cases = [c for c in TABLE["cases"] if "input" not in c]
    batch = cases * 6
    decisions = await asyncio.gather(*(engine.decide(authz_input(c)) for c in batch))
    for case, decision in zip(batch, decisions, strict=True):
        assert decision.allow is case["allow"], case["name"]
        assert case["reason"] in decision.reason, case["name"]


# ---------------------------------------------------------------- inputs from principals


async def test_input_from_issue_2_api_key_principal(engine: EmbeddedPolicy) -> None:
    key = ApiKeyPrincipal(
        tenant_id="dept-hr",
        subject="key:abc",
        knowledge_bases=frozenset({"handbook"}),
        roles=frozenset({"reader"}),
    )
    doc = build_policy_input(key, "search", kb_resource("dept-hr", "handbook"))
    assert doc["subject"]["kind"] == "api_key"
    assert doc["subject"]["groups"] == []
    assert (await engine.decide(doc)).allow
    other = build_policy_input(key, "search", kb_resource("dept-hr", "payroll"))
    assert not (await engine.decide(other)).allow


async def test_input_from_jwt_principal(engine: EmbeddedPolicy) -> None:
    from llmflow.auth import principal as principal_module

    user = principal_module.Principal(
        tenant_id="dept-finance",
        subject="3f1c",
        roles=frozenset({"developer", "reader", "editor", "offline_access"}),
        groups=frozenset({"/tenants/dept-finance"}),
        kind="user",
    )
    doc = build_policy_input(
        user,
        "model.use",
        model_resource("dept-finance", "qwen2.5-7b-instruct", "internal"),
        {"data_classification": "secret"},
    )
    assert doc["subject"]["roles"] == ["developer", "editor", "offline_access", "reader"]
    decision = await engine.decide(doc)
    assert decision == Decision(True, "role developer grants model.use")


async def test_input_from_object_without_attributes_grants_nothing(engine: EmbeddedPolicy) -> None:
    doc = build_policy_input(object(), "kb.read", kb_resource("dept-hr", "handbook"))
    decision = await engine.decide(doc)
    assert not decision.allow
    assert "subject has no tenant" in decision.reason


# ---------------------------------------------------------------- data and loading


async def test_data_override_requires_known_tenants() -> None:
    data = json.loads((OPA_DIR / "data.json").read_text())
    data["llmflow"]["settings"]["require_known_tenant"] = True
    strict = EmbeddedPolicy(OPA_DIR, data=data)
    decision = await strict.decide(
        {
            "subject": {"id": "u", "tenant": "acme", "roles": ["viewer"], "kind": "user"},
            "action": "kb.read",
            "resource": {"type": "knowledge_base", "tenant": "acme", "id": "kb"},
        }
    )
    assert decision == Decision(False, "unknown tenant acme")


def test_factory_uses_settings_data_file(tmp_path: Path) -> None:
    data = json.loads((OPA_DIR / "data.json").read_text())
    data["llmflow"]["tenants"]["dept-hr"]["classification_ceiling"] = "public"
    data_file = tmp_path / "tenants.json"
    data_file.write_text(json.dumps(data))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, policy=PolicySettings(data_file=data_file)
    )
    engine = build_policy_engine(settings)
    assert isinstance(engine, EmbeddedPolicy)
    decision = asyncio.run(
        engine.decide(
            {
                "subject": {"id": "u", "tenant": "dept-hr", "roles": ["viewer"], "kind": "user"},
                "action": "kb.read",
                "resource": {"type": "knowledge_base", "tenant": "dept-hr", "id": "kb"},
            }
        )
    )
    assert "above the ceiling public" in decision.reason


def test_broken_policy_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "bad.rego").write_text("package llmflow.authz\n\ndecision := {\n")
    with pytest.raises(PolicyError):
        EmbeddedPolicy(tmp_path)


async def test_policy_without_decision_denies(tmp_path: Path) -> None:
    (tmp_path / "x.rego").write_text("package llmflow.authz\n\nother := 1\n")
    engine = EmbeddedPolicy(tmp_path)
    decision = await engine.decide({"action": "kb.read"})
    assert not decision.allow
    assert decision.reason


async def test_policy_with_malformed_decision_denies(tmp_path: Path) -> None:
    (tmp_path / "x.rego").write_text(
        'package llmflow.authz\n\ndecision := {"allow": "yes", "reason": "oops"}\n'
    )
    decision = await EmbeddedPolicy(tmp_path).decide({})
    assert decision == Decision(False, "policy returned a malformed decision")


async def test_input_that_is_not_json_is_denied(engine: EmbeddedPolicy) -> None:
    decision = await engine.decide({"subject": {"tenant": object()}, "action": "kb.read"})
    assert decision == Decision(False, "policy evaluation failed")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"expressions":[{"allow":true, "reason":"ok"}]}', Decision(True, "ok")),
        ('{"expressions":[{"allow":false, "reason":"a"b\nc"}]}', Decision(False, 'a"b\nc')),
        ('{"expressions":[{"allow":"true", "reason":"x"}]}', None),
        ('{"expressions":[{"allow":true}]}', None),
        ("undefined", None),
        ("(error (errormsg 3:bad))", None),
    ],
)
def test_result_text_parsing(text: str, expected: Decision | None) -> None:
    assert parse_decision_text(text) == expected


# ---------------------------------------------------------------- OPA-native mirror


def _rule_name(prefix: str, index: int, name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return f"test_{prefix}_{index:03d}_{slug}"[:120]


def render_opa_cases() -> str:
    """policies/opa/cases_test.rego: every table case as an OPA unit test (Rego v1)."""
    lines = [
        "# Generated from tests/unit/policy_cases.yaml by tests/unit/test_policy_cases.py;",
        "# do not edit. Run with: opa test policies/opa",
        "package llmflow.cases_test",
        "",
        "import data.llmflow.apisix",
        "import data.llmflow.authz",
        "",
    ]
    for i, case in enumerate(TABLE["cases"], start=1):
        doc = json.dumps(authz_input(case), sort_keys=True, ensure_ascii=False)
        lines += [
            f"# {case['name']}",
            f"{_rule_name('authz', i, case['name'])} if {{",
            f"\td := authz.decision with input as {doc}",
            f"\td.allow == {json.dumps(case['allow'])}",
            f"\tcontains(d.reason, {json.dumps(case['reason'], ensure_ascii=False)})",
            "}",
            "",
        ]
    for i, case in enumerate(TABLE["apisix_cases"], start=1):
        doc = json.dumps(apisix_input(case), sort_keys=True, ensure_ascii=False)
        headers = {"X-Tenant-Id": case["tenant"]} if case["allow"] else {}
        lines += [
            f"# {case['name']}",
            f"{_rule_name('apisix', i, case['name'])} if {{",
            f"\td := apisix.decision with input as {doc}",
            f"\td.allow == {json.dumps(case['allow'])}",
            f"\td.status_code == {case['status_code']}",
            f"\td.headers == {json.dumps(headers)}",
            f"\tcontains(d.reason, {json.dumps(case['reason'], ensure_ascii=False)})",
            "}",
            "",
        ]
    return "\n".join(lines)


def test_opa_native_tests_mirror_the_table() -> None:
    assert NATIVE_TESTS.read_text(encoding="utf-8") == render_opa_cases(), (
        "policies/opa/cases_test.rego is stale: run uv run python tests/unit/test_policy_cases.py"
    )


def test_opa_native_cases_parse() -> None:
    """regopy cannot evaluate ``with input as`` (it crashes), but it can parse every literal."""
    import regopy

    text = NATIVE_TESTS.read_text(encoding="utf-8")
    # decision "with input as DOC" becomes a plain object built from DOC: same literals
    rewritten = re.sub(
        r"(authz|apisix)\.decision with input as (.*)",
        lambda m: f'object.union({m.group(2)}, {{"allow": true, "reason": ""}})',
        text,
    )
    assert rewritten.count("object.union(") == len(TABLE["cases"]) + len(TABLE["apisix_cases"])
    interpreter = regopy.Interpreter()
    interpreter.add_module("cases_test.rego", rewritten)
    assert interpreter.query("x := data.llmflow.cases_test").ok()


def test_hand_written_opa_tests_parse_and_invariants_hold() -> None:
    """authz_test.rego: parse it without its ``with`` clauses; run the tests that need none."""
    import regopy

    text = (OPA_DIR / "authz_test.rego").read_text(encoding="utf-8")
    stripped = re.sub(r" with \S+ as (\S+|\{\})", "", text)
    assert " with " not in stripped.replace("# ", "")
    interpreter = regopy.Interpreter()
    interpreter.add_data(json.loads((OPA_DIR / "data.json").read_text()))
    for name in ("authz.rego", "apisix.rego"):
        interpreter.add_module(name, (OPA_DIR / name).read_text(encoding="utf-8"))
    interpreter.add_module("authz_test.rego", stripped)
    results = interpreter.query("x := data.llmflow.authz_test").results[0].bindings["x"]
    assert results["test_every_role_grants_only_known_actions"] is True
    assert results["test_only_platform_admin_administers_tenants"] is True


if __name__ == "__main__":
    NATIVE_TESTS.write_text(render_opa_cases(), encoding="utf-8")
    print(f"wrote {NATIVE_TESTS.relative_to(REPO)}", file=sys.stderr)
