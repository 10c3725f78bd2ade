"""Image references, parsed and normalized the way Docker and containerd do.

    busybox                         -> docker.io/library/busybox:latest
    busybox:1.36                    -> docker.io/library/busybox:1.36
    team/app                        -> docker.io/team/app:latest
    localhost:5000/team/app@sha256:<64 hex>  -> localhost:5000/team/app@sha256:<64 hex>
    registry.example/app:v1@sha256:<hex>     -> keeps both; the digest decides what is pulled

Rules (Docker's reference grammar):
- the first path component is a registry host when it contains ``.`` or ``:``, is
  ``localhost``, or has an upper-case letter; otherwise the registry is ``docker.io``
  (``index.docker.io`` is normalized to ``docker.io``), and a one-component name on docker.io
  gets the ``library/`` prefix;
- repository components are lower case: ``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or runs of
  ``-``; the whole name is at most 255 characters;
- a tag is ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``; a digest is ``algorithm:hex`` (sha256 needs 64
  lower-case hex digits); with neither, the tag is ``latest``.

Invariant: ``str(parse(s))`` is canonical and ``parse(str(r)) == r`` for every parsed ``r``.
A ``Reference`` is a frozen value; parsing errors are ``InvalidReference`` (a ValueError)
naming the input and the rule it breaks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

__all__ = ["DOCKER_HUB", "InvalidReference", "Reference", "parse", "parse_digest"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_DOMAIN_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?\Z")
_TAG = re.compile(r"[\w][\w.-]{0,127}\Z")
_DIGEST = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}\Z")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class InvalidReference(ValueError):
    """The text is not an image reference; the message says which rule it breaks."""


@dataclass(frozen=True)
class Reference:
    """A normalized image reference: ``registry/repository[:tag][@digest]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository``: what repo tags and repo digests are prefixed with."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host serving the registry API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def pull_target(self) -> str:
        """What to ask the registry for: the digest when there is one, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned by digest, without a tag (a repo digest)."""
        return replace(self, tag=None, digest=parse_digest(digest))

    def with_tag(self, tag: str) -> Reference:
        """The same repository with this tag and no digest (a repo tag)."""
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag {tag!r}: tags are [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        return replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_digest(text: str) -> str:
    """Validate a content digest (``sha256:<64 hex>`` or another ``algorithm:hex``)."""
    if not _DIGEST.match(text):
        raise InvalidReference(f"invalid digest {text!r}: expected algorithm:hex, e.g. sha256:<64 hex digits>")
    algorithm, _, _ = text.partition(":")
    if algorithm == "sha256" and not _SHA256.match(text):
        raise InvalidReference(f"invalid digest {text!r}: sha256 needs 64 lower-case hex digits")
    return text


def parse(text: str) -> Reference:
    """Parse and normalize an image reference (see the module docstring); raise InvalidReference."""
    if not text or text != text.strip():
        raise InvalidReference(f"invalid image reference {text!r}: empty or surrounded by spaces")
    rest, digest = _split_digest(text)
    name, tag = _split_tag(rest, text)
    registry, repository = _split_registry(name)
    _check_repository(repository, text)
    if len(f"{registry}/{repository}") > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid image reference {text!r}: name longer than {MAX_NAME_LENGTH} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest)


def _split_digest(text: str) -> tuple[str, str | None]:
    name, at, digest = text.partition("@")
    if not at:
        return text, None
    if not name:
        raise InvalidReference(f"invalid image reference {text!r}: no repository before '@'")
    return name, parse_digest(digest)


def _split_tag(text: str, whole: str) -> tuple[str, str | None]:
    # A tag follows the last ':' only when no '/' comes after it ("localhost:5000/app" has none).
    colon = text.rfind(":")
    if colon == -1 or "/" in text[colon:]:
        return text, None
    name, tag = text[:colon], text[colon + 1:]
    if not _TAG.match(tag):
        raise InvalidReference(f"invalid image reference {whole!r}: tag {tag!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
    return name, tag


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, remainder = name.partition("/")
    is_host = bool(slash) and (
        any(c in first for c in ".:") or first == "localhost" or first.lower() != first)
    if not is_host:
        registry, repository = DOCKER_HUB, name
    else:
        if not _DOMAIN.match(first):
            raise InvalidReference(f"invalid registry host {first!r} in image reference {name!r}")
        registry, repository = first, remainder
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return registry, repository


def _check_repository(repository: str, whole: str) -> None:
    if _HEX64.match(repository.removeprefix("library/")):
        raise InvalidReference(f"invalid image reference {whole!r}: a 64-hex-digit string is an image ID, not a name")
    for component in repository.split("/"):
        if not _COMPONENT.match(component):
            hint = " (repository names must be lower case)" if component.lower() != component else ""
            raise InvalidReference(f"invalid image reference {whole!r}: bad repository component {component!r}{hint}")
