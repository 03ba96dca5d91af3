"""A layer blob as the stream of its tar: read, decompressed and hashed on the way, ahead of the
tar reader in a thread of its own (zlib and hashlib release the GIL).

    raw = HashingReader(open(blob, "rb", buffering=0), "sha256")
    plain = HashingReader(decompressor(layer_compression(media_type), raw), "sha256")
    with Prefetcher(plain, raw) as feed:
        reader = TarReader(feed.chunk)      # tarstream.py
        ...
    raw.digest(), plain.digest()            # the blob's digest and the diff_id

Used by the extraction (`extract.py`), which checks both digests.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import queue
import threading
import zlib
from typing import Literal, Protocol, cast

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_NONDISTRIBUTABLE = "application/vnd.oci.image.layer.nondistributable.v1.tar"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"

Compression = Literal["none", "gzip", "zstd"]
_MEDIA_TYPES: dict[str, Compression] = {
    OCI_LAYER: "none",
    OCI_LAYER + "+gzip": "gzip",
    OCI_LAYER + "+zstd": "zstd",
    OCI_LAYER_NONDISTRIBUTABLE: "none",
    OCI_LAYER_NONDISTRIBUTABLE + "+gzip": "gzip",
    OCI_LAYER_NONDISTRIBUTABLE + "+zstd": "zstd",
    DOCKER_LAYER: "none",
    DOCKER_LAYER + ".gzip": "gzip",
    DOCKER_LAYER_FOREIGN + ".gzip": "gzip",
}

_CHUNK = 1 << 20
# Chunks of _CHUNK bytes the reading thread may be ahead of the tar reader.
_PREFETCH_CHUNKS = 8


def layer_compression(media_type: str) -> Compression:
    """The compression of a layer media type; ValueError for one that is not a tar layer."""
    base = media_type.split(";", 1)[0].strip()
    try:
        return _MEDIA_TYPES[base]
    except KeyError:
        raise ValueError(f"not a supported layer media type: {media_type!r}") from None


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class StreamError(Exception):
    """Reading or decompressing the blob failed (kept apart from errors writing the rootfs)."""


class HashingReader:
    """Passes a stream through, hashing it."""

    def __init__(self, source: Readable, algorithm: str) -> None:
        self._source = source
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.pos = 0
        self.eof = False

    def read(self, size: int = -1, /) -> bytes:
        if self.eof:
            return b""
        try:
            data = self._source.read(size)
        except Exception as exc:
            raise StreamError(f"{type(exc).__name__}: {exc}") from exc
        if not data:
            self.eof = True
            return b""
        self._hash.update(data)
        self.pos += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) the rest of the stream."""
        while self.read(_CHUNK):
            pass

    def digest(self) -> str:
        return f"{self._algorithm}:{self._hash.hexdigest()}"


class Prefetcher:
    """Reads `plain` to its end in a thread, then drains `raw` (so both are hashed whole),
    handing `plain`'s chunks to the tar reader (`chunk`). Errors of the thread are raised in
    the reader, in stream order.

    Use as a context manager: leaving it stops the thread, after which `plain` and `raw` may
    be touched again (e.g. to drain `raw` and tell a corrupt blob from a bad tar).
    """

    _END = object()

    def __init__(self, plain: HashingReader, raw: HashingReader) -> None:
        self._plain = plain
        self._raw = raw
        self._queue: queue.Queue[object] = queue.Queue(maxsize=_PREFETCH_CHUNKS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="layer-reader", daemon=True)
        self.eof = False

    def __enter__(self) -> Prefetcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # a producer waiting for room sees it within 0.1 s
        self._thread.join()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._plain.read(_CHUNK)
                if not data:
                    self._raw.drain()
                    self._put(self._END)
                    return
                self._put(data)
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)

    def _put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def chunk(self) -> bytes:
        """The next chunk from the thread; b"" at the end."""
        if self.eof:
            return b""
        item = self._queue.get()
        if item is self._END:
            self.eof = True
            return b""
        if isinstance(item, BaseException):
            self.eof = True
            raise item
        assert isinstance(item, bytes)
        return item

    def drain(self) -> None:
        """Let the thread finish the stream (both hashes complete)."""
        while self.chunk():
            pass


class Gunzip:
    """A gzip stream (one member or several, as Go's reader and gzip.GzipFile take them),
    decompressed by zlib alone: it checks each member's CRC-32 and length itself, so nothing
    is computed twice (gzip.GzipFile computes the CRC again, in Python-level calls)."""

    _MAGIC = b"\x1f\x8b"

    def __init__(self, raw: Readable) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b""  # compressed bytes read but not yet given to zlib
        self._done = False
        self._started = False

    def read(self, size: int = -1, /) -> bytes:
        while not self._done:
            if self._inflate.eof:
                rest = self._inflate.unused_data + self._pending
                self._pending = b""
                while len(rest) < 2:
                    more = self._raw.read(_CHUNK)
                    if not more:
                        break
                    rest += more
                if not rest:
                    self._done = True
                    break
                if not rest.startswith(self._MAGIC):
                    raise gzip.BadGzipFile("Not a gzipped file: bytes after the last member")
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._pending = rest
            data = self._pending or self._raw.read(_CHUNK)
            self._pending = b""
            if not self._started:
                self._started = True
                if data and not (self._MAGIC.startswith(data[:2]) and len(data) >= 2):
                    raise gzip.BadGzipFile("Not a gzipped file (the media type says gzip)")
            if not data:
                if not self._inflate.eof:
                    raise EOFError(
                        "Compressed file ended before the end-of-stream marker was reached"
                    )
                continue
            # At most _CHUNK out per call: a small blob must not inflate to gigabytes at once.
            out = self._inflate.decompress(data, _CHUNK)
            self._pending = self._inflate.unconsumed_tail  # (after a member: unused_data)
            if out:
                return out
        return b""


def decompressor(compression: Compression, raw: HashingReader) -> Readable:
    """`raw` decompressed; LookupError where this Python cannot decompress it."""
    if compression == "none":
        return raw
    if compression == "gzip":
        return Gunzip(raw)
    try:  # Python 3.14+ has zstd in the standard library
        stdlib_zstd = importlib.import_module("compression.zstd")
    except ImportError:
        pass
    else:
        return cast(Readable, stdlib_zstd.ZstdFile(raw))
    try:
        zstandard = importlib.import_module("zstandard")
    except ImportError:
        raise LookupError(
            "the layer is zstd-compressed, and this Python has no zstd decoder: install the "
            "`zstandard` package (pip install zstandard), or use Python 3.14+"
        ) from None
    # Layers may hold several zstd frames (zstd:chunked); read them all.
    return cast(Readable, zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
