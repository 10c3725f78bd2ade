"""Kubernetes' name and value formats: DNS-1123 labels and subdomains, DNS-1035 labels,
qualified names (label and annotation keys), label values, IANA service (port) names,
environment variable names, config keys, percents and IP addresses.

Each `is_*` check is pure and returns every message that applies ([] when the value is fine),
with Kubernetes' exact wording (apimachinery's util/validation), including its examples and the
regex it names. The `validate_*` helpers turn those messages into field errors the way
Kubernetes' ValidateLabels / ValidateAnnotations do: one "Invalid value" per message, at the map's
path (not the key's), in sorted key order so results are deterministic.
"""
from __future__ import annotations

import ipaddress
import re
from typing import Callable, Mapping

from controlplane.apiserver.validation.field import ErrorList, Path

NameCheck = Callable[[str, bool], list[str]]

DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN_FMT = DNS1123_LABEL_FMT + "(\\." + DNS1123_LABEL_FMT + ")*"
DNS1123_SUBDOMAIN_MAX = 253
DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_FMT = "(" + QUALIFIED_NAME_FMT + ")?"
LABEL_VALUE_MAX = 63
ENV_VAR_NAME_FMT = "[-._a-zA-Z][-._a-zA-Z0-9]*"
CONFIG_KEY_FMT = "[-._a-zA-Z0-9]+"
PERCENT_FMT = "[0-9]+%"
TOTAL_ANNOTATION_SIZE = 256 * 1024

_DNS1123_LABEL = re.compile(DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = re.compile(DNS1035_LABEL_FMT)
_QUALIFIED_NAME = re.compile(QUALIFIED_NAME_FMT)
_LABEL_VALUE = re.compile(LABEL_VALUE_FMT)
_ENV_VAR_NAME = re.compile(ENV_VAR_NAME_FMT)
_CONFIG_KEY = re.compile(CONFIG_KEY_FMT)
_PERCENT = re.compile(PERCENT_FMT)
_PORT_NAME_CHARSET = re.compile("[-a-z0-9]+")
_HAS_LETTER = re.compile("[a-z]")

_QUALIFIED_NAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start "
                       "and end with an alphanumeric character")


def regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Kubernetes' RegexError, spacing included ("'a',  or 'b'")."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i > 0:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{fmt}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def is_dns1123_label(value: str) -> list[str]:
    errs = [max_len_error(DNS1123_LABEL_MAX)] if len(value) > DNS1123_LABEL_MAX else []
    if not _DNS1123_LABEL.fullmatch(value):
        errs.append(regex_error("a lowercase RFC 1123 label must consist of lower case alphanumeric "
                                "characters or '-', and must start and end with an alphanumeric "
                                "character", DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = [max_len_error(DNS1123_SUBDOMAIN_MAX)] if len(value) > DNS1123_SUBDOMAIN_MAX else []
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errs.append(regex_error("a lowercase RFC 1123 subdomain must consist of lower case "
                                "alphanumeric characters, '-' or '.', and must start and end with "
                                "an alphanumeric character", DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = [max_len_error(DNS1123_LABEL_MAX)] if len(value) > DNS1123_LABEL_MAX else []
    if not _DNS1035_LABEL.fullmatch(value):
        errs.append(regex_error("a DNS-1035 label must consist of lower case alphanumeric characters "
                                "or '-', start with an alphabetic character, and end with an "
                                "alphanumeric character", DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def _mask_trailing_dash(name: str) -> str:
    """generateName may end in '-' (a suffix follows); Kubernetes checks it as if it did not."""
    return name[:-1] + "a" if len(name) > 1 and name.endswith("-") else name


def name_is_dns_subdomain(name: str, prefix: bool) -> list[str]:
    return is_dns1123_subdomain(_mask_trailing_dash(name) if prefix else name)


def name_is_dns_label(name: str, prefix: bool) -> list[str]:
    return is_dns1123_label(_mask_trailing_dash(name) if prefix else name)


def name_is_dns1035_label(name: str, prefix: bool) -> list[str]:
    return is_dns1035_label(_mask_trailing_dash(name) if prefix else name)


def is_qualified_name(value: str) -> list[str]:
    """A label or annotation key: `[DNS-subdomain prefix "/"] name`, name at most 63 chars."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) > 2:
        return [regex_error("a qualified name " + _QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT,
                            "MyName", "my.name", "123-abc")
                + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    name = parts[-1]
    if len(parts) == 2:
        prefix = parts[0]
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs += ["prefix part " + m for m in is_dns1123_subdomain(prefix)]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX:
        errs.append("name part " + max_len_error(QUALIFIED_NAME_MAX))
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append("name part " + regex_error(_QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT,
                                               "MyName", "my.name", "123-abc"))
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = [max_len_error(LABEL_VALUE_MAX)] if len(value) > LABEL_VALUE_MAX else []
    if not _LABEL_VALUE.fullmatch(value):
        errs.append(regex_error("a valid label must be an empty string or consist of alphanumeric "
                                "characters, '-', '_' or '.', and must start and end with an "
                                "alphanumeric character", LABEL_VALUE_FMT,
                                "MyValue", "my_value", "12345"))
    return errs


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def is_valid_port_name(name: str) -> list[str]:
    """An IANA_SVC_NAME: at most 15 of [-a-z0-9], a letter somewhere, no '--', no edge '-'."""
    errs = [max_len_error(15)] if len(name) > 15 else []
    if not _PORT_NAME_CHARSET.fullmatch(name):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _HAS_LETTER.search(name):
        errs.append("must contain at least one letter (a-z)")
    if "--" in name:
        errs.append("must not contain consecutive hyphens")
    if name and (name[0] == "-" or name[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def _has_chdir_prefix(value: str) -> list[str]:
    if value == ".":
        return ["must not be '.'"]
    if value == "..":
        return ["must not be '..'"]
    if value.startswith(".."):
        return ["must not start with '..'"]
    return []


def is_env_var_name(name: str) -> list[str]:
    errs = []
    if not _ENV_VAR_NAME.fullmatch(name):
        errs.append(regex_error("a valid environment variable name must consist of alphabetic "
                                "characters, digits, '_', '-', or '.', and must not start with a "
                                "digit", ENV_VAR_NAME_FMT, "my.env-name", "MY_ENV.NAME", "MyEnvName1"))
    return errs + _has_chdir_prefix(name)


def is_config_map_key(key: str) -> list[str]:
    errs = [max_len_error(DNS1123_SUBDOMAIN_MAX)] if len(key) > DNS1123_SUBDOMAIN_MAX else []
    if not _CONFIG_KEY.fullmatch(key):
        errs.append(regex_error("a valid config key must consist of alphanumeric characters, '-', "
                                "'_' or '.'", CONFIG_KEY_FMT, "key.name", "KEY_NAME", "key-name"))
    return errs + _has_chdir_prefix(key)


def is_valid_percent(value: str) -> list[str]:
    if _PERCENT.fullmatch(value):
        return []
    return [regex_error("a valid percent string must be a numeric string followed by an ending "
                        "'%'", PERCENT_FMT, "1%", "93%")]


def is_valid_ip(value: str) -> list[str]:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return ["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]
    return []


def is_valid_cidr(value: str) -> list[str]:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]
    return [] if "/" in value else ["must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"]


# --- field-level helpers -------------------------------------------------------------------

def validate_label_name(errs: ErrorList, path: Path, key: str) -> None:
    """Kubernetes' ValidateLabelName: a qualified name."""
    errs.invalid_each(path, key, is_qualified_name(key))


def validate_labels(errs: ErrorList, path: Path, labels: Mapping[str, str]) -> None:
    for key in sorted(labels):
        validate_label_name(errs, path, key)
        errs.invalid_each(path, labels[key], is_valid_label_value(labels[key]))


def validate_annotations(errs: ErrorList, path: Path, annotations: Mapping[str, str]) -> None:
    """Keys are qualified names (checked lower-cased, as Kubernetes does); 256 KiB in total."""
    total = 0
    for key in sorted(annotations):
        errs.invalid_each(path, key, is_qualified_name(key.lower()))
        total += len(key.encode()) + len(annotations[key].encode())
    if total > TOTAL_ANNOTATION_SIZE:
        errs.too_long(path, TOTAL_ANNOTATION_SIZE)
