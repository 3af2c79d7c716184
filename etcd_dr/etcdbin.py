"""etcd binaries by version: the system's 3.4 or Debian 13's 3.5, fetched once into a cache.

Debian 12 ships etcd 3.4.x in /usr/bin. etcd 3.5.x (with etcdutl) comes from Debian 13's
`etcd-server` and `etcd-client` packages, downloaded with a private apt configuration (own sources
list, lists and cache dirs: the system's apt state is never touched) from the mirror the machine's
own apt sources already use, and unpacked with `dpkg -x`. The binaries link only libc, so they run
on Debian 12 as they are.

    bins = ensure_binaries("3.5")   # first call downloads, later calls only check the cache
    subprocess.run([bins.etcd, "--version"])

The cache dir is `/var/cache/etcd-dr/etcd-<major.minor>` unless `cache_dir` is given; the env var
ETCD_DR_CACHE replaces the `/var/cache/etcd-dr` base.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from etcd_dr.errors import EtcdDrError, InputError

SYSTEM_BINDIR = Path("/usr/bin")
DEFAULT_CACHE_BASE = Path("/var/cache/etcd-dr")
CACHE_ENV = "ETCD_DR_CACHE"
# Debian release whose packages carry each fetched etcd line (a codename, not a host).
DEBIAN_SUITE = {"3.5": "trixie"}
PACKAGES = ("etcd-server", "etcd-client")
# 3.5.0-3.5.2 can lose data written just before a crash: refuse them.
MIN_PATCH = {"3.5": 3}
APT_SOURCES_DIR = Path("/etc/apt/sources.list.d")
APT_SOURCES_LIST = Path("/etc/apt/sources.list")
FETCH_TIMEOUT_S = 600.0

_VERSION_RE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")


class EtcdBinariesError(EtcdDrError):
    """The etcd binaries for a version are missing, the wrong version, or could not be fetched."""


@dataclass(frozen=True)
class EtcdBinaries:
    version: str  # full, as the binary reports it: "3.5.16"
    bindir: Path
    etcd: Path
    etcdctl: Path
    etcdutl: Path | None  # 3.5+ only; on 3.4 `etcdctl snapshot restore` does its job

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


def ensure_binaries(version: str, cache_dir: Path | None = None, *, fetch: bool = True) -> EtcdBinaries:
    """Binaries for `version` ("3.4", "3.5" or a full "3.5.16"), fetching 3.5 on first use (with
    fetch=False, EtcdBinariesError instead: for a look ahead that must not start a download).

    Raises InputError for a version string that is malformed or not supported, and
    EtcdBinariesError when the binaries are missing, report another version, or cannot be fetched.
    """
    line, patch = _parse_version(version)
    if line == "3.4":
        bins = _inspect(SYSTEM_BINDIR, want_etcdutl=False)
        hint = "install Debian 12's etcd-server and etcd-client packages"
    else:
        target = Path(cache_dir) if cache_dir is not None else _default_cache_dir(line)
        if not fetch and not (target / "usr" / "bin" / "etcd").exists():
            raise EtcdBinariesError(f"etcd {line} is not fetched yet into {target}")
        bins = _cached_or_fetch(line, target)
        hint = f"remove {target} to fetch again"
    _check_version(bins, line, patch, hint)
    return bins


def _parse_version(version: str) -> tuple[str, int | None]:
    m = _VERSION_RE.match(version.strip()) if isinstance(version, str) else None
    if not m:
        raise InputError(f"etcd version {version!r} is not MAJOR.MINOR or MAJOR.MINOR.PATCH (e.g. '3.5')")
    line = f"{m.group(1)}.{m.group(2)}"
    if line not in ("3.4", *DEBIAN_SUITE):
        raise InputError(f"etcd version {version!r} is not supported: use 3.4 (system) or 3.5 (fetched)")
    patch = int(m.group(3)) if m.group(3) is not None else None
    if patch is not None and patch < MIN_PATCH.get(line, 0):
        raise InputError(
            f"etcd {version} is refused: 3.5.0-3.5.2 can lose data written just before a crash; use >= 3.5.3"
        )
    return line, patch


def _default_cache_dir(line: str) -> Path:
    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else DEFAULT_CACHE_BASE) / f"etcd-{line}"


def _check_version(bins: EtcdBinaries, line: str, patch: int | None, hint: str) -> None:
    if bins.major_minor != line:
        raise EtcdBinariesError(f"{bins.etcd} is etcd {bins.version}, not {line}.x: {hint}")
    got_patch = int(bins.version.split(".")[2])
    if got_patch < MIN_PATCH.get(line, 0):
        raise EtcdBinariesError(
            f"{bins.etcd} is etcd {bins.version}: 3.5.0-3.5.2 can lose data written just before a crash; "
            f"{hint}"
        )
    if patch is not None and got_patch != patch:
        raise EtcdBinariesError(f"{bins.etcd} is etcd {bins.version}, not {line}.{patch}: {hint}")


# What `etcd --version` said, by the binary's identity (inode, size, mtime): a process asks once per
# binary (11-13 ms a time, on the verified snapshot's critical path until it was asked during the
# stream), and a binary replaced since (a package upgrade) is asked again.
_VERSIONS: dict[tuple[str, int, int, int], str] = {}


def _version_of(etcd: Path) -> str:
    try:
        st = etcd.stat()
    except OSError as e:
        raise EtcdBinariesError(f"{etcd} is missing: {e.strerror}") from e
    key = (str(etcd), st.st_ino, st.st_size, st.st_mtime_ns)
    if (known := _VERSIONS.get(key)) is not None:
        return known
    try:
        out = subprocess.run(
            [str(etcd), "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EtcdBinariesError(f"{etcd} --version failed: {e}") from e
    m = re.search(r"etcd Version:\s*(\d+\.\d+\.\d+)", out)
    if not m:
        raise EtcdBinariesError(f"{etcd} --version did not report a version: {out.strip()[:200]!r}")
    _VERSIONS[key] = m.group(1)
    return m.group(1)


def _inspect(bindir: Path, *, want_etcdutl: bool) -> EtcdBinaries:
    etcd, etcdctl, etcdutl = bindir / "etcd", bindir / "etcdctl", bindir / "etcdutl"
    for p in (etcd, etcdctl, *((etcdutl,) if want_etcdutl else ())):
        if not os.access(p, os.X_OK):
            raise EtcdBinariesError(f"{p} is missing or not executable")
    return EtcdBinaries(
        version=_version_of(etcd),
        bindir=bindir,
        etcd=etcd,
        etcdctl=etcdctl,
        etcdutl=etcdutl if os.access(etcdutl, os.X_OK) else None,
    )


def _cached_or_fetch(line: str, target: Path) -> EtcdBinaries:
    bindir = target / "usr" / "bin"
    if (bindir / "etcd").exists():
        return _inspect(bindir, want_etcdutl=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One fetch at a time per cache dir: concurrent callers (test workers, the lab) wait, then reuse.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (bindir / "etcd").exists():
            _fetch(line, target)
    return _inspect(bindir, want_etcdutl=True)


def _fetch(line: str, target: Path) -> None:
    suite = DEBIAN_SUITE[line]
    mirror = debian_mirror()
    # Unpack into a sibling temp dir and rename: a killed fetch never leaves a half-filled cache.
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        apt = work / "apt"
        (apt / "lists" / "partial").mkdir(parents=True)
        (apt / "cache" / "archives" / "partial").mkdir(parents=True)
        (apt / "sources.list").write_text(f"deb {mirror} {suite} main\n")
        opts = [
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip
        _run(["apt-get", *opts, "-qq", "update"], cwd=apt, what=f"apt-get update for {suite}")
        _run(["apt-get", *opts, "-qq", "download", *PACKAGES], cwd=apt, what=f"apt-get download ({suite})")
        debs = sorted(apt.glob("*.deb"))
        if len(debs) < len(PACKAGES):
            raise EtcdBinariesError(f"apt-get download got {[d.name for d in debs]}, wanted {PACKAGES}")
        root = work / "root"
        for deb in debs:
            _run(["dpkg-deb", "-x", str(deb), str(root)], cwd=work, what=f"dpkg-deb -x {deb.name}")
        if not (root / "usr" / "bin" / "etcd").exists():
            raise EtcdBinariesError(f"{suite}'s {PACKAGES} did not contain usr/bin/etcd")
        if target.exists():
            shutil.rmtree(target)
        os.replace(root, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(argv: list[str], *, cwd: Path, what: str) -> None:
    try:
        p = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise EtcdBinariesError(f"{what} failed: {e}") from e
    if p.returncode != 0:
        tail = " | ".join(p.stderr.strip().splitlines()[-3:])
        raise EtcdBinariesError(f"{what} exited {p.returncode}: {tail}")


def debian_mirror() -> str:
    """The Debian archive URI this machine's apt sources use (deb822 `.sources` first, then one-line).

    The main archive is the entry that carries a plain release suite (not -security/-updates/
    -backports) with the `main` component.
    """
    for path in sorted(APT_SOURCES_DIR.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(path)):
            fields = _deb822(stanza)
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            if _is_main_archive(fields.get("suites", "").split(), fields.get("components", "").split()):
                uris = fields.get("uris", "").split()
                if uris:
                    return uris[0].rstrip("/")
    for path in [APT_SOURCES_LIST, *sorted(APT_SOURCES_DIR.glob("*.list"))]:
        for raw in _read(path).splitlines():
            parts = re.sub(r"\[[^]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(parts) >= 4 and parts[0] == "deb" and _is_main_archive([parts[2]], parts[3:]):
                return parts[1].rstrip("/")
    raise EtcdBinariesError(
        f"no Debian main archive found in {APT_SOURCES_DIR}/*.sources or {APT_SOURCES_LIST}: "
        "cannot fetch etcd 3.5 packages"
    )


def _is_main_archive(suites: list[str], components: list[str]) -> bool:
    plain = [s for s in suites if re.fullmatch(r"[a-z]+", s)]
    return bool(plain) and "main" in components


def _deb822(stanza: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for raw in stanza.splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        if raw[0].isspace():  # continuation line (multi-line Signed-By keys)
            continue
        key, _, value = raw.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
