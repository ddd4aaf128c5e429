"""Checking a WHIP/WHEP offer before a peer is built, and what we negotiate.

A WHIP/WHEP offer is a complete JSEP offer (RFC 8829 §5.2; RFC 9725 §4.2): ICE
credentials, DTLS fingerprints and, since we do not take trickled candidates, the
candidates gathered so far. Anything that would make aiortc raise deep inside
``setRemoteDescription`` (or assert: its parser uses ``assert``) is caught here and
answered with ``400`` by the web layer.
"""

from __future__ import annotations

from aiortc import RTCPeerConnection, RTCRtpTransceiver, sdp
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

# What the session core carries from and to WebRTC (docs/media-pipeline.md); aiortc
# also offers G.722/PCMU/PCMA, which nothing else in the gateway speaks.
VIDEO_CODECS = ("vp8", "h264")
AUDIO_CODECS = ("opus",)
ACCEPTED = {"video": VIDEO_CODECS, "audio": AUDIO_CODECS}
SENDING = ("sendonly", "sendrecv")
RECEIVING = ("recvonly", "sendrecv")


class OfferError(ValueError):
    """The offer cannot be answered; the message is safe to show to the client."""


def check_offer(text: str, *, publish: bool) -> sdp.SessionDescription:
    """Parse and sanity-check an offer. ``publish``: WHIP (the client sends media),
    else WHEP (the client receives)."""
    if not text.startswith("v=0"):
        raise OfferError("The body is not an SDP offer (RFC 8866: it starts with 'v=0').")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises ValueError, AssertionError, ...
        raise OfferError("The SDP offer could not be parsed.") from exc
    kinds: list[str] = []
    for media in description.media:
        if media.kind not in ACCEPTED:
            raise OfferError(f"Only audio and video are accepted, not {media.kind!r}.")
        if media.kind in kinds:
            raise OfferError(f"At most one {media.kind} section is accepted.")
        kinds.append(media.kind)
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise OfferError("The offer lacks ICE credentials (a=ice-ufrag, a=ice-pwd).")
        if media.dtls is None or not media.dtls.fingerprints:
            raise OfferError("The offer lacks a DTLS fingerprint (a=fingerprint).")
    if not kinds:
        raise OfferError("The offer has no audio or video section.")
    _check_mids_and_bundle(description)
    wanted = SENDING if publish else RECEIVING
    if not any((m.direction or "sendrecv") in wanted for m in description.media):
        verb = "sends" if publish else "receives"
        raise OfferError(f"No media section of the offer {verb} media.")
    return description


def _check_mids_and_bundle(description: sdp.SessionDescription) -> None:
    """Every media section names itself (``a=mid``, unique) and a BUNDLE group names only
    those: aiortc takes the transport of a BUNDLE group from its first mid and fails deep
    inside ``createAnswer`` (and again in ``close``) when that section is absent.

    RFC 8829 §5.2.1 (JSEP offers carry ``a=mid`` in every m= section), RFC 5888 §5
    (identification tags are unique), RFC 8843 §7.2 (a BUNDLE group names m= sections of
    the offer, each once); aiortc handles one BUNDLE group."""
    mids: list[str] = []
    for media in description.media:
        mid = media.rtp.muxId
        if not mid:
            raise OfferError("Every media section of the offer needs an a=mid (RFC 8829 §5.2.1).")
        if mid in mids:
            raise OfferError(f"The a=mid {mid!r} names two media sections (RFC 5888 §5).")
        mids.append(mid)
    bundles = [g for g in description.group if g.semantic == "BUNDLE"]
    if len(bundles) > 1:
        raise OfferError("The offer has more than one BUNDLE group; one is accepted.")
    for group in bundles:
        named = [str(item) for item in group.items]
        if not named:
            raise OfferError("The BUNDLE group names no media section (RFC 8843 §7.2).")
        if len(set(named)) != len(named):
            raise OfferError("The BUNDLE group names a media section twice (RFC 8843 §7.2).")
        absent = [m for m in named if m not in mids]
        if absent:
            raise OfferError(
                f"The BUNDLE group names a=mid {absent[0]!r}, which no media section has "
                "(RFC 8843 §7.2)."
            )


def codec_name(codec: RTCRtpCodecParameters) -> str:
    return codec.name.lower()


def restrict_codecs(pc: RTCPeerConnection) -> dict[str, str]:
    """Keep only the codecs the gateway handles in each transceiver, in the offer's
    order (RFC 8829 §5.3.1: the answerer should keep the offerer's preference), and
    return the first one of each kind: the codec aiortc will send, and the one a
    browser sends first.

    ``RTCRtpTransceiver._codecs`` is what aiortc negotiated in ``setRemoteDescription``;
    it is private (contract-tested) because ``setCodecPreferences`` only applies to
    transceivers that exist before the offer arrives."""
    negotiated: dict[str, str] = {}
    for transceiver in pc.getTransceivers():
        kind = transceiver.kind
        accepted = ACCEPTED.get(kind, ())
        keep = [c for c in transceiver._codecs if codec_name(c) in accepted]
        media = {c.payloadType for c in keep}
        # RTX stays for the codecs we keep (RFC 4588, "apt" names the original).
        keep += [
            c
            for c in transceiver._codecs
            if codec_name(c) == "rtx" and c.parameters.get("apt") in media
        ]
        if not media:
            raise OfferError(
                f"No {kind} codec in common: the gateway takes "
                f"{'/'.join(a.upper() for a in accepted)}."
            )
        transceiver._codecs = sorted(keep, key=transceiver._codecs.index)
        negotiated[kind] = codec_name(keep[0])
    return negotiated


def media_ssrc(description: sdp.SessionDescription, transceiver: RTCRtpTransceiver) -> int | None:
    """The remote's media SSRC for a transceiver (the first ``a=ssrc``: the second of an
    ``FID`` group is RTX, RFC 4588 §8.1), when the offer lists one."""
    for media in description.media:
        if media.rtp.muxId != transceiver.mid:
            continue
        for group in media.ssrc_group:
            if group.semantic == "FID" and group.items:
                return int(group.items[0])
        if media.ssrc:
            return int(media.ssrc[0].ssrc)
    return None
