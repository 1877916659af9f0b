"""Where the operator policy comes from: setting ``SWEEPQ_POLICY``. ``client`` is injected.

* unset or empty — :meth:`Policy.default` (the README says what it allows);
* ``ssm:<parameter name>`` — an SSM parameter (``ssm:/sweepq/policy``; String or SecureString, up to
  8 KiB as an advanced parameter — a policy with large templates belongs in a file);
* anything else — a file path: a ConfigMap mounted as a file in Kubernetes, a file in the Lambda zip.

:class:`PolicySource` is built once per process (warm Lambda, ``dispatcher run`` loop) and asked
for the policy with :meth:`PolicySource.get` on every use. A file is re-read on every call and
parsed again only when its content changed (ConfigMap updates arrive by an atomic symlink swap, so
a reader sees the old or the new file, never half of one); an SSM parameter is read at most every
``refresh_s`` seconds and parsed again only when its ``Version`` changed.

It fails closed: a file or parameter that is missing, unreadable or invalid raises
:class:`~dispatcher.core.errors.ConfigError` naming the source, the field and the fix, on every call
until it is fixed — the dispatcher then launches nothing rather than fall back to a policy the
operator did not write. An invalid SSM version is remembered with its error and raised again on
every call (within the refresh interval without reading SSM) until the parameter's version
changes; the older valid policy is never served in between. Only a *transient* SSM failure
(throttling, 5xx, a timeout) keeps the last policy read, since nothing says it changed — unless the
last version read was invalid; with none read yet it raises ``TransientError``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Callable

from dispatcher.core.errors import ConfigError, TransientError
from dispatcher.core.policy import Policy

log = logging.getLogger(__name__)

SSM_PREFIX = "ssm:"
DEFAULT_REFRESH_S = 60.0


class PolicySource:
    def __init__(self, spec: str | None, *, ssm_client: Any = None, clock: Callable[[], float] = time.time,
                 refresh_s: float = DEFAULT_REFRESH_S) -> None:
        self.spec = (spec or "").strip()
        self._ssm = ssm_client
        self._clock = clock
        self._refresh_s = refresh_s
        self._policy: Policy | None = None
        self._version: str | int | None = None  # content hash (file) or parameter Version (SSM)
        self._checked_at: float | None = None
        # (SSM version, its error) of the last version that failed to load: raised again on every call
        # until the parameter's version changes — never the older policy still held in _policy.
        self._failed: tuple[str | int | None, ConfigError] | None = None
        if self.spec.startswith(SSM_PREFIX) and not self.spec[len(SSM_PREFIX):]:
            raise ConfigError("SWEEPQ_POLICY: 'ssm:' names no parameter — write ssm:/sweepq/policy")
        if self.spec.startswith(SSM_PREFIX) and ssm_client is None:
            raise ConfigError(f"SWEEPQ_POLICY: {self.spec} needs an SSM client — build the source with "
                              "PolicySource.from_setting(value, session=...)")

    @classmethod
    def from_setting(cls, value: str | None, *, session: Any = None, clock: Callable[[], float] = time.time,
                     refresh_s: float = DEFAULT_REFRESH_S) -> "PolicySource":
        """The source of ``SWEEPQ_POLICY``; an SSM client is made from ``session`` only when needed."""
        ssm = None
        if (value or "").strip().startswith(SSM_PREFIX):
            if session is None:
                import boto3

                session = boto3.session.Session()
            ssm = session.client("ssm")
        return cls(value, ssm_client=ssm, clock=clock, refresh_s=refresh_s)

    @property
    def kind(self) -> str:
        return "default" if not self.spec else "ssm" if self.spec.startswith(SSM_PREFIX) else "file"

    def get(self) -> Policy:
        """The current policy (see the module docstring for when it is re-read)."""
        if not self.spec:
            if self._policy is None:
                self._policy = Policy.default()
            return self._policy
        if self.kind == "file":
            return self._from_file(Path(self.spec))
        return self._from_ssm(self.spec[len(SSM_PREFIX):])

    def _adopt(self, text: bytes | str, version: str | int, source: str) -> Policy:
        policy = Policy.load_yaml(text, source=source)  # PolicyError (a ConfigError) names every problem
        if self._policy is not None:
            log.info("operator policy changed: %s now %s (was %s)", source, policy.digest, self._policy.digest)
        else:
            log.info("operator policy %s loaded from %s", policy.digest, source)
        self._policy, self._version = policy, version
        return policy

    def _from_file(self, path: Path) -> Policy:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"SWEEPQ_POLICY: cannot read {path} ({exc.strerror or exc}) — fix the path, mount the "
                              "policy ConfigMap there, or unset SWEEPQ_POLICY for the default policy") from exc
        digest = hashlib.sha256(data).hexdigest()
        if self._policy is not None and digest == self._version:
            return self._policy
        return self._adopt(data, digest, str(path))

    def _from_ssm(self, name: str) -> Policy:
        now = self._clock()
        if self._checked_at is not None and now - self._checked_at < self._refresh_s:
            if self._failed is not None:
                raise self._failed[1]
            if self._policy is not None:
                return self._policy
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            parameter = self._ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status >= 500 or "Throttl" in code or code in ("InternalServerError", "ServiceUnavailable"):
                return self._keep(f"SSM {code or status} reading {name}")
            if code == "ParameterNotFound":
                error = ConfigError(f"SWEEPQ_POLICY: SSM parameter {name} does not exist — create it (aws ssm "
                                    f"put-parameter --name {name} --type String --value file://policy.yaml) or fix "
                                    "the name")
            else:
                error = ConfigError(f"SWEEPQ_POLICY: cannot read SSM parameter {name}: {code} — grant "
                                    "ssm:GetParameter on it (and kms:Decrypt for a SecureString)")
            # remembered until the next refresh: every sweep of every tick asks, SSM is asked once
            self._checked_at, self._failed = now, (None, error)
            raise error from exc
        except BotoCoreError as exc:
            return self._keep(f"{type(exc).__name__} reading SSM parameter {name}")
        self._checked_at = now
        version = parameter.get("Version", 0)
        if self._failed is not None and version == self._failed[0]:
            raise self._failed[1]
        if self._policy is not None and version == self._version:
            self._failed = None
            return self._policy
        try:
            policy = self._adopt(parameter.get("Value", ""), version, f"ssm:{name} (version {version})")
        except ConfigError as exc:
            self._failed = (version, exc)
            raise
        self._failed = None
        return policy

    def _keep(self, what: str) -> Policy:
        if self._failed is not None:  # the newest version read is invalid: a read error changes nothing
            raise self._failed[1]
        if self._policy is None:
            raise TransientError(f"operator policy: {what} — retried next tick")
        log.warning("operator policy: %s — keeping policy %s until it can be read", what, self._policy.digest)
        return self._policy


def load_policy(spec: str | None, *, session: Any = None) -> Policy:
    """One read of ``SWEEPQ_POLICY`` (``producer validate/submit --policy``, one-shot tools)."""
    return PolicySource.from_setting(spec, session=session).get()
