"""The audio formats a door may negotiate, and the conversions between wire and PCM.

One table (DESIGN §3) decides what is accepted, so every door refuses the same things with the
same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from transports.codecs import g711


class Encoding(StrEnum):
    LINEAR16 = "linear16"
    PCMU = "pcmu"
    PCMA = "pcma"


SUPPORTED_RATES: dict[Encoding, tuple[int, ...]] = {
    Encoding.LINEAR16: (8000, 16000, 24000, 48000),
    Encoding.PCMU: (8000,),
    Encoding.PCMA: (8000,),
}

MIN_CHUNK_MS = 10
MAX_CHUNK_MS = 100


class FormatError(ValueError):
    """A format or a chunk that the gateway does not accept; the message is shown to the caller."""


@dataclass(frozen=True, slots=True)
class AudioSpec:
    """One direction's audio on the wire: encoding and sample rate, always mono."""

    encoding: Encoding
    sample_rate: int

    def __post_init__(self) -> None:
        rates = SUPPORTED_RATES.get(self.encoding)
        if rates is None or self.sample_rate not in rates:
            allowed = "; ".join(
                f"{enc.value.upper()} at {', '.join(str(r) for r in rs)} Hz"
                for enc, rs in SUPPORTED_RATES.items()
            )
            raise FormatError(
                f"unsupported audio format {self.encoding.value.upper()} at "
                f"{self.sample_rate} Hz; supported: {allowed}"
            )

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is Encoding.LINEAR16 else 1

    def bytes_per_ms(self) -> float:
        return self.sample_rate * self.bytes_per_sample / 1000

    def duration_ms(self, payload_len: int) -> float:
        return payload_len / self.bytes_per_ms()

    def label(self) -> str:
        return f"{self.encoding.value}/{self.sample_rate}"

    def check_chunk(self, payload: bytes) -> None:
        """Refuses chunks that are not whole samples or lie outside 10–100 ms."""
        if len(payload) % self.bytes_per_sample:
            raise FormatError(
                f"audio chunk of {len(payload)} bytes is not a whole number of "
                f"{self.bytes_per_sample}-byte samples"
            )
        ms = self.duration_ms(len(payload))
        if not MIN_CHUNK_MS <= ms <= MAX_CHUNK_MS:
            raise FormatError(
                f"audio chunk of {ms:.1f} ms ({len(payload)} bytes of {self.label()}) is outside "
                f"the accepted {MIN_CHUNK_MS}–{MAX_CHUNK_MS} ms"
            )

    def to_pcm(self, payload: bytes) -> bytes:
        if self.encoding is Encoding.PCMU:
            return g711.ulaw_decode(payload)
        if self.encoding is Encoding.PCMA:
            return g711.alaw_decode(payload)
        return payload

    def from_pcm(self, pcm: bytes) -> bytes:
        if self.encoding is Encoding.PCMU:
            return g711.ulaw_encode(pcm)
        if self.encoding is Encoding.PCMA:
            return g711.alaw_encode(pcm)
        return pcm
