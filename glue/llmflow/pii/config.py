"""PII configuration: recognizers, thresholds and actions, read from ``policies/presidio/``.

The actions are a rule list, first match wins, like a firewall: a tenant's own rules are
tried before the global ones. A rule matches on the *surface* (where the text is going:
``ingest``, ``prompt``, ``response``, ``anonymize``, ``logs``), the data *classification*
(``public`` < ``internal`` < ``confidential`` < ``secret``) and the entity types; a field
left out matches anything.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmflow.errors import ConfigurationError
from llmflow.knowledge import CLASSIFICATIONS


class Action(StrEnum):
    ALLOW = "allow"
    MASK = "mask"
    REDACT = "redact"
    HASH = "hash"
    BLOCK = "block"
    PSEUDONYMIZE = "pseudonymize"


class Surface(StrEnum):
    INGEST = "ingest"
    PROMPT = "prompt"
    RESPONSE = "response"
    ANONYMIZE = "anonymize"
    LOGS = "logs"


class RecognizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ActionRule(BaseModel):
    """``{surface?, classification?, entities?, action}``; lists or single values."""

    model_config = ConfigDict(extra="forbid")

    surface: list[Surface] | None = None
    classification: list[str] | None = None
    entities: list[str] | None = None
    action: Action

    _listify = field_validator("surface", "classification", "entities", mode="before")(
        lambda v: _as_list(v)
    )

    @field_validator("classification")
    @classmethod
    def _known_classification(cls, value: list[str] | None) -> list[str] | None:
        unknown = [c for c in value or [] if c not in CLASSIFICATIONS]
        if unknown:
            raise ValueError(f"unknown classification {unknown}; use one of {CLASSIFICATIONS}")
        return value

    def matches(self, surface: Surface, classification: str, entity: str) -> bool:
        return (
            (self.surface is None or surface in self.surface)
            and (self.classification is None or classification in self.classification)
            and (self.entities is None or entity in self.entities or "*" in self.entities)
        )


class TenantPiiPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[ActionRule] = Field(default_factory=list)


class PiiConfig(BaseModel):
    """The whole ``policy.yaml``."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    languages: list[str] = Field(default_factory=lambda: ["ko", "en"])
    score_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    context_window: tuple[int, int] = (30, 10)
    """Characters before / after a match searched for context words."""
    recognizers: dict[str, RecognizerConfig] = Field(default_factory=dict)
    rules: list[ActionRule] = Field(default_factory=lambda: [ActionRule(action=Action.MASK)])
    tenants: dict[str, TenantPiiPolicy] = Field(default_factory=dict)
    pseudonym_format: str = "<{entity}_{n}>"

    @field_validator("languages")
    @classmethod
    def _languages(cls, value: list[str]) -> list[str]:
        unknown = [lang for lang in value if lang not in ("ko", "en")]
        if not value or unknown:
            raise ValueError(f"languages must be a non-empty subset of ['ko', 'en']; got {value}")
        return list(dict.fromkeys(value))

    def enabled(self, entity: str) -> bool:
        rc = self.recognizers.get(entity)
        return rc is None or rc.enabled

    def action_for(
        self, entity: str, surface: Surface, classification: str = "internal", tenant: str = ""
    ) -> Action:
        """First matching rule, the tenant's rules first; no match means ``mask``."""
        tenant_rules = self.tenants.get(tenant, TenantPiiPolicy()).rules if tenant else []
        for rule in [*tenant_rules, *self.rules]:
            if rule.matches(surface, classification, entity):
                return rule.action
        return Action.MASK


def default_config_path(policies_dir: Path) -> Path:
    return policies_dir / "presidio" / "policy.yaml"


def load_config(path: Path, score_threshold: float | None = None) -> PiiConfig:
    """Read and validate ``policy.yaml``; errors name the file and the field."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise ConfigurationError(f"PII policy file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"PII policy file {path} is not valid YAML: {exc}") from exc
    try:
        config = PiiConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigurationError(f"PII policy file {path} is invalid: {exc}") from exc
    if score_threshold is not None:
        config = config.model_copy(update={"score_threshold": score_threshold})
    return config
