"""The module kopf loads (`kopf run -m hybridroute_operator.main`): importing it registers every handler."""

from hybridroute_operator import settings
from hybridroute_operator.handlers import endpoint, fleet, policy

__all__ = ["endpoint", "fleet", "policy", "settings"]
