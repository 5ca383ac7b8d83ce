"""Search latency of the FHIR server on a large SQLite store (default 1,000,000 resources).

1. Generates (bench/generate.py, seeded) a telehealth data set scaled from the Synthea sample, as an
   NDJSON file under --data-dir (reused when it exists: same size, seed and anchor give the same bytes);
2. loads it into a fresh SQLite store through the Store API (open_store + unit_of_work, --batch
   resources per unit of work, the real indexer, synchronous=FULL like the server) and reports
   resources/s and the database size; --reuse skips this when the database exists;
3. starts the real server (`python -m fhir_server serve --no-auth`) on that file, on 127.0.0.1, and
   times typical searches over one keep-alive HTTP connection (--reps timed requests per query after
   --warmup untimed ones, parameter values drawn from the data), checking every answer against what
   the generator recorded (match and include counts, paging order, totals);
4. prints, per query, the SQLite EXPLAIN QUERY PLAN of the SQL the store builds for it (page query,
   count query, _include/_revinclude queries), then the table (p50/p95 over HTTP, p50 of the same
   search run in-process on a read-only connection, result counts) and the load summary; --json
   writes everything.

Run from the project root:
    .venv/bin/python bench/search_bench.py --resources 50000
    .venv/bin/python bench/search_bench.py [--resources 1000000] [--db PATH] [--reuse] [--json out.json]

It only talks to 127.0.0.1, stops by itself (a query stops repeating after --query-budget seconds)
and kills the server on any exit. Exit code 1 if a request failed or an answer was wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import http.client
import json
import os
import platform
import random
import signal
import sqlite3
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import generate  # noqa: E402  (bench/generate.py)
from generate import COMMON_OBS_CODES, LOINC, RARE_OBS_CODES, Summary  # noqa: E402
from bench_support import Server, free_port  # noqa: E402  (bench/bench_support.py)

PYTHON = sys.executable
DEFAULT_DIR = Path("/tmp/fhir-search-bench")


# -- loading ------------------------------------------------------------------------------------


def _db_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def _size(db: Path) -> int:
    return sum(p.stat().st_size for p in _db_files(db) if p.exists())


async def _load(data: Path, db: Path, batch: int, expected: int) -> dict:
    from fhir_server.search.extract import extract_index
    from fhir_server.storage import open_store

    store = open_store(f"sqlite:///{db}", indexer=extract_index)  # synchronous: the default, FULL
    await store.open()
    done = 0
    in_uow = 0.0
    started = time.perf_counter()
    cpu0 = time.process_time()
    last_report = started
    try:
        with open(data, "rb") as f:
            lines: list[bytes] = []

            async def flush() -> None:
                nonlocal done, in_uow, last_report
                resources = [orjson.loads(line) for line in lines]
                t0 = time.perf_counter()
                async with store.unit_of_work() as uow:
                    for r in resources:
                        await uow.write(r["resourceType"], r["id"], r, method="PUT")
                in_uow += time.perf_counter() - t0
                done += len(resources)
                lines.clear()
                now = time.perf_counter()
                if now - last_report >= 30:
                    last_report = now
                    rate = done / (now - started)
                    eta = (expected - done) / rate if rate else 0
                    print(f"  loaded {done:,} / {expected:,}: {rate:,.0f}/s, {_size(db) / 1e6:,.0f} MB, "
                          f"~{eta / 60:.0f} min left", file=sys.stderr, flush=True)

            for line in f:
                lines.append(line)
                if len(lines) >= batch:
                    await flush()
            if lines:
                await flush()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
    finally:
        await store.close()
    size_before_checkpoint = _size(db)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {
        "resources": done,
        "seconds": round(wall, 1),
        "resources_per_s": round(done / wall, 1),
        "seconds_in_units_of_work": round(in_uow, 1),
        "process_cpu_percent": round(100 * cpu / wall, 1),
        "batch": batch,
        "synchronous": "FULL",
        "db_bytes_before_checkpoint": size_before_checkpoint,
    }


def _db_stats(db: Path) -> dict:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        stats: dict = {"db_bytes": _size(db), "page_size": conn.execute("PRAGMA page_size").fetchone()[0]}
        rows = {}
        for table in ("resources", "resource_versions", "idx_string", "idx_token", "idx_reference", "idx_date",
                      "idx_number", "idx_quantity", "idx_uri"):
            rows[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        stats["rows"] = rows
        try:  # per-table and per-index bytes, when SQLite was built with dbstat
            stats["bytes_by_object"] = dict(conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
        except sqlite3.Error:
            pass
        stats["analyzed"] = bool(conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone()[0])
        return stats
    finally:
        conn.close()


def code_fingerprint() -> dict:
    """Which server code the numbers belong to (others may be changing it): a hash of the files that
    decide the SQL and the index, with their newest modification time."""
    import hashlib

    files = sorted((ROOT / "fhir_server" / "storage" / "sqlite").glob("*.py"))
    files += [ROOT / "fhir_server" / "storage" / "sqlite" / "schema.sql"]
    files += [ROOT / "fhir_server" / "search" / n for n in ("parse.py", "extract.py", "converters.py")]
    files += [ROOT / "fhir_server" / "storage" / "paging.py"]
    h = hashlib.sha256()
    newest = 0.0
    for f in files:
        if f.exists():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
            newest = max(newest, f.stat().st_mtime)
    return {"sha256": h.hexdigest()[:16],
            "newest_mtime": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(newest)) if newest else None}


async def _apply_schema(db: Path) -> None:
    """Open and close the store once: applies schema.sql (a schema change rebuilds indexes here,
    not inside the server's start-up)."""
    from fhir_server.storage import open_store

    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.close()


# -- the server -------------------------------------------------------------------------------------


class Client:
    """One keep-alive HTTP/1.1 connection to the server (reopened, once, if the server closed it)."""

    def __init__(self, port: int, timeout: float):
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def get(self, path: str) -> tuple[int, bytes, float]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.conn.connect()
            try:
                t0 = time.perf_counter()
                self.conn.request("GET", path, headers={"Accept": "application/fhir+json"})
                resp = self.conn.getresponse()
                body = resp.read()
                took = time.perf_counter() - t0
                if resp.will_close:
                    self.conn.close()
                    self.conn = None
                return resp.status, body, took
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# -- the queries ------------------------------------------------------------------------------------


@dataclass
class Expect:
    total: int | None = None  # number of matches (all pages)
    included: int | None = None  # included entries on the page (None: not checked or computed later)


@dataclass
class Query:
    name: str
    template: str
    resource_type: str
    make: Callable[[random.Random], list[tuple[str, str]]]  # one parameter set
    expect: Callable[[list[tuple[str, str]]], Expect]
    pages: int = 1  # > 1: also follow the next link (pages - 1) times
    check_page: Callable[[list[tuple[str, str]], dict], list[str]] | None = None  # extra checks on a page
    # filled while running
    params: list[list[tuple[str, str]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    next_times: list[float] = field(default_factory=list)
    store_times: list[float] = field(default_factory=list)
    matches: list[int] = field(default_factory=list)
    included: list[int] = field(default_factory=list)
    totals: list[int] = field(default_factory=list)  # verified _total=accurate totals
    problems: list[str] = field(default_factory=list)
    next_path: str | None = None  # a next link seen, for its query plan
    plans: list[tuple[str, list[str]]] = field(default_factory=list)
    budget_hit: bool = False


def _entries(bundle: dict, mode: str) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def _next_link(bundle: dict) -> str | None:
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            parts = urlsplit(link["url"])
            return parts.path + ("?" + parts.query if parts.query else "")
    return None


class Data:
    """Lookups over the generator's Summary, to draw parameter values and compute expected answers."""

    def __init__(self, s: Summary):
        from fhir_server.search.values.text import normalize

        self.s = s
        self.normalize = normalize
        self.names = [[normalize(w) for w in words] for words in s.patient_names]
        self.families_norm = [[normalize(f) for f in fams] for fams in s.patient_families]
        self.enc_index = {eid: i for i, eid in enumerate(s.enc_ids)}
        self.patient_index = {pid: i for i, pid in enumerate(s.patient_ids)}
        self.enc_by_patient: list[list[int]] = [[] for _ in s.patient_ids]
        for i, p in enumerate(s.enc_patient):
            self.enc_by_patient[p].append(i)
        self.finished = sum(1 for st in s.enc_status if st == "finished")
        self.codes_by_patient = [set(c) for c in s.patient_codes]
        import datetime as dt

        self.anchor = dt.datetime.fromisoformat(s.anchor)
        self.yesterday = (self.anchor - dt.timedelta(days=1)).date().isoformat()
        days = sorted(set(s.enc_day))
        self.days = days

    def patients_named(self, prefix: str) -> list[int]:
        p = self.normalize(prefix)
        return [i for i, words in enumerate(self.names) if any(w.startswith(p) for w in words)]

    def patients_with_family(self, prefix: str) -> list[int]:
        p = self.normalize(prefix)
        return [i for i, fams in enumerate(self.families_norm) if any(f.startswith(p) for f in fams)]


def build_queries(d: Data) -> list[Query]:
    s = d.s
    n_pat = len(s.patient_ids)
    pats_with_mr = [i for i in range(n_pat) if s.patient_mr[i] > 0] or [0]
    pats_many_obs = [i for i in range(n_pat) if s.patient_obs[i] >= 40]
    pats_some_obs = pats_many_obs or sorted(range(n_pat), key=lambda i: -s.patient_obs[i])[:50]
    rare_present = [c for c in RARE_OBS_CODES if s.obs_by_code.get(c)] or RARE_OBS_CODES
    pid = s.patient_ids

    def token(codes):
        def make(rnd):
            code = rnd.choice(codes)
            return [("code", f"{LOINC}|{code}" if rnd.random() < 0.5 else code)]
        return make

    def token_expect(params):
        code = params[0][1].split("|")[-1]
        return Expect(total=s.obs_by_code.get(code, 0), included=0)

    def name_make(rnd):
        i = rnd.randrange(n_pat)
        fam = rnd.choice(s.patient_families[i])
        return [("name", fam[: rnd.randint(3, len(fam))])]

    def date_make(rnd):
        import datetime as dt
        start = dt.date.fromisoformat(rnd.choice(d.days))
        return [("date", f"ge{start.isoformat()}"), ("date", f"lt{(start + dt.timedelta(days=7)).isoformat()}")]

    def date_expect(params):
        lo, hi = params[0][1][2:], params[1][1][2:]
        return Expect(total=sum(1 for day in s.enc_day if lo <= day < hi), included=0)

    def mr_make(rnd):
        return [("subject", f"Patient/{pid[rnd.choice(pats_with_mr)]}"), ("_include", "MedicationRequest:subject")]

    def mr_expect(params):
        i = d.patient_index[params[0][1].split("/")[1]]
        return Expect(total=s.patient_mr[i], included=1 if s.patient_mr[i] else 0)

    def rev_make(rnd):
        return [("_id", pid[rnd.randrange(n_pat)]), ("_revinclude", "Encounter:subject")]

    def rev_expect(params):
        i = d.patient_index[params[0][1]]
        return Expect(total=1, included=min(1000, len(d.enc_by_patient[i])))

    def chain_make(rnd):
        return [("subject:Patient.family", rnd.choice(s.patient_families[rnd.randrange(n_pat)]))]

    def chain_expect(params):
        pats = d.patients_with_family(params[0][1])
        return Expect(total=sum(len(d.enc_by_patient[i]) for i in pats), included=0)

    def has(codes):
        def make(rnd):
            return [("_has:Observation:patient:code", rnd.choice(codes))]
        return make

    def has_expect(params):
        code = params[0][1]
        return Expect(total=sum(1 for c in d.codes_by_patient if code in c), included=0)

    def sort_make(rnd):
        return [("subject", f"Patient/{pid[rnd.choice(pats_some_obs)]}"), ("_sort", "-date"), ("_count", "10")]

    def sort_expect(params):
        return Expect(total=s.patient_obs[d.patient_index[params[0][1].split("/")[1]]], included=0)

    def total_make(rnd):
        return [("status", "finished"), ("_total", "accurate"), ("_count", "10")]

    def ehr_make(rnd):
        hour = rnd.randrange(0, 24)
        return [("status", "finished"), ("date", f"ge{d.yesterday}T{hour:02d}:00:00Z"),
                ("_include", "Encounter:subject"), ("_revinclude", "MedicationRequest:encounter"),
                ("_revinclude", "CarePlan:encounter")]

    def ehr_expect(params):
        value = params[1][1][2:]
        if "T" in value:
            return Expect(total=None, included=None)  # time-of-day precision: counted on the page only
        return Expect(total=sum(1 for st, day in zip(s.enc_status, s.enc_day) if st == "finished" and day >= value),
                      included=None)

    def ehr_page(params, bundle):
        """The included resources must be exactly those of the matched encounters."""
        problems = []
        matched = _entries(bundle, "match")
        idx = [d.enc_index.get(e["id"]) for e in matched]
        if any(i is None for i in idx):
            return ["a matched Encounter is not in the data set"]
        lo = params[1][1][2:]
        for e in matched:  # ge: the period ends at or after the value (same "YYYY-MM-DD[Thh:mm:ssZ]" shape)
            end = e["period"].get("end", "9999")
            if e["status"] != "finished" or end[: len(lo)] < lo:
                problems.append(f"Encounter/{e['id']} matched but is not finished since {lo}")
        inc = Counter(r["resourceType"] for r in _entries(bundle, "include"))
        want = Counter({"Patient": len({s.enc_patient[i] for i in idx}),
                        "MedicationRequest": sum(s.enc_mr[i] for i in idx),
                        "CarePlan": sum(s.enc_careplans[i] for i in idx)})
        want = +want
        if inc != want:
            problems.append(f"included {dict(inc)}, expected {dict(want)} for the {len(idx)} matched encounters")
        return problems

    return [
        Query("token (common code)", "Observation?code=[system|]code", "Observation", token(COMMON_OBS_CODES),
              token_expect),
        Query("token (rare code)", "Observation?code=[system|]code", "Observation", token(rare_present), token_expect),
        Query("string prefix", "Patient?name=<prefix of a family>", "Patient", name_make,
              lambda p: Expect(total=len(d.patients_named(p[0][1])), included=0)),
        Query("date range (7 days)", "Encounter?date=geD&date=ltD+7", "Encounter", date_make, date_expect),
        Query("reference + _include", "MedicationRequest?subject=Patient/x&_include=MedicationRequest:subject",
              "MedicationRequest", mr_make, mr_expect),
        Query("_revinclude", "Patient?_id=x&_revinclude=Encounter:subject", "Patient", rev_make, rev_expect),
        Query("chained", "Encounter?subject:Patient.family=<family>", "Encounter", chain_make, chain_expect),
        Query("_has (common code)", "Patient?_has:Observation:patient:code=<code>", "Patient", has(COMMON_OBS_CODES),
              has_expect),
        Query("_has (rare code)", "Patient?_has:Observation:patient:code=<code>", "Patient", has(rare_present),
              has_expect),
        Query("_sort + paging", "Observation?subject=Patient/x&_sort=-date&_count=10 (+3 next)", "Observation",
              sort_make, sort_expect, pages=4),
        Query("_total=accurate", "Encounter?status=finished&_total=accurate&_count=10", "Encounter", total_make,
              lambda p: Expect(total=d.finished, included=0)),
        Query("EHR: finished since yesterday", "Encounter?status=finished&date=ge<yesterday>&_include=Encounter:subject"
              "&_revinclude=MedicationRequest:encounter&_revinclude=CarePlan:encounter", "Encounter", ehr_make,
              ehr_expect, check_page=ehr_page),
    ]


def _path(q: Query, params: list[tuple[str, str]]) -> str:
    return f"/{q.resource_type}?{urlencode(params)}"


def _count_from(params: list[tuple[str, str]]) -> int:
    values = [v for k, v in params if k == "_count"]
    return int(values[-1]) if values else 50


def _check_page(q: Query, params, bundle: dict, expect: Expect, page_no: int) -> list[str]:
    problems = []
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "searchset":
        return ["not a searchset Bundle"]
    matched = _entries(bundle, "match")
    count = _count_from(params)
    if any(r.get("resourceType") != q.resource_type for r in matched):
        problems.append("a match of the wrong resource type")
    if expect.total is not None and page_no == 0:
        want = min(count, expect.total)
        if len(matched) != want:
            problems.append(f"{len(matched)} matches on the first page, expected {want} (of {expect.total})")
        has_next = _next_link(bundle) is not None
        if has_next != (expect.total > count):
            problems.append(f"next link {'present' if has_next else 'missing'} with {expect.total} matches, "
                            f"_count={count}")
        if "total" in bundle and bundle["total"] != expect.total:
            problems.append(f"Bundle.total {bundle['total']}, expected {expect.total}")
    if expect.included is not None and page_no == 0:
        got = len(_entries(bundle, "include"))
        if got != expect.included:
            problems.append(f"{got} included, expected {expect.included}")
    ids = [r["id"] for r in matched]
    if len(set(ids)) != len(ids):
        problems.append("the same resource twice on one page")
    if q.check_page is not None:
        problems += q.check_page(params, bundle)
    return problems


def _check_paging(q: Query, params, pages: list[dict], expect: Expect) -> list[str]:
    """_sort=-date pages: distinct resources, in non-increasing date order across pages, 10 per page."""
    problems = []
    items = [r for b in pages for r in _entries(b, "match")]
    ids = [r["id"] for r in items]
    if len(set(ids)) != len(ids):
        problems.append(f"paging returned {len(ids) - len(set(ids))} resources twice")
    dates = [r.get("effectiveDateTime", "") for r in items]
    if any(a < b for a, b in zip(dates, dates[1:])):
        problems.append("paging broke the _sort=-date order")
    count = _count_from(params)
    for n, b in enumerate(pages):
        want = max(0, min(count, (expect.total or 0) - n * count))
        got = len(_entries(b, "match"))
        if expect.total is not None and got != want:
            problems.append(f"page {n + 1}: {got} matches, expected {want}")
    subject = params[0][1]
    if any(r.get("subject", {}).get("reference") != subject for r in items):
        problems.append("a paged Observation of another subject")
    return problems


def run_query(client: Client, q: Query, rnd: random.Random, reps: int, warmup: int, budget: float,
              min_reps: int) -> None:
    q.params = [q.make(rnd) for _ in range(reps + warmup)]
    started = time.monotonic()
    for n, params in enumerate(q.params):
        timed = n >= warmup
        if timed and len(q.times) >= min_reps and time.monotonic() - started > budget:
            q.budget_hit = True
            break
        expect = q.expect(params)
        status, body, took = client.get(_path(q, params))
        if status != 200:
            q.problems.append(f"HTTP {status} for {_path(q, params)}: {body[:300]!r}")
            continue
        bundle = orjson.loads(body)
        for p in _check_page(q, params, bundle, expect, 0):
            q.problems.append(f"{urlencode(params)}: {p}")
        pages = [bundle]
        for _ in range(q.pages - 1):
            nxt = _next_link(pages[-1])
            if nxt is None:
                break
            q.next_path = q.next_path or nxt
            status, body, took_next = client.get(nxt)
            if status != 200:
                q.problems.append(f"HTTP {status} for next link {nxt}: {body[:300]!r}")
                break
            pages.append(orjson.loads(body))
            if timed:
                q.next_times.append(took_next)
        if q.pages > 1:
            if len(pages) < q.pages and (expect.total or 0) > _count_from(params) * (len(pages)):
                q.problems.append(f"{urlencode(params)}: only {len(pages)} pages followed, "
                                  f"{expect.total} matches at _count={_count_from(params)}")
            for p in _check_paging(q, params, pages, expect):
                q.problems.append(f"{urlencode(params)}: {p}")
        if timed:
            q.times.append(took)
            q.matches.append(len(_entries(bundle, "match")))
            q.included.append(len(_entries(bundle, "include")))


def verify_totals(client: Client, q: Query, n: int, d: Data) -> None:
    """Untimed: the first n parameter sets again with _total=accurate; Bundle.total must be the expected count."""
    sets = list(q.params[:n])
    if q.name.startswith("EHR"):  # day precision, so the expected count is exact
        sets = [[(k, (f"ge{d.yesterday}" if k == "date" else v)) for k, v in sets[0]]]
    for params in sets:
        expect = q.expect(params)
        if expect.total is None:
            continue
        p = [(k, v) for k, v in params if k != "_total"] + [("_total", "accurate")]
        status, body, _ = client.get(_path(q, p))
        if status != 200:
            q.problems.append(f"HTTP {status} for {_path(q, p)}")
            continue
        total = orjson.loads(body).get("total")
        q.totals.append(total)
        if total != expect.total:
            q.problems.append(f"{urlencode(p)}: Bundle.total {total}, expected {expect.total}")


# -- plans and in-process timing ---------------------------------------------------------------------


def _plan(conn: sqlite3.Connection, text: str, args: list) -> list[str]:
    rows = conn.execute("EXPLAIN QUERY PLAN " + text, args).fetchall()
    depth: dict[int, int] = {0: -1}
    out = []
    for id_, parent, _, detail in rows:
        depth[id_] = depth.get(parent, -1) + 1
        out.append("  " * depth[id_] + detail)
    return out


def _shorten(sql: str, args: list, limit: int = 1600) -> str:
    """The SQL with its arguments inlined (for reading only), cut at `limit` characters."""
    parts = sql.split("?")
    out = parts[0]
    for arg, rest in zip(args, parts[1:]):
        out += (repr(arg) if isinstance(arg, str) else str(arg)) + rest
    if len(parts) - 1 != len(args):
        out = sql
    return out if len(out) <= limit else out[:limit] + " ..."


def explain(conn: sqlite3.Connection, q: Query) -> None:
    from fhir_server.interactions.search import build_query
    from fhir_server.storage.sqlite import search as sqlite_search
    from fhir_server.storage.sqlite.search_sql import count_query, page_query

    sets = [(q.params[0], "first page")]
    if q.next_path:
        sets.append((parse_qsl(urlsplit(q.next_path).query, keep_blank_values=True), "next page (keyset cursor)"))
    for params, label in sets:
        query = build_query([q.resource_type], params)
        sql, _ = page_query(query.resource_types, query.filters, query.sort, query.count, query.cursor)
        q.plans.append((f"{label} page_query: {_shorten(sql.text, sql.args)}", _plan(conn, sql.text, sql.args)))
        if query.total in ("accurate", "estimate"):
            c = count_query(query.resource_types, query.filters)
            q.plans.append((f"count_query: {_shorten(c.text, c.args)}", _plan(conn, c.text, c.args)))
        if (query.includes or query.revincludes) and label == "first page":
            rows = conn.execute(sql.text, sql.args).fetchall()[: query.count]
            n_sort = len(query.sort)
            frontier = [(row[0], row[2 + n_sort], row[3 + n_sort]) for row in rows]
            if not frontier:
                continue
            for inc in query.includes:
                inc_sql = sqlite_search._include_sql(inc, frontier)
                if inc_sql:
                    q.plans.append((f"_include {inc.source_type}:{inc.code} ({len(frontier)} sources): "
                                    f"{_shorten(*inc_sql, limit=400)}", _plan(conn, *inc_sql)))
            for inc in query.revincludes:
                inc_sql = sqlite_search._revinclude_sql(inc, frontier)
                if inc_sql:
                    q.plans.append((f"_revinclude {inc.source_type}:{inc.code} ({len(frontier)} targets): "
                                    f"{_shorten(*inc_sql, limit=400)}", _plan(conn, *inc_sql)))


def time_in_process(conn: sqlite3.Connection, q: Query, n: int) -> None:
    """The store's own search function on a read-only connection (what a reader thread runs), no HTTP."""
    from fhir_server.interactions.search import build_query
    from fhir_server.storage.sqlite import search as sqlite_search

    for params in q.params[:n]:
        query = build_query([q.resource_type], params)
        t0 = time.perf_counter()
        sqlite_search.search(conn, query)
        q.store_times.append(time.perf_counter() - t0)


# -- report ---------------------------------------------------------------------------------------------


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}" if v < 10 else f"{v * 1000:.0f}"


def _counts(values: list[int]) -> str:
    if not values:
        return "-"
    lo, hi, med = min(values), max(values), int(statistics.median(values))
    return str(med) if lo == hi else f"{med} ({lo}-{hi})"


def print_table(queries: list[Query]) -> None:
    header = f"{'query':<32} {'reps':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'store p50':>9}  {'matches':<14} {'included':<16} {'total':<14} ok"
    print(header)
    print("-" * len(header))
    for q in queries:
        print(f"{q.name:<32} {len(q.times):>4} {_ms(_pct(q.times, 50)):>8} {_ms(_pct(q.times, 95)):>8} "
              f"{_ms(max(q.times) if q.times else None):>8} {_ms(_pct(q.store_times, 50)):>9}  "
              f"{_counts(q.matches):<14} {_counts(q.included):<16} {_counts(q.totals):<14} "
              f"{'yes' if not q.problems else f'NO ({len(q.problems)})'}")
        if q.next_times:
            print(f"{'  next page (keyset)':<32} {len(q.next_times):>4} {_ms(_pct(q.next_times, 50)):>8} "
                  f"{_ms(_pct(q.next_times, 95)):>8} {_ms(max(q.next_times)):>8}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resources", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, help="SQLite file (default: --data-dir/search-<N>.db)")
    ap.add_argument("--reuse", action="store_true", help="skip loading when the database exists")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DIR, help="generated NDJSON, server log (default %(default)s)")
    ap.add_argument("--seed", type=int, default=1, help="data generator seed")
    ap.add_argument("--anchor", default=generate.DEFAULT_ANCHOR, help="'now' for the generated data")
    ap.add_argument("--batch", type=int, default=1000, help="resources per unit of work while loading")
    ap.add_argument("--reps", type=int, default=40, help="timed requests per query (at least 30 recommended)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--query-budget", type=float, default=240.0,
                    help="seconds after which a query stops repeating (once it has --min-reps)")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=300.0, help="HTTP timeout per request (s)")
    ap.add_argument("--analyze", action="store_true",
                    help="run ANALYZE on the database before the queries (the server never does; for comparison)")
    ap.add_argument("--only", help="comma-separated query names (prefix match) to run")
    ap.add_argument("--bench-seed", type=int, default=7, help="seed for drawing query parameters")
    args = ap.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    db = (args.db or args.data_dir / f"search-{args.resources}.db").resolve()
    data = args.data_dir / f"data-{args.resources}-s{args.seed}-{args.anchor[:10]}.ndjson"
    summary_path = data.with_name(data.name + ".summary.json")
    meta_path = db.with_name(db.name + ".bench.json")
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "sqlite": sqlite3.sqlite_version},
        "settings": {k: str(v) for k, v in vars(args).items()},
        "db": str(db),
        "code": code_fingerprint(),
    }
    print(f"server code fingerprint {result['code']['sha256']} (newest file {result['code']['newest_mtime']})",
          file=sys.stderr)

    # 1. data
    if not (data.exists() and summary_path.exists()):
        print(f"generating {args.resources:,} resources -> {data}", file=sys.stderr)
        t0 = time.perf_counter()
        generate.write_dataset(args.resources, data, args.seed, args.anchor)
        result["generate_seconds"] = round(time.perf_counter() - t0, 1)
    summary = Summary.from_json(summary_path.read_bytes())
    result["data"] = {"file": str(data), "bytes": data.stat().st_size, "by_type": dict(summary.by_type.most_common())}

    # 2. load
    if args.reuse and db.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("data") != str(data):
            raise SystemExit(f"{db} was loaded from {meta.get('data')}, not {data}; drop --reuse")
        load = meta["load"]
        load["reused"] = True
        print(f"reusing {db} (loaded earlier: {load['resources_per_s']:,.0f} resources/s)", file=sys.stderr)
    else:
        for p in _db_files(db):
            p.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        print(f"loading {summary.resources:,} resources into {db} (units of work of {args.batch})", file=sys.stderr)
        load = asyncio.run(_load(data, db, args.batch, summary.resources))
        meta_path.write_text(json.dumps({"data": str(data), "load": load}, indent=1))
    if args.analyze:
        print("running ANALYZE (the server never does)", file=sys.stderr)
        conn = sqlite3.connect(db)
        conn.execute("ANALYZE")
        conn.close()
    t0 = time.perf_counter()
    asyncio.run(_apply_schema(db))
    load["schema_open_seconds"] = round(time.perf_counter() - t0, 1)
    if load["schema_open_seconds"] > 5:
        print(f"applying schema.sql to the database took {load['schema_open_seconds']:.0f} s "
              "(indexes changed since it was loaded)", file=sys.stderr)
    load.update(_db_stats(db))
    result["load"] = load

    # 3. queries
    d = Data(summary)
    queries = build_queries(d)
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        queries = [q for q in queries if any(q.name.startswith(w) for w in wanted)]
    rnd = random.Random(args.bench_seed)
    port = free_port()
    server = Server([PYTHON, "-m", "fhir_server", "serve", "--no-auth", "--host", "127.0.0.1", "--port", str(port),
                     "--database", f"sqlite:///{db}", "--log-level", "warning"],
                    port, args.data_dir / f"server-{args.resources}.log")
    atexit.register(server.stop)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = False
    try:
        t0 = time.perf_counter()
        server.wait_ready(timeout=600.0)  # opening a large database may build indexes first
        print(f"server ready on 127.0.0.1:{server.port} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        client = Client(server.port, args.timeout)
        for q in queries:
            t0 = time.perf_counter()
            try:
                run_query(client, q, rnd, args.reps, args.warmup, args.query_budget, args.min_reps)
                verify_totals(client, q, 3, d)
            except (OSError, http.client.HTTPException) as exc:
                q.problems.append(f"request failed: {exc!r}")
                client.close()
                client = Client(server.port, args.timeout)
            print(f"  {q.name}: {len(q.times)} reps in {time.perf_counter() - t0:.1f} s, p50 "
                  f"{_ms(_pct(q.times, 50))} ms{'' if not q.problems else f', {len(q.problems)} problem(s)'}",
                  file=sys.stderr, flush=True)
        client.close()
    finally:
        server.stop()
        atexit.unregister(server.stop)
        if server.proc.returncode not in (0, -signal.SIGTERM, None):
            print(f"server exit code {server.proc.returncode}; log tail:\n{server.log_tail()}", file=sys.stderr)

    ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        for q in queries:
            if q.params:
                explain(ro, q)
                time_in_process(ro, q, 10)
    finally:
        ro.close()

    # 4. report
    code_after = code_fingerprint()
    result["code_after"] = code_after
    print()
    print(f"server code: {result['code']['sha256']} (newest file {result['code']['newest_mtime']})"
          + ("" if code_after == result["code"] else
             f"; CHANGED during the run to {code_after['sha256']} ({code_after['newest_mtime']}): "
             "the plans below are of the new code, the timings may mix both"))
    for q in queries:
        print(f"== {q.name}: {q.template}")
        if q.params:
            print(f"   e.g. {urlencode(q.params[0])}")
        for title, plan in q.plans:
            print(f"   -- {title}")
            for line in plan:
                print(f"      {line}")
        print()
    n_pat = len(summary.patient_ids)
    print(f"data: {summary.resources:,} resources ({', '.join(f'{t} {n:,}' for t, n in summary.by_type.most_common())}); "
          f"{n_pat:,} patients, anchor {summary.anchor}")
    if load.get("reused"):
        print(f"load (earlier run, --reuse): {load['resources']:,} resources in {load['seconds']:,.0f} s = "
              f"{load['resources_per_s']:,.0f} resources/s")
    else:
        print(f"load: {load['resources']:,} resources in {load['seconds']:,.0f} s = {load['resources_per_s']:,.0f} "
              f"resources/s (units of work of {load['batch']}, synchronous=FULL, {load['seconds_in_units_of_work']:,.0f} s "
              f"inside units of work, loader process CPU {load['process_cpu_percent']:.0f}%)")
    if load.get("schema_open_seconds", 0) > 5:
        print(f"schema.sql applied to the existing database in {load['schema_open_seconds']:,.0f} s (index changes)")
    print(f"database: {load['db_bytes'] / 1e6:,.0f} MB ({load['db_bytes'] / max(1, load['resources']):,.0f} bytes/resource); "
          f"index rows: {', '.join(f'{t} {n:,}' for t, n in load['rows'].items())}"
          f"{'; ANALYZEd' if load.get('analyzed') else '; no ANALYZE statistics'}")
    if load.get("bytes_by_object"):
        top = list(load["bytes_by_object"].items())[:10]
        print("largest objects: " + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in top))
    print()
    print_table(queries)
    problems = [(q.name, p) for q in queries for p in q.problems]
    slow = [q.name for q in queries if q.budget_hit]
    if slow:
        print(f"\nstopped early (--query-budget {args.query_budget:.0f} s): {', '.join(slow)}")
    if problems:
        failed = True
        print(f"\n{len(problems)} problem(s):")
        shown = Counter()
        for name, p in problems:
            shown[name] += 1
            if shown[name] <= 5:
                print(f"  [{name}] {p}")
        for name, n in shown.items():
            if n > 5:
                print(f"  [{name}] ... and {n - 5} more")

    result["queries"] = [{
        "name": q.name, "template": q.template, "example": urlencode(q.params[0]) if q.params else None,
        "reps": len(q.times), "p50_ms": _pct(q.times, 50) and _pct(q.times, 50) * 1000,
        "p95_ms": _pct(q.times, 95) and _pct(q.times, 95) * 1000, "max_ms": q.times and max(q.times) * 1000,
        "next_page_p50_ms": _pct(q.next_times, 50) and _pct(q.next_times, 50) * 1000,
        "next_page_p95_ms": _pct(q.next_times, 95) and _pct(q.next_times, 95) * 1000,
        "store_p50_ms": _pct(q.store_times, 50) and _pct(q.store_times, 50) * 1000,
        "matches": q.matches, "included": q.included, "verified_totals": q.totals,
        "budget_hit": q.budget_hit, "problems": q.problems,
        "plans": [{"sql": t, "plan": p} for t, p in q.plans],
    } for q in queries]
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"\nwrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
