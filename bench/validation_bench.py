"""Validation speed: validations per second in-process, and what validation adds to a create over HTTP.

In-process (one core, the validators the server builds at start, warm caches):
  - the structure pass alone (every write: fhir_server/validation/structure.py);
  - the async-visit Encounter and the async prescription MedicationRequest examples of the guide,
    against their base definition and their profile (what a write claiming the profile costs);
  - a completed 40-item intake QuestionnaireResponse: base definition + its profile + its Questionnaire.

Over HTTP (the real server, `serve --no-auth` on a fresh SQLite file, one keep-alive connection):
  p50/p95 of POST /Encounter for the same Encounter claiming the profile and not claiming it (the
  difference is what profile validation adds), and of the intake QuestionnaireResponse.

Run from the project root:
    .venv/bin/python bench/validation_bench.py [--seconds 3] [--creates 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bench_support import Server, free_port  # noqa: E402

from fhir_server.validation.service import Validation  # noqa: E402
from fhir_server.validation.structure import validate_resource  # noqa: E402
from profiles.guide import load_guide  # noqa: E402

EXAMPLES = ROOT / "profiles" / "examples"
QR_FIXTURE = ROOT / "tests" / "fixtures" / "questionnaire" / "async-visit-intake-complete.json"


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def rate(fn, seconds: float) -> float:
    """Calls per second of fn over about `seconds` (after a warm-up call)."""
    fn()
    n, started = 0, time.perf_counter()
    while True:
        for _ in range(20):
            fn()
        n += 20
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return n / elapsed


def in_process(seconds: float) -> dict:
    t0 = time.perf_counter()
    validation = Validation(load_guide())
    build = time.perf_counter() - t0
    encounter = _load(EXAMPLES / "async-visit-encounter-valid.json")
    prescription = _load(EXAMPLES / "async-prescription-valid.json")
    qr = _load(QR_FIXTURE)
    questionnaire = validation.guide.questionnaire(qr["questionnaire"])
    items = sum(1 for _ in _walk_items(qr.get("item", [])))
    out = {"validation_setup_s": round(build, 3), "intake_answered_items": items}
    for name, resource in (("Encounter", encounter), ("MedicationRequest", prescription), ("QuestionnaireResponse", qr)):
        profile = (resource.get("meta") or {}).get("profile", [None])[0]
        assert profile, f"the {name} example claims no profile"
        q = questionnaire if name == "QuestionnaireResponse" else None
        issues = validation.validate(resource, questionnaire=q)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        assert not errors, errors
        bare = {k: v for k, v in resource.items() if k != "meta"}
        out[name] = {
            "structure_per_s": round(rate(lambda: validate_resource(resource, name), seconds)),
            "base_definition_per_s": round(rate(lambda: validation.validate(bare), seconds)),
            "base_and_profile_per_s": round(rate(lambda: validation.validate(resource, questionnaire=q), seconds)),
        }
    return out


def _walk_items(items):
    for item in items:
        yield item
        yield from _walk_items(item.get("item", []))
        for answer in item.get("answer", []):
            yield from _walk_items(answer.get("item", []))


def over_http(creates: int) -> dict:
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="validation-bench-"))
    server = Server([sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--host", "127.0.0.1",
                     "--port", str(port), "--database", f"sqlite:///{tmp / 'fhir.db'}"], port, tmp / "server.log")
    try:
        server.wait_ready()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json", "Prefer": "return=minimal"}

        def timed(body: dict) -> list[float]:
            payload = json.dumps(body).encode()
            rt = body["resourceType"]
            times = []
            for i in range(creates + 20):
                t0 = time.perf_counter()
                conn.request("POST", f"/{rt}", body=payload, headers=headers)
                response = conn.getresponse()
                response.read()
                if response.status != 201:
                    raise RuntimeError(f"POST {rt} answered {response.status}")
                if i >= 20:
                    times.append((time.perf_counter() - t0) * 1000)
            return times

        encounter = _load(EXAMPLES / "async-visit-encounter-valid.json")
        encounter.pop("id", None)
        unclaimed = copy.deepcopy(encounter)
        unclaimed.pop("meta", None)
        qr = _load(QR_FIXTURE)
        qr.pop("id", None)
        out = {}
        for name, body in (("Encounter_claiming_profile", encounter), ("Encounter_no_profile", unclaimed),
                           ("intake_QuestionnaireResponse", qr)):
            times = sorted(timed(body))
            out[name] = {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95)], 2)}
        out["profile_adds_p50_ms"] = round(out["Encounter_claiming_profile"]["p50_ms"] - out["Encounter_no_profile"]["p50_ms"], 2)
        return out
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per in-process measurement")
    parser.add_argument("--creates", type=int, default=300, help="timed creates per HTTP case")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {"machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
              "in_process": in_process(args.seconds), "http": over_http(args.creates)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
