"""An image's digest and labels from its registry, through the OCI distribution API alone (no container engine).

`HEAD /v2/<name>/manifests/<reference>` answers the digest; a 401 names the token service to ask (the anonymous
token flow every public registry uses), with the caller's `docker login` credentials for that host where
~/.docker/config.json holds them in plain base64. Credential helpers (gcloud, ecr-login) are not run: what they
guard reads as out of reach, which `rlkube doctor` reports as a warning, since the nodes pull with their own identity.
"""

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMEOUT_S = 5
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPES = MANIFEST_TYPES[0::2]
VERSION_LABEL = "org.opencontainers.image.version"
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryError(Exception):
    """The registry answered, or could not be reached, in a way that leaves the image unresolved."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageReference:
    registry: str  # host[:port]
    repository: str
    reference: str  # a tag or sha256:<digest>

    @property
    def base_url(self) -> str:
        """Plain HTTP for loopback registries, as container engines allow without configuration; HTTPS elsewhere."""
        host = self.registry.rsplit(":", 1)[0] if not self.registry.startswith("[") else self.registry
        loopback = host in ("localhost", "[::1]") or host.startswith("127.")
        return f"{'http' if loopback else 'https'}://{self.registry}"


def parse_reference(image: str) -> ImageReference:
    """`[registry/]repository[:tag][@digest]` as container engines read it (no registry: Docker Hub)."""
    name, _, digest = image.partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, name if rest else f"library/{name}"
    repository, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "latest")
    return ImageReference(registry, repository, digest or tag)


def _docker_credentials(registry: str) -> str | None:
    """The basic credentials `docker login` stored for the registry, if stored in the file itself."""
    config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    try:
        auths = json.loads(config.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    hosts = {registry, f"https://{registry}", "https://index.docker.io/v1/"} if registry == DOCKER_HUB \
        else {registry, f"https://{registry}", f"http://{registry}"}
    for host in hosts:
        if isinstance(auths.get(host), dict) and auths[host].get("auth"):
            return str(auths[host]["auth"])
    return None


class Registry:
    """Requests to one image's repository, with a bearer token fetched once on the first 401."""

    def __init__(self, image: ImageReference) -> None:
        self.image = image
        self._authorization: str | None = None

    def _open(self, method: str, path: str, accept: tuple[str, ...] = ()) -> tuple[dict[str, str], bytes]:
        url = f"{self.image.base_url}/v2/{self.image.repository}/{path}"
        for attempt in range(2):
            headers = {"Accept": ", ".join(accept)} if accept else {}
            if self._authorization:
                headers["Authorization"] = self._authorization
            request = urllib.request.Request(url, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    return dict(response.headers), response.read() if method == "GET" else b""
            except urllib.error.HTTPError as error:
                challenge = error.headers.get("WWW-Authenticate", "")
                if error.code != 401 or attempt or not challenge:
                    raise RegistryError(f"{method} {url}: HTTP {error.code}", error.code) from None
                self._authorization = self._token(challenge)
            except (urllib.error.URLError, OSError) as error:
                reason = getattr(error, "reason", error)
                raise RegistryError(f"cannot reach {self.image.registry} ({reason})") from None
        raise AssertionError("unreachable")  # the loop returns or raises

    def _token(self, challenge: str) -> str:
        scheme, _, params = challenge.partition(" ")
        credentials = _docker_credentials(self.image.registry)
        if scheme.lower() == "basic":
            if credentials is None:
                raise RegistryError(f"{self.image.registry} wants credentials; none stored by docker login", 401)
            return f"Basic {credentials}"
        fields = dict(_CHALLENGE_PARAM.findall(params))
        query = {key: fields[key] for key in ("service", "scope") if key in fields}
        query.setdefault("scope", f"repository:{self.image.repository}:pull")
        request = urllib.request.Request(f"{fields.get('realm', '')}?{urllib.parse.urlencode(query)}",
                                         headers={"Authorization": f"Basic {credentials}"} if credentials else {})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise RegistryError(f"{self.image.registry}'s token service refused: HTTP {error.code}", 401) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise RegistryError(f"cannot get a token from {fields.get('realm')} ({error})") from None
        return f"Bearer {answer.get('token') or answer.get('access_token', '')}"

    def digest(self) -> str:
        """The digest the image's reference resolves to."""
        headers, _ = self._open("HEAD", f"manifests/{self.image.reference}", MANIFEST_TYPES)
        digest = {key.lower(): value for key, value in headers.items()}.get("docker-content-digest")
        if not digest:
            raise RegistryError(f"{self.image.registry} answered without a Docker-Content-Digest header")
        return digest

    def labels(self, reference: str) -> dict[str, str]:
        """The image's config labels (of the first platform, for a multi-platform index)."""
        manifest = self._json(f"manifests/{reference}", MANIFEST_TYPES)
        if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
            manifest = self._json(f"manifests/{manifest['manifests'][0]['digest']}", MANIFEST_TYPES)
        config = self._json(f"blobs/{manifest['config']['digest']}")
        return (config.get("config") or {}).get("Labels") or {}

    def _json(self, path: str, accept: tuple[str, ...] = ()) -> dict[str, Any]:
        _, body = self._open("GET", path, accept)
        try:
            return json.loads(body)
        except ValueError:
            raise RegistryError(f"{path}: not JSON") from None
