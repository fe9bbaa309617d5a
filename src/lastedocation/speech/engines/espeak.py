"""espeak-ng's Persian voice: robotic, but on every server that has the Debian package,
with no model files and no licence question for what it says.

The text goes to espeak-ng on standard input (`--stdin`), never on a command line and
never through a shell: text that begins with "-" is read, not taken for an option.
The wav it writes to standard output carries a placeholder length (it cannot seek
back), so the samples are taken as everything after the `data` chunk's header.
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np

from lastedocation.speech.tts import SpeechUnavailable, Voice

BINARY = "espeak-ng"
SAMPLE_RATE = 22_050
DEFAULT_WPM = 175  # espeak-ng's own default, our speed 1.0
MIN_WPM, MAX_WPM = 80, 700  # below 80 espeak-ng refuses; up to 4x through its sonic speed-up
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # a sentence is short; this is about 25 minutes of audio
INSTALL = "install the Debian package espeak-ng (`apt-get install espeak-ng`, or `make voice`)"

VOICE = Voice(
    id="espeak-fa",
    engine="espeak",
    name="eSpeak NG Persian",
    language="fa",
    sample_rate=SAMPLE_RATE,
    licence="GPL-3.0-or-later",
    note="Formant synthesis: clear but robotic; always available where espeak-ng is installed.",
)


def available() -> bool:
    return shutil.which(BINARY) is not None


class EspeakSpeaker:
    """Runs one espeak-ng process per sentence (a few tens of milliseconds each)."""

    def __init__(self, voice: Voice = VOICE, *, timeout_s: float = 60.0) -> None:
        self.voice = voice
        self.timeout_s = timeout_s
        binary = shutil.which(BINARY)
        if binary is None:
            raise SpeechUnavailable(f"espeak-ng is not installed on this server: {INSTALL}")
        self.binary = binary

    def synthesize(self, sentence: str, *, speed: float = 1.0) -> np.ndarray:
        wpm = min(MAX_WPM, max(MIN_WPM, round(DEFAULT_WPM * speed)))
        command = [self.binary, "-v", self.voice.language, "-s", str(wpm), "-b", "1"]
        try:
            done = subprocess.run(
                [*command, "--stdin", "--stdout"],
                input=sentence.encode("utf-8"),
                capture_output=True,
                timeout=self.timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SpeechUnavailable(
                f"espeak-ng did not finish a sentence within {self.timeout_s:g} s"
            ) from None
        except OSError as exc:
            raise SpeechUnavailable(f"espeak-ng could not be started ({exc}): {INSTALL}") from None
        if done.returncode != 0:
            problem = done.stderr.decode("utf-8", "replace").strip()[:300]
            raise SpeechUnavailable(f"espeak-ng failed (exit {done.returncode}): {problem}")
        return wav_samples(done.stdout[:MAX_OUTPUT_BYTES])


def wav_samples(data: bytes) -> np.ndarray:
    """The 16-bit mono samples of a RIFF/WAVE byte string whose lengths may be wrong."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SpeechUnavailable("espeak-ng wrote no wav audio")
    position = 12
    while position + 8 <= len(data):
        chunk = data[position : position + 4]
        size = struct.unpack("<I", data[position + 4 : position + 8])[0]
        body = position + 8
        if chunk == b"fmt ":
            _, channels, rate = struct.unpack("<HHI", data[body : body + 8])
            bits = struct.unpack("<H", data[body + 14 : body + 16])[0]
            if (channels, rate, bits) != (1, SAMPLE_RATE, 16):
                raise SpeechUnavailable(
                    f"espeak-ng wrote {channels}-channel {bits}-bit audio at {rate} Hz, "
                    f"not mono 16-bit at {SAMPLE_RATE} Hz"
                )
        if chunk == b"data":
            pcm = data[body : body + (len(data) - body) // 2 * 2]
            return (np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0).copy()
        position = body + size + (size & 1)
    raise SpeechUnavailable("espeak-ng wrote a wav without audio data")
