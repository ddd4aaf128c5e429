"""Compatibility: the gateway runner lives in ``bench/testkit/gwproc.py`` (shared with
``bench/``).

New code imports ``bench.testkit.gwproc``; this module, kept for branches written before the
move, re-exports the same objects (the same
``STARTED`` and ``ALLOWED`` lists, so the per-test log check sees every gateway).
"""

from bench.testkit.gwproc import (
    ADVISOR_TOKEN,
    ALLOWED,
    STARTED,
    Bystander,
    GatewayLogError,
    GatewayProcess,
    bystander_stream,
    flash_client,
    free_port,
    handshaken_socket,
)

__all__ = [
    "ADVISOR_TOKEN",
    "ALLOWED",
    "STARTED",
    "Bystander",
    "GatewayLogError",
    "GatewayProcess",
    "bystander_stream",
    "flash_client",
    "free_port",
    "handshaken_socket",
]
