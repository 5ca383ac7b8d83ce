"""Load run of the whole asynchronous visit: N concurrent visits, throughput and latency per step.

Starts the real server (`python -m fhir_server serve --no-auth`, optional `--workers N`) on a free
127.0.0.1 port with a fresh SQLite file, seeds a pool of patients (the guide's async-visit patient,
a US Core Patient, varied) and of clinicians (the guide's licensed practitioner, its licences
re-pointed to the states used, NPIs varied with a valid Luhn check digit), then runs --visits visits
at once, each an asyncio task walking every step of issue 9's flow over HTTP, in order:

  start         POST /            transaction: Location (where the patient is), planned Encounter,
                                  completed intake QuestionnaireResponse (the Patient is the pool's)
  submit        POST /Encounter/{id}/$submit        -> review Task (201), Encounter arrived, fee
  claim         PUT /Task/{id}    in-progress, businessStatus in-review, owner = a clinician licensed
                                  in the patient's state (each visit has its own designated clinician:
                                  no intended claim conflicts, so a 409 is an error)
  ask           POST /Communication   the clinician's question     (Task -> awaiting-patient)
  answer        POST /Communication   the patient's reply (inResponseTo)     (-> in-review)
  diagnosis     POST /Condition       encounter-diagnosis
  careplan      POST /CarePlan        addresses the Condition
  prescription  POST /MedicationRequest   triamcinolone cream (the guide's example), prescribing rules
  complete      PUT /Task/{id}    completed; the Encounter finishes in the same unit of work

Every resource keeps the guide profile it claims (visit encounter, intake, patient location,
diagnosis, care plan, prescription), so each write pays profile validation as a real app's would.

Client: httpx.AsyncClient with a pool of --concurrency keep-alive connections, shared by all visit
tasks. A semaphore of the same size hands out the connections, so a request's latency is measured
from the moment it has a connection (server time plus client overhead); the time a visit waited for
a free connection is reported apart ("wait ms"). httpx costs client CPU (see README, "Why a
hand-written client"), but a visit's requests are far heavier than a bare GET: the client CPU column
shows whether it mattered.

At the end: every visit's Encounter must be `finished` and its review Task `completed` (by search),
and `/metrics` must count visit_steps_total{step=...} == visits for submit, claim, ask, answer and
complete (with --workers N too: the server sums the workers' counters). Exit code 1 on any failed
request or failed check.

Run from the project root:
    .venv/bin/python bench/visit_load.py [--visits 200] [--concurrency 32] [--workers 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench_support import Server, free_port  # bench/bench_support.py

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "profiles" / "examples"
INTAKE = ROOT / "tests" / "fixtures" / "questionnaire" / "async-visit-intake-complete.json"
STEPS = ["start", "submit", "claim", "ask", "answer", "diagnosis", "careplan", "prescription", "complete"]
METRIC_STEPS = ["submit", "claim", "ask", "answer", "complete"]  # one each per visit (visit/metrics.py)
FHIR = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
USPS = "https://www.usps.com/"
# state -> (name, a city, its postal code): where the pool's patients live and are during the visit
PLACES = {
    "CA": ("California", "Sacramento", "95816"), "NY": ("New York", "Albany", "12207"),
    "TX": ("Texas", "Austin", "78701"), "FL": ("Florida", "Tallahassee", "32301"),
    "OR": ("Oregon", "Portland", "97205"), "WA": ("Washington", "Seattle", "98101"),
    "IL": ("Illinois", "Chicago", "60601"), "MA": ("Massachusetts", "Boston", "02108"),
}
GIVENS = ["Jordan", "Alex", "Sam", "Robin", "Casey", "Morgan", "Taylor", "Jamie", "Riley", "Avery", "Quinn", "Drew"]
FAMILIES = ["Rivera", "Chen", "Okafor", "Novak", "Haddad", "Lindqvist", "Moreau", "Tanaka", "Silva", "Kowalski"]


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- seed data -------------------------------------------------------------------------------


def luhn_digit(payload: str) -> str:
    """The Luhn check digit for `payload` (rightmost payload digit doubled)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str((10 - total % 10) % 10)


def npi(n: int) -> str:
    """A 10-digit NPI whose check digit is valid (Luhn over the prefix 80840 + the first nine digits)."""
    base = f"1{(n * 7919 + 47) % 10 ** 8:08d}"
    return base + luhn_digit("80840" + base)


def dea(n: int, family: str) -> str:
    """A DEA number of the right shape and checksum: B (practitioner), family initial, 6 digits, check."""
    digits = f"{(n * 104729 + 12345) % 10 ** 6:06d}"
    d = [int(c) for c in digits]
    check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
    return f"B{family[0].upper()}{digits}{check}"


def make_patient(i: int, state: str, rnd: random.Random) -> dict:
    """The guide's async-visit patient (a US Core Patient) with a new identity living in `state`."""
    p = load(EXAMPLES / "async-visit-patient-valid.json")
    p.pop("id")
    given, family = [rnd.choice(GIVENS), rnd.choice(GIVENS)], f"{rnd.choice(FAMILIES)}{i}"
    name, city, postal = PLACES[state]
    birth = dt.date(1950, 1, 1) + dt.timedelta(days=rnd.randint(0, 50 * 365))
    gender = rnd.choice(["female", "male"])
    p["identifier"][0]["value"] = f"PA-{1000000 + i:07d}"
    p["name"] = [{"use": "official", "family": family, "given": given}]
    p["telecom"] = [{"system": "phone", "value": f"+1 555 {rnd.randint(100, 999)} {rnd.randint(0, 9999):04d}",
                     "use": "mobile"},
                    {"system": "email", "value": f"{given[0].lower()}.{family.lower()}@example.com"}]
    p["gender"], p["birthDate"] = gender, birth.isoformat()
    p["address"] = [{"use": "home", "line": [f"{rnd.randint(1, 9999)} Main Street"], "city": city,
                     "state": state, "postalCode": postal, "country": "US"}]
    p["text"]["div"] = (f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{given[0]} {family}, {gender}, '
                        f"born {birth.isoformat()}, {city} {state}</p></div>")
    return p


def make_clinician(j: int, states: list[str]) -> dict:
    """The guide's licensed practitioner, licensed in `states` (its licence re-pointed, as the review
    tests do), with its own NPI, DEA number and licence numbers."""
    body = load(EXAMPLES / "licensed-practitioner-valid.json")
    body.pop("id")
    family = f"{FAMILIES[j % len(FAMILIES)]}{j}"
    body["name"][0].update(family=family, given=[GIVENS[j % len(GIVENS)]])
    body["telecom"][0]["value"] = f"dr.{family.lower()}@clinicians.example.org"
    for ident in body["identifier"]:
        if ident["system"] == "http://hl7.org/fhir/sid/us-npi":
            ident["value"] = npi(j)
        else:
            ident["value"] = dea(j, family)
    template, board = body["qualification"][0], body["qualification"][-1]
    body["qualification"] = []
    for state in states:
        q = copy.deepcopy(template)
        q["extension"][0]["extension"][1]["valueCodeableConcept"]["coding"][0].update(
            code=state, display=PLACES[state][0])
        q["identifier"][0].update(system=f"http://fhir-async-telehealth.example/sid/medical-licence-{state.lower()}",
                                  value=f"A {100000 + j:06d}")
        q["code"]["text"] = f"Physician and surgeon licence ({state})"
        q["issuer"] = {"display": f"Medical Board of {PLACES[state][0]}"}
        body["qualification"].append(q)
    body["qualification"].append(board)
    body["text"]["div"] = (f'<div xmlns="http://www.w3.org/1999/xhtml"><p>Dr. {GIVENS[j % len(GIVENS)]} {family}, '
                           f"MD: licensed in {', '.join(PLACES[s][0] for s in states)}</p></div>")
    return body


class Templates:
    """The guide's examples, loaded once; each visit deep-copies what it sends."""

    def __init__(self) -> None:
        self.location = load(EXAMPLES / "patient-location-valid.json")
        self.encounter = load(EXAMPLES / "async-visit-encounter-valid.json")
        self.intake = load(INTAKE)
        self.condition = load(EXAMPLES / "visit-diagnosis-valid.json")
        self.careplan = load(EXAMPLES / "visit-careplan-valid.json")
        self.prescription = load(EXAMPLES / "async-prescription-valid.json")
        for r in (self.location, self.encounter, self.intake, self.condition, self.careplan, self.prescription):
            r.pop("id", None)

    def start_bundle(self, patient: str, state: str, n: int) -> dict:
        urls = [f"urn:uuid:{n:08x}-0000-4000-8000-00000000000{k}" for k in (2, 3, 4)]
        me = {"reference": patient}
        location, encounter, intake = (copy.deepcopy(x) for x in (self.location, self.encounter, self.intake))
        name, city, postal = PLACES[state]
        location["address"] = {"city": city, "state": state, "postalCode": postal, "country": "US"}
        location["name"] = f"Where {patient} is during load visit {n}"
        location["text"]["div"] = (f'<div xmlns="http://www.w3.org/1999/xhtml"><p>Where the patient is: '
                                   f"{city}, {state}</p></div>")
        encounter.update(status="planned", subject=me, location=[{"location": {"reference": urls[0]}}],
                         period={"start": now()})
        encounter.pop("participant", None)
        intake.update(subject=me, author=me, source=me, encounter={"reference": urls[1]}, authored=now())
        _answer(intake, "patient-state", {"valueCoding": {"system": USPS, "code": state, "display": name}})
        return {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": url, "resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for url, r in zip(urls, (location, encounter, intake))]}

    def condition_for(self, encounter: dict, patient: dict, doctor: dict) -> dict:
        c = copy.deepcopy(self.condition)
        c.update(subject=patient, encounter=encounter, recorder=doctor, recordedDate=now())
        return c

    def careplan_for(self, encounter: dict, patient: dict, doctor: dict, condition_id: str) -> dict:
        c = copy.deepcopy(self.careplan)
        c.update(subject=patient, encounter=encounter, author=doctor, created=now(),
                 addresses=[{"reference": f"Condition/{condition_id}"}])
        c["activity"] = [a for a in c["activity"] if "detail" in a]  # (the prescription comes after it)
        return c

    def prescription_for(self, encounter: dict, patient: dict, doctor: dict, condition_id: str) -> dict:
        m = copy.deepcopy(self.prescription)
        m.update(subject=patient, encounter=encounter, requester=doctor, authoredOn=now(),
                 reasonReference=[{"reference": f"Condition/{condition_id}"}])
        m["dispenseRequest"].pop("performer", None)  # (no pharmacy directory seeded; no e-Rx gateway)
        return m


def _answer(response: dict, link_id: str, answer: dict) -> None:
    stack = list(response["item"])
    while stack:
        item = stack.pop()
        if item["linkId"] == link_id:
            item["answer"] = [answer]
            return
        stack.extend(item.get("item", []))
    raise KeyError(link_id)


# -- the load --------------------------------------------------------------------------------


class StepFailed(Exception):
    pass


class Recorder:
    def __init__(self, concurrency: int) -> None:
        self.sem = asyncio.Semaphore(concurrency)
        self.latency: dict[str, list[float]] = defaultdict(list)  # ms, with a connection in hand
        self.wait: dict[str, list[float]] = defaultdict(list)  # ms waiting for a free connection
        self.errors: dict[str, Counter[str]] = defaultdict(Counter)
        self.skipped: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()

    async def call(self, client: httpx.AsyncClient, step: str, method: str, url: str, expect: int,
                   body: dict | None = None) -> dict:
        content = orjson.dumps(body) if body is not None else None
        t0 = time.perf_counter()
        async with self.sem:
            t1 = time.perf_counter()
            self.sent[step] += 1
            try:
                response = await client.request(method, url, content=content)
                data = response.content
            except httpx.HTTPError as err:
                self.errors[step][f"{type(err).__name__}"] += 1
                raise StepFailed(step) from err
            finally:
                t2 = time.perf_counter()
        self.wait[step].append((t1 - t0) * 1000)
        self.latency[step].append((t2 - t1) * 1000)
        if response.status_code != expect:
            self.errors[step][f"HTTP {response.status_code}: {_why(data)}"] += 1
            raise StepFailed(step)
        return orjson.loads(data) if data else {}


def _why(body: bytes) -> str:
    """The first issue's rule code or diagnostics of an OperationOutcome, short, for the error table."""
    try:
        issue = orjson.loads(body)["issue"][0]
        codes = [c.get("code") for c in issue.get("details", {}).get("coding", [])]
        return (",".join(c for c in codes if c) or issue.get("diagnostics") or issue.get("code", ""))[:120]
    except Exception:  # noqa: BLE001 - anything unreadable is reported as its first bytes
        return body[:120].decode(errors="replace")


async def visit(n: int, client: httpx.AsyncClient, rec: Recorder, tpl: Templates, patient: str, state: str,
                doctor_ref: str, result: dict) -> None:
    step = "start"
    try:
        bundle = await rec.call(client, "start", "POST", "/", 200, tpl.start_bundle(patient, state, n))
        encounter_id = next(e["response"]["location"].split("/")[1] for e in bundle["entry"]
                            if e["response"]["location"].startswith("Encounter/"))
        result["encounter"] = encounter_id
        step = "submit"
        task = await rec.call(client, step, "POST", f"/Encounter/{encounter_id}/$submit", 201)
        if task.get("status") != "requested":
            rec.errors[step][f"Task status {task.get('status')}"] += 1
            raise StepFailed(step)
        result["task"] = task["id"]
        doctor, me, visit_ref = {"reference": doctor_ref}, task["for"], task["focus"]
        business = task["businessStatus"]["coding"][0]

        step = "claim"
        claimed = await rec.call(client, step, "PUT", f"/Task/{task['id']}", 200, {
            **task, "status": "in-progress", "owner": doctor,
            "businessStatus": {"coding": [{**business, "code": "in-review"}]}})
        step = "ask"
        question = await rec.call(client, step, "POST", "/Communication", 201, {
            "resourceType": "Communication", "status": "completed", "encounter": visit_ref, "subject": me,
            "sender": doctor, "recipient": [me], "sent": now(),
            "payload": [{"contentString": "Is the rash itchy at night, and have you started any new products?"}]})
        step = "answer"
        await rec.call(client, step, "POST", "/Communication", 201, {
            "resourceType": "Communication", "status": "completed", "encounter": visit_ref, "subject": me,
            "sender": me, "recipient": [doctor], "sent": now(),
            "inResponseTo": [{"reference": f"Communication/{question['id']}"}],
            "payload": [{"contentString": "Yes, mostly at night. I started wearing a new fitness band."}]})
        step = "diagnosis"
        condition = await rec.call(client, step, "POST", "/Condition", 201, tpl.condition_for(visit_ref, me, doctor))
        step = "careplan"
        await rec.call(client, step, "POST", "/CarePlan", 201, tpl.careplan_for(visit_ref, me, doctor, condition["id"]))
        step = "prescription"
        await rec.call(client, step, "POST", "/MedicationRequest", 201,
                       tpl.prescription_for(visit_ref, me, doctor, condition["id"]))
        step = "complete"
        # The claim's answer as the clinician app holds it: the messages changed businessStatus and
        # back (in-review again), so the body is current except for meta, which PUT ignores.
        await rec.call(client, step, "PUT", f"/Task/{task['id']}", 200, {
            **claimed, "status": "completed", "businessStatus": {"coding": [{**business, "code": "completed"}]}})
        result["done"] = True
    except StepFailed:
        for later in STEPS[STEPS.index(step) + 1:]:
            rec.skipped[later] += 1
    except Exception as err:  # a bug of this script or an unexpected answer: counted, never hangs
        rec.errors[step][f"client: {type(err).__name__}: {err}"[:160]] += 1
        for later in STEPS[STEPS.index(step) + 1:]:
            rec.skipped[later] += 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 1)


# -- CPU -------------------------------------------------------------------------------------


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid` (server and its workers)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def machine_busy_seconds() -> float:
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# -- run -------------------------------------------------------------------------------------


async def seed(client: httpx.AsyncClient, args: argparse.Namespace, states: list[str]) -> tuple[list, dict]:
    """POST the patient and clinician pools (not timed). Returns [(Patient/id, state)] and
    {state: [Practitioner/id licensed there]}."""
    rnd = random.Random(args.seed)
    sem = asyncio.Semaphore(args.concurrency)

    async def post(body: dict) -> str:
        async with sem:
            r = await client.post(f"/{body['resourceType']}", content=orjson.dumps(body))
        if r.status_code != 201:
            raise RuntimeError(f"seeding {body['resourceType']} answered {r.status_code}: {r.text[:500]}")
        return f"{body['resourceType']}/{r.json()['id']}"

    patients_bodies = [(make_patient(i, states[i % len(states)], rnd), states[i % len(states)])
                       for i in range(args.patients)]
    # The pool must stay valid US Core patients: check one of each state against the base profile.
    for body, _ in patients_bodies[:len(states)]:
        r = await client.post("/Patient/$validate", content=orjson.dumps(body),
                              params={"profile": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"})
        bad = [i for i in r.json().get("issue", []) if i.get("severity") in ("error", "fatal")]
        if r.status_code != 200 or bad:
            raise RuntimeError(f"a seeded patient is not a valid US Core Patient: {r.status_code} "
                               f"{bad or r.text[:300]}")
    refs = await asyncio.gather(*(post(b) for b, _ in patients_bodies))
    patients = [(ref, state) for ref, (_, state) in zip(refs, patients_bodies)]
    # clinician j holds two licences: states j and j+1 (mod the states used), like the guide's example
    licences = [sorted({states[j % len(states)], states[(j + 1) % len(states)]}) for j in range(args.clinicians)]
    crefs = await asyncio.gather(*(post(make_clinician(j, lic)) for j, lic in enumerate(licences)))
    by_state: dict[str, list[str]] = defaultdict(list)
    for ref, lic in zip(crefs, licences):
        for s in lic:
            by_state[s].append(ref)
    return patients, by_state


async def check_outcome(client: httpx.AsyncClient, results: list[dict], workers: int) -> dict:
    """Every visit's Encounter finished and Task completed (searched by _id), /metrics step counts."""
    checks: dict[str, Any] = {}
    enc_ids = [r["encounter"] for r in results if "encounter" in r]
    task_ids = [r["task"] for r in results if "task" in r]
    found: dict[str, dict[str, str]] = {"Encounter": {}, "Task": {}}
    for rtype, ids in (("Encounter", enc_ids), ("Task", task_ids)):
        for i in range(0, len(ids), 50):
            chunk = ids[i:i + 50]
            r = await client.get(f"/{rtype}", params={"_id": ",".join(chunk), "_count": "100",
                                                      "_elements": "status"})
            if r.status_code != 200:
                raise RuntimeError(f"search {rtype} answered {r.status_code}: {r.text[:300]}")
            for e in r.json().get("entry", []):
                found[rtype][e["resource"]["id"]] = e["resource"].get("status")
    visits = len(results)
    finished = sum(1 for r in results if found["Encounter"].get(r.get("encounter")) == "finished")
    completed = sum(1 for r in results if found["Task"].get(r.get("task")) == "completed")
    checks["encounters_finished"] = {"value": finished, "expected": visits, "ok": finished == visits}
    checks["tasks_completed"] = {"value": completed, "expected": visits, "ok": completed == visits}
    text = (await client.get("/metrics")).text
    for step in METRIC_STEPS:
        m = re.search(rf'^visit_steps_total\{{step="{step}"\}} ([0-9.e+]+)$', text, re.M)
        value = float(m.group(1)) if m else None
        # (with --workers N the server sums the workers' counters: prometheus-client multiprocess mode)
        checks[f"metrics_{step}"] = {"value": value, "expected": visits, "ok": value == visits}
    return checks


async def run(args: argparse.Namespace, base: str, server_pgid: int) -> dict:
    states = args.state_list
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=base, headers=FHIR, limits=limits,
                                 timeout=httpx.Timeout(args.timeout, pool=args.timeout)) as client:
        t_seed = time.perf_counter()
        patients, clinicians = await seed(client, args, states)
        seed_s = time.perf_counter() - t_seed
        tpl = Templates()
        rec = Recorder(args.concurrency)
        results: list[dict] = [{} for _ in range(args.visits)]
        seen: Counter[str] = Counter()
        jobs = []
        for n in range(args.visits):
            patient, state = patients[n % len(patients)]
            pool = clinicians[state]
            doctor = pool[seen[state] % len(pool)]  # round robin among the clinicians licensed there
            seen[state] += 1
            jobs.append(visit(n, client, rec, tpl, patient, state, doctor, results[n]))
        cpu0, server0, machine0, t0 = time.process_time(), group_cpu_seconds(server_pgid), machine_busy_seconds(), \
            time.perf_counter()
        tasks = [asyncio.ensure_future(j) for j in jobs]
        done, pending = await asyncio.wait(tasks, timeout=args.run_timeout)
        for t in pending:
            t.cancel()
        wall = time.perf_counter() - t0
        client_cpu = time.process_time() - cpu0
        server_cpu = group_cpu_seconds(server_pgid) - server0
        machine_cpu = machine_busy_seconds() - machine0
        timed_out = len(pending)
        checks = await check_outcome(client, results, args.workers)

    steps = []
    for step in STEPS:
        lat = rec.latency[step]
        errors = sum(rec.errors[step].values())
        steps.append({
            "step": step, "requests": rec.sent[step], "errors": errors, "skipped": rec.skipped[step],
            "p50_ms": pct(lat, 0.50), "p95_ms": pct(lat, 0.95), "p99_ms": pct(lat, 0.99), "max_ms": pct(lat, 1.0),
            "mean_wait_ms": round(sum(rec.wait[step]) / len(rec.wait[step]), 1) if rec.wait[step] else float("nan"),
            "error_kinds": dict(rec.errors[step]),
        })
    requests = sum(rec.sent.values())
    completed = sum(1 for r in results if r.get("done"))
    return {
        "steps": steps,
        "overall": {
            "visits": args.visits, "visits_completed": completed, "visits_timed_out": timed_out,
            "requests": requests, "errors": sum(s["errors"] for s in steps) + timed_out,
            "wall_s": round(wall, 2), "visits_per_s": round(completed / wall, 2) if wall else 0.0,
            "requests_per_s": round(requests / wall, 1) if wall else 0.0,
            "client_cpu_pct": round(100 * client_cpu / wall, 1), "server_cpu_pct": round(100 * server_cpu / wall, 1),
            "other_cpu_pct": round(100 * (machine_cpu - client_cpu - server_cpu) / wall, 1),
            "seed_s": round(seed_s, 2), "patients": len(patients), "clinicians": args.clinicians, "states": states,
        },
        "checks": checks,
    }


def print_report(out: dict) -> None:
    cols = [("step", "step", "<13"), ("requests", "requests", ">8"), ("errors", "errors", ">6"),
            ("skipped", "skipped", ">7"), ("p50_ms", "p50 ms", ">7"), ("p95_ms", "p95 ms", ">7"),
            ("p99_ms", "p99 ms", ">7"), ("max_ms", "max ms", ">7"), ("mean_wait_ms", "wait ms", ">7")]
    print()
    print("  ".join(f"{title:{fmt}}" for _, title, fmt in cols))
    for row in out["steps"]:
        print("  ".join(f"{row[key]:{fmt}}" for key, _, fmt in cols))
    o = out["overall"]
    print(f"\n{o['visits_completed']}/{o['visits']} visits completed in {o['wall_s']} s: "
          f"{o['visits_per_s']} visits/s, {o['requests_per_s']} requests/s ({o['requests']} requests, "
          f"{o['errors']} errors)")
    print(f"CPU (% of one core, machine has {os.cpu_count()}): client {o['client_cpu_pct']}, "
          f"server {o['server_cpu_pct']}, other {o['other_cpu_pct']}")
    for row in out["steps"]:
        for kind, count in row["error_kinds"].items():
            print(f"errors in {row['step']}: {count} x {kind}")
    print("checks:")
    for name, c in out["checks"].items():
        status = "skipped" if c["ok"] is None else ("ok" if c["ok"] else "FAILED")
        note = f"  ({c['note']})" if c.get("note") else ""
        print(f"  {name:<22} {c['value']} / {c['expected']}  {status}{note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32, help="connections in the client's pool")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (serve --workers)")
    parser.add_argument("--patients", type=int, default=100, help="patients in the pool (visits share them)")
    parser.add_argument("--clinicians", type=int, default=50,
                        help="clinicians in the pool; each visit has one designated clinician")
    parser.add_argument("--states", default="CA,NY,TX,FL", help=f"comma list from {','.join(PLACES)}")
    parser.add_argument("--timeout", type=float, default=120.0, help="per request, seconds")
    parser.add_argument("--run-timeout", type=float, default=900.0,
                        help="the whole load is cut off after this; unfinished visits count as errors")
    parser.add_argument("--db-dir", default=None, help="where the SQLite file goes (kept; default: a temp dir)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results here")
    args = parser.parse_args()
    args.state_list = states = list(dict.fromkeys(s.strip().upper() for s in args.states.split(",") if s.strip()))
    unknown = [s for s in states if s not in PLACES]
    if unknown or not states:
        parser.error(f"unknown states {unknown}; known: {','.join(PLACES)}")
    if args.clinicians < (len(states) + 1) // 2 or args.patients < 1 or args.visits < 1:
        parser.error(f"need --visits and --patients >= 1 and --clinicians >= {(len(states) + 1) // 2} "
                     "(each holds two licences) so that every state has a licensed clinician")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))

    tmp = Path(tempfile.mkdtemp(prefix="fhir-visit-load-", dir=args.db_dir))
    port = free_port()
    settings = {k: v for k, v in vars(args).items() if k not in ("json_path", "state_list")}
    settings.update(database=str(tmp / "fhir.db"),
                    sqlite_synchronous=os.environ.get("FHIR_SQLITE_SYNCHRONOUS", "FULL (server default)"))
    machine = {"nproc": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
               "httpx": httpx.__version__}
    print(f"machine: {machine}\nsettings: {settings}", flush=True)
    server = Server([sys.executable, "-m", "fhir_server", "serve", "--no-auth", "--host", "127.0.0.1",
                     "--port", str(port), "--database", f"sqlite:///{tmp / 'fhir.db'}",
                     "--workers", str(args.workers), "--log-level", "warning"], port, tmp / "server.log")
    log_problems = ""
    try:
        server.wait_ready()
        out = asyncio.run(run(args, f"http://127.0.0.1:{port}", server.proc.pid))
    finally:
        server.stop()
        log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
        if "ERROR" in log or "Traceback" in log:
            log_problems = "\n".join(log.splitlines()[-30:])
        if args.db_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    out["server_log_errors"] = bool(log_problems)
    print_report(out)
    if log_problems:
        print(f"server log has errors (tail):\n{log_problems}", file=sys.stderr)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"machine": machine, "settings": settings, **out}, indent=2))
    failed = out["overall"]["errors"] or any(c["ok"] is False for c in out["checks"].values())
    return 1 if failed or log_problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
