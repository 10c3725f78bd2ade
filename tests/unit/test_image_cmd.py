"""`skiff image import|ls|rm` on a store in a temporary directory (pull is covered with a real
registry in tests/integration/test_image_registry.py)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from deploy.cli import image_cmd
from deploy.cli.errors import CommandError
from tests.imagebuild import OCILayout, docker_save_archive, file, oci_archive, tar_layer


def skiff_image(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="skiff image")
    image_cmd.add_arguments(parser)
    return image_cmd.run(parser.parse_args(list(argv)))


def test_import_ls_rm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = OCILayout(tmp_path / "layout")
    image = layout.add_image([tar_layer([file("hello", "world")])], ref_name="v1")
    root = str(tmp_path / "root")
    assert skiff_image("import", str(docker_save_archive(layout.path, tmp_path / "s.tar", "v1", ["hello:v1"])), "--root", root) == 0
    assert skiff_image("import", str(oci_archive(layout.path, tmp_path / "o.tar")), "--name", "team/hello", "--root", root) == 0
    out = capsys.readouterr().out
    assert f"imported {image.config_digest}  docker.io/library/hello:v1" in out
    assert f"imported {image.config_digest}  docker.io/library/hello:v1, docker.io/team/hello:v1" in out  # same image
    assert skiff_image("ls", "--root", root) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["IMAGE", "ID", "SIZE", "PLATFORM"]
    short = image.config_digest[7:19]
    assert [line.split()[:2] for line in lines[1:]] == [["docker.io/library/hello:v1", short], ["docker.io/team/hello:v1", short]]
    assert skiff_image("ls", "-q", "--root", root) == 0
    assert capsys.readouterr().out.split() == [image.config_digest]
    assert skiff_image("rm", "hello:v1", "--root", root) == 0
    assert skiff_image("rm", "hello:v1", "--root", root) == 1
    assert capsys.readouterr().out.splitlines() == [f"removed {image.config_digest}", "skiff: no image hello:v1"]


def test_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        skiff_image("import", str(tmp_path / "missing.tar"), "--root", str(tmp_path))
    with pytest.raises(CommandError, match="neither an image ID nor an image reference"):
        skiff_image("rm", "Bad Ref", "--root", str(tmp_path))
