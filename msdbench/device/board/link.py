# The serial link's framing, one implementation for both ends (the board runs it in MicroPython,
# the host imports the same source: msdbench/device/bundle.py).
#
#   frame = MAGIC(2) | seq u16 | kind u8 | length u16 | crc32 of those 7 bytes (4)
#           | payload (length bytes: one Thrift binary message) | crc32 of the payload (4)
#
# A frame whose header or payload CRC fails is dropped and counted, and the search for the next
# MAGIC resumes one byte later, so a corrupted, truncated or spliced frame never yields a
# message. `need()` says how many bytes to read next without reading past the end of a good
# frame: a board can block on exactly that many and never wait for bytes that will not come
# while a whole frame is already in hand. Sequence numbers pair a reply with its request; the
# board answers a repeated request from its cache instead of running it twice.
import binascii
import struct

MAGIC = b"\xa5\x5a"
HEADER = 11
TRAILER = 4
MAX_PAYLOAD = 32768
K_REQUEST, K_REPLY = 1, 2


def encode_frame(seq, kind, payload):
    head = MAGIC + struct.pack("<HBH", seq & 0xFFFF, kind, len(payload))
    return b"".join((head, struct.pack("<I", binascii.crc32(head) & 0xFFFFFFFF), payload,
                     struct.pack("<I", binascii.crc32(payload) & 0xFFFFFFFF)))


class FrameParser:
    def __init__(self):
        self.buf = bytearray()
        self.bad = 0      # frames dropped for a failed header or payload CRC (or a bad length)
        self.junk = 0     # bytes skipped while looking for MAGIC

    def feed(self, data):
        self.buf += data

    def _drop(self, n):
        self.buf = self.buf[n:]

    def next(self):
        """(seq, kind, payload) of the next good frame, or None until more bytes arrive."""
        while True:
            buf = self.buf
            i = buf.find(MAGIC)
            if i < 0:
                keep = 1 if buf and buf[-1] == MAGIC[0] else 0
                self.junk += len(buf) - keep
                self._drop(len(buf) - keep)
                return None
            if i:
                self.junk += i
                self._drop(i)
                buf = self.buf
            if len(buf) < HEADER:
                return None
            seq, kind, n, hcrc = struct.unpack_from("<HBHI", buf, 2)
            if n > MAX_PAYLOAD or binascii.crc32(buf[:7]) & 0xFFFFFFFF != hcrc:
                self.bad += 1
                self._drop(1)
                continue
            end = HEADER + n + TRAILER
            if len(buf) < end:
                return None
            payload = bytes(buf[HEADER:HEADER + n])
            if binascii.crc32(payload) & 0xFFFFFFFF != struct.unpack_from("<I", buf, HEADER + n)[0]:
                self.bad += 1
                self._drop(1)
                continue
            self._drop(end)
            return seq, kind, payload

    def need(self):
        """Bytes that can be read now without reading past the end of a good frame."""
        buf = self.buf
        if len(buf) >= HEADER and buf[:2] == MAGIC:
            n = struct.unpack_from("<H", buf, 5)[0]
            return max(1, HEADER + n + TRAILER - len(buf))
        return max(1, HEADER - len(buf))
