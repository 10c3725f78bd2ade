"""JSON merge patch (RFC 7386), the `kubectl patch --type merge` format.

`merge_patch(target, patch)`:
- a patch that is not an object replaces the target entirely (lists included: merge patch
  cannot edit a list in place, it replaces it);
- an object patch merges into the target key by key, recursively; a null value deletes the key;
  a target that is not an object is treated as an empty one first.
Inputs are never mutated; the result shares no mutable containers with them, so callers may
edit it freely. Values are plain JSON data (dict, list, str, int, float, bool, None).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping


def merge_patch(target: Any, patch: Any) -> Any:
    """The RFC 7386 result of applying patch to target."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    # Untouched values still belong to target; copy them so the result is independent.
    return {k: (v if k in patch else copy.deepcopy(v)) for k, v in result.items()}


def create_merge_patch(original: Any, modified: Any) -> Any:
    """A merge patch that turns original into modified (the inverse of merge_patch):
    changed keys carry their new value, removed keys carry null, equal keys are left out.
    Lists are compared whole. A null value in `modified` reads as "remove the key", since
    merge patch has no way to set a null."""
    if not isinstance(original, Mapping) or not isinstance(modified, Mapping):
        return copy.deepcopy(modified)
    patch: dict[str, Any] = {}
    for key in original:
        if key not in modified:
            patch[key] = None
    for key, value in modified.items():
        if key not in original:
            patch[key] = copy.deepcopy(value)
        elif original[key] != value:
            if isinstance(original[key], Mapping) and isinstance(value, Mapping):
                patch[key] = create_merge_patch(original[key], value)
            else:
                patch[key] = copy.deepcopy(value)
    return patch
