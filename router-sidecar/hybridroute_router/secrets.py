"""Resolves an endpoint's API key from its `ApiKeyRef`; the key itself never enters the config.

Resolution order (the contract in `config.ApiKeyRef`): the environment variable named by `env`;
otherwise the variable the sidecar injector derives from the secret reference (`secret_env_name`);
otherwise the mounted Secret file `<secrets dir>/<name>/<key>`. The secrets directory defaults to
/var/run/hybridroute/secrets and can be moved with $HYBRIDROUTE_SECRETS_DIR.

Lookups happen per request so a rotated Secret (env restart or a remounted file) is picked up
without a config change. Errors name the reference, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .config import ApiKeyRef, secret_env_name

DEFAULT_SECRETS_DIR = "/var/run/hybridroute/secrets"
SECRETS_DIR_ENV = "HYBRIDROUTE_SECRETS_DIR"


class MissingApiKey(LookupError):
    """No key found for a reference; the message lists where we looked (names only)."""


def resolve_api_key(ref: ApiKeyRef | None, environ: Mapping[str, str] | None = None) -> str | None:
    """Return the key for `ref`, None when the endpoint needs none; raise MissingApiKey if unresolvable."""
    if ref is None:
        return None
    env = os.environ if environ is None else environ
    looked_at: list[str] = []
    if ref.env:
        value = env.get(ref.env)
        if value:
            return value.strip()
        looked_at.append(f"${ref.env}")
    if ref.secret_ref is not None:
        derived = secret_env_name(ref.secret_ref)
        value = env.get(derived)
        if value:
            return value.strip()
        looked_at.append(f"${derived}")
        path = Path(env.get(SECRETS_DIR_ENV, DEFAULT_SECRETS_DIR)) / ref.secret_ref.name / ref.secret_ref.key
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError:
            value = ""
        if value:
            return value
        looked_at.append(str(path))
    raise MissingApiKey("API key not found (looked at " + ", ".join(looked_at) + ")")
