"""The custom resources' schemas (tests/crds/): a validator per kind, from the CRD's openAPIV3Schema.

Strict like `kubectl apply --validate=strict` / `fieldValidation=Strict`: an object schema with
`properties` (and without `x-kubernetes-preserve-unknown-fields` or `additionalProperties`) admits no
other field, so a misspelt key fails instead of being pruned without a word.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

FOLDER = Path(__file__).resolve().parent.parent / "crds"
FILES = {("ray.io/v1", "RayJob"): "ray.io_rayjobs.yaml"}


@functools.lru_cache(maxsize=None)
def validator(api_version: str, kind: str) -> Any:
    """A jsonschema validator of `kind` objects, or None for a kind without a CRD here."""
    name = FILES.get((api_version, kind))
    if name is None:
        return None
    crd = yaml.load((FOLDER / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    version = api_version.rsplit("/", 1)[-1]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return jsonschema.Draft202012Validator(_strict(served["schema"]["openAPIV3Schema"]))


def validate(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `obj` does not match its CRD's schema."""
    found = validator(str(obj.get("apiVersion")), str(obj.get("kind")))
    if found is None:
        raise LookupError(f"no CRD for {obj.get('apiVersion')} {obj.get('kind')} in {FOLDER}")
    found.validate(obj)


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_strict(v) if k not in ("enum", "required", "x-kubernetes-validations") else v)
           for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out
