"""docker/: what can be checked without a Docker engine or `docker compose` (neither runs on these
machines' root namespace; the image itself is built and run on a lab host by docker/build.sh and
docker/try-on-lab.sh, README "Docker"): the compose file's commands are ones etcd-dr's own parser
takes, its images are the ones build.sh makes, its secrets are files, and the image holds every
package the project installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from etcd_dr.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker/compose.yaml").read_text())


def test_the_server_service_runs_a_command_etcd_dr_parses() -> None:
    cmd = COMPOSE["services"]["server"]["command"]
    assert cmd[0] == "etcd-dr"
    args = build_parser(cmd[1:]).parse_args(cmd[1:])
    url = make_url(args.database)
    assert url.drivername == "postgresql+asyncpg" and url.password is None  # the password: a passfile
    assert args.work_pool == "etcd-dr" and args.host == "0.0.0.0"
    assert args.alert_token_file.startswith("/run/secrets/") and args.api_auth_file.startswith(
        "/run/secrets/"
    )


def test_images_are_the_ones_build_sh_makes_and_secrets_are_files() -> None:
    built = set(re.findall(r"etcd-dr/[a-z-]+:[\w$]+", (REPO / "docker/build.sh").read_text()))
    built = {b.replace("$TAG", "dev") for b in built}
    for name, svc in COMPOSE["services"].items():
        assert svc["image"] in built, (name, svc["image"], built)
    assert all("file" in s for s in COMPOSE["secrets"].values())
    for svc in COMPOSE["services"].values():  # no secret in an environment value
        for k, v in (svc.get("environment") or {}).items():
            assert "PASSWORD" not in k or k.endswith("_FILE"), k
            assert "@" not in str(v) or "://" not in str(v), v


def test_the_image_holds_every_package() -> None:
    pkgs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    for p in pkgs["include"]:
        name = p.rstrip("*")
        assert f"COPY {name} {name}" in dockerfile, name
