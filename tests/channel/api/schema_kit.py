"""Checking an API answer against the OpenRPC document's own result schema, with jsonschema
(Draft 2020-12): the method's schema is checked with the document's ``components`` beside it, so
its ``#/components/schemas/...`` references resolve as they do in the document."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator


def validator(document: dict[str, Any], method: str) -> Draft202012Validator:
    """A validator of `method`'s result; a method the document gives no real schema fails."""
    found = [m for m in document["methods"] if m["name"] == method]
    assert found, f"{method} is not in the OpenRPC document"
    schema = found[0]["result"]["schema"]
    assert schema, f"{method} has no result schema (an entry in channel.api.schemas.RESULTS)"
    root = {**schema, "components": document["components"]}
    Draft202012Validator.check_schema(root)
    return Draft202012Validator(root)


def assert_conforms(document: dict[str, Any], method: str, result: Any) -> None:
    errors = sorted(validator(document, method).iter_errors(result), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def conforms(document: dict[str, Any], method: str, result: Any) -> bool:
    return bool(validator(document, method).is_valid(result))
