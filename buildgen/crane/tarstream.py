"""A tar stream reader for layer extraction: headers parsed lean, file data handed out as views.

    reader = TarReader(chunks)          # chunks: next() gives bytes, b"" at the end
    while (entry := reader.next()) is not None:
        for piece in reader.data():     # memoryviews of the stream, no copies
            ...

Why not `tarfile`: it builds a TarInfo through several layers of calls per member and copies
every byte of file data twice on the way out; for a layer of 60,000 files that is seconds of an
extraction whose other half is the kernel's. This reader does what Go's archive/tar (Docker's,
BuildKit's) does with the formats layers use, and refuses the rest:

- ustar, pax and GNU headers; every header's checksum is checked (unsigned or signed sum, in
  octal); numbers read as Go reads them (octal digits only, spaces and NULs trimmed at both
  ends; GNU base-256 when the top bit is set, within int64); the ustar `prefix` joined to the
  name (ustar/pax only, as Go does: a GNU header's prefix area holds other fields); device
  numbers read in ustar and GNU headers (V7 ones have none);
- pax extended headers (`x`, the last one before an entry) override path, linkpath, size, uid,
  gid, mtime and atime (exactly, as nanoseconds; numbers and times in Go's syntax), an empty
  value keeping the header's, and carry `SCHILY.xattr.*` (NUL padding after the last record is
  taken, as tarfile takes it; Go refuses it); GNU long names and long link names
  (`L`, `K`; an empty one names nothing); pax global headers (`g`) are checked and skipped, as
  Docker's extraction does, and what came before one applies to nothing (Go returns a `g`
  header as an entry of its own);
- a regular file named with a trailing slash in an old-style header (`\\0` type) is a directory;
  directories lose trailing slashes; links, directories, devices and FIFOs have no data;
- the archive ends at a zero block, which must be followed by another zero block or the end of
  the stream (Go's rule); it also ends where the stream ends at a header boundary, or in the
  padding after data (Go's reader too). A stream that ends inside a header or inside data, a bad
  checksum, a bad number, sparse files (`S`, `GNU.sparse.*`), a negative size, uid or gid, or an
  extended header that does not parse (or has a NUL in a key or a path) is a `TarError`.

Names and PAX values are decoded as UTF-8 with surrogateescape (bytes that are not UTF-8 survive
the round trip through `os.fsencode`), as tarfile does with those settings.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
_SIGNED = struct.Struct("148b8x356b")
# Types whose size is the length of data that follows (Go: everything but header-only types).
_HEADER_ONLY = frozenset("123456")  # link, symlink, char, block device, directory, FIFO
_MAX_EXTENDED = 1 << 20  # an extended header (pax, long name) larger than this is refused
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_PAX_STRINGS = frozenset((b"path", b"linkpath", b"uname", b"gname"))  # no NULs in these

REGULAR = "0"
HARDLINK = "1"
SYMLINK = "2"
CHAR = "3"
BLOCK_DEVICE = "4"
DIRECTORY = "5"
FIFO = "6"
_REGULAR_TYPES = frozenset(("0", "\0", "7"))  # 7: contiguous file, a regular file everywhere


class TarError(Exception):
    """The stream is not a tar archive this reader takes (see the module docstring)."""


class Entry:
    """One member: `type` is one of "0" (regular, also for "\\0" and "7"), "1" hardlink,
    "2" symlink, "3" char, "4" block, "5" directory, "6" FIFO, or the raw type of another."""

    __slots__ = (
        "atime_ns", "devmajor", "devminor", "gid", "linkname", "mode", "mtime_ns", "name",
        "offset", "size", "type", "uid", "xattrs",
    )  # fmt: skip

    def __init__(self) -> None:
        self.name = ""
        self.type = REGULAR
        self.mode = 0
        self.uid = 0
        self.gid = 0
        self.size = 0
        self.mtime_ns = 0
        self.atime_ns: int | None = None
        self.linkname = ""
        self.devmajor = 0  # of a character or block device (read in ustar and GNU headers)
        self.devminor = 0
        self.xattrs: list[tuple[str, bytes]] = []
        self.offset = 0  # of its header in the stream

    def isreg(self) -> bool:
        return self.type == REGULAR

    def __repr__(self) -> str:
        return f"Entry({self.name!r}, type={self.type!r}, size={self.size})"


def _text(field: bytes) -> str:
    end = field.find(b"\0")
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A header number as Go reads it: base-256 when the first byte's top bit is set (GNU:
    big-endian two's complement, the sign in the next bit; past int64 refused), else octal."""
    if field[0] & 0x80:
        bits = 8 * len(field) - 1
        value = int.from_bytes(field, "big") & ((1 << bits) - 1)
        if value >> (bits - 1):
            value -= 1 << bits
        if not -(1 << 63) <= value < 1 << 63:
            raise TarError(f"a header number is out of range: {bytes(field)!r}")
        return value
    return _octal(field)


def _octal(field: bytes) -> int:
    """Octal digits, spaces and NULs trimmed at both ends (fields are NUL-filled), cut at a NUL.
    Only digits: Python's int() would also take a sign, "_" and other white space; Go does not."""
    digits = field.strip(b" \0")
    end = digits.find(b"\0")
    if end >= 0:
        digits = digits[:end]
    if digits.translate(None, b"01234567"):
        raise TarError(f"a header number is not octal: {bytes(field)!r}")
    return int(digits, 8) if digits else 0


def _decimal(text: str) -> int:
    """A pax number as Go reads it (strconv.ParseInt): a sign, ASCII digits, within int64.
    Python's int() would also take spaces, "_" and other scripts' digits."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(text)
    value = int(text)
    if not -(1 << 63) <= value < 1 << 63:
        raise ValueError(text)
    return value


def _ns(text: str) -> int:
    """A pax time ("1700000000.123456789") in nanoseconds, exactly (a float would round), as
    Go's parsePAXTime reads it: digits past the ninth are cut off, toward zero (also for a
    negative time), and only its syntax is taken (no exponent, no "inf")."""
    seconds, _, fraction = text.partition(".")
    if fraction.strip("0123456789"):
        raise ValueError(text)
    nanos = int(fraction[:9].ljust(9, "0"))
    return _decimal(seconds) * 1_000_000_000 + (-nanos if seconds.startswith("-") else nanos)


def _pax_records(data: bytes) -> dict[str, str]:
    """The records of a pax extended header ("%d %s=%s\\n", the length counting itself)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # NUL padding after the last record
            if data[pos:].strip(b"\0"):
                raise TarError("a pax header has bytes after its NUL padding")
            break
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            raise TarError("a pax header record has no length")
        length = int(data[pos:space])
        record = data[space + 1 : pos + length]
        if length <= space - pos + 1 or pos + length > len(data) or not record.endswith(b"\n"):
            raise TarError("a pax header record has a wrong length")
        key, equals, value = record[:-1].partition(b"=")
        if not equals or not key:
            raise TarError("a pax header record has no key")
        if b"\0" in key or (key in _PAX_STRINGS and b"\0" in value):  # refused, as by Go
            raise TarError(f"a pax header record has a NUL byte in {key!r}")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarReader:
    """Reads entries from `read_chunk` (a callable giving the next chunk of the stream, b""
    at its end). `offset` is the number of stream bytes consumed."""

    def __init__(self, read_chunk: Callable[[], bytes]) -> None:
        self._read_chunk = read_chunk
        self._chunk = memoryview(b"")
        self._pos = 0
        self._eof = False
        self.offset = 0
        self._left = 0  # data bytes of the current entry not yet handed out
        self._padding = 0  # then this many bytes to the next block boundary
        self.ended = False

    # -- the stream ------------------------------------------------------------------------

    def _available(self) -> bool:
        """Whether the current chunk has bytes left (reading the next chunk if needed)."""
        while self._pos >= len(self._chunk):
            if self._eof:
                return False
            data = self._read_chunk()
            if not data:
                self._eof = True
                return False
            self._chunk, self._pos = memoryview(data), 0
        return True

    def _read(self, size: int) -> bytes:
        """Exactly `size` bytes, fewer only at the end of the stream."""
        parts: list[bytes] = []
        need = size
        while need and self._available():
            piece = self._chunk[self._pos : self._pos + need]
            self._pos += len(piece)
            need -= len(piece)
            parts.append(piece.tobytes())
        self.offset += size - need
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _skip(self, size: int) -> bool:
        """Skips `size` bytes; False if the stream ends first."""
        while size and self._available():
            step = min(size, len(self._chunk) - self._pos)
            self._pos += step
            self.offset += step
            size -= step
        return not size

    # -- entries ---------------------------------------------------------------------------

    def data(self, limit: int = 1 << 20) -> Iterator[memoryview]:
        """The current entry's data, in views of at most `limit` bytes (valid until the next
        call on this reader)."""
        while self._left:
            if not self._available():
                raise TarError("unexpected end of data (the stream ends inside a file's data)")
            view = self._chunk[self._pos : self._pos + min(self._left, limit)]
            self._pos += len(view)
            self.offset += len(view)
            self._left -= len(view)
            yield view

    def next(self) -> Entry | None:
        """The next entry, or None at the end of the archive."""
        if self.ended:
            return None
        if not self._skip(self._left):
            raise TarError("unexpected end of data (the stream ends inside an entry's data)")
        padding, self._left, self._padding = self._padding, 0, 0
        if not self._skip(padding):
            self._end_in_padding()
            return None
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            offset = self.offset
            block = self._read(BLOCK)
            if not block:
                self.ended = True  # the stream ends at a header boundary: so does the archive
                return None
            if len(block) < BLOCK:
                raise TarError(
                    f"invalid or truncated tar header at offset {offset} (the stream ends in it)"
                )
            if block == _ZERO_BLOCK:
                second = self._read(BLOCK)
                if second and second != _ZERO_BLOCK:
                    raise TarError(
                        f"invalid or truncated tar header at offset {offset + BLOCK} (after a "
                        "zero block that is then not the end-of-archive marker)"
                    )
                self.ended = True
                return None
            entry = self._header(block, offset)
            kind = block[156:157]
            if kind in (b"x", b"g", b"L", b"K"):
                if entry.size > _MAX_EXTENDED:
                    raise TarError(f"an extended header of {entry.size} bytes (offset {offset})")
                data = self._read(entry.size)
                if len(data) < entry.size:
                    raise TarError("unexpected end of data (in an extended header)")
                if not self._skip(-entry.size % BLOCK):
                    self._end_in_padding()
                    return None
                if kind == b"x":
                    pax = _pax_records(data)  # a later one replaces an earlier one (Go)
                elif kind == b"g":
                    # Go parses a global header's records (a malformed one fails the archive)
                    # and returns it as an entry of its own, which Docker skips: so we skip it
                    # too, and what came before it (x, L, K) applies to nothing.
                    _pax_records(data)
                    pax, long_name, long_link = {}, None, None
                elif kind == b"L":
                    long_name = _text(data)
                elif kind == b"K":
                    long_link = _text(data)
                continue
            if kind == b"S" or any(key.startswith("GNU.sparse.") for key in pax):
                raise TarError(f"sparse files are not supported ({entry.name!r})")
            if pax:
                self._apply_pax(entry, pax)
            if long_name:  # after pax, as Go's reader does; an empty one names nothing (Go)
                entry.name = long_name
            if long_link:
                entry.linkname = long_link
            if entry.type in _REGULAR_TYPES:  # after the pax path: Go decides on the full name
                old_dir = entry.type == "\0" and entry.name.endswith("/")
                entry.type = DIRECTORY if old_dir else REGULAR
            if entry.type == DIRECTORY:
                entry.name = entry.name.rstrip("/") or entry.name
            if entry.type in _HEADER_ONLY:
                entry.size = 0
            self._left = entry.size
            self._padding = -entry.size % BLOCK
            return entry

    def _end_in_padding(self) -> None:
        # The stream ends in the padding after an entry's (or an extended header's) data: so
        # does the archive, as in Go's reader (it reads the padding with tryReadFull, whose
        # io.EOF Next returns), though tarfile calls it an unexpected end of data.
        self.ended = True

    def _header(self, block: bytes, offset: int) -> Entry:
        try:
            return self._parse_header(block, offset)
        except TarError as exc:
            raise TarError(f"invalid or truncated tar header at offset {offset} ({exc})") from None

    @staticmethod
    def _parse_header(block: bytes, offset: int) -> Entry:
        stored = _octal(block[148:156])  # never base-256 (Go)
        unsigned = 256 + sum(block) - sum(block[148:156])
        if stored != unsigned and stored != 256 + sum(_SIGNED.unpack(block)):
            raise TarError("bad checksum")
        entry = Entry()
        entry.offset = offset
        name = _text(block[0:100])
        kind = block[156:157].decode("latin-1")
        ustar = block[257:263] == b"ustar\0"
        if ustar:  # ustar and pax: the prefix extends the name
            prefix = _text(block[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        entry.name = name
        entry.type = kind
        entry.mode = _number(block[100:108])
        entry.uid = _number(block[108:116])
        entry.gid = _number(block[116:124])
        entry.size = _number(block[124:136])
        entry.mtime_ns = _number(block[136:148]) * 1_000_000_000
        entry.linkname = _text(block[157:257])
        if ustar or block[257:265] == b"ustar  \0":
            # Go reads (and checks) the device numbers of every ustar and GNU header, whatever
            # its type, and none in a V7 one (where those bytes are not fields: 0:0 there).
            entry.devmajor = _number(block[329:337])
            entry.devminor = _number(block[337:345])
        if entry.size < 0 or entry.uid < 0 or entry.gid < 0:
            raise TarError("a negative size, uid or gid")
        return entry

    @staticmethod
    def _apply_pax(entry: Entry, pax: dict[str, str]) -> None:
        try:
            for key, value in pax.items():
                if not value:
                    continue  # an empty value keeps the header's (Go; POSIX: "unset")
                if key == "path":
                    entry.name = value
                elif key == "linkpath":
                    entry.linkname = value
                elif key == "size":
                    entry.size = _decimal(value)
                elif key == "uid":
                    entry.uid = _decimal(value)
                elif key == "gid":
                    entry.gid = _decimal(value)
                elif key == "mtime":
                    entry.mtime_ns = _ns(value)
                elif key == "atime":
                    entry.atime_ns = _ns(value)
                elif key == "ctime":
                    _ns(value)  # not kept, but Go refuses one that does not parse
                elif key.startswith("SCHILY.xattr.") and len(key) > len("SCHILY.xattr."):
                    name = key[len("SCHILY.xattr.") :]
                    entry.xattrs.append((name, value.encode("utf-8", "surrogateescape")))
        except ValueError:
            raise TarError(f"a pax header of {entry.name!r} has a bad number") from None
        if entry.size < 0 or entry.uid < 0 or entry.gid < 0:
            raise TarError(f"a pax header of {entry.name!r} has a negative size, uid or gid")
