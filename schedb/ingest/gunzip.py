"""A gzip file read so that damage costs only what follows it.

Python's gzip module decompresses 8 KiB of input at a time and, when zlib reports damage,
raises without the output of that step: up to a few hundred lines before the damage were
lost. Here each step is undone on damage and its input
fed again byte by byte, so every byte zlib produced before the damage is delivered; the
error is raised on the read after that (``EOFError`` for a stream cut short,
``zlib.error`` for damaged data or a wrong checksum).
"""

from __future__ import annotations

import io
import zlib

STEP = 64 << 10  # compressed bytes per step
BUFFER = 1 << 20  # decompressed bytes per read of the buffered reader
GZIP = 16 + zlib.MAX_WBITS  # zlib's wbits for a gzip header and trailer (checksum and size checked)


def open_gzip(path) -> io.BufferedReader:
    return io.BufferedReader(_Gunzip(open(path, "rb")), BUFFER)


class _Gunzip(io.RawIOBase):
    """The decompressed bytes of a gzip file (all its members) as a raw stream."""

    def __init__(self, f):
        self.f, self.inp, self.out = f, b"", b""
        self.d, self.fresh = zlib.decompressobj(GZIP), True  # fresh: no byte of this member fed yet
        self.error: Exception | None = None
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.out and not self.done:
            if self.error is not None:
                raise self.error
            self.out = self._step(len(b))
        n = min(len(b), len(self.out))
        b[:n], self.out = self.out[:n], self.out[n:]
        return n

    def close(self):
        self.f.close()
        super().close()

    def _step(self, limit: int) -> bytes:
        if not self.inp:
            self.inp = self.f.read(STEP)
            if not self.inp:
                self.done = self.fresh  # the last member ended cleanly (or the file is empty)
                if not self.done:
                    self.error = EOFError("compressed file ended before the end of its stream")
                return b""
        before = self.d.copy()
        try:
            out = self.d.decompress(self.inp, limit)
        except zlib.error as e:
            self.error = e
            return _salvage(before, self.inp)
        self.fresh = False
        if self.d.eof:  # a member ended: another may follow (zero padding after the last is ignored)
            rest = self.d.unused_data
            self.inp = rest if rest.strip(b"\0") else b""
            self.d, self.fresh = zlib.decompressobj(GZIP), True
        else:
            self.inp = self.d.unconsumed_tail
        return out


def _salvage(d, data: bytes) -> bytes:
    """What ``d`` makes of ``data`` up to the byte where it finds the damage."""
    out = []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i:i + 1]))
        except zlib.error:
            break
    return b"".join(out)
