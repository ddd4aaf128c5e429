"""Bitstream helpers, one home for every front-end and the transcoders.

- ``h264``: Annex-B <-> AVCC, parameter sets, the avcC record, IDR detection, SPS facts.
- ``vp8``: key frames and picture size from the frame header (RFC 6386 §9.1).
- ``aac``: the AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1).

Pure Python on ``bytes`` (no PyAV, no aiortc), each tested in tests/test_h264.py and
tests/test_codecs.py.
"""
