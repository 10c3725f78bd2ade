"""The pure parts of `skiff scale`, `skiff set image` and `skiff rollout`."""
from __future__ import annotations

import argparse
from typing import Any

import pytest

from controlplane.controllers import deployment_util as du
from deploy.cli.errors import CommandError
from deploy.cli.kubectl import rollout_cmd, scale_cmd, set_cmd
from protos.skiff.api.v1 import core_pb2
from tests.ctrlutil import deployment, replica_set


def test_set_images_by_name_and_star_including_init_containers() -> None:
    spec = core_pb2.PodSpec()
    spec.init_containers.add(name="init", image="busybox:1")
    spec.containers.add(name="app", image="nginx:1")
    spec.containers.add(name="side", image="envoy:1")
    assert set_cmd.set_images(spec, {"app": "nginx:2"}) == (True, {"app"})
    assert [c.image for c in spec.containers] == ["nginx:2", "envoy:1"]
    assert set_cmd.set_images(spec, {"app": "nginx:2"}) == (False, {"app"})
    changed, matched = set_cmd.set_images(spec, {"*": "x:9"})
    assert changed and matched == {"*"}
    assert {c.image for c in [*spec.init_containers, *spec.containers]} == {"x:9"}
    assert set_cmd.set_images(spec, {"nope": "x"})[1] == set()


def test_parse_images_needs_container_equals_image() -> None:
    assert set_cmd.parse_images(["app=nginx:1.25", "*=busybox"]) == {"app": "nginx:1.25", "*": "busybox"}
    with pytest.raises(CommandError, match="CONTAINER=IMAGE"):
        set_cmd.parse_images(["app="])


def test_set_cmd_registered_as_set_image_takes_the_arguments_directly() -> None:
    parser = argparse.ArgumentParser(prog="skiff set image")
    set_cmd.add_arguments(parser)
    assert parser.parse_args(["deploy/web", "app=nginx:2"]).args == ["deploy/web", "app=nginx:2"]


def test_set_cmd_registered_as_set_has_an_image_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="skiff set")
    set_cmd.add_arguments(parser)
    parsed = parser.parse_args(["image", "deploy/web", "app=nginx:2", "-n", "ns"])
    assert (parsed.set_what, parsed.args, parsed.namespace) == ("image", ["deploy/web", "app=nginx:2"], "ns")


def test_scale_preconditions() -> None:
    d = deployment("web", 3)
    d.metadata.resource_version = "7"
    scale_cmd.check_preconditions(d, 3, "7")
    with pytest.raises(CommandError, match="Expected replicas to be 2, was 3"):
        scale_cmd.check_preconditions(d, 2, "")
    with pytest.raises(CommandError, match="Expected resource version to be 6, was 7"):
        scale_cmd.check_preconditions(d, None, "6")


def _history() -> list[Any]:
    out = []
    for rev, image in ((1, "a:1"), (2, "a:2"), (3, "a:3")):
        rs = replica_set(f"web-{rev}", 0)
        rs.metadata.annotations[du.REVISION] = str(rev)
        rs.spec.template.spec.containers[0].image = image
        out.append(rs)
    out[1].metadata.annotations[du.CHANGE_CAUSE] = "skiff set image deploy/web app=a:2"
    return out


def test_rollback_source_is_the_previous_revision_or_the_one_asked_for() -> None:
    rss = _history()
    assert rollout_cmd.rollback_source(rss, 0, "web").metadata.name == "web-2"
    assert rollout_cmd.rollback_source(rss, 1, "web").metadata.name == "web-1"
    with pytest.raises(CommandError, match="unable to find specified revision 9 in history"):
        rollout_cmd.rollback_source(rss, 9, "web")
    with pytest.raises(CommandError, match='no rollout history found for deployment "web"'):
        rollout_cmd.rollback_source(rss[:1], 0, "web")


def test_history_table_lists_revisions_with_change_cause() -> None:
    table = rollout_cmd.history_table(_history())
    assert table.splitlines() == ["REVISION  CHANGE-CAUSE", "1         <none>",
                                  "2         skiff set image deploy/web app=a:2", "3         <none>"]
