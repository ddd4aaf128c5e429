"""Compatibility: the test media helpers moved to ``testkit/media.py`` (shared with ``bench/``)."""

from testkit.media import FlvTag, analyse, ffmpeg_publish, make_flv, read_flv_tags

__all__ = ["FlvTag", "analyse", "ffmpeg_publish", "make_flv", "read_flv_tags"]
