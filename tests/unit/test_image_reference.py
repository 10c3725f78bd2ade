"""Image references parse and normalize as Docker's do."""
from __future__ import annotations

import pytest

from node.runtime.images.reference import InvalidReference, Reference, parse, parse_digest

DIGEST = "sha256:" + "ab" * 32

CANONICAL = [
    ("busybox", "docker.io/library/busybox:latest"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox:latest"),
    ("docker.io/busybox", "docker.io/library/busybox:latest"),
    ("index.docker.io/library/busybox:1", "docker.io/library/busybox:1"),
    ("team/app", "docker.io/team/app:latest"),
    ("team/sub/app:v1.2_3-rc", "docker.io/team/sub/app:v1.2_3-rc"),
    ("localhost/app", "localhost/app:latest"),
    ("localhost:5000/team/app", "localhost:5000/team/app:latest"),
    (f"localhost:5000/team/app@{DIGEST}", f"localhost:5000/team/app@{DIGEST}"),
    (f"registry.example.com/app:v1@{DIGEST}", f"registry.example.com/app:v1@{DIGEST}"),
    ("127.0.0.1:5000/busybox:x", "127.0.0.1:5000/busybox:x"),
    ("Registry.Example/app", "Registry.Example/app:latest"),
    ("quay.io/a.b/c__d/e---f", "quay.io/a.b/c__d/e---f:latest"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_canonical(text: str, canonical: str) -> None:
    ref = parse(text)
    assert str(ref) == canonical
    assert parse(str(ref)) == ref


def test_parts() -> None:
    ref = parse(f"localhost:5000/team/app:v1@{DIGEST}")
    assert ref == Reference("localhost:5000", "team/app", "v1", DIGEST)
    assert ref.name == "localhost:5000/team/app"
    assert ref.pull_target == DIGEST  # the digest decides, the tag is informative
    assert ref.api_host == "localhost:5000"
    hub = parse("busybox")
    assert (hub.registry, hub.repository, hub.tag, hub.digest) == ("docker.io", "library/busybox", "latest", None)
    assert hub.api_host == "registry-1.docker.io"
    assert hub.pull_target == "latest"


def test_with_tag_and_digest() -> None:
    ref = parse("busybox:1")
    assert str(ref.with_digest(DIGEST)) == f"docker.io/library/busybox@{DIGEST}"
    assert str(ref.with_digest(DIGEST).with_tag("2")) == "docker.io/library/busybox:2"
    with pytest.raises(InvalidReference):
        ref.with_tag("-bad")


BAD = [
    ("", "empty"),
    (" busybox", "spaces"),
    ("Busybox", "lower case"),
    ("team/App", "lower case"),
    ("busybox:", "tag"),
    ("busybox:-x", "tag"),
    ("busybox:" + "a" * 129, "tag"),
    ("busybox@sha256:abc", "digest"),
    ("busybox@sha256:" + "AB" * 32, "64 lower-case"),
    ("@" + DIGEST, "no repository"),
    ("team//app", "component"),
    ("team/app_", "component"),
    ("-host.com/app", "registry host"),
    ("ab" * 32, "image ID"),
    ("a/" + "b" * 260, "longer than"),
]


@pytest.mark.parametrize(("text", "says"), BAD)
def test_invalid(text: str, says: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert says in str(info.value)
    assert isinstance(info.value, ValueError)


def test_digest_validation() -> None:
    assert parse_digest(DIGEST) == DIGEST
    assert parse_digest("sha512:" + "0" * 128).startswith("sha512:")
    with pytest.raises(InvalidReference):
        parse_digest("sha256:xyz")
