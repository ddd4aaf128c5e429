"""Typed keys for the aiohttp application state (``web.AppKey``, aiohttp ≥ 3.9).

They live in their own module so that every route module can import them without
importing :mod:`web.app` (which imports the route modules).
"""

from __future__ import annotations

from aiohttp import web

from gateway.service import Gateway

GATEWAY_KEY = web.AppKey("gateway", Gateway)
# Key for the HMAC that binds CSRF tokens to advisor cookie sessions. It is random per
# process, as the sessions themselves are (AdvisorAuth keeps them in memory).
CSRF_SECRET_KEY = web.AppKey("csrf_secret", bytes)
