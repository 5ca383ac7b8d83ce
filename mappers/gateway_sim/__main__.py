"""`python -m mappers.gateway_sim --port P [--host 127.0.0.1] [--allow-remote]`"""

from __future__ import annotations

import argparse
import sys

import uvicorn

from .app import is_loopback, create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mappers.gateway_sim",
                                     description="A simulated NCPDP SCRIPT network for tests (never for real data).")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8099, help="listen port (default 8099)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback listen address and callback URLs")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(f"--host {args.host} is not loopback; the simulator has no authentication "
                     "(pass --allow-remote to listen there anyway)")
    app = create_app(allow_remote_callbacks=args.allow_remote)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
