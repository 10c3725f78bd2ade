"""Manifests from Kubernetes' documentation, shared by the tests."""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def text(name: str) -> str:
    """The manifest file's text, e.g. text("nginx-deployment.yaml")."""
    return (HERE / name).read_text()


NGINX_DEPLOYMENT = text("nginx-deployment.yaml")
KUBERNETES_DOCS = NGINX_DEPLOYMENT + "---\n" + text("kubernetes-docs.yaml")
