"""Sans-I/O RTMP chunk stream writer (Adobe RTMP specification 1.0, 5.3): messages in,
chunks with compressed headers out. The wire format is described in :mod:`rtmp.chunk`."""

from __future__ import annotations

from collections.abc import Iterable

from rtmp.chunk import _BE_I, _EXT, _LE_I, _MASK32, _MAX_LENGTH, DEFAULT_CHUNK_SIZE, basic_header
from rtmp.messages import SET_CHUNK_SIZE, Message
from rtmp.messages import set_chunk_size as _set_chunk_size_message

__all__ = ["ChunkWriter"]


class _OutStream:
    """Send-side header state of one chunk stream (what the peer will assume)."""

    __slots__ = ("basic", "delta", "length", "stream_id", "ts", "type_id")

    def __init__(self, csid: int) -> None:
        self.basic = tuple(basic_header(fmt, csid) for fmt in range(4))
        self.ts = 0
        self.delta = 0
        self.length = -1
        self.type_id = -1
        self.stream_id = -1


class ChunkWriter:
    """Chunks messages with header compression (spec 5.3.1.2, example in 5.3.2.1).

    Header choice per chunk stream, mirroring ffmpeg's ``ff_rtmp_packet_write``:

    * type 0 for the first message, when the message stream id changes, or when the
      timestamp moves backwards (a delta modulo 2**32 of 2**31 or more -- across the
      2**32 wrap a small forward step is still a delta);
    * type 1 when length or type id change, type 2 when only the delta changes;
    * type 3 when length, type id and delta all repeat.  After a type-0 header the
      "previous delta" is the type-0 timestamp itself (5.3.1.2.4), as for the reader.

    Timestamp/delta fields of 0xFFFFFF and above use the extended timestamp, which is
    repeated after every type-3 continuation header (as Flash, FMS, ffmpeg and
    librtmp expect).
    """

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._streams: dict[int, _OutStream] = {}

    def set_chunk_size(self, n: int) -> Message:
        """Return the Set Chunk Size message to send before anything else.

        The new size takes effect once that message has been passed to :meth:`write`
        (the peer applies it from the next chunk on, 5.4.1); the message itself is
        still chunked with the old size.  Writing any Set Chunk Size message has the
        same effect.
        """
        return _set_chunk_size_message(n)

    def write(self, msg: Message) -> bytes:
        """Return the chunks carrying ``msg`` on chunk stream ``msg.csid``."""
        csid = msg.csid
        st = self._streams.get(csid)
        if st is None:
            st = _OutStream(csid)  # validates csid
            self._streams[csid] = st
            fresh = True
        else:
            fresh = False
        payload = msg.payload
        length = len(payload)
        type_id = msg.type_id
        stream_id = msg.stream_id
        if length > _MAX_LENGTH:
            raise ValueError(f"message too long for RTMP ({length} > {_MAX_LENGTH})")
        if not 0 <= type_id <= 0xFF:
            raise ValueError(f"message type id must fit in 8 bits, got {type_id}")
        if not 0 <= stream_id <= _MASK32:
            raise ValueError(f"message stream id must fit in 32 bits, got {stream_id}")
        new_chunk_size = 0
        if type_id == SET_CHUNK_SIZE and length == 4:
            # Takes effect for the chunks after this message (5.4.1).
            new_chunk_size = _BE_I.unpack(payload)[0]
            if not 1 <= new_chunk_size <= 0x7FFFFFFF:
                raise ValueError(f"invalid chunk size {new_chunk_size}")
        ts = msg.timestamp & _MASK32
        delta = (ts - st.ts) & _MASK32
        if fresh or stream_id != st.stream_id or delta & 0x80000000:
            fmt = 0
            field = ts
        elif length != st.length or type_id != st.type_id:
            fmt = 1
            field = delta
        elif delta != st.delta:
            fmt = 2
            field = delta
        else:
            fmt = 3
            field = delta
        ext = field >= _EXT
        f24 = _EXT if ext else field
        basic = st.basic
        if fmt == 0:
            hdr = (
                basic[0]
                + ((((f24 << 24) | length) << 8) | type_id).to_bytes(7, "big")
                + _LE_I.pack(stream_id)
            )
        elif fmt == 1:
            hdr = basic[1] + ((((f24 << 24) | length) << 8) | type_id).to_bytes(7, "big")
        elif fmt == 2:
            hdr = basic[2] + f24.to_bytes(3, "big")
        else:
            hdr = basic[3]
        cont = basic[3]
        if ext:
            extb = _BE_I.pack(field)
            hdr += extb
            cont += extb
        st.ts = ts
        st.delta = field
        st.length = length
        st.type_id = type_id
        st.stream_id = stream_id

        cs = self.chunk_size
        if length <= cs:
            out = hdr + payload
        else:
            # One join with the continuation header as separator: the data is copied
            # exactly once, the per-chunk work is a memoryview slice.
            view = memoryview(payload)
            out = cont.join([hdr + view[:cs], *[view[i : i + cs] for i in range(cs, length, cs)]])
        if new_chunk_size:
            self.chunk_size = new_chunk_size
        return out

    def write_many(self, msgs: Iterable[Message]) -> bytes:
        """Chunk several messages back to back (no interleaving)."""
        write = self.write
        return b"".join([write(m) for m in msgs])
