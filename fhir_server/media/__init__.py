"""Photos and video of a visit: recognising a file by its magic bytes (sniff.py) and removing the
metadata that can identify or locate a patient from JPEG, PNG and WebP without re-encoding them
(scrub.py)."""
