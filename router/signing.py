"""Standard Webhooks signatures of agent requests: `webhook-id`, `-timestamp`, `-signature`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

_PREFIX = "whsec_"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class SigningError(ValueError):
    """The secrets could not be read; the message names the variable, never a secret."""


def keys_from_env(name: str, env: Mapping[str, str] | None = None) -> tuple[bytes, ...]:
    """The HMAC keys of the space-separated secrets in `$name`, newest first.

    Secrets are read as the reference library reads them: an optional `whsec_` prefix, then
    base64 (padding optional).
    """
    value = (os.environ if env is None else env).get(name, "")
    secrets = value.split()
    if not secrets:
        raise SigningError(f"signing_secrets_env: ${name} is not set or empty")
    keys = []
    for position, secret in enumerate(secrets, start=1):
        text = secret.removeprefix(_PREFIX)
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise SigningError(f"signing_secrets_env: secret {position} of ${name} is not base64")
        keys.append(key)
    return tuple(keys)


def signature_header(keys: tuple[bytes, ...], msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` per key, space-separated."""
    signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
    return " ".join(
        "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        for key in keys
    )
