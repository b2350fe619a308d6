"""Detection of credentials written inline in values files.

CONVENTIONS: every secret goes through an `existingSecret`-style reference. A value is an
inline secret when its key names a credential (`password`, `secretKey`, `token`...) and it
holds a non-empty string, or when an `env` entry named like a credential carries `value:`
instead of `valueFrom:`. Keys that *name* a secret or a key inside one (`existingSecret`,
`secretName`, `passwordKey`, `secretKeyRef`) are references, not credentials; so is a
`secretKey`/`key` that sits next to a `secretName`/`name` in the same mapping (the
`{secretName, secretKey}` reference blocks of vLLM and others).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llmflow_airgap.values import format_path

_SENSITIVE = re.compile(
    r"(password|passwd|secret|token|apikey|accesskey|privatekey|credential|salt|"
    r"encryptionkey|serverkey|signingkey)"
)
# A key ending in one of these names or locates a secret instead of holding one.
_REFERENCE_SUFFIX = re.compile(
    r"(name|ref|keyref|file|path|enabled|create|annotations|labels|store|kind|namespace|"
    r"interval|refs|mode|type|length|expiry|ttl|seconds|url|endpoint|strategy|policy)$"
)
# `passwordKey`, `tokenKey`, `adminPasswordKey`: the key *inside* an existing Secret.
_KEY_OF_SECRET = re.compile(r"(password|passwd|token|secret|credential|salt)(s)?key$")
_ENV_CREDENTIAL = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY|SALT)")
_REFERENCE_SIBLINGS = {"secretname", "name", "existingsecret", "secret"}
# Keys that hold a credential themselves even when the value looks like a name.
_CREDENTIAL_NAMES = {"secret", "clientsecret", "appsecret", "cookiesecret", "sessionsecret"}
_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_BOOLEANISH = {"true", "false", "yes", "no", "0", "1", "on", "off"}

Path = tuple[str | int, ...]


def _normalise(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _is_credential_key(norm: str) -> bool:
    if not _SENSITIVE.search(norm) or "existing" in norm or norm.startswith("keyof"):
        return False
    if norm.endswith(("pullsecret", "pullsecrets", "fromsecret")):
        return False
    if _KEY_OF_SECRET.search(norm) and norm not in {"secretkey"}:
        return False
    return not _REFERENCE_SUFFIX.search(norm)


def _scan(node: Any, path: Path) -> Iterator[tuple[str, str]]:
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _scan(item, (*path, index))
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("name"), str) and "value" in node:
        name = str(node["name"])
        value = node.get("value")
        if (
            _ENV_CREDENTIAL.search(name.upper())
            and value not in (None, "")
            and str(value).lower() not in _BOOLEANISH
        ):
            yield format_path((*path, "value")), f"env {name} has an inline value; use valueFrom"
    siblings = {_normalise(str(k)) for k in node}
    is_reference_block = bool(siblings & _REFERENCE_SIBLINGS)
    parent = _normalise(str(path[-1])) if path and isinstance(path[-1], str) else ""
    for key, value in node.items():
        child = (*path, str(key))
        if isinstance(value, dict | list):
            yield from _scan(value, child)
            continue
        if not isinstance(value, str) or value == "":
            continue
        norm = _normalise(str(key))
        if norm == "value" and _is_credential_key(parent):
            yield format_path(child), f"{path[-1]} has an inline value; reference a Secret"
        elif _is_credential_key(norm):
            if norm in {"secretkey", "key"} and is_reference_block:
                continue
            if norm.endswith("secret") and norm not in _CREDENTIAL_NAMES and _DNS_NAME.match(value):
                continue  # `superuserSecret: llmflow-pg-superuser` names a Secret
            yield format_path(child), f"{key} holds an inline credential; reference a Secret"


def inline_secrets(values: Any) -> Iterator[tuple[str, str]]:
    """Yield (key path, reason) for every inline credential in a values tree."""
    yield from _scan(values, ())
