"""buildgen.crane.tarstream, fuzzed (hypothesis) against Python's tarfile: the two must read every
generated archive alike (entry by entry, and the same data), or both must refuse it, after the
same entries.

Each archive is read by `TarReader`, fed in chunks of random sizes (1 to 4096 bytes, cycled),
its file data taken in views of a random limit or skipped, and by `tarfile`. The archives:

- what tarfile writes in the ustar, GNU and pax formats: files of random sizes (0, exact
  multiples of 512, more), directories, symlinks, hardlinks, FIFOs, devices, contiguous files;
  names long (past 100 and 255 bytes), deep, non-ASCII, not UTF-8, with trailing slashes; GNU
  long names and links (`L`, `K`), base-256 numbers, pax records for times with fractions,
  owners past the octal range, xattrs and path/linkpath overrides;
- headers made by hand for what tarfile does not write: V7, ustar and GNU magic, numbers spelled
  every way Go's reader takes (spaces, NULs before and after, no terminator, base-256), the
  ustar prefix, signed checksums, old-style directories (`\\0` type and a slash), unknown types,
  empty and repeated long names, several pax headers before one entry, records repeated in one,
  empty pax values, global headers (`g`, also after extended headers), extended headers left
  without an entry, malformed pax records and values, sparse files, odd ends of the archive;
- then, maybe, cut short at any offset (inside a header, data, padding, the end blocks), or a
  byte flipped in a header (a bad checksum, or none where it only respells the checksum), a
  number field of a header spelled anew (valid or not), or a byte of file data flipped.

The reference is Go's archive/tar, the reader of Docker, containerd and BuildKit, which tarstream
follows. tarfile is the independent reader, but it is lenient where Go refuses (it ends quietly
at a bad header after the first, reads `int()`'s syntax in numbers, skips malformed pax records)
and reads some things otherwise. So broken input is judged by Go's rules (`expected_outcome`:
where Go stops, and whether it fails), and tarfile is shown only the entries Go reads, each
spelled so tarfile reads what Go does. Each place that departs from tarfile is marked `GO:`,
saying why; `BY DESIGN:` marks where tarstream departs from Go on purpose (its docstring says so).

Not generated, deliberately: `X` (Solaris) headers, which tarfile takes for pax headers and Go for
an unknown type; star headers (`tar\\0` at byte 508), whose prefix Go reads shorter; GNU headers
whose atime/ctime fields do not parse (Go then reads them as a ustar prefix, for old Go writers);
pax records whose length has a `+` (Go's ParseInt takes one); extended headers past 1 MiB.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import operator
import os
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, event, given, note, settings
from hypothesis import strategies as st

from buildgen.crane.tarstream import BLOCK, Entry, TarError, TarReader

ZERO = bytes(BLOCK)
HEADER_ONLY = frozenset("123456")  # Go: links, devices, directories, FIFOs have no data
EXTENDED = (b"x", b"g", b"L", b"K")
XATTR = "SCHILY.xattr."
INT64 = 1 << 63
NUMBERS = {  # field: (offset, width) in a header block
    "mode": (100, 8),
    "uid": (108, 8),
    "gid": (116, 8),
    "size": (124, 12),
    "mtime": (136, 12),
    "devmajor": (329, 8),
    "devminor": (337, 8),
}

# -- Go's archive/tar (reader.go, strconv.go, format.go), transcribed -------------------------


def go_octal(field: bytes) -> int | None:
    """parseOctal: spaces and NULs trimmed at both ends, cut at a NUL, then strconv.ParseUint in
    base 8 (no sign, no `_`, no other white space). None where Go refuses the header."""
    digits = field.strip(b" \0").split(b"\0", 1)[0]
    if digits.translate(None, b"01234567"):
        return None
    return int(digits, 8) if digits else 0


def go_numeric(field: bytes) -> int | None:
    """parseNumeric: base-256 when the first byte's top bit is set, else octal."""
    if field[0] & 0x80:
        inv = 0xFF if field[0] & 0x40 else 0
        x = 0
        for i, c in enumerate(field):
            c ^= inv
            if i == 0:
                c &= 0x7F
            if x >> 56:
                return None  # integer overflow
            x = x << 8 | c
        if x >> 63:
            return None
        return ~x if inv else x
    return go_octal(field)


def go_int(text: bytes) -> int | None:
    """strconv.ParseInt(text, 10, 64)."""
    digits = text[1:] if text[:1] in (b"+", b"-") else text
    if not digits or digits.translate(None, b"0123456789"):
        return None
    value = int(text)
    return value if -INT64 <= value < INT64 else None


def go_time(text: bytes) -> int | None:
    """parsePAXTime, in nanoseconds: digits past the ninth are cut off (toward zero)."""
    seconds, _, fraction = text.partition(b".")
    whole = go_int(seconds)
    if whole is None or fraction.translate(None, b"0123456789"):
        return None
    nanos = int(fraction[:9].ljust(9, b"0")) if fraction else 0
    return whole * 10**9 + (-nanos if seconds.startswith(b"-") else nanos)


def magic(block: bytes) -> str:
    if block[257:263] == b"ustar\0":
        return "ustar"
    if block[257:265] == b"ustar  \0":
        return "gnu"
    return "v7"


def checksums(block: bytes) -> tuple[int, int]:
    """The unsigned and the signed sum, the checksum field counted as spaces."""
    rest = bytes(block[:148]) + b" " * 8 + bytes(block[156:])
    return sum(rest), sum(struct.unpack("512b", rest))


def go_header(block: bytes) -> dict[str, int] | None:
    """The numbers Go's readHeader takes from a block, or None where it refuses the block."""
    if go_octal(block[148:156]) not in checksums(block):
        return None
    values = {}
    for name, (offset, width) in NUMBERS.items():
        if name.startswith("dev") and magic(block) == "v7":
            values[name] = 0  # Go reads device numbers in ustar and GNU headers only
            continue
        value = go_numeric(block[offset : offset + width])
        if value is None:
            return None
        values[name] = value
    return values


def refused_header(block: bytes) -> bool:
    values = go_header(block)
    # BY DESIGN: tarstream refuses a negative size, uid or gid in any header. Go refuses a
    # negative size for types that have data, takes negative ids (which fchown would read as
    # "leave it"), and ignores the size of header-only types.
    return values is None or min(values["size"], values["uid"], values["gid"]) < 0


# -- tarfile's spelling of what Go reads ---------------------------------------------------------


def spellable(value: int, width: int) -> bool:
    return -(1 << 8 * (width - 1)) <= value < 1 << 8 * (width - 1)


def spell(value: int, width: int) -> bytes:
    """`value` as tarfile reads it: octal and a NUL, else GNU base-256 (0x80 or 0xff first)."""
    if 0 <= value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    assert spellable(value, width), value
    if value >= 0:
        return b"\x80" + value.to_bytes(width - 1, "big")
    return (value + (1 << 8 * width)).to_bytes(width, "big")


def seal(block: bytearray, chksum: bytes | None = None) -> bytes:
    block[148:156] = b"%06o\0 " % checksums(block)[0] if chksum is None else chksum
    return bytes(block)


def canonical(block: bytes, kind: bytes | None = None) -> bytes:
    """A header Go reads, spelled so tarfile reads the same from it."""
    values = go_header(block)
    assert values is not None
    out = bytearray(block)
    for name, (offset, width) in NUMBERS.items():
        # GO: tarfile's nti reads 0 where Go trims leading NULs, and refuses base-256 beyond
        # 0x80/0xff first bytes; the number, spelled plainly, reads the same in both.
        out[offset : offset + width] = spell(values[name], width)
    if magic(block) != "ustar":
        # GO: only ustar headers have a prefix (and device numbers are read in ustar and GNU
        # headers only); tarfile takes 345:500 for a prefix in every header.
        out[345:500] = bytes(155)
    if kind is not None:
        out[156:157] = kind
    return seal(out)


def canonical_ok(block: bytes) -> bool:
    values = go_header(block)
    return values is not None and all(spellable(values[n], w) for n, (_, w) in NUMBERS.items())


# -- archives as Go frames them

# name, mode, uid, gid, size, mtime, chksum, type, linkname, magic, uname, gname, devmajor,
# devminor, prefix (or GNU atime, ctime...); for reprs
FIELDS = [0, 100, 108, 116, 124, 136, 148, 156, 157, 257, 265, 297, 329, 337, 345]


@dataclass
class Piece:
    """A header block and the data that follows it (as many bytes as Go reads for it)."""

    header: bytes
    data: bytes = b""
    padding: bytes = b""

    def __post_init__(self) -> None:
        if not self.padding:
            self.padding = bytes(-len(self.data) % BLOCK)

    @property
    def extended(self) -> bool:
        return self.header[156:157] in EXTENDED

    def __repr__(self) -> str:  # the header's non-NUL fields, by offset; the data's start
        fields = []
        for start, end in zip(FIELDS, [*FIELDS[1:], BLOCK], strict=True):
            value = bytes(self.header[start:end])
            if value.strip(b"\0"):
                fields.append(f"{start}:{value.rstrip(bytes(1))!r}")
        if self.data or self.padding.strip(b"\0"):
            more = "..." if len(self.data) > 40 else ""
            fields.append(f"data={self.data[:40]!r}{more} ({len(self.data)})")
        if self.padding.strip(b"\0"):
            fields.append(f"padding={self.padding!r}")
        return f"Piece({', '.join(fields)})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # for hypothesis' reports
        printer.text(repr(self))


@dataclass
class Chain:
    """Extended headers and the entry they describe (or none: a `g` header, or extended headers
    the archive ends after or a `g` header cuts off)."""

    pieces: list[Piece]
    # The extended headers that tell tarfile what Go reads (None: this chain's own, as tarfile
    # wrote them) and the entry's type as tarfile must see it (None: the header's).
    oracle: list[Piece] | None = None
    oracle_kind: bytes | None = None
    refused: str = ""  # why Go (or tarstream, BY DESIGN) refuses this chain

    @property
    def entry(self) -> bool:
        return not self.pieces[-1].extended


@dataclass
class Case:
    chains: list[Chain]
    ending: bytes  # from the end of the last chain on
    what: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"Case({'; '.join(self.what)}"]
        for chain in self.chains:
            lines.append(f"  chain{' refused: ' + chain.refused if chain.refused else ''}")
            lines += [f"    {piece!r}" for piece in chain.pieces]
        ending = self.ending
        zeros = len(ending) - len(ending.lstrip(b"\0"))
        lines.append(f"  ending: {zeros} NULs + {ending[zeros:][:60]!r} ({len(ending) - zeros}))")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def stream(self) -> bytes:
        pieces = [p for chain in self.chains for p in chain.pieces]
        return b"".join(p.header + p.data + p.padding for p in pieces) + self.ending


@dataclass(frozen=True)
class Outcome:
    entries: int  # entries Go's reader returns (headers; `g` ones left out, as Docker does)
    error: bool
    partial: bool = False  # the last one's data is cut short


def ending_refused(tail: bytes) -> bool:
    """Whether Go fails on what follows the last chain (the stream cut to `tail`)."""
    first, second = tail[:BLOCK], tail[BLOCK : 2 * BLOCK]
    if not first:
        return False  # the stream ends at a header boundary
    if first != ZERO:  # a block cut short, or a header (a zero block with a byte flipped)
        assert len(first) < BLOCK or refused_header(first)
        return True
    # One zero block and the end of the stream ends the archive; so do two zero blocks.
    # A zero block and then anything else (even zeros cut short) is an error.
    return bool(second) and second != ZERO


def expected_outcome(case: Case, cut: int) -> Outcome:
    """What Go's reader makes of `case.stream()[:cut]`."""
    pos = entries = 0
    for chain in case.chains:
        if cut <= pos:
            return Outcome(entries, error=False)
        if chain.refused:
            return Outcome(entries, error=True)
        for index, piece in enumerate(chain.pieces):
            if cut <= pos:  # after an extended header's data: they apply to nothing then
                return Outcome(entries, error=False)
            if cut < pos + BLOCK or refused_header(piece.header):
                return Outcome(entries, error=True)
            final = chain.entry and index == len(chain.pieces) - 1
            data_end = pos + BLOCK + len(piece.data)
            if cut < data_end:
                return Outcome(entries + final, error=True, partial=final)
            pos = data_end + len(piece.padding)
            entries += final
            if cut < pos:
                # GO: a stream that ends in the padding after an entry's (or an extended
                # header's) data ends the archive: Go's reader reads the padding with
                # tryReadFull, whose io.EOF Next returns. tarfile says "unexpected end of data".
                return Outcome(entries, error=False)
    return Outcome(entries, error=ending_refused(case.ending[: max(0, cut - pos)]))


# -- the two readers -------------------------------------------------------------------------

Row = tuple[object, ...]


def row(name: str, kind: str, size: int, *rest: object) -> Row:
    # BY DESIGN: tarstream drops a directory's trailing slashes (a name of slashes only stays),
    # tarfile drops them (all, or one after a GNU long name), Go keeps them: compared without.
    if kind == "5":
        name = name.rstrip("/")
    # BY DESIGN: header-only types have no data, and tarstream says size 0 (Go and tarfile
    # keep the header's number).
    if kind in HEADER_ONLY:
        size = 0
    return (name, kind, size, *rest)


def pax_ns(text: str) -> int:
    """A pax time as tarfile's record keeps it (its TarInfo has a float) in nanoseconds."""
    value = Decimal(text).scaleb(9)
    assert value == value.to_integral_value(), text
    return int(value)


def oracle_archive(case: Case, count: int) -> bytes:
    """The first `count` entries of `case`, spelled for tarfile, and an end marker."""
    pieces: list[Piece] = []
    for chain in [c for c in case.chains if c.entry][:count]:
        final = chain.pieces[-1]
        if chain.oracle is None:
            ext = [Piece(canonical(p.header), p.data) for p in chain.pieces[:-1]]
        else:
            ext = chain.oracle
        pieces += [*ext, Piece(canonical(final.header, chain.oracle_kind), final.data)]
    return b"".join(p.header + p.data + p.padding for p in pieces) + bytes(2 * BLOCK)


def tarfile_rows(archive: bytes) -> list[tuple[Row, bytes]]:
    rows = []
    with tarfile.open(
        fileobj=io.BytesIO(archive), mode="r:", encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for info in tf:
            kind = "0" if info.isreg() else info.type.decode("latin-1")
            pax = info.pax_headers
            mtime = pax_ns(pax["mtime"]) if "mtime" in pax else info.mtime * 10**9
            atime = pax_ns(pax["atime"]) if "atime" in pax else None
            # GO: a pax record with an empty value sets nothing (tarfile keeps the xattr).
            xattrs = sorted(
                (key[len(XATTR) :], value.encode("utf-8", "surrogateescape"))
                for key, value in pax.items()
                if key.startswith(XATTR) and value
            )
            has_data = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES
            handle = tf.extractfile(info) if has_data else None
            body = handle.read() if handle else b""
            rows.append(
                (
                    row(
                        info.name, kind, info.size, info.mode, info.uid, info.gid, mtime, atime,
                        info.linkname, info.devmajor, info.devminor, tuple(xattrs),
                    ),
                    body,
                )
            )  # fmt: skip
    return rows


def stream_row(e: Entry) -> Row:
    return row(
        e.name, e.type, e.size, e.mode, e.uid, e.gid, e.mtime_ns, e.atime_ns, e.linkname,
        e.devmajor, e.devminor, tuple(sorted(e.xattrs)),
    )  # fmt: skip


@dataclass
class Feed:
    sizes: list[int]  # of the chunks handed to the reader, cycled
    limit: int  # of the data views asked for
    read_data: bool  # or leave it to next() to skip


def read_stream(data: bytes, feed: Feed) -> tuple[list[Row], list[bytes | None], bool]:
    """tarstream's entries, their data (None: cut short) and whether it refused the stream."""
    sizes = itertools.cycle(feed.sizes)
    pos = 0

    def chunk() -> bytes:
        nonlocal pos
        piece = data[pos : pos + next(sizes)]
        pos += len(piece)
        return piece

    reader = TarReader(chunk)
    rows: list[Row] = []
    bodies: list[bytes | None] = []
    try:
        while (entry := reader.next()) is not None:
            rows.append(stream_row(entry))
            bodies.append(None)
            if feed.read_data:
                parts = []
                for view in reader.data(feed.limit):
                    assert 0 < len(view) <= feed.limit
                    parts.append(bytes(view))
                bodies[-1] = b"".join(parts)
        assert reader.next() is None  # and it stays at the end
    except TarError:
        return rows, bodies, True
    return rows, bodies, False


# -- strategies: the pieces ------------------------------------------------------------------

CHARS = "abcxyz019._- éü日本🎉\u0301"
UNDECODABLE = b"caf\xe9\xff".decode("utf-8", "surrogateescape")
segments = st.text(CHARS, min_size=1, max_size=12)
long_segments = st.builds(operator.mul, st.sampled_from(["a", "é", "日"]), st.integers(50, 260))
short_names = st.lists(segments, min_size=1, max_size=3).map("/".join)
names = st.one_of(
    short_names,
    short_names,
    st.lists(segments, min_size=10, max_size=40).map("/".join),  # deep
    st.lists(st.one_of(segments, long_segments), min_size=1, max_size=3).map("/".join),  # long
    st.sampled_from(
        [
            "", "/", "./", "/abs/olute", "a" * 100, "b" * 101, "p" * 155 + "/" + "n" * 100,
            "q" * 156 + "/n", UNDECODABLE, "dir/" + UNDECODABLE, "new\nline", "equals=sign",
        ]
    ),
)  # fmt: skip


def payload(size: int, seed: int) -> bytes:
    pattern = bytes(range(seed, 256)) + bytes(range(seed))
    return (pattern * (size // 256 + 1))[:size]


payloads = st.builds(
    payload,
    st.one_of(st.sampled_from([0, 1, 511, 512, 513, 1024, 1025]), st.integers(0, 3000)),
    st.integers(0, 255),
)


def rarely(draw: st.DrawFn, odds: int) -> bool:
    """True once in `odds` draws (integers() would favour 0; this shrinks to False)."""
    return draw(st.sampled_from([False] * (odds - 1) + [True]))


def sometimes(draw: st.DrawFn, rare: st.SearchStrategy[int], usual: st.SearchStrategy[int]) -> int:
    return draw(rare) if rarely(draw, 5) else draw(usual)


def pax_text(nanos: int) -> bytes:
    """Nanoseconds as a pax time that a decimal reads exactly."""
    seconds, fraction = divmod(abs(nanos), 10**9)
    return b"-" * (nanos < 0) + b"%d.%09d" % (seconds, fraction)


def pax_times(max_fraction: int) -> st.SearchStrategy[str]:
    seconds = st.integers(-(2**40), 2**40)
    fraction = st.text("0123456789", max_size=max_fraction)
    return st.one_of(seconds.map(str), st.builds("{}.{}".format, seconds, fraction))


xattr_names = st.sampled_from(["user.comment", "user.ü", "security.capability", "trusted.a b"])
xattr_values = st.binary(max_size=40)

# -- strategies: what tarfile writes ---------------------------------------------------------

FORMATS = {tarfile.USTAR_FORMAT: "ustar", tarfile.GNU_FORMAT: "gnu", tarfile.PAX_FORMAT: "pax"}
KINDS = [tarfile.REGTYPE] * 4 + [
    tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE, tarfile.CHRTYPE,
    tarfile.BLKTYPE, tarfile.CONTTYPE,
]  # fmt: skip


@st.composite
def tarfile_members(draw: st.DrawFn, fmt: int) -> tuple[tarfile.TarInfo, bytes]:
    kind = draw(st.sampled_from(KINDS))
    name = draw(names)
    if kind != tarfile.DIRTYPE:
        # GO: a path keeps its trailing slash; tarfile drops it from every pax path record.
        name = name.rstrip("/")
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = draw(st.integers(0, 0o7777))
    # Owners past the octal range: base-256 in GNU, pax records in pax, refused in ustar.
    # Negative ones (which tarstream refuses, BY DESIGN) in GNU headers only: refused_header
    # judges headers, not what tarfile writes in pax records.
    large = st.integers(2**21, 2**40)
    if fmt == tarfile.GNU_FORMAT:
        large |= st.integers(-(2**20), -1)
    info.uid = sometimes(draw, large, st.integers(0, 2**21 - 1))
    info.gid = sometimes(draw, large, st.integers(0, 2**21 - 1))
    info.mtime = sometimes(draw, st.integers(-(2**40), 2**40), st.integers(0, 2**33 - 1))
    if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        info.linkname = draw(names)
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        usual, rare = st.integers(0, 2**21 - 1), st.integers(2**21, 2**40)
        info.devmajor, info.devminor = sometimes(draw, rare, usual), sometimes(draw, rare, usual)
    data = draw(payloads) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
    info.size = len(data)
    if fmt == tarfile.PAX_FORMAT:
        pax = {}
        for key in ("mtime", "atime"):
            if draw(st.booleans()):
                pax[key] = draw(pax_times(max_fraction=9))
        for key, value in draw(st.lists(st.tuples(xattr_names, xattr_values), max_size=3)):
            pax[XATTR + key] = value.decode("utf-8", "surrogateescape")
        # GO: an empty path or linkpath record keeps the header's; tarfile empties the name.
        if draw(st.booleans()):
            path = draw(names.filter(bool))
            pax["path"] = path if kind == tarfile.DIRTYPE else path.rstrip("/") or "p"
        if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) and draw(st.booleans()):
            pax["linkpath"] = draw(names.filter(bool))
        info.pax_headers = pax
    return info, data


def walk(archive: bytes) -> Case:
    """The chains of an archive tarfile wrote (no pax size records: no file is that large)."""
    chains, pieces, pos = [], [], 0
    while pos + BLOCK <= len(archive) and archive[pos : pos + BLOCK] != ZERO:
        block = archive[pos : pos + BLOCK]
        extended = block[156:157] in EXTENDED
        size = tarfile.nti(block[124:136])
        if not extended and block[156:157].decode("latin-1") in HEADER_ONLY:
            size = 0
        pieces.append(Piece(block, archive[pos + BLOCK : pos + BLOCK + size]))
        pos += BLOCK + size + (-size % BLOCK)
        if not extended:
            chains.append(Chain(pieces))
            pieces = []
    assert not pieces
    return Case(chains, archive[pos:])


@st.composite
def tarfile_archives(draw: st.DrawFn) -> Case:
    fmt = draw(st.sampled_from(list(FORMATS)))
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape"
    ) as tf:
        for info, data in draw(st.lists(tarfile_members(fmt), min_size=1, max_size=6)):
            # ustar cannot hold some (a long name, a large number): tarfile writes nothing then
            with contextlib.suppress(ValueError):
                tf.addfile(info, io.BytesIO(data))
    case = walk(out.getvalue())
    case.what.append(f"written by tarfile, {FORMATS[fmt]} format")
    return case


# -- strategies: headers made by hand --------------------------------------------------------


def enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    size = len(body) + 1
    while len(b"%d" % size) + len(body) != size:
        size = len(b"%d" % size) + len(body)
    return b"%d" % size + body


def header(
    kind: bytes,
    *,
    name: bytes = b"",
    linkname: bytes = b"",
    form: str = "ustar",
    prefix: bytes = b"",
    numbers: dict[str, bytes] | None = None,
    junk: bytes = b"",
    chksum: Callable[[int, int], bytes] | None = None,
) -> bytes:
    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    for key, (offset, width) in NUMBERS.items():
        block[offset : offset + width] = (numbers or {}).get(key, spell(0, width))
    block[156:157] = kind
    block[157 : 157 + len(linkname)] = linkname
    if form == "ustar":
        block[257:265] = b"ustar\x0000"
        block[345 : 345 + len(prefix)] = prefix
    elif form == "gnu":
        block[257:265] = b"ustar  \x00"
        block[345 : 345 + len(junk)] = junk  # GNU atime and ctime: Go reads them, tarstream not
    else:
        block[329 : 329 + len(junk)] = junk  # V7: Go reads nothing past the link name
    assert len(block) == BLOCK
    return seal(block, chksum(*checksums(block)) if chksum else None)


def extended(kind: bytes, data: bytes, form: str = "ustar") -> Piece:
    name = b"././@LongLink" if kind in (b"L", b"K") else b"././@PaxHeader"
    numbers = {"size": spell(len(data), 12), "mode": spell(0o644, 8)}
    return Piece(header(kind, name=name, form=form, numbers=numbers), data)


def base256(value: int, width: int) -> bytes:
    """GNU base-256, also for a number octal could hold."""
    return b"\x80" + value.to_bytes(width - 1, "big") if value >= 0 else spell(value, width)


def spellings(value: int, width: int) -> st.SearchStrategy[bytes]:
    """`value` in a `width`-byte field, any way Go's reader takes it."""
    ways = []
    if 0 <= value < 8 ** (width - 1):
        digits = b"%o" % value
        ways += [
            b"%0*o\0" % (width - 1, value),  # tar's way
            b"%0*o " % (width - 1, value),  # space-terminated, as old tars wrote
            b"%*o\0" % (width - 1, value),  # space-padded
            b"%*o " % (width - 1, value),
            digits.ljust(width, b"\0"),  # left-aligned
        ]
        if len(digits) + 2 <= width:
            ways.append(b"\0\0" + digits.ljust(width - 2, b"\0"))  # GO: leading NULs trimmed
    if 0 <= value < 8**width:
        ways.append(b"%0*o" % (width, value))  # no terminator
    if value == 0:
        ways += [bytes(width), b" " * width]
    if spellable(value, width):
        ways.append(base256(value, width))
    return st.sampled_from(ways) if ways else st.nothing()  # e.g. past base-256's range


CHKSUMS: list[Callable[[int, int], bytes]] = [  # (unsigned, signed sum): Go takes either
    lambda u, s: b"%06o\0 " % u,  # tar's way
    lambda u, s: b"%07o\0" % u,
    lambda u, s: b"%06o \0" % u,
    lambda u, s: b"\0\0%06o" % u,  # GO: leading NULs trimmed (tarfile reads 0)
    lambda u, s: b" %06o\0" % u,
    lambda u, s: b"%08o" % u,
    lambda u, s: b"%06o\0 " % max(s, 0),  # the signed sum, as Sun's tar wrote it
    lambda u, s: b"%07o\0" % max(s, 0),
]


go_times = st.one_of(
    pax_times(max_fraction=12).map(str.encode),  # GO: past nine digits cut off, toward zero
    st.sampled_from(
        [b"+5", b"-0.5", b"5.", b"00012.25", b"-0", b"-1.9999999999", b"9223372036854775807"]
    ),
)
# (The first ones of a list are drawn most: past int64 first, the rarest to come by otherwise.)
BAD_NUMBERS = [
    b"9223372036854775808", b"-9223372036854775809", b"12x", b" 5", b"5 ", b"1_0",
    enc("\u0661\u0662"), b"0x10", b"5.0", b"--5", b"\t5", b"+", b"-",
]  # fmt: skip
BAD_TIMES = [
    b"9223372036854775808", b"inf", b"1e5", b".5", b"1.5x", b"nan", b"Infinity", b"1.-5", b"--1",
    b" 1", b"1 ", b"1_000", enc("\u0661"), enc("1.\u0665"), b"0x1", b"1.5.5", b"-", b"1,5",
]  # fmt: skip
BAD_RECORDS = [
    b"5 a=b\n",  # the length says 5, the record has 6 bytes
    b"9 a=b\n",  # longer than what follows
    b"5 ab\n",  # no "="
    b"6 =ab\n",  # no key
    b"x6 a=b\n",  # no length
    b"a=b\n",
    b"0 a=b\n",
    b" 6 a=b\n",
    b"99999999999999999999999 a=b\n",
    b"6 a=b\0",  # no newline
    b"\0\0junk",  # bytes after NUL padding
    record(b"path", b"a\0b"),  # GO: a NUL in a path, linkpath, uname or gname value
    record(b"linkpath", b"\0"),
    record(b"uname", b"r\0"),
    record(b"gname", b"\0g"),
    record(b"user\0key", b"v"),  # a NUL in a key
]
INERT = [  # records Go reads and applies to nothing tarstream exposes
    (b"comment", enc("héllo\nworld")),
    (b"uname", enc("ü")),
    (b"gname", b""),
    (b"hdrcharset", b"BINARY"),
    (b"LIBARCHIVE.creationtime", b"1700000000"),
    (b"SCHILY.acl.access", b"user::rwx"),
    (b"ctime", b"1700000000.5"),
]
RAW_KINDS = ["0", "0", "\0", "\0", "7", "1", "2", "3", "4", "5", "5", "6", "A", "V", "N"]


def prefix_split(name: bytes) -> tuple[bytes, bytes] | None:
    for i, byte in enumerate(name):
        if byte == ord("/") and 0 < i <= 155 and len(name) - i - 1 <= 100:
            return name[:i], name[i + 1 :]
    return None


def interleave(draw: st.DrawFn, groups: list[list[Piece]]) -> list[Piece]:
    """The pieces of all groups in a random order that keeps each group's own."""
    order = draw(st.permutations([i for i, group in enumerate(groups) for _ in group]))
    queues = [list(group) for group in groups]
    return [queues[i].pop(0) for i in order]


@st.composite
def raw_entries(draw: st.DrawFn) -> Chain:
    kind = draw(st.sampled_from(RAW_KINDS))
    form = draw(st.sampled_from(["ustar", "gnu", "v7"]))
    what = [f"{kind!r} {form}"]
    name = enc(draw(names))
    if kind == "5" and draw(st.booleans()):
        name += b"/"
    link = enc(draw(names)) if kind in "12" or rarely(draw, 5) else b""
    old_dir = kind == "\0" and name.endswith(b"/")  # GO: decided on the full name, no data
    body = b"" if kind in HEADER_ONLY or old_dir else draw(payloads)
    records: list[tuple[bytes, bytes]] = []  # of the pax header Go applies (the last one)
    oracle: list[tuple[bytes, bytes]] = []  # what tarfile needs of them
    longs: dict[bytes, list[Piece]] = {b"L": [], b"K": []}
    numbers: dict[str, bytes] = {}

    # The name and the link name: in the header, the ustar prefix, a pax record, a GNU long
    # name (which wins over a pax path), or in the header and emptied by a long name or a pax
    # record (GO: an empty long name or pax value keeps the header's).
    fields = {}
    for value, key, long, carriers in (
        (name, b"path", b"L", ["header", "prefix", "pax", "long", "long+pax", "empty"]),
        (link, b"linkpath", b"K", ["header", "pax", "long", "long+pax", "empty"]),
    ):
        decoy = draw(st.sampled_from([b"decoy", b"decoy/", value[:100]]))
        way = draw(st.sampled_from(carriers))
        split = prefix_split(value) if form == "ustar" else None
        if way == "prefix" and split is None:
            way = "pax"
        if way in ("header", "empty") and len(value) > 100:
            way = "long"
        if not value:  # GO: an empty pax value or long name would keep the header's (decoy)
            way = "header"
        what.append(f"{key.decode()} by {way}")
        event(f"hand-made {key.decode()} by {way}")
        fields[key] = (value, b"")
        if way == "prefix":
            assert split is not None
            fields[key] = (split[1], split[0])
        elif way in ("pax", "long", "long+pax"):
            fields[key] = (decoy, b"")
        if way == "pax":
            records.append((key, value))
        if way == "long+pax":
            records.append((key, b"pax-" + decoy))
        if way in ("long", "long+pax"):
            if draw(st.booleans()):  # an earlier long name: the last one counts
                longs[long].append(extended(long, b"earlier-" + decoy))
            tail = draw(st.sampled_from([b"", b"\0", b"\0junk"]))  # Go cuts at a NUL
            longs[long].append(extended(long, value + tail))
        if way == "empty":
            if draw(st.booleans()):
                longs[long].append(extended(long, draw(st.sampled_from([b"", b"\0", b"\0\0"]))))
            else:
                records += [(key, b"decoy")] * draw(st.booleans()) + [(key, b"")]
    header_name, prefix = fields[b"path"]
    header_link = fields[b"linkpath"][0]

    numbers["mode"] = draw(spellings(draw(st.integers(0, 0o7777777)), 8))
    for key in ("uid", "gid"):
        if draw(st.booleans()):
            value = draw(st.integers(0, INT64 - 1))
            records.append(
                (key.encode(), draw(st.sampled_from([b"", b"+", b"00"])) + b"%d" % value)
            )
            oracle.append((key.encode(), b"%d" % value))
            numbers[key] = draw(spellings(draw(st.integers(0, 2**21)), 8))
        else:
            numbers[key] = draw(spellings(draw(st.integers(0, 2**21) | st.integers(0, 2**55)), 8))
    if kind in HEADER_ONLY:  # Go ignores the size of these (a pax one too)
        numbers["size"] = draw(spellings(draw(st.integers(0, 2**20)), 12))
        if rarely(draw, 4):
            records.append((b"size", b"%d" % draw(st.integers(0, 2**20))))
    elif rarely(draw, 3):
        records.append((b"size", b"%d" % len(body)))
        oracle.append((b"size", b"%d" % len(body)))
        numbers["size"] = draw(spellings(draw(st.integers(0, 2**20)), 12))
    else:
        numbers["size"] = draw(spellings(len(body), 12))
    if draw(st.booleans()):
        text = draw(go_times)
        nanos = go_time(text)
        assert nanos is not None
        records.append((b"mtime", text))
        oracle.append((b"mtime", pax_text(nanos)))
        numbers["mtime"] = draw(spellings(draw(st.integers(0, 2**33)), 12))
    else:
        numbers["mtime"] = draw(spellings(draw(st.integers(-(2**40), 2**40)), 12))
    if draw(st.booleans()):
        text = draw(go_times)
        nanos = go_time(text)
        assert nanos is not None
        records.append((b"atime", text))
        oracle.append((b"atime", pax_text(nanos)))
    junk = b""
    if form != "v7":
        for key in ("devmajor", "devminor"):
            numbers[key] = draw(spellings(draw(st.integers(0, 2**21) | st.integers(0, 2**55)), 8))
        if form == "gnu" and draw(st.booleans()):
            junk = b"%011o\0%011o\0" % (draw(st.integers(1, 2**33)), draw(st.integers(0, 2**33)))
    elif draw(st.booleans()):
        junk = draw(st.binary(min_size=1, max_size=171))  # GO: V7 has no device numbers
    xattrs: dict[bytes, bytes] = {}
    for key, value in draw(st.lists(st.tuples(xattr_names.map(enc), xattr_values), max_size=3)):
        records.append((enc(XATTR) + key, value))
        xattrs[key] = value
    oracle += [(enc(XATTR) + k, v) for k, v in xattrs.items() if v]
    records += draw(st.lists(st.sampled_from(INERT), max_size=2))
    if records and rarely(draw, 4):  # a key said twice in one header: the last counts
        i = draw(st.integers(0, len(records) - 1))
        records.insert(i, (records[i][0], b"decoy"))

    # What Go (or tarstream, BY DESIGN) refuses: one thing, sometimes.
    refused = ""
    faults = ["record", "number", "mtime", "atime", "ctime", "sparse", "negative"]
    fault = draw(st.sampled_from([""] * 30 + faults))
    event(f"hand-made entry: {fault or 'no fault'}")
    if fault == "record":
        refused = "a malformed pax record"
        records.append((b"", draw(st.sampled_from(BAD_RECORDS))))
    elif fault == "number":
        key = draw(st.sampled_from([b"uid", b"gid", b"size"]))
        refused = f"pax {key.decode()} not a number Go takes"
        records.append((key, draw(st.sampled_from(BAD_NUMBERS))))
    elif fault in ("mtime", "atime", "ctime"):
        refused = f"pax {fault} not a time Go takes"
        records.append((fault.encode(), draw(st.sampled_from(BAD_TIMES))))
    elif fault == "sparse":  # BY DESIGN: tarstream refuses sparse files (Go reads them)
        refused = "a sparse file"
        if draw(st.booleans()):
            kind, form = "S", "gnu"
        else:
            records.append(
                draw(st.sampled_from([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.size", b"10")]))
            )
    elif fault == "negative":  # BY DESIGN: tarstream refuses negative ids
        key = draw(st.sampled_from([b"uid", b"gid"]))
        refused = f"a negative {key.decode()}"
        if draw(st.booleans()):
            records.append((key, b"-%d" % draw(st.integers(1, 2**40))))
        else:
            numbers[key.decode()] = spell(-draw(st.integers(1, 2**40)), 8)

    pax: list[Piece] = []
    if rarely(draw, 4):  # an earlier pax header: Go reads only the last one
        earlier = [
            (b"path", b"earlier"), (b"uid", b"not a number"), (b"mtime", b"1.5e3"),
            (b"GNU.sparse.major", b"1"), (enc(XATTR) + b"user.earlier", b"x"),
        ]  # fmt: skip
        chosen = draw(st.lists(st.sampled_from(earlier), max_size=3))
        pax.append(extended(b"x", b"".join(record(k, v) for k, v in chosen)))
    if records or pax or draw(st.booleans()):
        data = b"".join(value if not key else record(key, value) for key, value in records)
        if not fault and rarely(draw, 6):
            # BY DESIGN: tarstream (and tarfile) take NUL padding after the last record, Go
            # refuses it (it parses every byte of the header's size as records).
            data += bytes(draw(st.integers(1, 600)))
            what.append("pax NUL-padded")
        pax.append(extended(b"x", data))
    pieces = interleave(draw, [pax, longs[b"L"], longs[b"K"]])
    final = header(
        kind.encode("latin-1"),
        name=header_name,
        linkname=header_link,
        form=form,
        prefix=prefix,
        numbers=numbers,
        junk=junk,
        chksum=draw(st.sampled_from(CHKSUMS)),
    )
    oracle_pieces = [extended(b"L", name + b"\0"), extended(b"K", link + b"\0")]
    if oracle:
        oracle_pieces.append(extended(b"x", b"".join(record(k, v) for k, v in oracle)))
    return Chain(
        [*pieces, Piece(final, body)],
        oracle=oracle_pieces,
        oracle_kind={"\0": b"5" if old_dir else b"0"}.get(kind),
        refused="; ".join([*what, refused]) if refused else "",
    )


@st.composite
def global_chains(draw: st.DrawFn) -> Chain:
    """A `g` header. GO: its records are parsed (a malformed one fails), then merged into the
    header Next returns for it, errors ignored; Docker skips it. tarfile applies its records to
    every later entry, so it is never shown one."""
    chosen = draw(
        st.lists(
            st.sampled_from(
                [(b"path", b"global"), (b"mtime", b"bad"), (b"uid", b"7"), (b"comment", b"g")]
            ),
            max_size=3,
        )
    )
    data = b"".join(record(k, v) for k, v in chosen)
    bad = draw(st.sampled_from([b""] * 40 + BAD_RECORDS))
    return Chain([extended(b"g", data + bad)], refused="a malformed global record" if bad else "")


@st.composite
def dangling_chains(draw: st.DrawFn) -> Chain:
    """Extended headers that a `g` header or the end of the archive leaves without an entry.
    GO: Next returns the `g` header, and starts afresh after it."""
    pieces = draw(
        st.lists(
            st.sampled_from(
                [
                    extended(b"x", record(b"path", b"dangling") + record(b"uid", b"bad")),
                    extended(b"x", record(b"GNU.sparse.major", b"1")),
                    extended(b"L", b"dangling-long-name\0"),
                    extended(b"K", b"dangling-long-link\0"),
                ]
            ),
            min_size=1,
            max_size=3,
        )
    )
    return Chain([Piece(p.header, p.data) for p in pieces])


endings = st.one_of(
    st.just(bytes(2 * BLOCK)),
    st.binary(max_size=700).map(lambda tail: bytes(2 * BLOCK) + tail),  # nothing read past it
    st.just(bytes(BLOCK)),  # GO: a zero block, then the end of the stream, is an end too
    st.just(b""),  # no marker: the stream ends at a header boundary
    st.binary(min_size=1, max_size=BLOCK).map(  # a zero block and then not one: refused
        lambda b: bytes(BLOCK) + (b"\1" + b).ljust(BLOCK, b"\0")[:BLOCK]
    ),
)


@st.composite
def raw_archives(draw: st.DrawFn) -> Case:
    chains: list[Chain] = []
    kinds = ["entry"] * 4 + ["global", "dangling"]
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=6)):
        if kind == "entry":
            chains.append(draw(raw_entries()))
        elif kind == "global":
            chains.append(draw(global_chains()))
        else:
            chains += [draw(dangling_chains()), draw(global_chains())]
    if rarely(draw, 6):
        chains.append(draw(dangling_chains()))
    return Case(chains, draw(endings), ["made by hand"])


# -- strategies: breaking them ---------------------------------------------------------------


def tricky(width: int) -> list[bytes]:
    """Numbers Python's int() takes and Go's reader does not, and base-256 Go reads alone."""
    texts = [b"+7", b"-7", b"1_0", b"\t7", b"7\n", b"7\t", b"0x7", b"7 7", b"8", b"\v7"]
    texts += [b"\x007", b"\0\x0017", b" \0 17\0 ", b"\x81", b"\xc0\x01", b"\xfe", b"\x80\xff"]
    return [t.ljust(width, b"\0") for t in texts] + [b"\x80" + b"\xff" * (width - 1)]


@st.composite
def broken(draw: st.DrawFn, case: Case) -> int:
    """Breaks `case` in place, maybe; returns where its stream is cut."""
    total = len(case.stream())
    places = []  # (chain, piece, offset) of the pieces Go reads before a refused chain
    pos = 0
    refused = False
    for chain in case.chains:
        if chain.refused:
            refused = True  # where Go fails in it is not modelled: nothing past its start
            break
        for piece in chain.pieces:
            places.append((chain, piece, pos))
            pos += BLOCK + len(piece.data) + len(piece.padding)
    limit = pos if refused else total
    # The first is drawn most (hypothesis often fills a choice with its simplest value).
    hows = ["cut", "as is", "number", "flip", "cut", "data", "number", "as is", "flip", "cut"]
    how = draw(st.sampled_from(hows))
    if how in ("flip", "number", "data") and not places:
        how = "cut"
    event(f"broken: {how}")
    if how == "cut":
        marks = {0, limit}
        for _, piece, offset in places:
            data_end = offset + BLOCK + len(piece.data)
            marks |= {offset + 1, offset + BLOCK - 1, offset + BLOCK, offset + BLOCK + 1}
            marks |= {data_end - 1, data_end, data_end + 1}
            marks |= {data_end + len(piece.padding) - 1}
        if not refused:
            marks |= {pos + d for d in (1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK - 1, 2 * BLOCK)}
        marks = sorted((m for m in marks if 0 <= m <= limit), reverse=True)  # 0 is drawn enough
        cut = draw(st.sampled_from(marks) | st.integers(0, limit).map(lambda x: limit - x))
        case.what.append(f"cut at {cut} of {total}")
        return cut
    if how == "flip":
        at_end = not refused and case.ending and rarely(draw, 5)
        where = draw(st.integers(148, 155) | st.integers(0, BLOCK - 1))
        mask = draw(st.integers(1, 255))
        if at_end:
            where = draw(st.integers(0, min(len(case.ending), 2 * BLOCK + 100) - 1))
            ending = bytearray(case.ending)
            ending[where] ^= mask
            case.ending = bytes(ending)
            case.what.append(f"end byte {where} ^= {mask:#x}")
        else:
            _, piece, offset = draw(st.sampled_from(places))
            block = bytearray(piece.header)
            block[where] ^= mask
            piece.header = bytes(block)
            case.what.append(f"header at {offset}: byte {where} ^= {mask:#x}")
        return total
    if how == "number":
        chain, piece, offset = draw(st.sampled_from(places))
        key = draw(st.sampled_from(["chksum", *NUMBERS]))
        block = bytearray(piece.header)
        if key == "chksum":
            unsigned, signed = checksums(block)
            value = draw(st.sampled_from([unsigned, signed, unsigned + 1]) | st.integers(0, 8**7))
            # GO: base-256 is no checksum (tarfile takes one)
            new = draw(
                st.just(base256(value, 8)) | spellings(value, 8) | st.sampled_from(tricky(8))
            )
            block[148:156] = new
            piece.header = bytes(block)
        else:
            start, width = NUMBERS[key]
            old = go_numeric(block[start : start + width])
            values = st.integers(-(2**40), 2**40).flatmap(lambda v: spellings(v, width))
            new = draw(
                st.one_of(
                    spellings(old, width) if old is not None else st.nothing(),
                    values,
                    st.binary(min_size=width, max_size=width),
                    st.sampled_from(tricky(width)),
                )
            )
            block[start : start + width] = new
            piece.header = seal(block)
            header_only = (
                piece is chain.pieces[-1]
                and chain.entry
                and (piece.header[156:157].decode("latin-1") in HEADER_ONLY)
            )
            if key == "size" and not header_only:  # the framing must stay Go's
                value = go_numeric(new)
                assume(value is None or value < 0 or value == old)
        assume(refused_header(piece.header) or canonical_ok(piece.header))
        case.what.append(f"header at {offset}: {key} = {new!r}")
        return total
    # how == "data": a byte of file data or padding flipped (tarfile gets the same data)
    with_data = [
        (p, o) for c, p, o in places if c.entry and p is c.pieces[-1] and (p.data or p.padding)
    ]
    if not with_data:
        return total
    piece, offset = draw(st.sampled_from(with_data))
    where = draw(st.integers(0, len(piece.data) + len(piece.padding) - 1))
    mask = draw(st.integers(1, 255))
    if where < len(piece.data):
        data = bytearray(piece.data)
        data[where] ^= mask
        piece.data = bytes(data)
    else:
        padding = bytearray(piece.padding)
        padding[where - len(piece.data)] ^= mask
        piece.padding = bytes(padding)
    case.what.append(f"data of the entry at {offset}: byte {where} ^= {mask:#x}")
    return total


@st.composite
def cases(draw: st.DrawFn) -> tuple[Case, int]:
    case = draw(st.one_of(tarfile_archives(), raw_archives()))
    return case, draw(broken(case))


feeds = st.builds(
    Feed,
    st.lists(st.integers(1, 16) | st.integers(1, 4096), min_size=1, max_size=6),
    st.integers(1, 5000) | st.just(1 << 20),
    st.sampled_from([True, True, True, False]),
)


# BUILDGEN_FUZZ_EXAMPLES, else 1,000 (pytest's --hypothesis-seed=N repeats a run).
EXAMPLES = int(os.environ.get("BUILDGEN_FUZZ_EXAMPLES") or 1000)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cases(), feeds)
def test_tarstream_reads_what_go_reads(case_and_cut: tuple[Case, int], feed: Feed) -> None:
    case, cut = case_and_cut
    stream = case.stream()[:cut]
    outcome = expected_outcome(case, cut)
    note(f"expected: {outcome}")
    event(case.what[0])
    event(
        f"outcome: {'error' if outcome.error else 'clean'}{', partial' if outcome.partial else ''}"
    )
    event(f"entries: {min(outcome.entries, 3)}{'+' if outcome.entries > 3 else ''}")
    want = tarfile_rows(oracle_archive(case, outcome.entries))
    assert len(want) == outcome.entries, "tarfile does not read every entry it is shown"
    rows, bodies, error = read_stream(stream, feed)
    assert rows == [r for r, _ in want]
    assert error == outcome.error
    if feed.read_data:
        expected = [body for _, body in want]
        if outcome.partial:
            expected[-1] = None
        assert bodies == expected
