"""docker/: what can be checked without a Docker engine (none runs in these machines' root
namespace; the images are built and the compose file is run on a lab host's dockerd by
docker/build.sh and docker/compose-on-lab.sh, README "Docker"): the compose file's commands are ones
etcd-dr's own parser takes, its images are the ones build.sh makes, its secrets are files, each
service waits for what it needs, and the image holds every package the project installs."""

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


def test_each_service_waits_for_what_it_needs() -> None:
    """`etcd-dr server` exits 2 when nothing answers on the database's port (and PostgreSQL's first
    start, for initdb, listens on no port), and the worker needs the API: compose starts each once
    the one before is healthy (docker/compose-on-lab.sh runs the file)."""
    svc = COMPOSE["services"]
    assert svc["server"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert svc["worker"]["depends_on"] == {"server": {"condition": "service_healthy"}}
    assert "pg_isready" in svc["postgres"]["healthcheck"]["test"][1]
    assert "/api/health" in " ".join(svc["server"]["healthcheck"]["test"])
