"""Estimated price of one upstream call, from token counts and the endpoint's per-million pricing.

Used twice: to rank endpoints before a request is sent (input estimate + requested output) and to
meter spend afterwards (the upstream's reported usage). Pure arithmetic; no currency conversion.
"""

from __future__ import annotations

from .config import EndpointConfig

TOKENS_PER_PRICING_UNIT = 1_000_000


def estimate_cost(endpoint: EndpointConfig, input_tokens: int, output_tokens: int) -> float:
    """USD for `input_tokens` in and `output_tokens` out at the endpoint's list price."""
    pricing = endpoint.pricing
    usd = input_tokens * pricing.input_per_m_tok + output_tokens * pricing.output_per_m_tok
    return usd / TOKENS_PER_PRICING_UNIT
