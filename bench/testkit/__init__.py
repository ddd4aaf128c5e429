"""Helpers shared by the tests (``tests/``) and the benchmarks (``bench/``): the real gateway
as a subprocess, test media made with ffmpeg, an aiortc client.

Development only: not in the installed package list (pyproject's ``packages.find``), since
it drives the gateway from outside and needs ffmpeg; ``pytest`` and ``python -m bench.*``
import it from the repository root. Kept apart from ``gateway/`` because it imports
``rtmp/`` and ``webrtc``-side clients, which the dependency rule in docs/architecture.md
forbids for the core.
"""
