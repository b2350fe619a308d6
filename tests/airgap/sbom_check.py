"""Checks of the bundle's CycloneDX 1.5 SBOM shared by the bundle tests.

The authoritative check is the CycloneDX 1.5 JSON schema (`bom-1.5.schema.json` with its
`spdx.schema.json` and `jsf-0.82.schema.json`, from CycloneDX/specification or the copy
`cyclonedx-python-lib` ships). The schema is not vendored here: point
`LLMFLOW_TEST_CYCLONEDX_SCHEMA_DIR` at a directory holding those three files, or install
`cyclonedx-python-lib`; without either, only the structural checks below run (the parts of
the schema our documents rely on: required fields, enums, unique bom-refs, purl syntax).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# CycloneDX 1.5 `component.type` and `hash-alg` enums (bom-1.5.schema.json).
COMPONENT_TYPES = frozenset(
    {
        "application",
        "framework",
        "library",
        "container",
        "platform",
        "operating-system",
        "device",
        "device-driver",
        "firmware",
        "file",
        "machine-learning-model",
        "data",
    }
)
HASH_ALGS = frozenset(
    {"MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512", "SHA3-256", "SHA3-384", "SHA3-512"}
    | {"BLAKE2b-256", "BLAKE2b-384", "BLAKE2b-512", "BLAKE3"}
)
# purl-spec: `pkg:<type>/<namespace/>name[@version][?qualifiers][#subpath]`
PURL = re.compile(r"^pkg:[a-z][a-z0-9.+-]*/[^@?#/][^@?#]*(@[^?#]+)?(\?[^#]+)?(#.+)?$")
SCHEMA_NAMES = ("bom-1.5.schema.json", "spdx.schema.json", "jsf-0.82.schema.json")


def walk(components: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every component, nested ones and pedigree ancestors included."""
    for component in components:
        yield component
        yield from walk(component.get("components", []))
        yield from walk((component.get("pedigree") or {}).get("ancestors", []))


def schema_dir() -> Path | None:
    """Where the CycloneDX 1.5 schema files are, if anywhere on this machine."""
    configured = os.environ.get("LLMFLOW_TEST_CYCLONEDX_SCHEMA_DIR")
    if configured and all((Path(configured) / n).is_file() for n in SCHEMA_NAMES):
        return Path(configured)
    try:
        import cyclonedx.schema
    except ImportError:
        return None
    resources = Path(cyclonedx.schema.__file__).parent / "_res"
    return resources if (resources / "bom-1.5.SNAPSHOT.schema.json").is_file() else None


def validate_with_schema(document: dict[str, Any], directory: Path) -> None:
    """Validate against the official JSON schema (draft-07, with its two referenced files)."""
    import jsonschema
    from referencing import Registry, Resource

    def load(name: str) -> dict[str, Any]:
        path = directory / name
        if not path.is_file():  # cyclonedx-python-lib names them *.SNAPSHOT.schema.json
            path = directory / name.replace(".schema.json", ".SNAPSHOT.schema.json")
        loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    schemas = {name: load(name) for name in SCHEMA_NAMES}
    registry: Registry[Any] = Registry().with_resources(
        (str(s["$id"]), Resource.from_contents(s)) for s in schemas.values()
    )
    validator = jsonschema.Draft7Validator(schemas[SCHEMA_NAMES[0]], registry=registry)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]


def check_cyclonedx_15(document: dict[str, Any]) -> None:
    """Structural checks, then the official schema when it is available."""
    assert (document["bomFormat"], document["specVersion"]) == ("CycloneDX", "1.5")
    assert re.match(r"^urn:uuid:[0-9a-f-]{36}$", document["serialNumber"])
    refs: list[str] = []
    for component in walk(document["components"]):
        assert component["type"] in COMPONENT_TYPES, component
        assert component["name"], component
        if "bom-ref" in component:
            refs.append(component["bom-ref"])
        if "purl" in component:
            assert PURL.match(component["purl"]), component["purl"]
        for item in component.get("hashes", []):
            assert item["alg"] in HASH_ALGS
            assert re.fullmatch(r"[0-9a-f]{64}", item["content"]), item
        for prop in component.get("properties", []):
            assert set(prop) == {"name", "value"} and isinstance(prop["value"], str), prop
    assert len(refs) == len(set(refs)), "bom-ref values must be unique"
    directory = schema_dir()
    if directory is not None:
        validate_with_schema(document, directory)
