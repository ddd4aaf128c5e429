"""Redaction of secrets from request targets (kept here for the web modules; the rules
live in :mod:`gateway.redact`, shared with the RTMP front-end's access log entries)."""

from __future__ import annotations

from gateway.redact import REDACTED, redact_path, redact_target, redact_url

__all__ = ["REDACTED", "redact_path", "redact_target", "redact_url"]
