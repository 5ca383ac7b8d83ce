"""Throughput of the FHIR -> NCPDP SCRIPT mappers (mappers/ncpdp), in-process, one core.

Over the sendable e-prescribing fixtures (tests/fixtures/erx: a tablet, a liquid in mL, an
inhaler, a cream, a Medication resource with strength), contexts resolved once up front, it
times in rounds over all fixtures:

- newrx build: map_prescription + lxml writing + serialisation (build_newrx(validate=False));
- XSD validation alone, Schematron alone, and validate_message (both) on the built bytes;
- newrx build + validate: what build_newrx does by default (what the outbox job will pay);
- a refusal: building from the "incomplete" fixture, which collects 11 problems into a 422;
- resolve_context with an in-memory read that deep-copies (what a store read adds is not measured).

Each line reports messages (or operations) per second and the median microseconds per item over
--rounds rounds after --warmup rounds. Not a test: it does not fail on a number.

Run from the project root:
    .venv/bin/python bench/mapping_bench.py [--rounds 400] [--warmup 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.errors import UnprocessableEntity  # noqa: E402
from mappers.ncpdp import validate as validate_module  # noqa: E402
from mappers.ncpdp.newrx import build_newrx  # noqa: E402
from mappers.ncpdp.resources import resolve_context  # noqa: E402
from mappers.ncpdp.validate import validate_message  # noqa: E402
from tests.fixtures.erx import SENDABLE, context, medication_request, reader  # noqa: E402

SENT = datetime(2026, 11, 20, tzinfo=timezone.utc)


def timed(label: str, items: list, operation, rounds: int, warmup: int) -> dict:
    """Run `operation(item)` over all `items`, `warmup` + `rounds` times; per-round timing."""
    for _ in range(warmup):
        for item in items:
            operation(item)
    per_item_us = []
    start = time.perf_counter()
    for _ in range(rounds):
        t0 = time.perf_counter()
        for item in items:
            operation(item)
        per_item_us.append((time.perf_counter() - t0) / len(items) * 1e6)
    elapsed = time.perf_counter() - start
    result = {"label": label, "operations": rounds * len(items), "seconds": round(elapsed, 3),
              "per_second": round(rounds * len(items) / elapsed), "median_us": round(statistics.median(per_item_us), 1),
              "p95_us": round(sorted(per_item_us)[int(0.95 * (len(per_item_us) - 1))], 1)}
    print(f"{label:<34} {result['per_second']:>9,}/s   median {result['median_us']:>7.1f} us   "
          f"p95 {result['p95_us']:>7.1f} us")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    contexts = [context(name) for name in SENDABLE]
    built = [build_newrx(ctx, sender_id="BENCH", message_id=f"bench{i}", sent_time=SENT, validate=False)
             for i, ctx in enumerate(contexts)]
    trees = [etree.fromstring(xml).getroottree() for xml in built]
    xsd, schematron = validate_module._xsd("2017071"), validate_module._schematron("2017071")
    incomplete = context("incomplete")
    requests = [medication_request(name) for name in SENDABLE]
    read = reader()

    def refuse(ctx):
        try:
            build_newrx(ctx, sender_id="BENCH", message_id="m", sent_time=SENT)
        except UnprocessableEntity:
            return
        raise AssertionError("the incomplete fixture was not refused")

    loop = asyncio.new_event_loop()

    def resolve(mr):
        loop.run_until_complete(resolve_context(mr, read))

    print(f"python {platform.python_version()}, lxml {'.'.join(map(str, etree.LXML_VERSION))}, "
          f"{platform.machine()}; {len(contexts)} fixtures, mean message {sum(map(len, built)) // len(built)} bytes; "
          f"{args.rounds} rounds after {args.warmup} warm-up rounds")
    results = [
        timed("newrx build (no validation)", contexts,
              lambda ctx: build_newrx(ctx, sender_id="BENCH", message_id="m", sent_time=SENT, validate=False),
              args.rounds, args.warmup),
        timed("XSD validation (parsed tree)", trees, xsd.validate, args.rounds, args.warmup),
        timed("Schematron (parsed tree)", trees, schematron.validate, args.rounds, args.warmup),
        timed("validate_message (bytes: both)", built, validate_message, args.rounds, args.warmup),
        timed("newrx build + validate (default)", contexts,
              lambda ctx: build_newrx(ctx, sender_id="BENCH", message_id="m", sent_time=SENT),
              args.rounds, args.warmup),
        timed("refusal (11 problems -> 422)", [incomplete], refuse, args.rounds, args.warmup),
        timed("resolve_context (in-memory read)", requests, resolve, max(1, args.rounds // 4), args.warmup // 4),
    ]
    loop.close()
    if args.json:
        args.json.write_text(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
