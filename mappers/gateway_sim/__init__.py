"""A simulated e-prescribing network for tests and local runs: `python -m mappers.gateway_sim --port P`.
It takes SCRIPT over HTTP, answers Status/Error/Verify like a switch and a pharmacy would, and can
be told to fail, time out or answer late (see app.py)."""

from .app import Gateway, create_app

__all__ = ["Gateway", "create_app"]
