"""Server ingest under load: N simulated devices -> a private Mosquitto (TLS, the deployment's
config and ACL) -> `smearscope serve` with K workers in one MQTT 5 shared subscription -> PostgreSQL
(and SQLite with one worker).

    python -m benchmarks.ingest_bench                       # the standard set of runs (a few minutes)
    python -m benchmarks.ingest_bench --workers 2 --db postgres --rate 1500 --duration 20 --no-faults

Each run starts a fresh broker and an empty database, paces every device at rate/N results per
second (each keeps at most `--window` results awaiting their receipt, like a real device), and
measures from the devices' side: results stored per second (stored receipts over the time from
the first publish to the last receipt), publish -> receipt p50/p99, and, from the database after the
run, results lost (published, never stored) and stored twice (one capture under two rows). The
standard set: PostgreSQL at K = 1, 2, 4; SQLite at K = 1; PostgreSQL at K = 2 with 1 % poison
messages (every kind in benchmarks.ingest_sim.POISON); PostgreSQL at K = 2 with the database
stopped (immediate shutdown) and started again mid-run. The machine's CPU count and load average
(before and after each run) are recorded, since other work on the machine changes the figures.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from benchmarks.ingest_sim import POISON, Message, SimDevice, create_refusal_constraint, poison_message, valid_message
from mqtt_helpers import (SITE, Mosquitto, Postgres, make_certs, postgres_bin, tls_settings,  # via ingest_sim's path
                          write_server_config)
from server.store import Store

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RunSpec:
    """One benchmark run."""

    db: str  # postgres | sqlite
    workers: int
    poison_pct: float = 0.0
    db_restart: bool = False

    @property
    def name(self) -> str:
        extra = f", {self.poison_pct:g} % poison" if self.poison_pct else ""
        extra += ", database restart" if self.db_restart else ""
        return f"{self.db} K={self.workers}{extra}"


@dataclass(frozen=True)
class Load:
    """How the simulated devices publish."""

    devices: int
    rate: float  # results per second, all devices together
    duration_s: float
    window: int
    resend_after_s: float
    drain_timeout_s: float
    max_batch: int
    device_procs: int


@dataclass
class RunResult:
    name: str
    spec: dict[str, Any]
    published_valid: int = 0
    published_poison: int = 0
    offered_per_s: float = 0.0
    stored_per_s: float = 0.0
    receipt_ms: dict[str, float] = field(default_factory=dict)
    #: publish -> the server's write of the row (results.received_at): where the latency builds up
    to_store_ms: dict[str, float] = field(default_factory=dict)
    lost: int = 0
    stored_twice: int = 0
    poison_stored: int = 0
    poison_rejected_with_receipt: int = 0
    duplicate_receipts: int = 0
    resends: int = 0
    unreceipted_at_end: int = 0
    db_outage_s: float | None = None
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds used during the measured part
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


def _cpu_snapshot(server_pid: int, broker_pid: int) -> dict[str, float]:
    """CPU seconds so far: server processes (parent and workers) and the broker."""
    return {"server": sum(_cpu_seconds(p) for p in [server_pid, *_children(server_pid)]),
            "broker": _cpu_seconds(broker_pid)}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


class Rig:
    """Certificates, the PostgreSQL cluster and a work folder shared by all runs."""

    def __init__(self, work: Path, devices: int) -> None:
        self.work = work
        self.device_ids = [f"bench-{i:03d}" for i in range(devices)]
        self.certs = make_certs(work / "certs", self.device_ids)
        self.postgres: Postgres | None = None

    def postgres_url(self) -> str:
        if self.postgres is None:
            if postgres_bin() is None:
                raise click.ClickException("PostgreSQL binaries not found (apt-get install postgresql)")
            self.postgres = Postgres()
            self.postgres.start()
        return self.postgres.url

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()


def _fresh_database(rig: Rig, spec: RunSpec, run_dir: Path) -> str:
    url = rig.postgres_url() if spec.db == "postgres" else f"sqlite:///{run_dir / 'server.sqlite3'}"
    store = Store(url)
    try:
        if spec.db == "postgres":
            with store._transaction() as cur:
                cur.execute("TRUNCATE results, rejections, deliveries")
        if spec.poison_pct:
            create_refusal_constraint(store)
    finally:
        store.close()
    return url


def _messages(device: str, count: int, poison_pct: float, start_seq: int) -> list[Message]:
    """`count` messages for one device; every round(100/poison_pct)-th is poison, kinds in turn."""
    kinds = sorted(POISON)
    every = round(100 / poison_pct) if poison_pct else 0
    out = []
    for i in range(count):
        seq = start_seq + i
        if every and i % every == every - 1:
            out.append(poison_message(device, seq, kinds[(i // every) % len(kinds)]))
        else:
            out.append(valid_message(device, seq))
    return out


def _start_server(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-m", "smearscope", "serve", "--config", str(config)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise click.ClickException(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Sent:
    """One published message as a device group saw it (times: CLOCK_MONOTONIC, shared by processes)."""

    device: str
    result_id: str
    kind: str
    expect: str
    published: float
    receipts: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class GroupReport:
    sent: list[Sent]
    resends: int
    unreceipted: int
    cpu_s: float


def run_once(rig: Rig, spec: RunSpec, load: Load) -> RunResult:
    """One run with a fresh broker and an empty database."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=rig.work))
    url = _fresh_database(rig, spec, run_dir)
    broker = Mosquitto(run_dir / "broker", rig.certs)
    broker.start()
    config = write_server_config(run_dir / "server.yaml", rig.certs, broker.port, url, share_group="bench")
    raw = json.loads(config.read_text())
    config.write_text(json.dumps({**raw, "workers": spec.workers, "max_batch": load.max_batch}))
    server = _start_server(config, run_dir / "server.log")
    result = RunResult(spec.name, asdict(spec), loadavg_before=list(os.getloadavg()))
    context = multiprocessing.get_context("spawn")
    ready: Any = context.Queue()
    starts: Any = context.Queue()
    reports: Any = context.Queue()
    groups: list[Any] = []
    try:
        _wait(lambda: broker.log().count("as smearscope-server") >= spec.workers, 60, f"{spec.workers} workers")
        time.sleep(1.0)  # the workers' SUBSCRIBEs follow their connections
        ids = rig.device_ids
        for g in range(load.device_procs):
            part = ids[g::load.device_procs]
            if part:
                group = DeviceGroup(rig.certs, broker.port, part, spec.poison_pct, len(ids))
                groups.append(context.Process(target=_device_group, daemon=True,
                                              args=(group, load, ready, starts, reports)))
        for proc in groups:
            proc.start()
        for _ in groups:
            ready.get(timeout=120)  # connected, subscribed, warm-up receipted
        outage = threading.Thread(target=_restart_database, args=(rig, load.duration_s / 2, result), daemon=True)
        cpu_before = _cpu_snapshot(server.pid, broker.proc.pid)
        start = time.monotonic() + 0.2
        for _ in groups:
            starts.put(start)
        if spec.db_restart:
            outage.start()
        group_reports = [reports.get(timeout=load.duration_s + load.drain_timeout_s + 120) for _ in groups]
        cpu_after = _cpu_snapshot(server.pid, broker.proc.pid)
        result.cpu_s = {k: round(cpu_after[k] - cpu_before[k], 1) for k in ("server", "broker")}
        result.cpu_s["devices"] = round(sum(r.cpu_s for r in group_reports), 1)
        result.cpu_s["wall"] = round(time.monotonic() - start, 1)
        if spec.db_restart:
            outage.join()
        result.resends = sum(r.resends for r in group_reports)
        result.unreceipted_at_end = sum(r.unreceipted for r in group_reports)
        _measure(result, [s for r in group_reports for s in r.sent], url, start)
    finally:
        for proc in groups:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        broker.stop()
    result.loadavg_after = list(os.getloadavg())
    return result


@dataclass(frozen=True)
class DeviceGroup:
    """The simulated devices one process runs, and where they publish."""

    certs: Path
    port: int
    ids: list[str]
    poison_pct: float
    all_devices: int


def _device_group(group: DeviceGroup, load: Load, ready: Any, starts: Any, reports: Any) -> None:
    """One process of simulated devices (several, so that their receipts are not timed through one GIL)."""
    certs, port, ids, poison_pct, all_devices = group.certs, group.port, group.ids, group.poison_pct, group.all_devices
    cpu0 = sum(os.times()[:2])
    sys.setswitchinterval(0.0005)  # receipts are timed in paho's threads: let them run promptly
    devices = [SimDevice(tls_settings(certs, d, port), SITE, d, window=load.window) for d in ids]
    try:
        _wait(lambda: all(d.is_ready() for d in devices), 60, "the devices' subscriptions")
        for d in devices:
            for m in _messages(d.device, 5, 0, 0):
                d.publish(m)
        _wait(lambda: all(d.unreceipted() == 0 for d in devices), 60, "the warm-up receipts")
        per_device = max(1, int(load.rate * load.duration_s / all_devices))
        plans = [_messages(d.device, per_device, poison_pct, 5) for d in devices]
        for d in devices:
            d.timeline.published.clear()
            d.timeline.receipts.clear()
        ready.put(True)
        start = starts.get()
        rate = load.rate * len(devices) / all_devices  # this group's share
        order = [(d, plan[i]) for i in range(per_device) for d, plan in zip(devices, plans)]
        for k, (d, message) in enumerate(order):
            delay = start + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            d.publish(message, timeout_s=300)
        resends = _drain(devices, plans, load)
        sent = [Sent(d.device, m.result_id, m.kind, m.expect, d.timeline.published[m.result_id],
                     tuple(d.timeline.receipts.get(m.result_id, ()))) for d, plan in zip(devices, plans) for m in plan]
        reports.put(GroupReport(sent, resends, sum(d.unreceipted() for d in devices), sum(os.times()[:2]) - cpu0))
    finally:
        for d in devices:
            d.close()


def _drain(devices: list[SimDevice], plans: list[list[Message]], load: Load) -> int:
    """Wait for every receipt, resending (same bytes) what has none after `resend_after_s`."""
    resends = 0
    last_sent: dict[str, float] = {}
    deadline = time.monotonic() + load.drain_timeout_s
    while time.monotonic() < deadline and any(d.unreceipted() for d in devices):
        now = time.monotonic()
        for d, plan in zip(devices, plans):
            for m in plan:
                if m.result_id in d.timeline.receipts:
                    continue
                sent = last_sent.get(m.result_id, d.timeline.published.get(m.result_id, now))
                if now - sent > load.resend_after_s:
                    d.resend(m)
                    last_sent[m.result_id] = now
                    resends += 1
        time.sleep(0.2)
    return resends


def _restart_database(rig: Rig, after_s: float, result: RunResult) -> None:
    time.sleep(after_s)
    assert rig.postgres is not None
    down = time.monotonic()
    rig.postgres.halt()
    time.sleep(2.0)
    rig.postgres.resume()
    result.db_outage_s = round(time.monotonic() - down, 2)


def _measure(result: RunResult, sent: list[Sent], url: str, start: float) -> None:
    valid = [m for m in sent if m.kind == "valid"]
    poison = [m for m in sent if m.kind != "valid"]
    result.published_valid, result.published_poison = len(valid), len(poison)
    last_publish = max((m.published for m in sent), default=start)
    result.offered_per_s = round(len(sent) / max(1e-9, last_publish - start), 1)
    latencies = [(m.receipts[0][1] - m.published) * 1000 for m in valid if m.receipts]
    stored_at = [m.receipts[0][1] for m in valid if m.receipts and m.receipts[0][0] == "stored"]
    if stored_at:
        result.stored_per_s = round(len(stored_at) / (max(stored_at) - start), 1)
    if latencies:
        result.receipt_ms = {"p50": round(_percentile(latencies, 50), 1), "p99": round(_percentile(latencies, 99), 1),
                             "max": round(max(latencies), 1), "mean": round(statistics.fmean(latencies), 1)}
    result.poison_rejected_with_receipt = sum(1 for m in poison if m.receipts and m.receipts[0][0] == m.expect)
    result.duplicate_receipts = sum(1 for m in sent for status, _ in m.receipts if status == "duplicate")
    store = Store(url)
    try:
        rows = store.query("SELECT result_id, device_id, seq, received_at FROM results")
    finally:
        store.close()
    written = {r[0]: r[3] for r in rows}
    captures = [(r[1], r[2]) for r in rows]
    offset = time.time() - time.monotonic()  # devices time with CLOCK_MONOTONIC, the store with the wall clock
    to_store = [(written[m.result_id] - (m.published + offset)) * 1000 for m in valid if m.result_id in written]
    if to_store:
        result.to_store_ms = {"p50": round(_percentile(to_store, 50), 1), "p99": round(_percentile(to_store, 99), 1)}
    result.lost = sum(1 for m in valid if m.result_id not in written)
    result.stored_twice = len(captures) - len(set(captures))
    result.poison_stored = sum(1 for m in poison if m.result_id in written)


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_at_start": list(os.getloadavg())}


def standard_runs(workers: list[int], dbs: list[str], faults: bool) -> list[RunSpec]:
    runs = [RunSpec(db, k) for db in dbs for k in (workers if db == "postgres" else [1])]
    if faults and "postgres" in dbs:
        k = 2 if 2 in workers else workers[0]
        runs += [RunSpec("postgres", k, poison_pct=1.0), RunSpec("postgres", k, db_restart=True)]
    return runs


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--devices", type=click.IntRange(1, 500), default=20, show_default=True, help="Simulated devices.")
@click.option("--rate", type=click.FloatRange(min=1), default=1200, show_default=True,
              help="Results per second offered by all devices together.")
@click.option("--duration", type=click.FloatRange(min=1), default=15, show_default=True,
              help="Seconds of publishing per run.")
@click.option("--workers", default="1,2,4", show_default=True, help="Comma-separated K values (server workers).")
@click.option("--db", "dbs", default="postgres,sqlite", show_default=True,
              help="Comma-separated databases: postgres, sqlite (SQLite runs with one worker).")
@click.option("--faults/--no-faults", default=True, show_default=True,
              help="Add the 1 %-poison run and the database-restart run (PostgreSQL).")
@click.option("--window", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="Results a device keeps awaiting receipts before it waits.")
@click.option("--resend-after", type=click.FloatRange(min=1), default=30, show_default=True,
              help="Seconds without a receipt before a device resends.")
@click.option("--max-batch", type=click.IntRange(1, 2000), default=200, show_default=True,
              help="Server's max_batch (messages per transaction).")
@click.option("--device-procs", type=click.IntRange(1, 64), default=2, show_default=True,
              help="Processes the simulated devices are spread over.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the figures as JSON here [default: print only].")
def main(devices: int, rate: float, duration: float, workers: str, dbs: str, faults: bool, window: int,
         resend_after: float, max_batch: int, device_procs: int, out: Path | None) -> None:
    """Measure results stored per second, publish->receipt latency, lost and duplicated results."""
    try:
        ks = [int(k) for k in workers.split(",") if k.strip()]
    except ValueError:
        raise click.BadParameter(f"{workers!r} is not a comma-separated list of integers", param_hint="--workers")
    if not ks or any(not 1 <= k <= 64 for k in ks):
        raise click.BadParameter("each K must be 1-64", param_hint="--workers")
    db_list = [d.strip() for d in dbs.split(",") if d.strip()]
    if not db_list or set(db_list) - {"postgres", "sqlite"}:
        raise click.BadParameter(f"{dbs!r}: use postgres and/or sqlite", param_hint="--db")
    load = Load(devices, rate, duration, window, resend_after, drain_timeout_s=max(60.0, 2 * resend_after),
                max_batch=max_batch, device_procs=device_procs)
    report: dict[str, Any] = {"machine": _machine(), "load": asdict(load), "runs": []}
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        try:
            rig = Rig(Path(tmp), devices)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise click.ClickException(f"cannot make test certificates with deploy/make-certs.sh: {exc}") from None
        try:
            for spec in standard_runs(ks, db_list, faults):
                click.echo(f"run: {spec.name} ...", err=True)
                started = time.monotonic()
                try:
                    result = run_once(rig, spec, load)
                except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:  # a missing or failing part
                    raise click.ClickException(f"{spec.name}: {exc}") from None
                result.wall_s = round(time.monotonic() - started, 1)
                report["runs"].append(asdict(result))
                click.echo(_line(result), err=True)
        finally:
            rig.close()
    report["machine"]["loadavg_at_end"] = list(os.getloadavg())
    text = json.dumps(report, indent=2)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    click.echo(text)


def _line(r: RunResult) -> str:
    ms = r.receipt_ms
    return (f"  {r.name}: stored {r.stored_per_s:.0f}/s (offered {r.offered_per_s:.0f}/s), receipt p50 "
            f"{ms.get('p50', float('nan')):.0f} ms p99 {ms.get('p99', float('nan')):.0f} ms (to store "
            f"{r.to_store_ms.get('p50', float('nan')):.0f}/{r.to_store_ms.get('p99', float('nan')):.0f}), lost {r.lost}, "
            f"stored twice {r.stored_twice}, poison rejected {r.poison_rejected_with_receipt}/{r.published_poison}, "
            f"load {r.loadavg_before[0]:.2f}->{r.loadavg_after[0]:.2f}, cpu s {r.cpu_s}")


if __name__ == "__main__":
    main()
