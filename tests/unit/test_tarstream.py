"""buildgen.crane.tarstream: the lean tar reader, checked against Python's tarfile on what tarfile
writes (ustar, GNU and pax formats), fed in chunks of every awkward size, and on broken input."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import pytest

from buildgen.crane.tarstream import BLOCK, DIRECTORY, REGULAR, Entry, TarError, TarReader

LONG = "d" * 120 + "/" + "n" * 150  # past ustar's 100 bytes of name and 155 of prefix
UNDECODABLE = b"caf\xe9-latin1".decode("utf-8", "surrogateescape")


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **extra: object) -> tuple:  # type: ignore[type-arg]
    return (name, kind, data, extra)


MEMBERS = [
    member("./", tarfile.DIRTYPE, mode=0o755),
    member("etc/", tarfile.DIRTYPE, mode=0o755),
    member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644, mtime=1_700_000_000),
    member("etc/shadow", data=b"x" * 513, mode=0o640, uid=0, gid=42),
    member("usr/bin/sudo", data=b"\x7fELF" + bytes(2000), mode=0o4755),
    member("tmp", tarfile.DIRTYPE, mode=0o1777),
    member("bin", tarfile.SYMTYPE, linkname="usr/bin"),
    member("usr/bin/sudoedit", tarfile.LNKTYPE, linkname="usr/bin/sudo"),
    member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
    member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3),
    member("empty", data=b""),
    member("exactly-a-block", data=b"b" * BLOCK),
    member("big", data=bytes(range(256)) * 9000),  # spans chunks
    member("über/ünïcode.txt", data=b"u"),
]


def archive(fmt: int, members: list[tuple] | None = None) -> bytes:  # type: ignore[type-arg]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt, encoding="utf-8") as tf:
        for name, kind, data, extra in members if members is not None else MEMBERS:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            for key, value in extra.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return out.getvalue()


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def read_all(data: bytes, size: int = 1 << 20) -> list[tuple[Entry, bytes]]:
    feed = chunks(data, size)
    reader = TarReader(lambda: next(feed, b""))
    out = []
    while (entry := reader.next()) is not None:
        out.append((entry, b"".join(bytes(v) for v in reader.data(4096))))
    return out


def expected(data: bytes) -> list[tuple[str, str, int, int, int, int, str, bytes]]:
    """What tarfile reads back: (name, type, mode, uid, gid, mtime, linkname, data)."""
    rows = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8") as tf:
        for info in tf:
            handle = tf.extractfile(info) if info.isreg() else None
            kind = REGULAR if info.isreg() else info.type.decode()
            body = handle.read() if handle else b""
            mtime = int(info.mtime)
            rows.append(
                (info.name, kind, info.mode, info.uid, info.gid, mtime, info.linkname, body)
            )
    return rows


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("size", [1, 7, 511, 512, 513, 65536, 1 << 20])
def test_reads_what_tarfile_writes(fmt: int, size: int) -> None:
    members = list(MEMBERS)
    if fmt != tarfile.USTAR_FORMAT:  # ustar cannot hold these
        members += [
            member(LONG, data=b"long"),
            member("link-to-long", tarfile.SYMTYPE, linkname="t/" * 60 + "target"),
            member("owned-high", data=b"h", uid=3_000_000, gid=3_000_001),
        ]
    data = archive(fmt, members)
    got = [
        (e.name, e.type, e.mode, e.uid, e.gid, e.mtime_ns // 10**9, e.linkname, body)
        for e, body in read_all(data, size)
    ]
    assert got == expected(data)


def test_pax_times_xattrs_and_undecodable_names() -> None:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, errors="surrogateescape"
    ) as tf:
        info = tarfile.TarInfo("f")
        info.pax_headers = {
            "mtime": "1700000000.123456789",
            "atime": "1700000001.5",
            "SCHILY.xattr.user.comment": "hé",
            "SCHILY.xattr.security.capability": b"\x01\x00\x00\x02".decode(
                "utf-8", "surrogateescape"
            ),
        }
        tf.addfile(info, io.BytesIO(b""))
        tf.addfile(tarfile.TarInfo(UNDECODABLE), io.BytesIO(b""))
    [(first, _), (second, _)] = read_all(out.getvalue())
    assert first.mtime_ns == 1_700_000_000_123_456_789
    assert first.atime_ns == 1_700_000_001_500_000_000
    assert dict(first.xattrs) == {
        "user.comment": "hé".encode(),
        "security.capability": b"\x01\x00\x00\x02",
    }
    assert second.name == UNDECODABLE


def test_old_style_entries() -> None:
    # A "\0"-type entry named with a slash is a directory; "7" (contiguous) is a regular file.
    data = bytearray(
        archive(tarfile.USTAR_FORMAT, [member("old/", data=b""), member("c", data=b"x")])
    )
    for offset, kind in ((0, b"\0"), (BLOCK, b"7")):
        data[offset + 156 : offset + 157] = kind
        header = data[offset : offset + BLOCK]
        header[148:156] = b" " * 8
        data[offset + 148 : offset + 156] = b"%06o\0 " % sum(header)
    [(old, _), (contiguous, body)] = read_all(bytes(data))
    assert (old.name, old.type) == ("old", DIRECTORY)
    assert (contiguous.type, body) == (REGULAR, b"x")


def test_global_headers_are_skipped() -> None:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"comment": "global"}
    ) as tf:
        tf.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    assert [e.name for e, _ in read_all(out.getvalue())] == ["a"]


def test_end_of_archive() -> None:
    data = archive(tarfile.GNU_FORMAT, [member("a", data=b"1")])
    body = data.rstrip(b"\0")  # header + data block, no end marker: ends at a block boundary
    body += bytes(-len(body) % BLOCK)
    assert [e.name for e, _ in read_all(body)] == ["a"]
    assert read_all(b"") == []
    # A zero block followed by a header is not an end: Go's reader fails there too.
    with pytest.raises(TarError, match="invalid or truncated tar header at offset 1536"):
        read_all(body + bytes(BLOCK) + data[:BLOCK])
    # Data after the end-of-archive marker (record padding) is not read as entries.
    assert [e.name for e, _ in read_all(data + data)] == ["a"]


@pytest.mark.parametrize(
    ("cut", "error"),
    [
        (100, "invalid or truncated tar header at offset 0"),
        (BLOCK + 1, "unexpected end of data"),
    ],
)
def test_truncated_streams(cut: int, error: str) -> None:
    data = archive(tarfile.GNU_FORMAT, [member("a", data=b"x" * 600)])
    with pytest.raises(TarError, match=error):
        read_all(data[:cut])


def test_bad_headers() -> None:
    data = bytearray(archive(tarfile.GNU_FORMAT, [member("a", data=b"1")]))
    data[100] = ord("9")  # the mode is not octal: the checksum no longer matches either
    with pytest.raises(TarError, match=r"offset 0 .*bad checksum"):
        read_all(bytes(data))
    sparse = bytearray(archive(tarfile.GNU_FORMAT, [member("s", data=b"")]))
    sparse[156] = ord("S")
    sparse[148:156] = b" " * 8
    sparse[148:156] = b"%06o\0 " % sum(sparse[:BLOCK])
    with pytest.raises(TarError, match="sparse files are not supported"):
        read_all(bytes(sparse))
    pax = io.BytesIO()
    with tarfile.open(fileobj=pax, mode="w", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("p")
        info.pax_headers = {"uid": "12x"}
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(TarError, match="bad number"):
        read_all(pax.getvalue())
    negative = bytearray(archive(tarfile.GNU_FORMAT, [member("n", data=b"", uid=-2)]))
    assert negative[108] == 0xFF  # base-256, negative: fchown would take -1 as "leave it"
    with pytest.raises(TarError, match="negative size, uid or gid"):
        read_all(bytes(negative))


def test_signed_checksums_and_base256_numbers() -> None:
    data = bytearray(archive(tarfile.GNU_FORMAT, [member("é" * 10, data=b"z", uid=2**40)]))
    assert data[108] == 0x80  # GNU base-256 uid
    header = data[:BLOCK]
    header[148:156] = b" " * 8
    signed = 256 + sum(b - 256 if b > 127 else b for b in header[:148] + header[156:]) - 256
    data[148:156] = b"%06o\0 " % (signed + 256)  # some tars wrote the signed sum
    [(entry, body)] = read_all(bytes(data))
    assert (entry.name, entry.uid, body) == ("é" * 10, 2**40, b"z")


def test_unread_data_is_skipped() -> None:
    data = archive(tarfile.PAX_FORMAT, [member("a", data=b"A" * 3000), member("b", data=b"B")])
    feed = chunks(data, 100)
    reader = TarReader(lambda: next(feed, b""))
    first = reader.next()
    assert first is not None and first.size == 3000
    second = reader.next()
    assert second is not None and b"".join(bytes(v) for v in reader.data()) == b"B"
    assert reader.next() is None


# -- regressions found by tests/unit/test_tarstream_fuzz.py: where tarstream read otherwise than Go's
# archive/tar (Docker's reader), which it follows


def reseal(data: bytearray, offset: int = 0) -> bytes:
    """`data` with the checksum of its header at `offset` made right again."""
    data[offset + 148 : offset + 156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(data[offset : offset + BLOCK])
    return bytes(data)


def pax_archive(*members: tuple[str, dict[str, str]], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        for name, records in members:
            info = tarfile.TarInfo(name)
            info.uid, info.mtime, info.linkname = 7, 100, "header-link"
            info.pax_headers = records
            tf.addfile(info, io.BytesIO(b""))
    return out.getvalue()


def records(*pairs: tuple[bytes, bytes]) -> bytes:
    """pax records ("%d %s=%s\\n", the length counting itself)."""
    out = b""
    for key, value in pairs:
        body = b" %s=%s\n" % (key, value)
        size = len(body) + 1
        while len(b"%d" % size) + len(body) != size:
            size = len(b"%d" % size) + len(body)
        out += b"%d" % size + body
    return out


def extended_header(kind: bytes, data: bytes) -> bytes:
    """An x, g, L or K header and its data, as tarfile writes them."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = kind, len(data)
    return info.tobuf(tarfile.USTAR_FORMAT) + data + bytes(-len(data) % BLOCK)


def test_global_headers_are_checked_and_end_what_came_before() -> None:
    # Go parses a g header's records and returns the header as an entry of its own (Docker
    # skips it): a malformed record fails the archive, and x/L/K headers before it apply to
    # nothing (tarstream applied them to the entry after the g header).
    plain = archive(tarfile.USTAR_FORMAT, [member("plain")])
    with pytest.raises(TarError, match="pax header record"):
        read_all(extended_header(b"g", b"5 a=b\n") + plain)
    before = extended_header(b"x", records((b"path", b"pax"))) + extended_header(b"L", b"long\0")
    [(entry, _)] = read_all(before + extended_header(b"g", b"") + plain)
    assert entry.name == "plain"


def test_empty_pax_values_and_long_names_keep_the_header() -> None:
    # Go: an empty pax value keeps the header's field (POSIX: it unsets the keyword), an
    # empty GNU long name or link names nothing; tarstream emptied the name, refused uid=, ...
    empty = {"path": "", "linkpath": "", "uid": "", "mtime": "", "SCHILY.xattr.user.a": ""}
    [(entry, _)] = read_all(pax_archive(("header-name", empty)))
    assert (entry.name, entry.linkname, entry.uid) == ("header-name", "header-link", 7)
    assert (entry.mtime_ns, entry.xattrs) == (100 * 10**9, [])
    header = archive(tarfile.USTAR_FORMAT, [member("header-name", linkname="header-link")])
    [(entry, _)] = read_all(extended_header(b"L", b"") + extended_header(b"K", b"\0") + header)
    assert (entry.name, entry.linkname) == ("header-name", "header-link")


def test_a_later_pax_header_replaces_an_earlier_one() -> None:
    # Go keeps the records of the last x header before an entry; tarstream merged them all.
    plain = archive(tarfile.USTAR_FORMAT, [member("plain")])
    first = extended_header(b"x", records((b"path", b"first"), (b"uid", b"12")))
    [(entry, _)] = read_all(first + extended_header(b"x", records((b"gid", b"5"))) + plain)
    assert (entry.name, entry.uid, entry.gid) == ("plain", 0, 5)


def test_nul_bytes_in_pax_paths_and_keys_are_refused() -> None:
    plain = archive(tarfile.USTAR_FORMAT, [member("plain")])
    for pair in ((b"path", b"a\0b"), (b"linkpath", b"\0"), (b"ke\0y", b"v")):
        with pytest.raises(TarError, match="NUL byte"):
            read_all(extended_header(b"x", records(pair)) + plain)
    binary = records((b"SCHILY.xattr.user.a", b"\0\1"))
    [(entry, _)] = read_all(extended_header(b"x", binary) + plain)
    assert entry.xattrs == [("user.a", b"\0\1")]  # binary values are fine elsewhere


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ("uid= 5", "bad number"),  # Python's int() takes what Go's strconv.ParseInt does not:
        ("uid=1_0", "bad number"),  # spaces, "_", other scripts' digits
        ("uid=\u0661\u0662", "bad number"),
        ("gid=9223372036854775808", "bad number"),  # past int64
        ("size=+1", None),  # a sign is fine
        ("mtime=inf", "bad number"),  # was an OverflowError out of Decimal, not a TarError
        ("mtime=1e5", "bad number"),
        ("atime=.5", "bad number"),
        ("ctime=yesterday", "bad number"),  # not kept, but Go refuses it
    ],
)
def test_pax_numbers_as_go_reads_them(record: str, error: str | None) -> None:
    key, _, value = record.partition("=")
    data = pax_archive(("f", {key: value}))
    if error is None:
        read_all(data)
    else:
        with pytest.raises(TarError, match=error):
            read_all(data)


def test_pax_times_past_nanoseconds_are_cut_toward_zero() -> None:
    # Go's parsePAXTime drops digits past the ninth; tarstream floored a negative time.
    [(entry, _), (late, _)] = read_all(
        pax_archive(("f", {"mtime": "-1.9999999999"}), ("g", {"mtime": "+5.1234567891"}))
    )
    assert (entry.mtime_ns, late.mtime_ns) == (-1_999_999_999, 5_123_456_789)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (b"\x00\x00000644", 0o644, "0o644"),  # Go trims leading NULs (tarstream read 0)
        (b" \0 644\0 ", 0o644, "0o644"),
        (b"+644\0\0\0\0", None, "not octal"),  # what int() takes and Go does not
        (b"6_44\0\0\0\0", None, "not octal"),
        (b"\t644\0\0\0\0", None, "not octal"),
        (b"\x81" + bytes(7), 1 << 56, "2**56"),  # base-256: the top bit set is enough for Go
        (b"\xc0" + bytes(7), -(1 << 62), "-2**62"),  # the sign in the next bit
    ],
)
def test_header_numbers_as_go_reads_them(field: bytes, value: int | None, expected: str) -> None:
    data = bytearray(archive(tarfile.USTAR_FORMAT, [member("m")]))
    data[100:108] = field
    if value is None:
        with pytest.raises(TarError, match=expected):
            read_all(reseal(data))
    else:
        [(entry, _)] = read_all(reseal(data))
        assert entry.mode == value, expected


def test_header_numbers_past_int64_and_base256_checksums_are_refused() -> None:
    data = bytearray(archive(tarfile.GNU_FORMAT, [member("m")]))
    data[136:148] = b"\x80" + b"\xff" * 11  # an mtime of 2**88 - 1
    with pytest.raises(TarError, match="out of range"):
        read_all(reseal(data))
    data = bytearray(archive(tarfile.GNU_FORMAT, [member("m")]))
    reseal(data)
    data[148:156] = b"\x80" + int(data[148:154], 8).to_bytes(7, "big")  # the right sum
    with pytest.raises(TarError, match=r"bad checksum|not octal"):
        read_all(bytes(data))


def test_device_numbers_are_read_in_ustar_and_gnu_headers_only() -> None:
    # Go reads (and checks) devmajor/devminor in every ustar or GNU header, whatever its type,
    # and none in a V7 header, whose bytes there are no fields (a V7 device is 0:0).
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT):
        data = bytearray(archive(fmt, [member("f")]))
        data[329:345] = b"0000003\x000000004\x00"
        [(entry, _)] = read_all(reseal(data))
        assert (entry.devmajor, entry.devminor) == (3, 4)
        data[329:337] = b"bad\0\0\0\0\0"
        with pytest.raises(TarError, match="not octal"):
            read_all(reseal(data))
    v7 = bytearray(archive(tarfile.USTAR_FORMAT, [member("dev/x", tarfile.CHRTYPE)]))
    v7[257:265] = bytes(8)  # no magic: V7
    v7[329:345] = b"junk" * 4
    [(entry, _)] = read_all(reseal(v7))
    assert (entry.type, entry.devmajor, entry.devminor) == ("3", 0, 0)


@pytest.mark.parametrize("extended", [False, True])
def test_a_stream_cut_in_padding_ends_the_archive(extended: bool) -> None:
    # Go reads the padding after data with tryReadFull, whose io.EOF Next returns: the archive
    # ends there (tarfile calls it an unexpected end of data, and so did tarstream).
    data = archive(tarfile.USTAR_FORMAT, [member("a", data=b"x" * 600), member("b")])
    if extended:
        data = extended_header(b"x", records((b"gid", b"5"))) + data
    cut = data.index(b"x" * 600) + 600 + 1
    assert [(e.name, body) for e, body in read_all(data[:cut], 7)] == [("a", b"x" * 600)]
    if extended:
        assert read_all(data[: BLOCK + 8 + 100]) == []  # in the pax header's padding
    with pytest.raises(TarError, match="unexpected end of data"):
        read_all(data[: cut - 2])  # inside the data: an error still
