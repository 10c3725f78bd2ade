"""Manifests: YAML/JSON files of objects, decoded strictly, with errors that point at a line.

`load_manifests(text, source)` reads every YAML document of a file (`---`), skips empty ones,
expands a top-level `kind: List` into its items, and decodes each object with
codec.decode_object. `load_path(path)` reads a file, a directory's *.yaml/*.yml/*.json (sorted,
not recursive) or "-" (stdin).

Every failure is one ManifestError, raised for the first document that fails, whose str is a
single line naming the source, the document (1-based, counting empty ones) and the object:
  web.yaml: document 2: line 7, column 3: mapping values are not allowed here
  web.yaml: document 1 (Deployment "web"): line 14: spec.template.sepc: unknown field "sepc"
A document with several field errors lists up to MAX_LISTED of them ("; and N more").

YAML is read with YAML 1.1's rules except two, to match what Kubernetes reads: an unquoted
timestamp stays a string (a label or annotation `date: 2026-01-01` is text; codec.decode turns
timestamp fields into RFC 3339 itself), and a key repeated in one mapping is an error rather
than silently "last one wins". JSON is YAML, but may be indented with tabs, which YAML forbids:
text that parses as JSON has its tabs (which valid JSON only has between tokens) made spaces,
so line and column numbers stay true.
"""
from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import yaml
from google.protobuf.message import Message

from controlplane.client import codec

MAX_LISTED = 5
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """A manifest that cannot be read; `str()` is one line a person can act on."""

    def __init__(self, source: str, message: str, document: int | None = None,
                 errors: list[codec.FieldError] | None = None) -> None:
        self.source = source
        self.document = document
        self.errors = errors or []
        super().__init__(f"{source}: {message}")


@dataclass(frozen=True)
class Manifest:
    """One decoded object. `index` is the 1-based YAML document it came from (items of a
    `kind: List` share their document); `line` is the 1-based line where the object starts."""

    source: str
    index: int
    object: Message
    line: int

    def describe(self) -> str:
        """'web.yaml: document 1 (Deployment "web")', for messages about this object."""
        kind = type(self.object).DESCRIPTOR.name
        name = getattr(getattr(self.object, "metadata", None), "name", "")
        label = f'{kind} "{name}"' if name else kind
        return f"{self.source}: document {self.index} ({label})"


# --- YAML loading with marks ---------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps, refusing duplicate keys. The pure-Python loader,
    not libyaml's: manifests are small, and its messages are the clearer ones ("mapping values
    are not allowed here")."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {json.dumps(str(key))}", key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _documents(text: str, source: str) -> Iterator[tuple[int, yaml.Node, Any]]:
    """(1-based document number, node, data) for every document; ManifestError for bad YAML."""
    loader = _Loader(text)
    number = 1  # the document being read, including when reading it fails
    try:
        while loader.check_node():
            node = loader.get_node()
            data = loader.construct_document(node)
            yield number, node, data
            number += 1
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "invalid YAML"
        raise ManifestError(source, f"document {number}: {where}{problem}", number) from None
    except yaml.YAMLError as err:
        raise ManifestError(source, f"document {number}: {err}", number) from None
    finally:
        loader.dispose()


def _as_yaml(text: str) -> str:
    """Text YAML can read: JSON with tab indentation has its tabs turned into spaces."""
    if "\t" not in text or text.lstrip()[:1] not in ("{", "["):
        return text
    try:
        json.loads(text)
    except ValueError:
        return text
    return text.replace("\t", " ")


# --- mapping field paths to lines ----------------------------------------------------------

_PATH_PART = re.compile(r"\.?([^.\[\]]+)|\[([^\]]*)\]")


def _mapping_entry(node: yaml.Node, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    for key_node, value_node in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
            return key_node, value_node
    return None


def line_of(node: yaml.Node, path: str) -> int:
    """The 1-based line of the key (or list item) a field path names, or of the deepest node
    on the way to it that exists."""
    line = node.start_mark.line + 1
    for match in _PATH_PART.finditer(path):
        name, bracket = match.group(1), match.group(2)
        if name is None and isinstance(node, yaml.SequenceNode) and bracket.isdigit():
            if int(bracket) >= len(node.value):
                break
            node = node.value[int(bracket)]
            line = node.start_mark.line + 1
            continue
        entry = _mapping_entry(node, name if name is not None else bracket)
        if entry is None:
            break
        line = entry[0].start_mark.line + 1
        node = entry[1]
    return line


def _label(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    kind, meta = data.get("kind"), data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(kind, str) or not kind:
        return ""
    return f' ({kind} "{name}")' if isinstance(name, str) and name else f" ({kind})"


def _decode(data: Any, node: yaml.Node, source: str, where: str, document: int) -> Message:
    try:
        return codec.decode_object(data)
    except codec.DecodeError as err:
        shown = [f"line {line_of(node, e.path)}: {e}" for e in err.errors[:MAX_LISTED]]
        if len(err.errors) > MAX_LISTED:
            shown.append(f"and {len(err.errors) - MAX_LISTED} more")
        raise ManifestError(source, f"{where}{_label(data)}: " + "; ".join(shown), document,
                            list(err.errors)) from None


def load_manifests(text: str, source: str) -> list[Manifest]:
    """Every object in text, in order; ManifestError for the first document that fails."""
    manifests: list[Manifest] = []
    for number, node, data in _documents(_as_yaml(text), source):
        if data is None:
            continue
        where = f"document {number}"
        if isinstance(data, dict) and data.get("kind") == "List":
            items = data.get("items") or []
            if not isinstance(items, list) or not isinstance(node, yaml.MappingNode):
                line = line_of(node, "items")
                raise ManifestError(source, f"{where}: line {line}: items: expected a list of "
                                    f"objects, got {codec.describe(items)}", number)
            entry = _mapping_entry(node, "items")
            nodes = entry[1].value if entry and isinstance(entry[1], yaml.SequenceNode) else []
            for i, item in enumerate(items):
                item_node = nodes[i] if i < len(nodes) else node
                obj = _decode(item, item_node, source, f"{where}, item {i + 1}", number)
                manifests.append(Manifest(source, number, obj, item_node.start_mark.line + 1))
            continue
        obj = _decode(data, node, source, where, number)
        manifests.append(Manifest(source, number, obj, node.start_mark.line + 1))
    return manifests


def load_path(path: str) -> list[Manifest]:
    """Manifests from a file, a directory (*.yaml, *.yml, *.json; sorted; not recursive) or
    "-" for stdin. A directory without manifest files gives []."""
    if path == "-":
        return load_manifests(sys.stdin.read(), "<stdin>")
    if os.path.isdir(path):
        try:
            names = sorted(n for n in os.listdir(path) if n.endswith(MANIFEST_SUFFIXES))
        except OSError as err:
            raise ManifestError(path, err.strerror or str(err)) from None
        manifests: list[Manifest] = []
        for name in names:
            file_path = os.path.join(path, name)
            if os.path.isfile(file_path):
                manifests.extend(load_manifests(_read(file_path), file_path))
        return manifests
    return load_manifests(_read(path), path)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ManifestError(path, "no such file or directory") from None
    except UnicodeDecodeError as err:
        raise ManifestError(path, f"not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise ManifestError(path, err.strerror or str(err)) from None
