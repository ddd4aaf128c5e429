"""Transcoders: one per (source stream, target format), decoding and encoding with PyAV.

The package along its seams (docs/media-pipeline.md):

- ``formats``: targets, codec tables, stats, the pipes' control and bitrate
  arbitration; PyAV-free, so routing, the monitor and ``/ops`` import the real types.
- ``worker``: :class:`Transcoder`, the receiver with its bounded queue, worker thread
  and outbox back to the event loop.
- ``pipe``, ``video`` and ``audio``: the pipes (decoder -> encoder) on the worker
  thread, which see the transcoder only through its :class:`PipeControl`.
- ``pool``: :class:`TranscoderPool`, shared transcoders and their bitrate.

``from gateway.transcode import X`` works for all of them; the PyAV modules load on
first use of one of their names, so importing the PyAV-free names stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gateway.codecs.aac import audio_specific_config
from gateway.transcode.formats import (
    AUDIO_DECODERS,
    AUDIO_ENCODERS,
    AUDIO_RATES,
    AUDIO_TARGETS,
    KEYFRAME_INTERVAL_MS,
    MAX_VIDEO_BITRATE,
    MIN_VIDEO_BITRATE,
    NATIVE_RATES,
    TS_MASK,
    VIDEO_DECODERS,
    VIDEO_ENCODERS,
    VIDEO_TARGETS,
    BitrateArbiter,
    PipeControl,
    TargetFormat,
    TranscoderStats,
)

if TYPE_CHECKING:
    from gateway.transcode.pool import TranscoderPool
    from gateway.transcode.worker import Transcoder

_LAZY = {"Transcoder": "gateway.transcode.worker", "TranscoderPool": "gateway.transcode.pool"}

__all__ = [
    "AUDIO_DECODERS",
    "AUDIO_ENCODERS",
    "AUDIO_RATES",
    "AUDIO_TARGETS",
    "KEYFRAME_INTERVAL_MS",
    "MAX_VIDEO_BITRATE",
    "MIN_VIDEO_BITRATE",
    "NATIVE_RATES",
    "TS_MASK",
    "VIDEO_DECODERS",
    "VIDEO_ENCODERS",
    "VIDEO_TARGETS",
    "BitrateArbiter",
    "PipeControl",
    "TargetFormat",
    "Transcoder",
    "TranscoderPool",
    "TranscoderStats",
    "audio_specific_config",
]


def __getattr__(name: str) -> Any:
    """PEP 562: the PyAV-backed names, imported when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
