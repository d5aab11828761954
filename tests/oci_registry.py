"""An in-process image registry that speaks the OCI distribution API's read side, for `rlkube doctor`'s image check.

No cloud registry can run here, and the real registry (distribution) comes with the real node's build
(tools/testnode), which the control-plane tests do without. This serves what a pull reads, as registries answer it:
`HEAD`/`GET /v2/<name>/manifests/<tag or digest>` (with Docker-Content-Digest), `GET /v2/<name>/blobs/<digest>`, and,
with `token_required`, a 401 whose `WWW-Authenticate: Bearer realm=...` names an anonymous token service at /token.
"""

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
TOKEN = "anonymous-pull-token"


@dataclass
class FakeRegistry:
    address: str = ""  # host:port once serving
    token_required: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], str] = field(default_factory=dict)  # (repository, tag or digest) -> digest
    requests: list[str] = field(default_factory=list)

    def push(self, repository: str, tag: str, labels: dict[str, str]) -> str:
        """An image of one empty layer whose config carries `labels`; returns its manifest's digest."""
        config = self._blob(json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": labels},
                                        "rootfs": {"type": "layers", "diff_ids": []}}).encode())
        manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                          "digest": config, "size": len(self.blobs[config])},
                               "layers": []}).encode()
        digest = self._blob(manifest)
        self.manifests[(repository, tag)] = self.manifests[(repository, digest)] = digest
        return digest

    def _blob(self, data: bytes) -> str:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        self.blobs[digest] = data
        return digest


def _handler(registry: FakeRegistry) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _send(self, status: int, data: bytes = b"", headers: dict[str, str] | None = None,
                  body: bool = True) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _answer(self, body: bool) -> None:
            registry.requests.append(f"{self.command} {self.path}")
            if self.path.startswith("/token?"):
                self._send(200, json.dumps({"token": TOKEN}).encode(), {"Content-Type": "application/json"})
                return
            repository, kind, reference = self._parse()
            if registry.token_required and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                challenge = (f'Bearer realm="http://{registry.address}/token",service="fake-registry",'
                             f'scope="repository:{repository}:pull"')
                self._send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge}, body)
                return
            if kind == "manifests" and (repository, reference) in registry.manifests:
                digest = registry.manifests[(repository, reference)]
                self._send(200, registry.blobs[digest], {"Content-Type": MANIFEST_TYPE,
                                                         "Docker-Content-Digest": digest}, body)
            elif kind == "blobs" and reference in registry.blobs:
                self._send(200, registry.blobs[reference], {"Docker-Content-Digest": reference}, body)
            else:
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', {}, body)

        def _parse(self) -> tuple[str, str, str]:
            path = self.path.removeprefix("/v2/")
            for kind in ("manifests", "blobs"):
                repository, separator, reference = path.rpartition(f"/{kind}/")
                if separator:
                    return repository, kind, reference
            return "", "", ""

    return Handler


@contextmanager
def serve(token_required: bool = False) -> Iterator[FakeRegistry]:
    """The registry on a free 127.0.0.1 port (plain HTTP, as loopback registries are)."""
    registry = FakeRegistry(token_required=token_required)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.address = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
