"""Recognising photos and videos by their magic bytes."""

from __future__ import annotations

import pytest

from fhir_server.media.sniff import matches, sniff


def ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


@pytest.mark.parametrize("head,expected", [
    (b"\xff\xd8\xff\xe1\x00\x10Exif", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    (b"RIFF\x10\x00\x00\x00WEBPVP8L", "image/webp"),
    (ftyp(b"heic", b"mif1", b"heic"), "image/heic"),
    (ftyp(b"mif1", b"heic"), "image/heic"),
    (ftyp(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "video/mp4"),
    (ftyp(b"mp42", b"mp42", b"isom"), "video/mp4"),
    (ftyp(b"qt  ", b"qt  "), "video/quicktime"),
    (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "video/quicktime"),
    (b"GIF89a", None),
    (b"", None),
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", None),
])
def test_sniff(head, expected):
    assert sniff(head) == expected


def test_declared_type_must_match():
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    assert matches("image/png", png)
    assert not matches("image/jpeg", png)
    assert matches("video/quicktime", ftyp(b"mp42"))  # both ISO media: phones mix the labels
    assert not matches("image/heic", ftyp(b"mp42"))
    assert not matches("video/mp4", b"\xff\xd8\xff")
