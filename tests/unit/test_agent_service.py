"""The node service's pure parts (log framing, tail, tokens, the token review cache) and the pod
worker's pure CRI configs (labels, resources, env, security)."""
from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from controlplane.client.api import UnauthenticatedError
from node.agent import plan
from node.agent.podworker import container_config, container_env, linux_resources, sandbox_config
from node.agent.service import TokenReviewer, bearer_token, last_lines, parse_complete, render
from node.runtime import logs
from protos.cri.runtime.v1 import api_pb2 as cri
from protos.skiff.api.v1 import core_pb2


def log_bytes() -> bytes:
    return (logs.format_record(1_000_000_000, "stdout", False, b"one")
            + logs.format_record(2_000_000_000, "stderr", True, b"tw")
            + logs.format_record(2_000_000_001, "stderr", False, b"o")
            + logs.format_record(3_000_000_000, "stdout", False, b"three")
            + b"2026-11-28T18:00:00.000000000Z stdout F half-writ")


def test_log_parsing_tail_and_render() -> None:
    records, rest = parse_complete(log_bytes())
    assert rest == b"2026-11-28T18:00:00.000000000Z stdout F half-writ"
    assert render(records, False) == b"one\ntwo\nthree\n"
    assert render(last_lines(records, 2), False) == b"two\nthree\n"
    assert render(last_lines(records, 0), False) == b""
    assert render(last_lines(records, 10), False) == b"one\ntwo\nthree\n"
    stamped = render(last_lines(records, 1), True)
    assert stamped == b"1970-01-01T00:00:03.000000000Z three\n"
    assert parse_complete(b"garbage line\n")[0] == []


def test_bearer_token() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("Authorization", b"bearer xyz"),)) == "xyz"
    assert bearer_token((("authorization", "Basic abc"),)) == ""
    assert bearer_token((("x", "y"),)) is None and bearer_token(None) is None


def test_token_review_is_cached_per_token() -> None:
    calls: list[str | None] = []
    now = [0.0]

    async def whoami(token: str | None) -> tuple[str, tuple[str, ...]]:
        calls.append(token)
        if token == "bad":
            raise UnauthenticatedError(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        return ("admin", ("system:masters",)) if token == "good" else ("bob", ("system:authenticated",))

    reviewer = TokenReviewer(whoami, cache_seconds=10, clock=lambda: now[0])

    async def scenario() -> None:
        assert await reviewer.review("good") == ("admin", ("system:masters",))
        assert await reviewer.review("good") == ("admin", ("system:masters",))
        assert (await reviewer.review("other"))[0] == "bob"
        now[0] = 11.0
        await reviewer.review("good")
        with pytest.raises(UnauthenticatedError):
            await reviewer.review("bad")

    asyncio.run(scenario())
    assert calls == ["good", "other", "good", "bad"]


def pod() -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace, p.metadata.uid = "web", "shop", "u-1"
    p.metadata.labels["app"] = "web"
    p.metadata.annotations.update({"skiff.io/fake-exit-code": "3", "other": "x"})
    p.spec.node_name = "n1"
    p.spec.security_context.run_as_user = 1000
    p.spec.security_context.supplemental_groups.append(5)
    c = p.spec.containers.add(name="app", image="busybox:1.0", command=["sh"], args=["-c", "true"])
    c.resources.requests["cpu"] = "250m"
    c.resources.limits.update({"cpu": "500m", "memory": "64Mi"})
    c.security_context.run_as_group = 7
    c.security_context.allow_privilege_escalation = False
    return p


def test_sandbox_config() -> None:
    config = sandbox_config(pod(), 2, Path("/var/log/skiff"))
    assert (config.metadata.name, config.metadata.namespace, config.metadata.uid, config.metadata.attempt) == (
        "web", "shop", "u-1", 2)
    assert config.labels[plan.POD_UID_LABEL] == "u-1" and config.hostname == "web"
    assert config.log_directory == "/var/log/skiff/shop_web_u-1"
    assert config.linux.security_context.namespace_options.pid == cri.CONTAINER


def test_container_config_resources_labels_and_security() -> None:
    p = pod()
    spec = p.spec.containers[0]
    r = linux_resources(spec)
    assert (r.cpu_shares, r.cpu_quota, r.cpu_period, r.memory_limit_in_bytes) == (256, 50_000, 100_000, 64 << 20)
    assert linux_resources(core_pb2.Container(name="x")).cpu_shares == 2  # best effort
    config = container_config(p, spec, 3, False, [], [cri.KeyValue(key="A", value="1")])
    assert (config.metadata.name, config.metadata.attempt, config.log_path) == ("app", 3, "app/3.log")
    assert config.labels[plan.CONTAINER_NAME_LABEL] == "app" and config.labels[plan.CONTAINER_TYPE_LABEL] == "regular"
    assert config.annotations[plan.CONTAINER_HASH_ANNOTATION] == plan.container_hash(spec)
    assert config.annotations["skiff.io/fake-exit-code"] == "3" and "other" not in config.annotations
    sc = config.linux.security_context
    assert (sc.run_as_user.value, sc.run_as_group.value, list(sc.supplemental_groups), sc.no_new_privs) == (1000, 7, [5], True)
    assert list(config.command) == ["sh"] and list(config.args) == ["-c", "true"]


def test_container_env() -> None:
    p = pod()
    c = p.spec.containers[0]
    c.env.add(name="PLAIN", value="v")
    c.env.add(name="POD", value_from=core_pb2.EnvVarSource(field_ref=core_pb2.ObjectFieldSelector(field_path="metadata.name")))
    c.env.add(name="IP", value_from=core_pb2.EnvVarSource(field_ref=core_pb2.ObjectFieldSelector(field_path="status.podIP")))
    c.env.add(name="APP", value_from=core_pb2.EnvVarSource(field_ref=core_pb2.ObjectFieldSelector(
        field_path="metadata.labels['app']")))
    c.env.add(name="PW", value_from=core_pb2.EnvVarSource(secret_key_ref=core_pb2.SecretKeySelector(name="s", key="pw")))
    secret = core_pb2.Secret()
    secret.data["pw"] = b"hunter2"

    async def lookup(resource: str, namespace: str, name: str) -> core_pb2.Secret | None:
        return secret if (resource, namespace, name) == ("secrets", "shop", "s") else None

    envs = asyncio.run(container_env(p, c, "10.1.2.3", "192.168.0.1", lookup))
    assert [(e.key, e.value) for e in envs] == [("PLAIN", "v"), ("POD", "web"), ("IP", "10.1.2.3"), ("APP", "web"),
                                                ("PW", "hunter2")]
    c.env.add(name="MISSING", value_from=core_pb2.EnvVarSource(config_map_key_ref=core_pb2.ConfigMapKeySelector(
        name="cm", key="k")))
    with pytest.raises(ValueError, match="env MISSING: configmap 'cm' not found"):
        asyncio.run(container_env(p, c, "", "", lookup))
    c.env[-1].value_from.config_map_key_ref.optional = True
    assert [e.key for e in asyncio.run(container_env(p, c, "", "", lookup))][-1] == "PW"  # optional: no variable


def test_env_from_config_maps_and_secrets_then_env_overrides() -> None:
    p = pod()
    c = p.spec.containers[0]
    c.env_from.add(config_map_ref=core_pb2.ConfigMapEnvSource(name="settings"))
    c.env_from.add(prefix="DB_", secret_ref=core_pb2.SecretEnvSource(name="db"))
    c.env_from.add(config_map_ref=core_pb2.ConfigMapEnvSource(name="absent", optional=True))
    c.env.add(name="MODE", value="from-env")
    settings = core_pb2.ConfigMap()
    settings.data.update({"MODE": "from-map", "LEVEL": "3", "not valid!": "skipped", "1st": "skipped too: a digit first"})
    db = core_pb2.Secret()
    db.data.update({"USER": b"app", "PASSWORD": b"s3cret"})
    objects: dict[tuple[str, str, str], Message] = {("configmaps", "shop", "settings"): settings,
                                                     ("secrets", "shop", "db"): db}

    async def lookup(resource: str, namespace: str, name: str) -> Message | None:
        return objects.get((resource, namespace, name))

    envs = asyncio.run(container_env(p, c, "", "", lookup))
    assert [(e.key, e.value) for e in envs] == [
        ("LEVEL", "3"), ("MODE", "from-env"), ("DB_PASSWORD", "s3cret"), ("DB_USER", "app")]
    c.env_from.add(secret_ref=core_pb2.SecretEnvSource(name="missing"))
    with pytest.raises(ValueError, match="envFrom\\[3\\]: secret 'missing' not found"):
        asyncio.run(container_env(p, c, "", "", lookup))


def test_resource_field_ref_env_defaults_to_its_own_container() -> None:
    p = pod()
    c = p.spec.containers[0]
    c.resources.limits["memory"] = "64Mi"
    del c.resources.limits["cpu"]  # unset: the node's allocatable
    c.env.add(name="MEM_MI", value_from=core_pb2.EnvVarSource(resource_field_ref=core_pb2.ResourceFieldSelector(
        resource="limits.memory", divisor="1Mi")))
    c.env.add(name="CPUS", value_from=core_pb2.EnvVarSource(resource_field_ref=core_pb2.ResourceFieldSelector(
        resource="limits.cpu")))

    async def lookup(resource: str, namespace: str, name: str) -> Message | None:
        return None

    envs = asyncio.run(container_env(p, c, "", "", lookup, {"cpu": "2", "memory": "4Gi"}))
    assert [(e.key, e.value) for e in envs] == [("MEM_MI", "64"), ("CPUS", "2")]
