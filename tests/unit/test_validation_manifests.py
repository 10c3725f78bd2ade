"""Manifests as published in Kubernetes' documentation decode, default and validate with no
errors — and stay valid when "updated" to themselves."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from controlplane.apiserver.defaults import apply_defaults
from tests.manifests import KUBERNETES_DOCS
from controlplane.apiserver.validation import validate_object
from controlplane.client.codec import decode_object
from controlplane.client.scheme import by_message

MANIFESTS = KUBERNETES_DOCS

DOCS: list[dict[str, Any]] = list(yaml.safe_load_all(MANIFESTS))


def server_side(doc: dict[str, Any]) -> Any:
    """What the API server does before validation: decode, namespace, defaults."""
    obj = decode_object(doc)
    if by_message(obj).namespaced and not obj.metadata.namespace:
        obj.metadata.namespace = "default"
    apply_defaults(obj)
    return obj


@pytest.mark.parametrize("doc", DOCS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCS])
def test_docs_manifest_is_valid(doc: dict[str, Any]) -> None:
    obj = server_side(doc)
    assert validate_object(obj, None) == []
    assert validate_object(obj, server_side(doc)) == []
