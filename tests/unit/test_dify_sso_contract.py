"""Contract tests of the SSO bridge's Dify coupling (llmflow.dify.members, Dify 1.14.2).

Each test replays one console endpoint the bridge depends on (tests/dify_members_fake.py, on a
real port) or one format Dify defines (session cookies, the field encryption of login
passwords). A Dify upgrade is checked by re-reading the endpoints named in
llmflow/dify/members.py and re-running this file (docs/dify-sso.md).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from dify_members_fake import FakeDifyConsole

from llmflow.dify.client import DIFY_VERSION, DifyConsole, DifyError
from llmflow.dify.members import (
    COUPLED_DIFY_VERSION,
    DifyAccountLogin,
    DifyLoginRefused,
    DifyMembers,
    crypto_js_encrypt,
    dify_role_for,
    new_password,
    parse_session,
    reconcile_members,
)
from llmflow.dify.secrets import SecretBox, SecretUnreadable
from llmflow.dify.sso import DifySsoSettings, begin_login, check_state, pkce_pair
from llmflow.errors import Forbidden, Unauthorized

ADMIN_KEY = "admin-key"


@pytest.fixture(scope="module", params=[False, True], ids=["http", "https"])
def dify(request: pytest.FixtureRequest) -> Iterator[FakeDifyConsole]:
    server = FakeDifyConsole(ADMIN_KEY, secure=request.param)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def members(dify: FakeDifyConsole) -> AsyncIterator[DifyMembers]:
    console = DifyConsole.with_admin_key(dify.url, ADMIN_KEY, dify.workspace.id)
    yield DifyMembers(console)
    await console.aclose()


def test_pinned_version() -> None:
    assert COUPLED_DIFY_VERSION == DIFY_VERSION == "1.14.2"


def test_role_mapping_highest_wins() -> None:
    assert dify_role_for(["viewer"]) == "normal"
    assert dify_role_for(["developer", "viewer"]) == "editor"
    assert dify_role_for(["operator"]) == "admin"
    assert dify_role_for(["platform-admin", "developer"]) == "admin"
    assert dify_role_for(["offline_access", "default-roles-llmflow", "reader"]) is None


def test_generated_passwords_meet_difys_rule() -> None:
    import re

    rule = re.compile(r"^(?=.*[a-zA-Z])(?=.*\d).{8,}$")  # api/libs/password.py
    passwords = {new_password() for _ in range(50)}
    assert len(passwords) == 50 and all(rule.match(p) for p in passwords)


async def test_invite_login_activate_login(dify: FakeDifyConsole, members: DifyMembers) -> None:
    email = f"user{time.time_ns()}@Corp.test"
    invitation = await members.invite(email, "editor", "ko-KR")
    assert invitation.token and invitation.email == email.lower()
    assert invitation.workspace_id == dify.workspace.id
    member = await members.find(email)
    assert member is not None and member.role == "editor" and member.status == "pending"
    account = DifyAccountLogin(dify.url)
    try:
        password = new_password()
        first = await account.login(email.lower(), password, invite_token=invitation.token)
        assert first.complete
        await account.activate(
            email=email.lower(),
            token=invitation.token,
            workspace_id=invitation.workspace_id,
            name="김민지",
            interface_language="ko-KR",
            timezone="Asia/Seoul",
        )
        assert (await members.find(email)).status == "active"  # type: ignore[union-attr]
        session = await account.login(email.lower(), password)
        prefix = "__Host-" if dify.secure else ""
        assert {c.name for c in session.cookies} == {
            prefix + n for n in ("access_token", "refresh_token", "csrf_token")
        }
        csrf = session.cookie("csrf_token")
        assert csrf is not None and not csrf.httponly
        assert session.cookie("access_token").httponly  # type: ignore[union-attr]
        with pytest.raises(DifyError) as wrong:
            await account.login(email.lower(), "Wrong-password-1")
        assert wrong.value.status == 401 and wrong.value.code == "authentication_failed"
        with pytest.raises(DifyError):  # the token is revoked by activation
            await account.activate(
                email=email.lower(),
                token=invitation.token,
                workspace_id=None,
                name="x",
                interface_language="ko-KR",
                timezone="Asia/Seoul",
            )
    finally:
        await account.aclose()


async def test_invite_of_a_member_has_no_token(members: DifyMembers) -> None:
    email = f"again{time.time_ns()}@corp.test"
    await members.invite(email, "normal", "ko-KR")
    again = await members.invite(email, "normal", "ko-KR")
    assert again.token is None  # Dify answers <web>/signin for accounts already in the workspace


async def test_role_update_removal_and_login_after_removal(
    dify: FakeDifyConsole, members: DifyMembers
) -> None:
    email = f"gone{time.time_ns()}@corp.test"
    invitation = await members.invite(email, "normal", "ko-KR")
    account = DifyAccountLogin(dify.url)
    try:
        await account.login(email, "Pass-word-1", invite_token=invitation.token)
        member = await members.find(email)
        assert member is not None
        await members.update_role(member.id, "admin")
        assert (await members.find(email)).role == "admin"  # type: ignore[union-attr]
        await members.remove(member.id)
        assert await members.find(email) is None
        with pytest.raises(DifyLoginRefused):  # {"result": "fail", "data": "workspace not found"}
            await account.login(email, "Pass-word-1")
    finally:
        await account.aclose()


async def test_owner_is_never_removed(members: DifyMembers) -> None:
    report = await reconcile_members(members, {})
    assert "owner@llmflow.test" in report.kept
    assert all(m.role == "owner" for m in await members.list())


async def test_wrong_admin_key_is_a_dify_error(dify: FakeDifyConsole) -> None:
    console = DifyConsole.with_admin_key(dify.url, "not-the-key", dify.workspace.id)
    try:
        with pytest.raises(DifyError) as exc:
            await DifyMembers(console).list()
        assert exc.value.status == 401
    finally:
        await console.aclose()


def test_set_cookie_parsing_keeps_attributes() -> None:
    response = httpx.Response(
        200,
        headers=[
            (
                "set-cookie",
                "__Host-access_token=abc; Expires=Sun, 22 Nov 2026 16:00:00 GMT; "
                "Max-Age=3600; Secure; HttpOnly; Path=/; SameSite=Lax",
            ),
            ("set-cookie", "__Host-csrf_token=def; Max-Age=3600; Secure; Path=/; SameSite=Lax"),
            ("set-cookie", "__Host-refresh_token=ghi; Max-Age=2592000; Secure; HttpOnly; Path=/"),
            ("set-cookie", "locale=ko-KR; Path=/"),
        ],
    )
    session = parse_session(response)
    assert session.complete and len(session.cookies) == 3
    access = session.cookie("access_token")
    assert access is not None and access.value == "abc" and access.max_age == 3600
    assert access.secure and access.httponly and access.samesite == "Lax"
    assert not session.cookie("csrf_token").httponly  # type: ignore[union-attr]


def _dify_decrypt(ciphertext: str, passphrase: str) -> str:
    """Dify's FieldEncryption.decrypt_field (api/libs/encryption.py), re-implemented here
    from its description: base64 → "Salted__" ‖ salt(8) ‖ AES-256-CBC, EVP_BytesToKey/MD5."""
    raw = base64.b64decode(ciphertext)
    assert raw[:8] == b"Salted__"
    salt, body = raw[8:16], raw[16:]
    blocks, prev = [], b""
    while len(b"".join(blocks)) < 48:
        prev = hashlib.md5(prev + passphrase.encode() + salt).digest()
        blocks.append(prev)
    material = b"".join(blocks)
    decryptor = Cipher(algorithms.AES(material[:32]), modes.CBC(material[32:48])).decryptor()
    padded = decryptor.update(body) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return (unpadder.update(padded) + unpadder.finalize()).decode()


def test_field_encryption_matches_difys_decryption() -> None:
    for secret in ("Lf1short", new_password(), "비밀번호-1234"):
        sealed = crypto_js_encrypt(secret, "dify-encryption-key")
        assert _dify_decrypt(sealed, "dify-encryption-key") == secret
        assert sealed != crypto_js_encrypt(secret, "dify-encryption-key")  # random salt


def test_secret_box_binds_values_to_their_row() -> None:
    box = SecretBox(b"k" * 32)
    sealed = box.seal("app-123", "facade-app:dept-hr:po")
    assert box.open(sealed, "facade-app:dept-hr:po") == "app-123"
    with pytest.raises(SecretUnreadable):
        box.open(sealed, "facade-app:dept-finance:po")
    with pytest.raises(SecretUnreadable):
        SecretBox(b"j" * 32).open(sealed, "facade-app:dept-hr:po")


def test_pkce_and_state() -> None:
    verifier, challenge = pkce_pair()
    digest = hashlib.sha256(verifier.encode()).digest()
    assert challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    box = SecretBox(b"s" * 32)
    sso = DifySsoSettings(client_id="dify-console")
    url, sealed = begin_login(sso, "https://sso.test/realms/llmflow", box, "https://x/cb", "t")
    assert url.startswith("https://sso.test/realms/llmflow/protocol/openid-connect/auth?")
    state = httpx.URL(url).params["state"]
    assert check_state(box, sealed, state).tenant_hint == "t"
    with pytest.raises(Unauthorized):
        check_state(box, sealed, "another-state")
    with pytest.raises(Unauthorized):
        check_state(SecretBox(b"o" * 32), sealed, state)
    with pytest.raises(Unauthorized):
        check_state(box, None, state)


def test_instances_per_tenant_or_shared() -> None:
    from llmflow.dify.sso import DifyInstance

    one = DifyInstance(api_url="http://a", web_url="http://a", workspace_id="w")
    assert DifySsoSettings(instances={"dept-hr": one}).instance("dept-hr") is one
    with pytest.raises(Forbidden):
        DifySsoSettings(instances={"dept-hr": one}).instance("dept-finance")
    assert DifySsoSettings(instances={"*": one}).instance("anything") is one


def test_instances_from_the_wiring_settings() -> None:
    from pydantic import SecretStr

    from llmflow.dify.sso import DifySsoSettings
    from llmflow.tenancy.dify_settings import DifySettings

    dify = DifySettings(admin_api_key=SecretStr("k"), workspace_ids={"dept-hr": "ws-1"})
    sso = DifySsoSettings(web_url_template="https://dify-{tenant}.llmflow.example")
    found = sso.instance("dept-hr", dify, "dept-hr")
    assert found.api_url == "http://dify-api.dept-hr.svc:5001"
    assert found.web_url == "https://dify-dept-hr.llmflow.example"
    assert found.workspace_id == "ws-1" and found.admin_key() == "k"
    with pytest.raises(Forbidden):  # no workspace id known for this tenant
        sso.instance("dept-finance", dify, "dept-finance")
