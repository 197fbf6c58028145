"""Files in transit (common/files.cc): each chunk is one zstd frame of at
most 1 MiB of content that declares its content size in its header -- the
daemon refuses any other chunk, and so does this client."""
from __future__ import annotations

from typing import Iterator

import zstandard

from . import limits
from .errors import CommunicationError

# zstd level 1, as the daemon and agent use: fast enough for 50 MB under
# software emulation, and text still shrinks well.
_LEVEL = 1


def compress_chunks(data: bytes) -> Iterator[bytes]:
    """`data` as chunk payloads, compressed one at a time (an empty file has none)."""
    compressor = zstandard.ZstdCompressor(level=_LEVEL, write_content_size=True)
    view = memoryview(data)
    for off in range(0, len(data), limits.FILE_CHUNK_BYTES):
        yield compressor.compress(view[off : off + limits.FILE_CHUNK_BYTES])


class ChunkAssembler:
    """Decompresses a file's chunks as they arrive, checking each one's
    header and the running total before anything is allocated."""

    def __init__(self) -> None:
        self._parts = bytearray()
        self._decompressor = zstandard.ZstdDecompressor()

    def add(self, chunk: bytes) -> None:
        if len(chunk) > limits.MAX_FILE_CHUNK_WIRE_BYTES:
            raise CommunicationError("sandboxd sent a file chunk that is too large")
        try:
            declared = zstandard.frame_content_size(chunk)
        except zstandard.ZstdError as e:
            raise CommunicationError(f"sandboxd sent a damaged file chunk: {e}") from None
        if declared < 0 or declared > limits.FILE_CHUNK_BYTES:
            raise CommunicationError("sandboxd sent a file chunk that does not declare a size of at most 1 MiB")
        if len(self._parts) + declared > limits.MAX_FILE_BYTES:
            raise CommunicationError("sandboxd sent more than the largest file")
        obj = self._decompressor.decompressobj()
        try:
            out = obj.decompress(chunk)
        except zstandard.ZstdError as e:
            raise CommunicationError(f"sandboxd sent a file chunk that does not decompress: {e}") from None
        if not obj.eof or obj.unused_data or len(out) != declared:
            raise CommunicationError("sandboxd sent a file chunk that is not exactly one zstd frame of its declared size")
        self._parts += out

    def finish(self, size: int) -> bytes:
        if size != len(self._parts):
            raise CommunicationError("sandboxd sent a file whose size does not add up")
        return bytes(self._parts)
