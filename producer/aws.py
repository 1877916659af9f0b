"""AWS access for the producer: boto3's default credential chain, one session per command.

Nothing is configured here that boto3 does not already read: ``AWS_PROFILE``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL`` (moto, LocalStack) and the usual credential sources.
The region may also come from an SQS queue URL (``https://sqs.<region>.amazonaws.com/...``).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.core.errors import ConfigError

log = logging.getLogger(__name__)

# boto3's standard retry mode resends the *same* request body, so a retried send can never
# create a second sweep: the sweep id is derived from the token inside the body.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=20)
_REGION_IN_URL = re.compile(r"^https://sqs[.-]([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com")


def region_from_queue_url(url: str | None) -> str | None:
    match = _REGION_IN_URL.match(url or "")
    return match.group(1) if match else None


def local_user() -> str:
    """Who runs this command when AWS cannot tell (``$USER``)."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class Aws:
    """Clients for one command, built lazily from one boto3 session. ``session`` is injectable."""

    def __init__(self, session: Any = None, *, region_hint: str | None = None) -> None:
        if session is None:
            try:
                session = boto3.session.Session()
            except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
                raise ConfigError(f"AWS configuration: {exc} — fix AWS_PROFILE or ~/.aws/config") from exc
        self.session = session
        # AWS_REGION is what the SDKs of other languages and Lambda set; older botocore reads only AWS_DEFAULT_REGION
        self.region = session.region_name or os.environ.get("AWS_REGION") or region_hint
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            if not self.region:
                raise ConfigError(
                    "no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION), or configure a profile with `aws configure`"
                )
            try:
                self._clients[service] = self.session.client(service, region_name=self.region, config=CLIENT_CONFIG)
            except BotoCoreError as exc:
                raise ConfigError(f"AWS {service} client: {exc}") from exc
        return self._clients[service]

    def caller(self) -> str:
        """The caller's ARN (``sts.get_caller_identity``), or ``$USER`` when AWS cannot say."""
        try:
            return str(self.client("sts").get_caller_identity()["Arn"])
        except (BotoCoreError, ClientError, ConfigError, KeyError) as exc:
            user = local_user()
            log.debug("caller identity unavailable (%s); using %s", exc, user)
            return user


def queue_depth(sqs: Any, url: str) -> dict[str, int] | None:
    """How many messages the queue holds, as far as SQS tells (``sqs:GetQueueAttributes``):
    ``waiting`` to be received, ``in_flight`` received and not deleted yet, ``delayed``. None when
    this identity may not ask (the researcher policy grants only SendMessage) or SQS cannot say."""
    names = {"ApproximateNumberOfMessages": "waiting", "ApproximateNumberOfMessagesNotVisible": "in_flight",
             "ApproximateNumberOfMessagesDelayed": "delayed"}
    try:
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(names))["Attributes"]
    except (BotoCoreError, ClientError, KeyError) as exc:
        log.debug("queue depth of %s unavailable: %s", url, exc)
        return None
    return {short: int(attrs.get(name, 0)) for name, short in names.items()}
