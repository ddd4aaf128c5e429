"""Compatibility: the test media helpers live in ``bench/testkit/media.py`` (shared with
``bench/``); new code imports ``bench.testkit.media``."""

from bench.testkit.media import FlvTag, analyse, ffmpeg_publish, make_flv, read_flv_tags

__all__ = ["FlvTag", "analyse", "ffmpeg_publish", "make_flv", "read_flv_tags"]
