"""Parsers for two strings a sweep carries into a manifest: container image references and
Kubernetes resource quantities. Pure.

Image references follow the distribution reference grammar (``[registry[:port]/]path[:tag][@digest]``)
and are *normalised* the way Docker and containerd resolve them (distribution's
``ParseNormalizedNamed``): a first component without a dot, a colon or ``localhost`` is not a
registry, so ``ubuntu`` is ``docker.io/library/ubuntu`` and ``acme/x`` is ``docker.io/acme/x``; the
registry is case-insensitive, ``index.docker.io`` and ``registry-1.docker.io`` are ``docker.io``, and
a one-component Docker Hub repository is under ``library/`` whether or not the registry is written
(``docker.io/ubuntu`` = ``ubuntu``). The operator policy compares normalised names, so
``docker.io/library/ubuntu`` and ``ubuntu`` are one image and ``ghcr.io/acme`` does not match
``ghcr.io/acme-evil/x``. :attr:`ImageRef.qualified` is the reference written out in that form: the
policy hands it to the pods, so a runtime with short-name search (CRI-O's
``unqualified-search-registries``) never resolves ``ubuntu`` to another registry's image.

Every pattern is matched with ``fullmatch``: Python's ``$`` also matches before a final newline, so
``"ghcr.io/acme/trainer\n"`` passed a ``^…$`` pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

MAX_IMAGE_LENGTH = 512
DEFAULT_REGISTRY = "docker.io"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REGISTRY = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_IMAGE = re.compile(  # always fullmatch
    rf"(?:(?P<registry>{_REGISTRY})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}))?"
)
SHA256_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # always fullmatch
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class ImageRef:
    registry: str  # docker.io when the reference names none; lower-case
    path: str  # library/ubuntu for docker.io's official images
    tag: str | None
    digest: str | None
    written_registry: bool = True  # False for "ubuntu", "acme/x": the runtime picks the registry

    @property
    def name(self) -> str:
        """``registry/path``: what the policy's prefixes are compared with."""
        return f"{self.registry}/{self.path}"

    @property
    def qualified(self) -> str:
        """The reference fully qualified and normalised (``ubuntu:22.04`` →
        ``docker.io/library/ubuntu:22.04``): what a pod is given, so the runtime pulls the image the
        policy checked."""
        return self.name + (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


def _split(text: str) -> tuple[str, str, str | None, str | None, bool]:
    """``(registry, path, tag, digest, written_registry)`` without the ``library/`` rule."""
    match = _IMAGE.fullmatch(text)
    if not match:
        raise ValueError("not an image reference ([registry/]repository[:tag][@sha256:digest], lower-case "
                         "repository) — write e.g. ghcr.io/acme/trainer:1.0")
    registry, path = match.group("registry"), match.group("path")
    if registry is not None and not ("." in registry or ":" in registry or registry == "localhost"
                                     or registry.startswith("[")):
        if not re.fullmatch(_COMPONENT, registry):
            raise ValueError("not an image reference: repository names are lower-case — write e.g. acme/trainer:1.0")
        path = f"{registry}/{path}"  # "acme/trainer": a Docker Hub namespace, not a registry
        registry = None
    written = registry is not None
    host = (registry or DEFAULT_REGISTRY).lower()  # hostnames are case-insensitive: lower first, then alias
    if host in DOCKER_HUB_ALIASES:
        host = DEFAULT_REGISTRY
    return host, path, match.group("tag"), match.group("digest"), written


def parse_image(text: str) -> ImageRef:
    """Raises ``ValueError`` naming what is wrong for anything that is not an image reference."""
    if not isinstance(text, str) or not text:
        raise ValueError("not an image reference — write e.g. 111122223333.dkr.ecr.us-east-1.amazonaws.com/trainer:1.0")
    if len(text) > MAX_IMAGE_LENGTH:
        raise ValueError(f"longer than {MAX_IMAGE_LENGTH} characters — not an image reference")
    registry, path, tag, digest, written = _split(text)
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"  # docker.io/ubuntu and ubuntu are docker.io/library/ubuntu
    return ImageRef(registry=registry, path=path, tag=tag, digest=digest, written_registry=written)


def normalise_image_prefix(prefix: str) -> str:
    """An allowed-images entry as the policy compares it: ``ubuntu`` → ``docker.io/library/ubuntu``
    (that repository), ``ghcr.io/acme/`` → everything under that namespace (trailing ``/``),
    ``ghcr.io`` → the whole registry, ``*`` → every image. ``ValueError`` for anything else."""
    body = prefix.rstrip("/")
    if body == "*":
        return "*"
    host, _, port = body.partition(":")
    if "/" not in body and ("." in host or host.lower() == "localhost" or port.isdigit()) \
            and (not port or port.isdigit()):
        if not re.fullmatch(_REGISTRY, body):
            raise ValueError("not a registry host[:port] — write e.g. ghcr.io or registry.local:5000")
        registry = body.lower()
        return (DEFAULT_REGISTRY if registry in DOCKER_HUB_ALIASES else registry) + "/"
    if not body or len(body) > MAX_IMAGE_LENGTH:
        raise ValueError("not an image reference — write e.g. ghcr.io/acme/ or ghcr.io/acme/trainer")
    registry, path, tag, digest, _ = _split(body)
    if tag or digest:
        raise ValueError("an allowed-images entry is a registry or repository prefix, without :tag or @digest")
    if prefix.endswith("/"):
        return f"{registry}/{path}/"  # a namespace: "acme/" is Docker Hub's acme, never library/acme
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    return f"{registry}/{path}"


def image_allowed(ref: ImageRef, prefixes: list[str]) -> bool:
    """Whether ``ref`` is inside one of the normalised ``prefixes`` (a repository exactly, or everything
    under a ``.../`` namespace). ``*`` allows every image."""
    name = ref.name
    for prefix in prefixes:
        if prefix == "*" or name == prefix or (prefix.endswith("/") and name.startswith(prefix)):
            return True
    return False


# ------------------------------------------------------------------------ quantities

_QUANTITY = re.compile(  # always fullmatch
    r"(?P<number>\+?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d{1,3})?")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6, "G": Decimal(10) ** 9,
            "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}
MAX_QUANTITY_LENGTH = 32


def parse_quantity(text: object) -> Decimal:
    """A Kubernetes quantity (``"8"``, ``"500m"``, ``"64Gi"``, ``"1e9"``) → its value. ``ValueError``
    for anything else, negative quantities included (no request is negative)."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError("not a Kubernetes quantity — write e.g. '8', '500m' or '64Gi'")
    raw = str(text)  # not stripped: the API server refuses " 8" and "8\n", so sweepq must too
    match = _QUANTITY.fullmatch(raw) if len(raw) <= MAX_QUANTITY_LENGTH else None
    if not match:
        raise ValueError("not a Kubernetes quantity — write e.g. '8', '500m' or '64Gi'")
    try:
        number = Decimal(match.group("number"))
    except InvalidOperation as exc:  # the pattern admits only decimal digits; kept for safety
        raise ValueError("not a Kubernetes quantity — write e.g. '8', '500m' or '64Gi'") from exc
    suffix = match.group("suffix") or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number * _DECIMAL[suffix]
    if suffix:
        return number * Decimal(10) ** int(suffix[1:])
    return number
