"""The study folder: SQLite store (source of truth), lock, and a read API.

Layout of a study folder::

    study.sqlite        runs, epoch metrics, final metrics, spec (WAL mode)
    .lock               fcntl lock held by the one process writing the folder
    weights/<run>.safetensors      best weights per run (no pickle anywhere)
    checkpoints/<group>.{safetensors,json}  mid-run training state of a group

The database is recognised by ``PRAGMA application_id`` (:data:`APPLICATION_ID`)
and a ``meta`` table with ``magic`` and ``schema_version`` keys; a foreign
SQLite file is refused, never overwritten.

Read API (what reports use)::

    res = open_results("regulab-study")
    res.spec            # dict, the validated spec
    res.runs            # list of dicts, one per run (see RUN_COLUMNS; config is a dict)
    res.epochs          # list of dicts, one per (run_id, epoch) (see EPOCH_COLUMNS)
    res.finals          # list of dicts, one per finished run (see FINAL_COLUMNS)
    res.columns("epochs")   # {column: [values...]}, pandas-free column form
    res.epochs_of(run_id)   # the epoch rows of one run, ordered by epoch

Examples:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with Store(d) as st:
    ...     st.init_spec({"study": {"epochs": 1}})
    ...     st.add_runs([dict(run_id=1, name="baseline/seed=0", arm="baseline", base_arm="baseline",
    ...                       seed=0, group_key="g0", config={"p": 0.0}, sweep={})])
    ...     st.record_epochs([dict(run_id=1, epoch=1, train_loss=1.0, val_acc=0.5)])
    >>> res = open_results(d)
    >>> res.runs[0]["status"], res.epochs[0]["val_acc"], res.spec["study"]["epochs"]
    ('pending', 0.5, 1)
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import StudyError

__all__ = [
    "APPLICATION_ID", "SCHEMA_VERSION", "DB_NAME", "Store", "Results", "open_results",
    "RUN_COLUMNS", "EPOCH_COLUMNS", "FINAL_COLUMNS", "safe_name", "disk_full",
]

APPLICATION_ID = 0x52474C42  # "RGLB"
MAGIC = "regulab-study"
SCHEMA_VERSION = 1
DB_NAME = "study.sqlite"


def disk_full(e: BaseException) -> bool:
    """A full disk (or quota) as OSError, SQLite's "database or disk is full" or safetensors' I/O error."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "disk is full" in text or "No space left on device" in text or "os error 28" in text


RUN_STATUSES = ("pending", "running", "finished", "failed")
# run_id, name ("<arm>/seed=<seed>"), arm (full arm name incl. swept values), base_arm (arm
# before sweep expansion), seed, group_key (runs trained together), config (dict: the run's full
# resolved config), sweep (dict: swept parameter -> value), status, reason (why failed), epochs_done,
# started_at/finished_at (unix time), wall_seconds, versions (dict), threads, executor.
RUN_COLUMNS = ("run_id", "name", "arm", "base_arm", "seed", "group_key", "config", "sweep", "status",
               "reason", "epochs_done", "started_at", "finished_at", "wall_seconds", "versions",
               "threads", "executor")
# train_loss: mean minibatch loss as optimised (with the regularizers' terms); train_noise: std of
# the minibatch losses within the epoch; clean_*: eval mode on the whole training set.
EPOCH_COLUMNS = ("run_id", "epoch", "train_loss", "train_noise", "clean_train_loss", "clean_train_acc",
                 "val_loss", "val_acc", "lr", "epoch_time", "active")
# best_epoch: epoch whose weights are kept (best validation); stopped_epoch: last epoch trained
# (early stopping or divergence); test_*: test metrics of the best weights; weights: file relative
# to the study folder.
FINAL_COLUMNS = ("run_id", "best_epoch", "stopped_epoch", "test_loss", "test_acc", "best_val_loss",
                 "best_val_acc", "train_loss_at_best", "train_acc_at_best", "weights")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spec (id INTEGER PRIMARY KEY CHECK (id = 1), spec_json TEXT NOT NULL,
    spec_hash TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, arm TEXT NOT NULL, base_arm TEXT NOT NULL,
    seed INTEGER NOT NULL, group_key TEXT NOT NULL, config TEXT NOT NULL, sweep TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN {RUN_STATUSES}), reason TEXT,
    epochs_done INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL, wall_seconds REAL,
    versions TEXT, threads INTEGER, executor TEXT);
CREATE TABLE IF NOT EXISTS epochs (
    run_id INTEGER NOT NULL REFERENCES runs(run_id), epoch INTEGER NOT NULL,
    train_loss REAL, train_noise REAL, clean_train_loss REAL, clean_train_acc REAL,
    val_loss REAL, val_acc REAL, lr REAL, epoch_time REAL, active INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (run_id, epoch)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS finals (
    run_id INTEGER PRIMARY KEY REFERENCES runs(run_id), best_epoch INTEGER, stopped_epoch INTEGER,
    test_loss REAL, test_acc REAL, best_val_loss REAL, best_val_acc REAL,
    train_loss_at_best REAL, train_acc_at_best REAL, weights TEXT);
"""
_JSON_RUN_FIELDS = ("config", "sweep", "versions")


def safe_name(text: str, max_len: int = 80) -> str:
    """A file-name-safe version of ``text`` (letters, digits, ``._-=`` only).

    Examples:
        >>> safe_name("dropout p=0.3/seed=1")
        'dropout_p=0.3_seed=1'
        >>> safe_name("../../etc")
        'etc'
    """
    s = re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("._-")
    return s[:max_len] or "run"


def _check_db_file(path: Path) -> None:
    """Refuse a file that is not SQLite at all (never overwrite it)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if head != b"SQLite format 3\x00":
        raise StudyError(f"{path}: not a regulab study database (not SQLite); refusing to touch it")


def _check_app_id(con: sqlite3.Connection, path: Path, allow_fresh: bool) -> bool:
    """Refuse another application's SQLite file (read through the WAL); True when the file is empty."""
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        n = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except sqlite3.DatabaseError as e:
        raise StudyError(f"{path}: not a regulab study database ({e}); refusing to touch it") from None
    if allow_fresh and n == 0 and app_id == 0:
        return True
    if app_id != APPLICATION_ID:
        raise StudyError(f"{path}: SQLite file of another application (application_id={app_id:#x}); "
                         "refusing to overwrite it; choose another --out folder")
    return False


def _check_sound(con: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged study database (torn pages, bad b-trees): never write into it."""
    try:
        rows = [r[0] for r in con.execute("PRAGMA quick_check").fetchall()]
    except sqlite3.OperationalError:
        raise
    except sqlite3.DatabaseError as e:
        rows = [str(e)]
    if rows != ["ok"]:
        raise StudyError(f"{path}: study database is damaged ({rows[0]}); refusing to touch it; "
                         "restore it from a backup or choose another --out folder")


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    return con


def _check_meta(con: sqlite3.Connection, path: Path) -> None:
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as e:
        raise StudyError(f"{path}: not a regulab study database ({e})") from None
    if meta.get("magic") != MAGIC:
        raise StudyError(f"{path}: not a regulab study database (no magic); refusing to touch it")
    ver = int(meta.get("schema_version", "0"))
    if ver > SCHEMA_VERSION:
        raise StudyError(f"{path}: schema_version must be <= {SCHEMA_VERSION}, got {ver}; "
                         "upgrade regulab to read this study")


def _remove_dead_temps(study_dir: Path) -> None:
    """Temp files of a killed writer in ``checkpoints/`` and ``weights/`` (only the lock holder writes there).

    Ours are ``<name>.tmp<pid>``; safetensors (0.8 and newer) itself writes through a hidden
    ``.tmpXXXXXX`` file that it renames, which a kill at that moment leaves behind.
    """
    for sub in ("checkpoints", "weights"):
        d = study_dir / sub
        if d.is_dir():
            for p in d.iterdir():
                if p.is_file() and (p.name.startswith(".tmp") or ".safetensors.tmp" in p.name):
                    p.unlink(missing_ok=True)


class Store:
    """The one writer of a study folder. Holds an exclusive lock for its lifetime.

    Every public write is one transaction: a crash leaves the previous state intact.
    """

    def __init__(self, study_dir: str | os.PathLike) -> None:
        self.dir = Path(study_dir)
        db = self.dir / DB_NAME
        if self.dir.exists() and not self.dir.is_dir():
            raise StudyError(f"study folder: {self.dir} must be a folder, got a file")
        if self.dir.is_dir() and not db.exists() and any(p.name != ".lock" for p in self.dir.iterdir()):
            raise StudyError(f"study folder: {self.dir} must be empty or a regulab study, got a folder "
                             f"with other files; choose another --out folder")
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(self._lock_fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._lock_fd)
            raise StudyError(f"{self.dir}: another regulab process (pid {other}) is using this study "
                             "folder; wait for it to finish or choose another --out folder") from None
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)
        _remove_dead_temps(self.dir)
        try:
            _check_db_file(db)
            self.con = _connect(db)
            fresh = _check_app_id(self.con, db, allow_fresh=True)
            if not fresh:  # all checks before the first write (journal_mode=WAL rewrites the header)
                _check_sound(self.con, db)
                _check_meta(self.con, db)
            self.con.execute("PRAGMA journal_mode=WAL")
            self.con.execute("PRAGMA synchronous=NORMAL")
            self.con.execute("PRAGMA foreign_keys=ON")
            if fresh:
                with self._tx():
                    self.con.execute(f"PRAGMA application_id={APPLICATION_ID}")
                    self.con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                    for stmt in _SCHEMA.split(";"):
                        if stmt.strip():
                            self.con.execute(stmt)
                    self.con.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("magic", MAGIC), ("schema_version", str(SCHEMA_VERSION)),
                        ("created_at", repr(time.time()))])
                self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # header (application_id) on disk now
            _check_meta(self.con, db)
        except BaseException:
            self.close()
            raise

    # -- plumbing -----------------------------------------------------------------------------
    def _tx(self):
        con = self.con

        class _T:
            def __enter__(self):
                con.execute("BEGIN IMMEDIATE")

            def __exit__(self, et, ev, tb):
                con.execute("ROLLBACK" if et else "COMMIT")
                return False

        return _T()

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None
        if getattr(self, "_lock_fd", None) is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------
    def init_spec(self, spec: dict, spec_hash: str | None = None) -> None:
        """Record the spec; refuse a different spec in an existing study folder."""
        text = json.dumps(spec, sort_keys=True)
        h = spec_hash or str(hash(text))
        row = self.con.execute("SELECT spec_hash FROM spec WHERE id = 1").fetchone()
        if row is not None:
            if row[0] != h:
                raise StudyError(f"{self.dir}: holds a different study spec; re-run with the same spec "
                                 "to resume, or choose another --out folder")
            return
        with self._tx():
            self.con.execute("INSERT INTO spec VALUES (1, ?, ?, ?)", (text, h, time.time()))

    def add_runs(self, runs: list[dict]) -> None:
        """Insert planned runs (existing run_ids are kept untouched)."""
        with self._tx():
            for r in runs:
                r = {**r}
                for k in ("config", "sweep"):
                    r[k] = json.dumps(r.get(k, {}), sort_keys=True)
                self.con.execute(
                    "INSERT OR IGNORE INTO runs (run_id, name, arm, base_arm, seed, group_key, config, sweep)"
                    " VALUES (:run_id, :name, :arm, :base_arm, :seed, :group_key, :config, :sweep)", r)

    def mark_started(self, run_ids: list[int], *, versions: dict, threads: int, executor: str) -> None:
        with self._tx():
            self.con.executemany(
                "UPDATE runs SET status = 'running', started_at = coalesce(started_at, ?), versions = ?,"
                " threads = ?, executor = ? WHERE run_id = ? AND status IN ('pending', 'running')",
                [(time.time(), json.dumps(versions, sort_keys=True), threads, executor, r) for r in run_ids])

    def record_epochs(self, rows: list[dict], statuses: dict[int, tuple[str, str | None]] | None = None,
                      discard_after: tuple[list[int], int] | None = None) -> None:
        """One transaction: optionally drop rows after an epoch, upsert epoch rows, update statuses.

        ``statuses`` maps run_id -> (status, reason). ``discard_after=(run_ids, epoch)`` deletes rows
        with a later epoch first (used on resume from a checkpoint).
        """
        with self._tx():
            if discard_after is not None:
                ids, ep = discard_after
                self.con.executemany("DELETE FROM epochs WHERE run_id = ? AND epoch > ?",
                                     [(r, ep) for r in ids])
            cols = EPOCH_COLUMNS
            self.con.executemany(
                f"INSERT OR REPLACE INTO epochs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [tuple(_num(r.get(c, 1 if c == "active" else None)) for c in cols) for r in rows])
            self.con.execute("UPDATE runs SET epochs_done = (SELECT coalesce(max(epoch), 0) FROM epochs e "
                             "WHERE e.run_id = runs.run_id) WHERE status IN ('pending', 'running', 'failed')")
            for rid, (status, reason) in (statuses or {}).items():
                self.con.execute("UPDATE runs SET status = ?, reason = ? WHERE run_id = ?", (status, reason, rid))

    def finish_runs(self, finals: list[dict], statuses: dict[int, tuple[str, str | None]],
                    wall_seconds: float) -> None:
        """One transaction: final metrics and terminal statuses of a group."""
        now = time.time()
        with self._tx():
            cols = FINAL_COLUMNS
            self.con.executemany(
                f"INSERT OR REPLACE INTO finals ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                [tuple(_num(f.get(c)) for c in cols) for f in finals])
            for rid, (status, reason) in statuses.items():
                self.con.execute("UPDATE runs SET status = ?, reason = ?, finished_at = ?, wall_seconds = ? "
                                 "WHERE run_id = ?", (status, reason, now, wall_seconds, rid))

    def reset_runs(self, run_ids: list[int]) -> None:
        """Forget all progress of runs that restart from scratch (no usable checkpoint)."""
        with self._tx():
            for r in run_ids:
                self.con.execute("DELETE FROM epochs WHERE run_id = ?", (r,))
                self.con.execute("DELETE FROM finals WHERE run_id = ?", (r,))
                self.con.execute("UPDATE runs SET status = 'pending', reason = NULL, epochs_done = 0 "
                                 "WHERE run_id = ?", (r,))

    def statuses(self) -> dict[int, str]:
        return dict(self.con.execute("SELECT run_id, status FROM runs").fetchall())


def _num(v):
    """Plain Python value for SQLite (0-d tensors/numpy scalars -> numbers; NaN is stored as NULL)."""
    if hasattr(v, "item"):
        v = v.item()
    return v


@dataclass
class Results:
    """Everything in a study folder, read once (see the module docstring)."""

    study_dir: Path
    spec: dict
    runs: list[dict]
    epochs: list[dict]
    finals: list[dict]
    meta: dict = field(default_factory=dict)

    def columns(self, table: str) -> dict[str, list]:
        """Column form of ``runs``, ``epochs`` or ``finals``: ``{name: [values...]}``."""
        rows = getattr(self, table)
        names = {"runs": RUN_COLUMNS, "epochs": EPOCH_COLUMNS, "finals": FINAL_COLUMNS}[table]
        return {c: [r.get(c) for r in rows] for c in names}

    def epochs_of(self, run_id: int) -> list[dict]:
        return [e for e in self.epochs if e["run_id"] == run_id]

    def run(self, run_id: int) -> dict:
        return next(r for r in self.runs if r["run_id"] == run_id)


def open_results(study_dir: str | os.PathLike) -> Results:
    """Read a study folder (read-only; safe while a study is running)."""
    d = Path(study_dir)
    db = d / DB_NAME
    if not db.is_file():
        raise StudyError(f"{d}: study folder must contain {DB_NAME}, got none; run `regulab study` first")
    _check_db_file(db)
    con = _connect(db, readonly=True)
    try:
        _check_app_id(con, db, allow_fresh=False)
        _check_sound(con, db)
        _check_meta(con, db)
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        row = con.execute("SELECT spec_json FROM spec WHERE id = 1").fetchone()
        spec = json.loads(row[0]) if row else {}
        runs = []
        for r in con.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id"):
            r = dict(r)
            for k in _JSON_RUN_FIELDS:
                r[k] = json.loads(r[k]) if r[k] else {}
            runs.append(r)
        epochs = [dict(r) for r in con.execute(
            f"SELECT {', '.join(EPOCH_COLUMNS)} FROM epochs ORDER BY run_id, epoch")]
        finals = [dict(r) for r in con.execute(f"SELECT {', '.join(FINAL_COLUMNS)} FROM finals ORDER BY run_id")]
    finally:
        con.close()
    return Results(d, spec, runs, epochs, finals, meta)
