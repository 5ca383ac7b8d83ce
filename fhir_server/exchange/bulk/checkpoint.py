"""Where an interrupted export goes on from: `checkpoint.ndjson` in the job's folder, a log with
one line appended each time an NDJSON file is completed (after the file's fsync and rename) and
each time a type is finished. Appending keeps every write small (a job may complete thousands of
files); the log is read only when a job starts or goes on.

Each line records the file just completed (if any) and the position reached: which type, which
pass (a chunk of patients at Patient/Group level), the search cursor of the page being written,
and how many of the last completed files hold resources of that page. A resumed run re-reads that
page and skips the ids in those files, so each resource is written exactly once whatever the file
boundaries; the keyset cursor (the store's own order) stays valid even if resources changed
meanwhile (with the transactionTime cut-off, the result can only shrink).

Files completed before the interruption are kept as they are; a file being written (`.NAME.part`),
or completed but not yet logged, is removed and its resources written again. A torn last line (the
process died while appending) is ignored, and so is everything after a line that does not parse:
what it listed is written again. The log is not fsynced: a crash of the process loses nothing the
page cache holds, and a power cut can only shorten the log, which is safe for the same reason.

Deletions (the manifest's `deleted` files) are a last, short phase: an interruption during it
redoes it from its start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from ...interactions.search import decode_cursor, encode_cursor
from . import files, sealed


@dataclass
class Output:
    type: str  # the manifest's type: the resource type, or "Bundle" for deletions
    name: str  # the file name in the job's folder
    count: int


@dataclass
class Position:
    type_index: int = 0  # position in ExportRequest.types of the type being exported
    pass_index: int = 0  # position in runner.level_filters() of the pass being run
    cursor: tuple | None = None  # search cursor of the page being written (None: the pass's first page)
    page_files: int = 0  # how many of the last completed files hold resources of that page


@dataclass
class Checkpoint:
    outputs: list[Output] = field(default_factory=list)  # every completed file, in order
    position: Position = field(default_factory=Position)

    @property
    def written(self) -> int:
        return sum(o.count for o in self.outputs)


def _line(done: Output | None, position: Position) -> bytes:
    return orjson.dumps({"file": None if done is None else [done.type, done.name, done.count],
                         "type": position.type_index, "pass": position.pass_index,
                         "cursor": encode_cursor(position.cursor) if position.cursor else None,
                         "page_files": position.page_files}) + b"\n"


def record(folder: Path, done: Output | None, position: Position) -> None:
    with open(folder / files.CHECKPOINT, "ab") as f:
        f.write(_line(done, position))


def load(folder: Path) -> Checkpoint | None:
    try:
        data = (folder / files.CHECKPOINT).read_bytes()
    except FileNotFoundError:
        return None
    point = Checkpoint()
    for raw in data.split(b"\n"):
        try:
            line = orjson.loads(raw)
            position = Position(line["type"], line["pass"], decode_cursor(line["cursor"]) if line["cursor"] else None,
                                line["page_files"])
            done = Output(*line["file"]) if line["file"] is not None else None
        except Exception:  # noqa: BLE001 - a torn or damaged line: the log ends before it
            break
        if done is not None:
            point.outputs.append(done)
        point.position = position
    return point


def prepare(folder: Path) -> Checkpoint:
    """The checkpoint to go on from (an empty one for a fresh job), with the folder cleaned to
    match it: only the files it lists (and the job's markers) stay; the log is rewritten without
    any torn tail."""
    folder.mkdir(parents=True, exist_ok=True)
    point = load(folder) or Checkpoint()
    keep = {o.name for o in point.outputs} | {files.CHECKPOINT, files.CANCELLED, files.POLLED, files.PROGRESS}
    files.clean(folder, keep=tuple(keep))
    if point.outputs or point.position != Position():  # the log without its torn tail, if it had one
        last = len(point.outputs) - 1
        files.write_atomic(folder / files.CHECKPOINT, b"".join(
            _line(o, point.position if i == last else Position()) for i, o in enumerate(point.outputs))
            or _line(None, point.position))
    return point


def ids_in(folder: Path, outputs: list[Output]) -> set[str]:
    """The resource ids in completed files (what a resumed page or pass must not write again)."""
    seen: set[str] = set()
    for o in outputs:
        for line in sealed.lines(folder / o.name):
            if line.strip():
                seen.add(orjson.loads(line)["id"])
    return seen
