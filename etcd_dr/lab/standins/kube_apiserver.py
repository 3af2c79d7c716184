"""STAND-IN for kube-apiserver (the real one cannot run in the lab): RKE runs it as the Docker
container `kube-apiserver` on each controlplane host, with these flags of the real one:

    --etcd-servers=URL,... --etcd-prefix=/registry --etcd-cafile= --etcd-certfile= --etcd-keyfile=
    --bind-address=IP --secure-port=6443 --tls-cert-file= --tls-private-key-file=

It serves HTTPS on bind-address:secure-port, as the real one:
- `/healthz`, `/readyz`: `ok` once a linearizable read of `<etcd-prefix>/` answers through one of
  its etcd servers, else HTTP 500 with what etcd said (the real /readyz fails its etcd check so);
- `/api/v1/<resource>` and `/apis/<group>/<version>/<resource>`: a list of the objects stored under
  `<etcd-prefix>/<resource>/` (names only: the lab's values are not protobuf). With quorum lost the
  read fails with etcd's own `etcdserver: request timed out`, as `kubectl get` did in the source
  incident (`Error from server: etcdserver: request timed out`).
Standard library only (the container runs the host's python3)."""

from __future__ import annotations

import argparse
import json
import queue
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from etcdgw import GatewayError, Tls, count, keys


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kube-apiserver")
    p.add_argument("--etcd-servers", required=True)
    p.add_argument("--etcd-prefix", default="/registry")
    p.add_argument("--etcd-cafile", required=True)
    p.add_argument("--etcd-certfile", required=True)
    p.add_argument("--etcd-keyfile", required=True)
    p.add_argument("--bind-address", default="0.0.0.0")
    p.add_argument("--secure-port", type=int, default=6443)
    p.add_argument("--tls-cert-file", required=True)
    p.add_argument("--tls-private-key-file", required=True)
    args, _unknown = p.parse_known_args(argv)  # the real one's other flags are accepted and ignored
    return args


def log(msg: str) -> None:
    print(f"I{time.strftime('%m%d %H:%M:%S')} {msg}", flush=True)


class Api:
    def __init__(self, a: argparse.Namespace) -> None:
        self.servers = [s for s in a.etcd_servers.split(",") if s]
        self.prefix = a.etcd_prefix.rstrip("/")
        self.tls = Tls(a.etcd_cafile, a.etcd_certfile, a.etcd_keyfile)

    def _first(self, fn):
        """fn(server) on every etcd server at once: the first answer wins; when none succeeds, the
        first error an etcd answered with (its own words, e.g. `etcdserver: request timed out`),
        else the last transport error. A dead server costs no more than a live one's answer."""
        if not self.servers:
            raise GatewayError("no etcd servers")
        done: queue.Queue = queue.Queue()
        for s in self.servers:
            threading.Thread(target=lambda s=s: done.put(_outcome(fn, s)), daemon=True).start()
        last: GatewayError | None = None
        for _ in self.servers:
            ok, value = done.get()
            if ok:
                return value
            if value.answered:
                raise value
            last = value
        raise last  # type: ignore[misc]

    def ready(self) -> str | None:
        """None when etcd answers a linearizable read under the prefix, else what it said."""
        try:
            # longer than etcd's own request timeout (15 s with RKE's timings): etcd's error shows
            self._first(lambda s: count(s, self.prefix + "/", self.tls, timeout=30.0))
        except GatewayError as e:
            return str(e)
        return None

    def list(self, resource: str) -> list[str]:
        return self._first(lambda s: keys(s, f"{self.prefix}/{resource}/", self.tls, timeout=30.0))


def _outcome(fn, server: str) -> tuple[bool, object]:
    try:
        return True, fn(server)
    except GatewayError as e:
        return False, e


def handler_for(api: Api) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: object) -> None:
            log(f"{self.address_string()} {fmt % args}")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/")
            if path in ("/healthz", "/readyz", "/livez"):
                err = api.ready() if path != "/livez" else None
                if err is None:
                    self._send(200, b"ok")
                else:
                    self._send(500, f"[-]etcd failed: {err}\n{path[1:]} check failed\n".encode())
                return
            parts = path.strip("/").split("/")
            if (len(parts) == 3 and parts[:2] == ["api", "v1"]) or (len(parts) == 4 and parts[0] == "apis"):
                resource = parts[-1]
                try:
                    names = api.list(resource)
                except GatewayError as e:
                    status = {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "message": str(e),
                        "code": 500,
                    }
                    self._send(500, json.dumps(status).encode(), "application/json")
                    return
                items = []
                for k in names:
                    rest = k[len(f"{api.prefix}/{resource}/") :].split("/")
                    meta = {"name": rest[-1]} | ({"namespace": rest[0]} if len(rest) > 1 else {})
                    items.append({"metadata": meta})
                body = {"kind": "List", "apiVersion": "v1", "items": items}
                self._send(200, json.dumps(body).encode(), "application/json")
                return
            self._send(404, b"404 page not found\n")

    return H


def main(argv: list[str]) -> int:
    a = parse(argv)
    api = Api(a)
    srv = ThreadingHTTPServer((a.bind_address, a.secure_port), handler_for(api))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(a.tls_cert_file, a.tls_private_key_file)
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    log(
        f"Serving securely on {a.bind_address}:{a.secure_port} (stand-in), "
        f"etcd {','.join(api.servers)} prefix {api.prefix}"
    )
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
