"""The lab's STAND-IN kubelet: a container named `kubelet` on every host, as RKE runs kubelet (a Docker
container with the host's Docker socket), which does the one thing of kubelet's that the source
incident tripped on (kubernetes/kubelet#21).

At start it lists the host's containers labelled `io.kubernetes.sandbox.id` and the pod sandboxes
that exist (containers labelled `io.kubernetes.docker.type=podsandbox`, whose own full id is the
sandbox id, as dockershim/cri-dockerd make them). While a container names a sandbox that does not
exist, it fails as kubelet's container manager does, with exactly

    Failed to start ContainerManager failed to build map of initial containers from runtime: \
    no PodsandBox found with Id '<64 hex>'   (one line)

and exits 255 (restart policy always: it loops, as the real one under RKE). Once none does, it runs
(it sleeps; it manages nothing). The containers it looks at are real Docker containers with real
labels; only kubelet itself is a stand-in (it cannot run here: no kube-apiserver, no cgroup driver
to give it).

The image (`lab/standin:1`) is a root with /bin, /lib, /lib64 and /sbin pointing into /usr, which
each container mounts read-only from its host: the host's own shell and docker client, ~10 KB to
load. The script is a file on the host, mounted in.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

from etcd_dr.executor import Executor
from etcd_dr.lab import images

IMAGE = "lab/standin:1"
NAME = "kubelet"
SCRIPT_PATH = "/etc/etcd-dr/kubelet-standin.sh"
SANDBOX_LABEL = "io.kubernetes.sandbox.id"
TYPE_LABEL = "io.kubernetes.docker.type"

# kubelet's words (kubernetes/kubelet#21), as the source incident's log had them
FAILURE = "Failed to start ContainerManager failed to build map of initial containers from runtime"

SCRIPT = f"""#!/bin/sh
# STAND-IN kubelet from etcd-dr's lab (etcd_dr/lab/kubelet.py): kubelet cannot run here. At start it
# does what kubelet's container manager does with the containers of the runtime: a container whose
# {SANDBOX_LABEL} names no existing pod sandbox makes it fail (kubernetes/kubelet#21).
D=/usr/bin/docker
now() {{ date -u '+%m%d %H:%M:%S.%6N'; }}
echo "I$(now) 1 server.go:440] kubelet STAND-IN starting (etcd-dr lab)"
sandboxes=$($D ps -a --no-trunc --filter label={TYPE_LABEL}=podsandbox --format '{{{{.ID}}}}') || exit 1
ids=$($D ps -a --no-trunc --filter label={SANDBOX_LABEL} \\
      --format '{{{{.Label "{SANDBOX_LABEL}"}}}}') || exit 1
for id in $(echo "$ids" | sort -u); do
  if ! echo "$sandboxes" | grep -qx -- "$id"; then
    echo "F$(now) 1 kubelet.go:1296] {FAILURE}: no PodsandBox found with Id '$id'"
    exit 255
  fi
done
echo "I$(now) 1 kubelet.go:1385] Started kubelet (STAND-IN: every container's sandbox exists)"
trap 'exit 0' TERM INT
while :; do sleep 3600 & wait $!; done
""".encode()


def _rootfs() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("usr", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("run", 0o755), ("proc", 0o555)):
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode = tarfile.DIRTYPE, mode
            tar.addfile(ti)
        for link, target in (
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ):
            ti = tarfile.TarInfo(link)
            ti.type, ti.linkname = tarfile.SYMTYPE, target
            tar.addfile(ti)
    return buf.getvalue()


def load_image(ex: Executor) -> None:
    if not images.has_image(ex, IMAGE):
        ex.run(
            [images.DOCKER, "import", "-", IMAGE], stdin=_rootfs(), timeout=60, reason="lab: stand-in image"
        )


def run_args(name: str, *, labels: Mapping[str, str] | None = None, restart: str = "no") -> list[str]:
    """`docker run -d` of the stand-in image with the host's /usr (its programs) read-only."""
    argv = [images.DOCKER, "run", "-d", "--name", name, f"--restart={restart}", "-v", "/usr:/usr:ro"]
    for k, v in (labels or {}).items():
        argv += ["--label", f"{k}={v}"]
    return argv


def start(ex: Executor) -> None:
    """The stand-in kubelet on one host (restart=always: it loops while it fails)."""
    load_image(ex)
    ex.run(["mkdir", "-p", "/etc/etcd-dr"])
    ex.put(SCRIPT, SCRIPT_PATH, mode=0o755, reason="lab: the kubelet STAND-IN's script")
    argv = run_args(NAME, restart="always")
    argv += [
        "--network=host",
        "-v",
        "/run/docker.sock:/run/docker.sock",
        "-e",
        "DOCKER_HOST=unix:///run/docker.sock",
        "-v",
        f"{SCRIPT_PATH}:/kubelet.sh:ro",
    ]
    argv += ["--entrypoint", "/bin/sh", IMAGE, "/kubelet.sh"]
    ex.run(argv, timeout=60, reason="lab: start the kubelet STAND-IN")


def start_all(exs: Mapping[str, Executor], say: Callable[[str], None]) -> None:
    with ThreadPoolExecutor(len(exs) or 1) as pool:
        list(pool.map(start, exs.values()))
    say(f"kubelet STAND-IN running on {', '.join(exs)}")


def run_workload(ex: Executor, name: str, labels: Mapping[str, str]) -> str:
    """A running container (sleeps) with these labels, from the stand-in image: a pod's container,
    a sandbox, a decoy. Returns its full id."""
    argv = [*run_args(name, labels=labels), "--entrypoint", "/bin/sleep", IMAGE, "infinity"]
    return ex.run(argv, timeout=60, reason=f"lab: run container {name}").stdout.strip()
