"""The building blocks of validation: image parsing, Helm's merge, secret detection."""

from __future__ import annotations

import pytest

from llmflow_airgap.images import images_in_values, parse_image
from llmflow_airgap.secrets import inline_secrets
from llmflow_airgap.values import coalesce


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.28.0-alpine", "docker.io/library/nginx:1.28.0-alpine"),
        ("langgenius/dify-api:1.14.2", "docker.io/langgenius/dify-api:1.14.2"),
        ("registry.local:5000/a/b:1", "registry.local:5000/a/b:1"),
        ("quay.io/x/y:1@sha256:" + "a" * 64, "quay.io/x/y:1@sha256:" + "a" * 64),
    ],
)
def test_image_references_are_canonical(text: str, expected: str) -> None:
    assert str(parse_image(text)) == expected


def test_images_in_values_recognises_every_chart_spelling() -> None:
    values = {
        "a": {"image": {"registry": "quay.io", "repository": "p/q", "tag": "v1"}},
        "b": {"repository": "nvcr.io/nvidia", "image": "gpu-operator", "version": "v25"},
        "c": {"image": "quay.io/oliver006/redis_exporter", "tag": "v1.86.0"},
        "d": {"imageName": "ghcr.io/cloudnative-pg/postgresql:17.6"},
        "e": {"list": [{"repository": "vllm/vllm-openai", "tag": "v0.11.0"}]},
        "f": {"image": {"repository": "no/tag"}},
    }
    found = dict(images_in_values(values))
    assert found == {
        "a.image": "quay.io/p/q:v1",
        "b": "nvcr.io/nvidia/gpu-operator:v25",
        "c": "quay.io/oliver006/redis_exporter:v1.86.0",
        "d.imageName": "ghcr.io/cloudnative-pg/postgresql:17.6",
        "e.list[0]": "vllm/vllm-openai:v0.11.0",
    }


def test_coalesce_follows_helm() -> None:
    base = {"a": {"b": 1, "c": 2}, "l": [1, 2], "gone": {"x": 1}}
    out = coalesce(base, {"a": {"c": 3}, "l": [9], "gone": None})
    assert out == {"a": {"b": 1, "c": 3}, "l": [9]}


def test_secret_references_are_not_secrets() -> None:
    values = {
        "database": {"existingSecret": "pg", "existingSecretKey": "password"},
        "auth": {"passwordKey": "password", "superuserSecret": "pg-superuser"},
        "vllmApiKey": {"secretName": "vllm-api-key", "secretKey": "api-key"},
        "env": [
            {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "x", "key": "y"}}},
            {"name": "DISABLE_PASSWORD_LOGIN", "value": "true"},
        ],
        "imagePullSecrets": "llmflow-registry",
    }
    assert list(inline_secrets(values)) == []


def test_inline_credentials_are_found() -> None:
    values = {
        "externalS3": {"secretKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"},
        "auth": {"password": "hunter2"},
        "salt": {"value": "pepper"},
        "env": [{"name": "API_TOKEN", "value": "abc"}],
    }
    paths = {path for path, _ in inline_secrets(values)}
    assert paths == {"externalS3.secretKey", "auth.password", "salt.value", "env[0].value"}
