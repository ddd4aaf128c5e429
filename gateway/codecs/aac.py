"""AAC: the AudioSpecificConfig an FLV AAC sequence header and MP4 carry."""

from __future__ import annotations

# Sampling frequency index of AudioSpecificConfig (ISO/IEC 14496-3 §1.6.3.4, Table 1.18)
_AAC_RATE_INDEX = {
    rate: index
    for index, rate in enumerate(
        (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
    )
}


def audio_specific_config(sample_rate: int, channels: int, object_type: int = 2) -> bytes:
    """AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) for AAC-LC without extensions.

    5 bits audioObjectType (2 = AAC LC), 4 bits samplingFrequencyIndex, 4 bits
    channelConfiguration, then GASpecificConfig: frameLengthFlag, dependsOnCoreCoder and
    extensionFlag, all 0 (1024-sample frames).
    """
    index = _AAC_RATE_INDEX.get(sample_rate)
    if index is None or not 1 <= channels <= 7:
        raise ValueError(f"no AudioSpecificConfig for {sample_rate} Hz x {channels}")
    bits = (object_type << 11) | (index << 7) | (channels << 3)
    return bits.to_bytes(2, "big")
