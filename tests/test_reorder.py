"""The reorder-only receive buffer (webrtc/reorder.py) with crafted RTP and no clock:
in-order release, reordering within the window, skipping after it, release on the
marker bit, and a keyframe asked for when a video gap is given up (issue 14)."""

from __future__ import annotations

from webrtc.reorder import ReorderBuffer, RtpFrame, RtpIn, vp8_starts_frame

WINDOW = 0.02


def audio(seq: int, at: float, ts: int | None = None) -> RtpIn:
    seq &= 0xFFFF
    stamp = (ts if ts is not None else seq * 960) & 0xFFFFFFFF
    data = b"opus%d" % seq
    return RtpIn(seq, stamp, False, data, data, at)


def vp8(seq: int, ts: int, at: float, *, first: bool, marker: bool, key: bool = False) -> RtpIn:
    """A VP8 packet: descriptor (S bit on a frame's first packet), then the payload,
    whose first byte's low bit is 0 for a keyframe (RFC 6386 §9.1)."""
    descriptor = b"\x10" if first else b"\x00"
    body = (b"\x00" if key else b"\x01") if first else b"\xaa"
    body += b"%d" % seq
    return RtpIn(seq & 0xFFFF, ts, marker, descriptor + body, body, at)


def is_key(data: bytes) -> bool:
    return bool(data) and data[0] & 1 == 0


def video_buffer(wait: float = 0.1) -> ReorderBuffer:
    return ReorderBuffer(
        video=True, video_wait=wait, is_keyframe=is_key, starts_frame=vp8_starts_frame
    )


def seqs(frames: list[RtpFrame]) -> list[bytes]:
    return [f.data for f in frames]


def test_audio_in_order_goes_on_at_once() -> None:
    buf = ReorderBuffer(video=False, window=WINDOW)
    for seq in range(65530, 65540):  # across the 16-bit wrap
        (frame,) = buf.add(audio(seq, seq * 0.02), now=seq * 0.02)
        assert frame.data == b"opus%d" % (seq & 0xFFFF)
        assert frame.arrived == seq * 0.02
        assert buf.get_timer() is None
    assert buf.stats.released == 10 and buf.stats.skipped == 0


def test_audio_reordered_within_the_window_is_put_back_in_order() -> None:
    buf = ReorderBuffer(video=False, window=WINDOW)
    assert len(buf.add(audio(10, 0.000), 0.000)) == 1
    assert buf.add(audio(12, 0.001), 0.001) == []  # 11 is missing: 12 waits
    assert buf.get_timer() == 0.001 + WINDOW
    out = buf.add(audio(11, 0.005), 0.005)  # the overtaken one arrives in time
    assert seqs(out) == [b"opus11", b"opus12"]
    assert buf.get_timer() is None and buf.stats.skipped == 0


def test_audio_gap_skipped_after_the_window_and_late_packet_dropped() -> None:
    buf = ReorderBuffer(video=False, window=WINDOW)
    buf.add(audio(1, 0.0), 0.0)
    assert buf.add(audio(3, 0.02), 0.02) == []
    assert buf.handle_timer(0.02 + WINDOW / 2) == []  # not yet
    out = buf.handle_timer(buf.get_timer() or 0)
    assert seqs(out) == [b"opus3"]
    assert buf.stats.skipped == 1
    assert buf.add(audio(2, 0.05), 0.05) == []  # too late now: dropped, not released
    assert buf.stats.late == 1
    assert seqs(buf.add(audio(4, 0.06), 0.06)) == [b"opus4"]


def test_audio_gap_skipped_when_a_later_packet_finds_it_overdue() -> None:
    buf = ReorderBuffer(video=False, window=WINDOW)
    buf.add(audio(1, 0.0), 0.0)
    buf.add(audio(3, 0.02), 0.02)
    # no timer fired (a busy loop), but the next packet comes after the window
    assert seqs(buf.add(audio(4, 0.045), 0.045)) == [b"opus3", b"opus4"]


def test_video_frame_goes_on_at_its_marker_not_at_the_next_frame() -> None:
    buf = video_buffer()
    assert buf.add(vp8(100, 9000, 0.0, first=True, marker=False, key=True), 0.0) == []
    assert buf.add(vp8(101, 9000, 0.001, first=False, marker=False), 0.001) == []
    (frame,) = buf.add(vp8(102, 9000, 0.002, first=False, marker=True), 0.002)
    assert frame.keyframe and frame.timestamp == 9000 and frame.arrived == 0.002
    assert frame.payloads[0][0] == 0x10 and len(frame.payloads) == 3
    assert frame.data == b"\x00100" + b"\xaa101" + b"\xaa102"
    (single,) = buf.add(vp8(103, 12000, 0.033, first=True, marker=True), 0.033)
    assert not single.keyframe and single.timestamp == 12000


def test_video_reordered_packets_complete_the_frame() -> None:
    buf = video_buffer()
    buf.add(vp8(1, 0, 0.0, first=True, marker=True, key=True), 0.0)
    assert buf.add(vp8(3, 3000, 0.010, first=False, marker=True), 0.010) == []
    (frame,) = buf.add(vp8(2, 3000, 0.012, first=True, marker=False), 0.012)
    assert frame.arrived == 0.012 and frame.first_seq == 2
    assert buf.stats.pli == 0 and not buf.take_pli()


def test_video_gap_given_up_asks_for_a_keyframe_and_drops_until_one() -> None:
    buf = video_buffer(wait=0.1)
    buf.add(vp8(1, 0, 0.0, first=True, marker=True, key=True), 0.0)
    # frame 3000 loses its first packet (seq 2); frame 6000 is complete behind it
    buf.add(vp8(3, 3000, 0.01, first=False, marker=True), 0.01)
    assert buf.add(vp8(4, 6000, 0.04, first=True, marker=True), 0.04) == []
    assert buf.get_timer() == 0.01 + 0.1
    assert buf.handle_timer(0.11) == []  # broken frame dropped, 6000 is no keyframe
    assert buf.take_pli() and not buf.take_pli()
    assert buf.stats.dropped_frames == 2
    assert buf.add(vp8(5, 9000, 0.15, first=True, marker=True), 0.15) == []
    (key,) = buf.add(vp8(6, 12000, 0.2, first=True, marker=True, key=True), 0.2)
    assert key.keyframe and key.timestamp == 12000
    assert seqs(buf.add(vp8(7, 15000, 0.23, first=True, marker=True), 0.23)) == [b"\x017"]


def test_video_retransmission_within_the_wait_loses_nothing() -> None:
    buf = video_buffer(wait=0.1)
    buf.add(vp8(1, 0, 0.0, first=True, marker=True, key=True), 0.0)
    buf.add(vp8(3, 3000, 0.01, first=False, marker=True), 0.01)
    buf.add(vp8(4, 6000, 0.04, first=True, marker=True), 0.04)
    out = buf.add(vp8(2, 3000, 0.06, first=True, marker=False), 0.06)  # the NACKed one
    assert [f.timestamp for f in out] == [3000, 6000]
    assert not buf.take_pli()


def test_video_waits_for_a_keyframe_first_and_resyncs_mid_frame() -> None:
    buf = video_buffer()
    # joined in the middle of a frame: its tail is discarded up to the marker
    assert buf.add(vp8(50, 0, 0.0, first=False, marker=True), 0.0) == []
    assert not buf.take_pli()
    assert buf.add(vp8(51, 3000, 0.03, first=True, marker=True), 0.03) == []  # no key
    assert buf.take_pli()  # a frame that cannot be used: a keyframe is asked for
    (key,) = buf.add(vp8(52, 6000, 0.06, first=True, marker=True, key=True), 0.06)
    assert key.keyframe


def test_a_new_sender_far_away_in_sequence_starts_over() -> None:
    buf = ReorderBuffer(video=False, window=WINDOW)
    buf.add(audio(100, 0.0), 0.0)
    assert seqs(buf.add(audio(30000, 0.02), 0.02)) == [b"opus30000"]
    assert buf.stats.resets == 1


def test_padding_packets_keep_the_sequence_but_are_not_forwarded() -> None:
    buf = video_buffer()
    buf.add(vp8(1, 0, 0.0, first=True, marker=True, key=True), 0.0)
    padding = RtpIn(2, 0, False, b"", b"", 0.001)  # RTP padding only (RFC 3550 §5.1)
    assert buf.add(padding, 0.001) == []
    (frame,) = buf.add(vp8(3, 3000, 0.03, first=True, marker=True), 0.03)
    assert frame.timestamp == 3000 and frame.payloads == (b"\x10\x013",)
    assert buf.stats.skipped == 0 and not buf.take_pli()


def test_forwarded_units_count_their_rtp_payloads_in_the_gop_cache() -> None:
    """A unit that keeps its RTP payloads for forwarding holds about twice its payload in
    the GOP cache: the cache's byte limit counts both (gateway/media.py)."""
    from gateway.media import VIDEO, MediaUnit, PublishedStream

    stream = PublishedStream("customer", gop_cache_bytes=3000)
    stream.start("webrtc")
    key = MediaUnit(VIDEO, "vp8", 0, b"\x00" * 1000, keyframe=True, rtp=(b"\x10" + b"\x00" * 1000,))
    stream.push(key)
    stream.push(MediaUnit(VIDEO, "vp8", 33, b"\x01" * 400, rtp=(b"\x10" + b"\x01" * 400,)))
    assert stream.stats.gop_evictions == 0
    # 2001 + 802 bytes cached; one more such frame is over the 3000-byte limit
    stream.push(MediaUnit(VIDEO, "vp8", 66, b"\x01" * 400, rtp=(b"\x10" + b"\x01" * 400,)))
    assert stream.stats.gop_evictions == 1
