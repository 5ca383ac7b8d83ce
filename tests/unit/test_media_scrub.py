"""Identifying metadata removed from JPEG, PNG and WebP at the byte level: pixels and the ICC
profile unchanged, nothing re-encoded, malformed files refused."""

from __future__ import annotations

import struct

import pytest

pytest.importorskip("PIL", reason="the media tests make their photos with Pillow (the test extra)")

from fhir_server.media.scrub import MalformedMedia, scrub, scrub_jpeg, scrub_png, scrub_webp  # noqa: E402
from tests.fixtures.media import LEAKS, icc_of, icc_profile, jpeg, metadata, pixels, png, webp  # noqa: E402

MAKERS = {"image/jpeg": jpeg, "image/png": png, "image/webp": webp}


@pytest.mark.parametrize("media_type", sorted(MAKERS))
def test_metadata_is_removed_and_pixels_and_colour_profile_are_kept(media_type):
    original = MAKERS[media_type]()
    assert "exif" in metadata(original)  # the fixture really carries GPS EXIF
    cleaned = scrub(media_type, original)
    assert metadata(cleaned) == {}
    for leak in LEAKS:
        assert leak not in cleaned
    assert pixels(cleaned) == pixels(original)
    assert icc_of(cleaned) == icc_of(original) is not None
    assert scrub(media_type, cleaned) == cleaned  # idempotent


def test_jpeg_scan_data_is_copied_byte_for_byte():
    original = jpeg()
    cleaned = scrub_jpeg(original)
    sos = original.index(b"\xff\xda")
    assert cleaned.endswith(original[sos:])  # from the first scan to EOI: identical bytes
    assert icc_profile()[:64] in cleaned


def test_jpeg_trailer_after_eoi_is_dropped():
    assert scrub_jpeg(jpeg() + b"TRAILER Ada Testperson").endswith(b"\xff\xd9")


def test_png_keeps_critical_and_rendering_chunks_only():
    cleaned = scrub_png(png())
    kinds = []
    i = 8
    while i < len(cleaned):
        length = int.from_bytes(cleaned[i:i + 4], "big")
        kinds.append(cleaned[i + 4:i + 8])
        i += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    assert not {b"eXIf", b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(kinds)
    assert b"iCCP" in kinds


def test_webp_flags_and_riff_size_are_fixed():
    original = webp()
    assert original[20] & 0x0C  # VP8X says EXIF and XMP are there
    cleaned = scrub_webp(original)
    assert cleaned[12:16] == b"VP8X"
    assert cleaned[20] & 0x0C == 0 and cleaned[20] & 0x20  # EXIF and XMP flags off, ICC flag still on
    assert struct.unpack_from("<I", cleaned, 4)[0] == len(cleaned) - 8


@pytest.mark.parametrize("media_type,data", [
    ("image/jpeg", b"\xff\xd8\xff\xe0\x00"),
    ("image/jpeg", jpeg()[:200]),
    ("image/png", png()[:60]),
    ("image/webp", b"RIFF\xff\x00\x00\x00WEBPVP8 "),
    ("image/png", b"not a png"),
])
def test_malformed_files_are_refused(media_type, data):
    with pytest.raises(MalformedMedia):
        scrub(media_type, data)


def test_other_types_are_returned_unchanged():
    assert scrub("video/mp4", b"\x00\x00\x00\x18ftypmp42") == b"\x00\x00\x00\x18ftypmp42"
