"""The module kopf loads (`kopf run -m hybridroute_operator.main`): importing it registers every handler."""

from hybridroute_operator import settings
from hybridroute_operator.handlers import endpoint, fleet, policy, release_daemons_from_finalizer, secrets

# After every daemon is registered: none of them may put a finalizer on our objects.
release_daemons_from_finalizer()

__all__ = ["endpoint", "fleet", "policy", "secrets", "settings"]
