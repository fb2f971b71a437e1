"""The measuring part of scripts/bench-rolling (read its header first).

Run by scripts/bench-rolling with the venv's Python (psycopg) and
PG_BIN, VENV, PGBOOT in the environment.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ["PG_BIN"])
VENV = Path(os.environ["VENV"])
PGBOOT = os.environ["PGBOOT"]
DOC = Path(os.environ.get("BENCH_ROLLING_DOC", ROOT / "docs/benchmarks.md"))
N_RUNS = int(os.environ.get("N_RUNS", "3"))

READER_HOLD_S = 12.0
MIGRATE_AFTER_S = 1.0
CLIENT_EVERY_S = 0.05
RUN_LIMIT_S = 120

BUILTIN_FIRST = """CREATE TABLE jobs (
    id serial PRIMARY KEY,
    name varchar(200) NOT NULL UNIQUE,
    status varchar(32) NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
BUILTIN_SECOND = """ALTER TABLE jobs ADD COLUMN priority integer NOT NULL DEFAULT 0;
CREATE INDEX ix_jobs_priority ON jobs (priority);
"""


def say(msg: str) -> None:
    print(f"== {msg}", file=sys.stderr, flush=True)


def as_server(cmd: list[str]) -> list[str]:
    """Postgres refuses root: run the server's programs as nobody."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", *cmd]
    return cmd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway PostgreSQL 17 on 127.0.0.1, stopped by pid."""

    def __init__(self, work: Path) -> None:
        self.data = work / "data"
        self.sock = work / "sock"
        self.data.mkdir()
        self.sock.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.data, "nobody", "nogroup")
            shutil.chown(self.sock, "nobody", "nogroup")
        self.port = free_port()
        subprocess.run(
            as_server([str(PG_BIN / "initdb"), "-U", "postgres", "--auth=trust", "-D", str(self.data)]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.log = open(work / "server.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            as_server(
                [
                    str(PG_BIN / "postgres"),
                    "-D", str(self.data),
                    "-p", str(self.port),
                    "-k", str(self.sock),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", "max_connections=200",
                ]
            ),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def url(self, db: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def version(self) -> str:
        with psycopg.connect(self.url("postgres")) as c:
            return c.execute("SHOW server_version").fetchone()[0]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Client:
    """The old replicas: a query on `jobs` every 50 ms, each timed."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name="bench-client")
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            t = time.monotonic()
            self.conn.execute("SELECT count(*) FROM jobs").fetchone()
            self.samples.append((t, time.monotonic() - t))
            time.sleep(CLIENT_EVERY_S)

    def stop(self) -> list[tuple[float, float]]:
        self.stopping.set()
        self.thread.join(RUN_LIMIT_S)
        self.conn.close()
        return self.samples


class Reader:
    """A 12 s transaction holding ACCESS SHARE on `jobs`."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, application_name="bench-reader")
        self.ended = 0.0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.holding = threading.Event()
        self.thread.start()
        self.holding.wait(30)

    def run(self) -> None:
        self.conn.execute("SELECT count(*) FROM jobs").fetchone()
        self.holding.set()
        self.conn.execute("SELECT pg_sleep(%s)", (READER_HOLD_S,))
        self.conn.commit()
        self.ended = time.monotonic()
        self.conn.close()

    def wait(self) -> float:
        self.thread.join(RUN_LIMIT_S)
        return self.ended


def prepare(cluster: Cluster, mode: str, work: Path) -> tuple[str, Path]:
    """A fresh database one revision behind, and where the migration runs."""
    db = f"b{time.monotonic_ns()}"
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{db}"')
    url = cluster.url(db)
    if mode == "alembic":
        svc = work / "svc"
        if not svc.exists():
            shutil.copytree(ROOT / "examples/pipeline", svc, ignore=shutil.ignore_patterns("__pycache__"))
        alembic(svc, url, ["upgrade", "0001"])
        where = svc
    else:
        where = work / f"migrations-{db}"
        where.mkdir()
        (where / "0001_create_jobs.sql").write_text(BUILTIN_FIRST)
        run_pgboot(["migrate", "--migrations", str(where)], url, work)
        (where / "0002_add_priority.sql").write_text(BUILTIN_SECOND)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("INSERT INTO jobs (name) SELECT 'job ' || g FROM generate_series(1, 1000) g")
    return url, where


def env_for(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_URL"))}
    env["DATABASE_URL"] = url
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def alembic(svc: Path, url: str, args: list[str]) -> None:
    subprocess.run(
        [str(VENV / "bin/python"), "-m", "alembic", *args],
        cwd=svc, env=env_for(url), check=True, capture_output=True, timeout=RUN_LIMIT_S,
    )


def run_pgboot(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PGBOOT, *args], cwd=cwd, env=env_for(url), check=True, capture_output=True, timeout=RUN_LIMIT_S,
    )


def variant_command(variant: str, mode: str, where: Path) -> list[str]:
    if variant == "alone":
        return [str(VENV / "bin/python"), "-m", "alembic", "upgrade", "head"]
    how = (
        ["--migrate-cmd", "python -m alembic upgrade head"]
        if mode == "alembic"
        else ["--migrations", str(where)]
    )
    timeout = "0" if variant == "off" else "1s"
    return [PGBOOT, "migrate", *how, "--ddl-lock-timeout", timeout]


def applied_once(url: str, mode: str) -> bool:
    with psycopg.connect(url) as c:
        if mode == "alembic":
            head = c.execute("SELECT version_num FROM alembic_version").fetchall()
            kinds = c.execute("SELECT count(*) FROM job_kinds").fetchone()[0]
            return head == [("0003",)] and kinds == 3
        rows = c.execute("SELECT version, count(*) FROM _sqlx_migrations WHERE success GROUP BY version").fetchall()
        return sorted(rows) == [(1, 1), (2, 1)]


def one_run(cluster: Cluster, mode: str, variant: str, work: Path) -> dict:
    url, where = prepare(cluster, mode, work)
    client = Client(url)
    time.sleep(0.5)
    reader = Reader(url)
    time.sleep(MIGRATE_AFTER_S)
    started = time.monotonic()
    out = subprocess.run(
        variant_command(variant, mode, where),
        cwd=where if mode == "alembic" else work,
        env=env_for(url),
        capture_output=True,
        timeout=RUN_LIMIT_S,
    )
    done = time.monotonic()
    reader_end = reader.wait()
    time.sleep(0.5)
    samples = client.stop()
    if out.returncode != 0:
        raise SystemExit(f"{mode}/{variant} failed ({out.returncode}):\n{out.stderr.decode(errors='replace')}")
    during = sorted(lat for (t, lat) in samples if started <= t <= done)
    retries = len(re.findall(r"and was rolled back: waited for", out.stderr.decode(errors="replace")))
    return {
        "worst": during[-1],
        "p99": during[min(len(during) - 1, int(len(during) * 0.99))],
        "after_reader": done - reader_end,
        "attempts": retries + 1,
        "once": applied_once(url, mode),
        "queries": len(during),
    }


VARIANTS = [
    ("alembic", "alone", "`python -m alembic upgrade head` alone"),
    ("alembic", "off", "pgboot `--migrate-cmd …` `--ddl-lock-timeout 0`"),
    ("alembic", "on", "pgboot `--migrate-cmd …` `--ddl-lock-timeout 1s`"),
    ("builtin", "off", "pgboot `--migrations DIR` `--ddl-lock-timeout 0`"),
    ("builtin", "on", "pgboot `--migrations DIR` `--ddl-lock-timeout 1s`"),
]


def fmt_s(x: float) -> str:
    return f"{x:.2f} s"


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-rolling."))
    os.chmod(work, 0o755)
    cluster = Cluster(work)
    try:
        results: dict[tuple[str, str], list[dict]] = {(m, v): [] for (m, v, _) in VARIANTS}
        for n in range(N_RUNS):
            for mode, variant, _ in VARIANTS:
                say(f"run {n + 1}/{N_RUNS}: {mode} {variant}")
                results[(mode, variant)].append(one_run(cluster, mode, variant, work))
        version = cluster.version()
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    rows = []
    for mode, variant, label in VARIANTS:
        rs = results[(mode, variant)]
        rows.append(
            "| {} | {} | {} | {} | {} | {} |".format(
                label,
                fmt_s(max(r["worst"] for r in rs)),
                fmt_s(statistics.median(r["p99"] for r in rs)),
                fmt_s(statistics.median(r["after_reader"] for r in rs)),
                "/".join(str(r["attempts"]) for r in rs),
                "yes" if all(r["once"] for r in rs) else "**no**",
            )
        )

    def target_rows() -> list[str]:
        out = []
        for mode in ("alembic", "builtin"):
            rs = results[(mode, "on")]
            worst = max(r["worst"] for r in rs)
            after = max(r["after_reader"] for r in rs)
            once = all(r["once"] for r in rs)
            out.append(f"| {mode}: worst query ≤ 2.5 s | {fmt_s(worst)} | {'hit' if worst <= 2.5 else '**missed**'} |")
            out.append(
                f"| {mode}: done ≤ 10 s after the reader ends | {fmt_s(after)} | {'hit' if after <= 10 else '**missed**'} |"
            )
            out.append(f"| {mode}: applied once | {'yes' if once else 'no'} | {'hit' if once else '**missed**'} |")
        return out

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    py = subprocess.run([str(VENV / "bin/python"), "-c", "import alembic, psycopg; print(alembic.__version__, psycopg.__version__)"],
                        capture_output=True, text=True, check=True).stdout.split()
    section = "\n".join(
        [
            "<!-- bench-rolling:start -->",
            "## Rolling deploys (`scripts/bench-rolling`)",
            "",
            f"Measured {now} on {os.cpu_count()} CPUs, Linux {platform.release()} (load average at the end: {load}); "
            f"PostgreSQL {version} on 127.0.0.1; Python {platform.python_version()}, Alembic {py[0]}, psycopg {py[1]}; "
            f"pgboot debug build; {N_RUNS} runs of each variant.",
            "",
            "The scene: `jobs` (1,000 rows) one revision behind; a client queries it every 50 ms; a reader holds "
            f"ACCESS SHARE on it for {READER_HOLD_S:.0f} s; the migration (`ALTER TABLE jobs ADD COLUMN …` and an "
            f"index) starts {MIGRATE_AFTER_S:.0f} s into the reader.",
            "",
            "| migration | worst query (max of runs) | p99 query (median) | reader's end → migration done (median) | attempts per run | applied once |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "| target (`--ddl-lock-timeout 1s`) | measured (max of runs) | result |",
            "|---|---|---|",
            *target_rows(),
            "",
            "How: `scripts/bench-rolling` (method in its header; the measuring code is `scripts/bench_rolling.py`). "
            "Latencies are the client's own clock around each query on its persistent connection, for queries "
            "started while the migration ran; \"reader's end\" is when its COMMIT returned. Without a lock timeout the "
            "ALTER waits in the lock queue behind the reader and every query queues behind the ALTER until the reader "
            "ends; with it, each attempt gives up after 1 s and the queue drains until the next attempt.",
            "<!-- bench-rolling:end -->",
        ]
    )
    print(section)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if "<!-- bench-rolling:start -->" in text:
        text = re.sub(
            r"<!-- bench-rolling:start -->.*?<!-- bench-rolling:end -->", lambda _: section, text, flags=re.S
        )
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOC.write_text(text)
    say(f"written into {DOC}")


if __name__ == "__main__":
    main()
