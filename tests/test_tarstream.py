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
