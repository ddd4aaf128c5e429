"""Sans-I/O RTMP chunk stream reader (Adobe RTMP specification 1.0, 5.3); the writer is
:mod:`rtmp.chunk_writer`.

Wire format of one chunk (spec 5.3.1)::

    basic header (1-3 bytes) | message header (11/7/3/0 bytes) | [extended ts (4)] | data

* Basic header (5.3.1.1): ``fmt`` in the top two bits, chunk stream id (csid) in the
  low six.  Low six bits 0 -> csid = 64 + next byte (64..319); 1 -> csid = 64 + next
  two bytes little-endian (64..65599).  Ids 0 and 1 therefore never name a stream;
  csid 2 is reserved for protocol control (5.4).
* Message header (5.3.1.2): type 0 = timestamp(3) length(3) type(1) stream id(4, LE),
  absolute timestamp; type 1 = timestamp delta(3) length(3) type(1); type 2 = delta(3);
  type 3 = nothing, everything (including the delta) repeats.
* Extended timestamp (5.3.1.3): a 24-bit timestamp/delta field of 0xFFFFFF means the
  real 32-bit value follows the message header.

Timestamps are 32-bit and wrap (spec 5.3.1.2: "timestamps ... MUST wrap around" after
2**32 ms, about 49.7 days), so everything here is computed modulo 2**32.

Performance matters: ffmpeg and Flash publish with 128-byte chunks, i.e. thousands of
chunks per second per stream.  The reader therefore does not parse continuation chunks
one by one when it can avoid it: once a message's first chunk is parsed, every further
chunk of that message that follows *contiguously* on the wire has a fully predictable
header (the type-3 basic header, plus the extended timestamp if the message uses one)
at a fixed stride of ``chunk_size + header_len``.  Those headers are verified with one
strided slice per header byte and stripped with one strided ``del`` per header byte,
both C-level loops.  Interleaved chunks of other chunk streams simply end such a run;
the general per-chunk path takes over for them and the run restarts afterwards.
"""

from __future__ import annotations

import struct

from rtmp.messages import ABORT, SET_CHUNK_SIZE, Message, ProtocolError

__all__ = ["DEFAULT_CHUNK_SIZE", "BufferBudget", "ChunkError", "ChunkReader", "basic_header"]

#: Initial chunk size in both directions (spec 5.4.1: "The maximum chunk size defaults
#: to 128 bytes").
DEFAULT_CHUNK_SIZE = 128

_MASK32 = 0xFFFFFFFF
_EXT = 0xFFFFFF  # 24-bit field value announcing an extended timestamp (5.3.1.3)
_MAX_LENGTH = 0xFFFFFF  # message length is a 24-bit field (5.3.1.2.1)
_MAX_CSID = 65599  # 3-byte basic header: 64 + 0xFFFF (5.3.1.1)

_BE_I = struct.Struct(">I")
_BE_II = struct.Struct(">II")
_LE_I = struct.Struct("<I")


class ChunkError(ProtocolError):
    """The chunk stream violates the RTMP chunking rules or our resource limits."""


class BufferBudget:
    """Bytes of partial messages that many readers together may hold (process-wide).

    Each reader's own ``max_buffered`` bounds one connection; this bounds their sum, so
    thousands of connections cannot each fill their own budget at once. Plain
    accounting, no I/O: the server shares one instance between its connections.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when they do not fit."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


def basic_header(fmt: int, csid: int) -> bytes:
    """Encode a basic header (spec 5.3.1.1) using the shortest form for ``csid``."""
    if 2 <= csid <= 63:
        return bytes(((fmt << 6) | csid,))
    if 64 <= csid <= 319:
        return bytes((fmt << 6, csid - 64))
    if 320 <= csid <= _MAX_CSID:
        v = csid - 64
        return bytes(((fmt << 6) | 1, v & 0xFF, v >> 8))
    raise ValueError(f"chunk stream id must be in 2..{_MAX_CSID}, got {csid}")


class _InStream:
    """Receive-side state of one chunk stream.

    ``delta`` is the value of the last timestamp field seen on this chunk stream with
    any extended timestamp resolved: the absolute timestamp after a type-0 header, the
    delta after type 1/2/3.  It is what a type-3 chunk that *starts* a message adds
    again (spec 5.3.1.2.4: "If a Type 3 chunk follows a Type 0 chunk, then the timestamp
    delta for this Type 3 chunk is the same as the timestamp of the Type 0 chunk").
    ffmpeg (rtmppkt.c, ``ts_field``) and librtmp (``m_channelTimestamp`` + the stored
    header's timestamp field) behave the same way.
    """

    __slots__ = (
        "basic3",
        "cont",
        "delta",
        "ext",
        "length",
        "parts",
        "rem",
        "stream_id",
        "ts",
        "type_id",
    )

    def __init__(self, csid: int) -> None:
        self.basic3 = basic_header(3, csid)
        # Header every continuation chunk of the current message carries: the type-3
        # basic header, plus the 4-byte extended timestamp when the message has one.
        self.cont = self.basic3
        self.ts = 0
        self.delta = 0
        self.ext = False
        self.length = 0
        self.type_id = 0
        self.stream_id = 0
        self.rem = 0  # payload bytes still missing from the message in progress
        self.parts: list[bytes | bytearray] = []


class ChunkReader:
    """Incremental chunk stream parser: feed raw bytes, get complete messages back.

    Limits (all violations raise :class:`ChunkError` and leave the reader failed,
    because a chunk stream cannot be resynchronised):

    * ``max_message_size``: declared message length, checked when the header is
      parsed, before any payload is buffered.
    * ``max_chunk_size``: the largest Set Chunk Size the peer may announce.
    * ``max_chunk_streams``: chunk streams that may have a message in progress at once;
      the number of chunk streams the reader keeps header state for at all is capped
      at 16 times that (legitimate peers use a handful).
    * ``max_buffered``: total payload bytes held for all partial messages (default
      2 x ``max_message_size``).  The unparsed input tail is at most one chunk plus
      its header, because a chunk is consumed as soon as it is complete (and a chunk
      is never longer than its message, so ``max_message_size`` bounds it too).
    * ``budget``: an optional :class:`BufferBudget` shared with other readers; the
      partial bytes are reserved there too and given back when a message completes, is
      dropped, or the reader is released (:meth:`release`).

    ``max_message_size`` and ``max_buffered`` may be changed between calls to
    :meth:`feed` (a connection allows more once its peer has authenticated).
    """

    def __init__(
        self,
        *,
        max_message_size: int = 16 * 1024 * 1024,
        max_chunk_size: int = 16 * 1024 * 1024,
        max_chunk_streams: int = 64,
        max_buffered: int | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        self.max_message_size = max_message_size
        self.budget = budget
        self.max_chunk_size = max_chunk_size
        self.max_chunk_streams = max_chunk_streams
        self.max_buffered = 2 * max_message_size if max_buffered is None else max_buffered
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.bytes_received = 0
        self._streams: dict[int, _InStream] = {}
        self._max_known_streams = 16 * max_chunk_streams
        self._n_partial = 0  # chunk streams with a message in progress
        self._partial_bytes = 0  # payload bytes held in those messages
        # Unparsed input: pieces not yet joined, their total size and how many bytes
        # are needed before parsing can make progress.  Joining only once ``_need`` is
        # reached keeps a large chunk trickling in small reads linear, not quadratic.
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._pending_counted = 0  # of _pending_len, what the shared budget holds
        self._need = 1
        self._failed = False

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Consume ``data``; return the messages completed by it, in wire order."""
        if self._failed:
            raise ChunkError("chunk stream already failed; the connection must be closed")
        size = len(data)
        if not size:
            return []
        self.bytes_received += size
        self._pending.append(bytes(data))
        self._pending_len += size
        if self._pending_len < self._need:
            if self.budget is not None:
                self._account_pending()
            return []
        pending = self._pending
        buf = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            out, pos, need = self._parse(buf)
        except ProtocolError as exc:
            self._failed = True
            self._pending = []
            self._pending_len = 0
            self.release()
            if isinstance(exc, ChunkError):
                raise
            raise ChunkError(str(exc)) from exc
        rest = len(buf) - pos
        self._pending = [buf[pos:]] if rest else []
        self._pending_len = rest
        self._need = need - pos
        if self.budget is not None and rest != self._pending_counted:
            self._account_pending()
        return out

    def _account_pending(self) -> None:
        """Keep the unparsed input tail in the shared budget too: with a large chunk
        size, a chunk waits there whole before it becomes part of a message."""
        budget = self.budget
        assert budget is not None
        delta = self._pending_len - self._pending_counted
        if delta > 0 and not budget.take(delta):
            self._failed = True
            self._pending = []
            self._pending_len = 0
            self.release()
            raise ChunkError(f"partial messages of all connections exceed {budget.limit} bytes")
        if delta < 0:
            budget.give(-delta)
        self._pending_counted = self._pending_len

    # The parser is one long function on purpose: attribute lookups and calls are the
    # dominant cost at thousands of chunks per second, so hot state lives in locals.
    def _parse(self, buf: bytes) -> tuple[list[Message], int, int]:
        """Parse as many complete chunks from ``buf`` as possible.

        Returns ``(messages, consumed, need)`` where ``need`` is the buffer length
        required before another attempt can make progress.
        """
        out: list[Message] = []
        n = len(buf)
        pos = 0
        need = 1
        cs = self.chunk_size
        streams = self._streams
        mv = memoryview(buf)
        be_i = _BE_I.unpack_from
        while True:
            if pos >= n:
                need = pos + 1
                break
            # --- basic header (5.3.1.1) -------------------------------------------
            b0 = buf[pos]
            fmt = b0 >> 6
            csid = b0 & 0x3F
            p = pos + 1
            if csid == 0:
                if p >= n:
                    need = p + 1
                    break
                csid = buf[p] + 64
                p += 1
            elif csid == 1:
                if p + 2 > n:
                    need = p + 2
                    break
                csid = buf[p] + (buf[p + 1] << 8) + 64
                p += 2
            st = streams.get(csid)

            # --- message header (5.3.1.2) -----------------------------------------
            if fmt == 3:
                if st is None:
                    raise ChunkError(f"type 3 chunk on chunk stream {csid} without a prior header")
                if st.rem:
                    # Continuation of the message in progress (5.3.1.2.4).  When the
                    # message uses an extended timestamp, Flash, FMS, librtmp and ffmpeg
                    # repeat it after every type-3 header, some encoders do not: accept
                    # the 4 bytes only if they equal the stored value (5.3.1.3 leaves
                    # this open; peeking is how robust servers cope with both).
                    if st.ext:
                        if p + 4 > n:
                            need = p + 4
                            break
                        if be_i(buf, p)[0] == st.delta:
                            p += 4
                    rem = st.rem
                    clen = cs if rem > cs else rem
                    if p + clen > n:
                        need = p + clen
                        break
                else:
                    # A new message repeating the previous header entirely, including the
                    # timestamp delta (5.3.1.2.4).  With an extended timestamp the 4-byte
                    # field is always present here and carries the delta.
                    delta = st.delta
                    if st.ext:
                        if p + 4 > n:
                            need = p + 4
                            break
                        delta = be_i(buf, p)[0]
                        p += 4
                    rem = st.length
                    clen = cs if rem > cs else rem
                    if p + clen > n:
                        need = p + clen
                        break
                    st.ts = (st.ts + delta) & _MASK32
                    if delta != st.delta:
                        st.delta = delta
                        st.cont = st.basic3 + delta.to_bytes(4, "big")
                    st.rem = rem
            else:
                if fmt < 2:
                    # type 0: 11 bytes with the message stream id; type 1: 7, reusing it
                    if fmt and st is None:
                        raise ChunkError(
                            f"type 1 chunk on chunk stream {csid} without a prior header"
                        )
                    size = 11 if fmt == 0 else 7
                    if p + size > n:
                        need = p + size
                        break
                    # One unpack reads the byte before the header too (the basic header
                    # byte) so the 24-bit fields come out as plain masked u32s.
                    x, y = _BE_II.unpack_from(buf, p - 1)
                    field = x & 0xFFFFFF
                    length = y >> 8
                    type_id = y & 0xFF
                    if st is None or not fmt:
                        stream_id = _LE_I.unpack_from(buf, p + 7)[0]  # little-endian (5.3.1.2.1)
                    else:
                        stream_id = st.stream_id
                    p += size
                else:
                    if st is None:
                        raise ChunkError(
                            f"type 2 chunk on chunk stream {csid} without a prior header"
                        )
                    if p + 3 > n:
                        need = p + 3
                        break
                    field = be_i(buf, p - 1)[0] & 0xFFFFFF
                    length = st.length
                    type_id = st.type_id
                    stream_id = st.stream_id
                    p += 3
                if length > self.max_message_size:
                    raise ChunkError(
                        f"message length {length} on chunk stream {csid} exceeds the "
                        f"limit of {self.max_message_size}"
                    )
                ext = field == _EXT
                if ext:
                    if p + 4 > n:
                        need = p + 4
                        break
                    field = be_i(buf, p)[0]
                    p += 4
                rem = length
                clen = cs if rem > cs else rem
                if p + clen > n:
                    need = p + clen
                    break
                # The whole first chunk is here: commit the header.
                if st is None:
                    if len(streams) >= self._max_known_streams:
                        raise ChunkError(f"more than {self._max_known_streams} chunk streams")
                    st = streams[csid] = _InStream(csid)
                elif st.rem:
                    # A new message header while a message is incomplete: the old one
                    # can never complete (its length is gone), drop it as an implicit
                    # Abort (5.4.2) -- librtmp does the same for type 0/1 headers.
                    self._drop(st)
                st.ts = field if fmt == 0 else (st.ts + field) & _MASK32
                st.delta = field
                st.ext = ext
                st.length = length
                st.type_id = type_id
                st.stream_id = stream_id
                st.cont = st.basic3 + field.to_bytes(4, "big") if ext else st.basic3
                st.rem = rem

            # --- chunk data -----------------------------------------------------------
            # p is at the data of a chunk whose data is complete in buf; rem counts the
            # message bytes still missing, this chunk included.
            if rem <= cs:
                # Last (often only) chunk of the message.
                end = p + rem
                payload = self._join(st, buf[p:end], rem) if st.parts else buf[p:end]
                st.rem = 0
                pos = end
                type_id = st.type_id
                out.append(Message(type_id, st.stream_id, st.ts, payload, csid))
                if 0 < type_id <= ABORT:
                    cs = self._control(type_id, payload, cs)
                continue

            # Multi-chunk remainder.  Its continuation chunks, if they follow directly,
            # start every ``stride`` bytes with the fixed header ``cont``.
            cont = st.cont
            h = len(cont)
            stride = cs + h
            nch = (rem + cs - 1) // cs  # chunks left in this message, this one included
            last = rem - (nch - 1) * cs  # data bytes in its final chunk
            end_all = p + (nch - 1) * stride + last
            # Chunks whose data is fully in buf (chunk i ends at p + i*stride + its size).
            avail = nch if end_all <= n else (n - p - cs) // stride + 1
            good = avail - 1  # continuation headers that could follow contiguously
            if good:
                hs = p + cs
                if buf[hs : hs + h] != cont:
                    good = 0
                else:
                    he = hs + good * stride
                    # Verify each header byte column with one strided slice; the leading
                    # run that matches in every column is what we may consume.
                    for o in range(h):
                        col = buf[hs + o : he : stride]
                        run = len(col) - len(col.lstrip(cont[o : o + 1]))
                        if run < good:
                            good = run
            if good == nch - 1:
                end = end_all
                taken = rem
            else:
                end = p + good * stride + cs
                taken = (good + 1) * cs
            seg: bytes | bytearray
            if good:
                joined = bytearray(mv[p:end])
                # Strip the continuation headers: each pass removes one header byte
                # per chunk, after which the stride shrinks by one.
                for o in range(h):
                    del joined[cs :: stride - o]
                seg = joined
            else:
                seg = buf[p:end]
            pos = end
            parts = st.parts
            if taken == rem:
                payload = self._join(st, seg, rem) if parts else bytes(seg)
                st.rem = 0
                type_id = st.type_id
                out.append(Message(type_id, st.stream_id, st.ts, payload, csid))
                if 0 < type_id <= ABORT:
                    cs = self._control(type_id, payload, cs)
                continue
            # Message stays partial: enforce the stream and memory budgets.
            if not parts:
                if self._n_partial >= self.max_chunk_streams:
                    raise ChunkError(
                        f"more than {self.max_chunk_streams} chunk streams with partial messages"
                    )
                self._n_partial += 1
            if self._partial_bytes + taken > self.max_buffered:
                raise ChunkError(
                    f"partial messages exceed the buffer budget of {self.max_buffered} bytes"
                )
            if self.budget is not None and not self.budget.take(taken):
                raise ChunkError(
                    f"partial messages of all connections exceed {self.budget.limit} bytes"
                )
            self._partial_bytes += taken
            parts.append(seg)
            st.rem = rem - taken
        return out, pos, need

    def _join(self, st: _InStream, last: bytes | bytearray, rem: int) -> bytes:
        """A message's payload from the parts held so far and its last ``rem`` bytes;
        what the parts held leaves the partial-message accounting and the budget."""
        st.parts.append(last)
        payload = b"".join(st.parts)
        st.parts = []
        self._n_partial -= 1
        held = st.length - rem
        self._partial_bytes -= held
        if self.budget is not None:
            self.budget.give(held)
        return payload

    def _control(self, type_id: int, payload: bytes, cs: int) -> int:
        """Act on Set Chunk Size / Abort (spec 5.4.1, 5.4.2); return the chunk size.

        They are honoured whatever chunk/message stream they arrive on: ignoring a
        misplaced Set Chunk Size would desynchronise the whole connection.
        """
        if len(payload) != 4:
            raise ChunkError(f"protocol control message {type_id} must have a 4-byte payload")
        value: int = _BE_I.unpack(payload)[0]
        if type_id == SET_CHUNK_SIZE:
            # 5.4.1: bit 31 must be zero; a size of 0 could never make progress.
            if value & 0x80000000 or not 1 <= value <= self.max_chunk_size:
                raise ChunkError(f"invalid chunk size {value}")
            # Applies to the very next chunk, even later in this same buffer.
            self.chunk_size = value
            return value
        if type_id == ABORT:
            st = self._streams.get(value)
            if st is not None and st.rem:
                self._drop(st)
        return cs

    def _drop(self, st: _InStream) -> None:
        """Discard the message in progress on ``st``."""
        if st.parts:
            held = st.length - st.rem
            self._n_partial -= 1
            self._partial_bytes -= held
            if self.budget is not None:
                self.budget.give(held)
            st.parts = []
        st.rem = 0

    @property
    def partial_bytes(self) -> int:
        """Payload bytes held in partial messages now."""
        return self._partial_bytes

    def release(self) -> None:
        """Forget every partial message and give their bytes back to the shared budget
        (the connection is closing; idempotent)."""
        for st in self._streams.values():
            st.parts = []
            st.rem = 0
        if self.budget is not None:
            self.budget.give(self._partial_bytes + self._pending_counted)
        self._partial_bytes = 0
        self._n_partial = 0
        self._pending_counted = 0
