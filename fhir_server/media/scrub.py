"""Removing the metadata that can identify or locate a patient from JPEG, PNG and WebP files, at
the byte level: whole segments (JPEG) or chunks (PNG, WebP) are dropped, everything kept is
copied byte for byte. Nothing is decoded or re-encoded, so the pixels, the compressed data and
the ICC colour profile stay exactly as they were.

Kept is an allow-list, not a deny-list: what a decoder needs to show the picture as it was taken
(frame and scan headers, tables, the JFIF and Adobe headers, the ICC profile, gamma and
chromaticity, transparency, animation) stays; every other metadata carrier goes, known ones
(EXIF with its GPS and maker notes, XMP, IPTC/Photoshop APP13, comments, PNG text chunks and
timestamps, WebP EXIF and XMP chunks) and unknown vendor ones alike. Bytes after the end of the
image (JPEG after EOI, PNG after IEND, WebP after the RIFF size) are dropped as well: phones
put secondary images and their metadata there.

No maintained pure-Python library does this (Pillow and piexif either re-encode or only know
EXIF), hence this module.
"""

from __future__ import annotations

import struct

from .sniff import JPEG, PNG, WEBP


class MalformedMedia(ValueError):
    """The bytes are not a well-formed file of the type their signature announces."""


def scrub(media_type: str, data: bytes) -> bytes:
    """The file without identifying metadata; unchanged for types this module does not scrub."""
    if media_type == JPEG:
        return scrub_jpeg(data)
    if media_type == PNG:
        return scrub_png(data)
    if media_type == WEBP:
        return scrub_webp(data)
    return data


# -- JPEG (ITU T.81 markers; JFIF, EXIF/DCF, ICC.1 Annex B for the APPn contents) ------------------

_SOS, _EOI, _COM = 0xDA, 0xD9, 0xFE
_APP0, _APP2, _APP14 = 0xE0, 0xE2, 0xEE


def _keep_jpeg_segment(marker: int, payload: bytes) -> bool:
    if marker == _COM:
        return False
    if 0xE0 <= marker <= 0xEF:  # APPn: metadata, except these three a decoder may need
        if marker == _APP0:
            return payload.startswith(b"JFIF\x00")
        if marker == _APP2:
            return payload.startswith(b"ICC_PROFILE\x00")
        if marker == _APP14:
            return payload.startswith(b"Adobe")  # the colour transform of CMYK/YCCK files
        return False  # APP1 EXIF/XMP, APP13 IPTC, maker- and vendor-specific segments
    return True  # frame, tables, restart interval, scans: the image itself


def scrub_jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise MalformedMedia("not a JPEG file (no SOI marker)")
    out = [b"\xff\xd8"]
    n, i = len(data), 2
    while True:
        if i >= n or data[i] != 0xFF:
            raise MalformedMedia("JPEG marker expected" if i < n else "JPEG ends before its EOI marker")
        while i < n and data[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            raise MalformedMedia("JPEG ends inside a marker")
        marker = data[i]
        i += 1
        if marker == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            out.append(bytes((0xFF, marker)))
            continue
        if marker == 0x00 or marker == 0xD8:
            raise MalformedMedia("unexpected JPEG marker")
        if i + 2 > n:
            raise MalformedMedia("JPEG ends inside a segment header")
        length = int.from_bytes(data[i:i + 2], "big")
        end = i + length
        if length < 2 or end > n:
            raise MalformedMedia("JPEG segment length out of range")
        if _keep_jpeg_segment(marker, data[i + 2:end]):
            out.append(bytes((0xFF, marker)))
            out.append(data[i:end])
        i = end
        if marker == _SOS:  # entropy-coded data up to the next marker (FF00 is a stuffed FF; RSTn inside)
            j = i
            while True:
                j = data.find(b"\xff", j)
                if j < 0 or j + 1 >= n:
                    raise MalformedMedia("JPEG scan data does not end with a marker")
                following = data[j + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:
                    j += 2
                    continue
                break
            out.append(data[i:j])
            i = j


# -- PNG (PNG 3rd edition, chunk layout and the registered chunk types) -----------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# ancillary chunks that describe how to show the pixels: kept. Every other ancillary chunk goes,
# among them eXIf, tEXt, zTXt, iTXt, tIME and private ones. Critical chunks are always kept.
_PNG_KEEP = frozenset({b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB", b"cICP", b"mDCV", b"mDCv",
                       b"cLLI", b"cLLi", b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT"})


def scrub_png(data: bytes) -> bytes:
    if not data.startswith(PNG_SIGNATURE):
        raise MalformedMedia("not a PNG file (bad signature)")
    out = [PNG_SIGNATURE]
    n, i = len(data), len(PNG_SIGNATURE)
    while True:
        if i + 8 > n:
            raise MalformedMedia("PNG ends before its IEND chunk")
        length = int.from_bytes(data[i:i + 4], "big")
        kind = data[i + 4:i + 8]
        end = i + 12 + length
        if length > 0x7FFFFFFF or end > n or not kind.isalpha():
            raise MalformedMedia("PNG chunk out of range")
        critical = kind[0:1].isupper()
        if critical or kind in _PNG_KEEP:
            out.append(data[i:end])
        i = end
        if kind == b"IEND":
            return b"".join(out)


# -- WebP (RFC 9649: RIFF container, simple and extended formats) ----------------------------------

_WEBP_KEEP = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH", b"ANIM", b"ANMF", b"ICCP"})
_VP8X_EXIF, _VP8X_XMP = 0x08, 0x04


def scrub_webp(data: bytes) -> bytes:
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise MalformedMedia("not a WebP file (no RIFF/WEBP header)")
    riff_end = 8 + struct.unpack_from("<I", data, 4)[0]
    if riff_end > len(data) or riff_end < 12:
        raise MalformedMedia("WebP RIFF size out of range")
    chunks: list[bytes] = []
    i = 12
    while i < riff_end:
        if i + 8 > riff_end:
            raise MalformedMedia("WebP chunk header out of range")
        kind = data[i:i + 4]
        size = struct.unpack_from("<I", data, i + 4)[0]
        end = i + 8 + size + (size & 1)  # chunks are padded to an even size
        if end > riff_end:
            if end == riff_end + 1 and size & 1:  # a missing final pad byte: tolerated, added back
                end = riff_end
            else:
                raise MalformedMedia("WebP chunk out of range")
        if kind in _WEBP_KEEP:
            chunk = data[i:end]
            if kind == b"VP8X":
                if size < 10:
                    raise MalformedMedia("WebP VP8X chunk too short")
                flags = chunk[8] & ~(_VP8X_EXIF | _VP8X_XMP) & 0xFF
                chunk = chunk[:8] + bytes((flags,)) + chunk[9:]
            if len(chunk) < 8 + size + (size & 1):
                chunk += b"\x00"
            chunks.append(chunk)
        i = end
    if not chunks:
        raise MalformedMedia("WebP file holds no image")
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body
