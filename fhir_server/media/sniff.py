"""What a file is, from its first bytes (its "magic"), so a declared Content-Type can be checked.

Only the media types a visit's photos and videos come in are recognised. ISO base media files
(HEIC, MP4, QuickTime) start with a box whose type is at bytes 4..8: `ftyp` and its major and
compatible brands say which family the file belongs to; old QuickTime files may start straight
with `moov`, `mdat`, `wide`, `free`, `skip` or `pnot`.
"""

from __future__ import annotations

JPEG = "image/jpeg"
PNG = "image/png"
HEIC = "image/heic"
WEBP = "image/webp"
MP4 = "video/mp4"
QUICKTIME = "video/quicktime"

IMAGE_TYPES = frozenset({JPEG, PNG, HEIC, WEBP})
VIDEO_TYPES = frozenset({MP4, QUICKTIME})
MEDIA_TYPES = IMAGE_TYPES | VIDEO_TYPES
SCRUBBED_TYPES = frozenset({JPEG, PNG, WEBP})

HEAD_BYTES = 64  # enough of the start of a file to recognise it

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1"}
_QT_BRANDS = {b"qt  "}
_QT_FIRST_BOXES = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}


def _brands(head: bytes) -> list[bytes]:
    """The major and compatible brands of a leading `ftyp` box (as far as `head` holds them)."""
    size = int.from_bytes(head[0:4], "big")
    end = min(len(head), size if size >= 16 else len(head))
    brands = [head[8:12]]
    brands += [head[i:i + 4] for i in range(16, end - 3, 4)]
    return brands


def sniff(head: bytes) -> str | None:
    """The media type the bytes are, or None when they are none of MEDIA_TYPES."""
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(head) >= 12 and head[0:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brands = _brands(head)
        major = brands[0]
        if major in _HEIF_BRANDS:
            return HEIC
        if major in _QT_BRANDS:
            return QUICKTIME
        if any(b in _HEIF_BRANDS for b in brands[1:]) and not any(b.startswith((b"iso", b"mp4")) for b in brands):
            return HEIC
        return MP4
    if len(head) >= 8 and head[4:8] in _QT_FIRST_BOXES:
        return QUICKTIME
    return None


def matches(declared: str, head: bytes) -> bool:
    """Whether the bytes are what the Content-Type says. An MP4 declared as QuickTime (and the
    reverse) is accepted: both are the same ISO box format, and phones label them loosely."""
    found = sniff(head)
    if found == declared:
        return True
    return found in VIDEO_TYPES and declared in VIDEO_TYPES
