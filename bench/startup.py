"""`python -m bench.startup`: where a client's qualification time and an instance's idle memory
go, ours beside miredo, in one lab (a quick look between two `make bench` runs; not a test).

Qualification is cut into three phases from outside the client: launch -> first Router
Solicitation on the wire and RS -> Router Advertisement (both from `tcpdump -tt` in the
client's namespace, on the client's LAN interface), RA -> global address on the Teredo
interface (`ip monitor`).  The runs alternate between implementations, so load from elsewhere
on a shared machine hits both alike; medians are printed.

Idle memory: PSS and USS of each process of an idle relay and an idle client (parent, worker,
miredo's privproc), and of a bare interpreter (``python3 -c 'import time; time.sleep(60)'``)
as the floor any Python process pays.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.daemons import AddressWatch, implementation, stop
from bench.procs import process_tree, smaps_rollup_kib, wait_until
from teredolab.topology import LabSpec, NetnsLab
from tests.kernel import harness as h


class WireWatch:
    """tcpdump in the client's namespace: the first RS sent and the first RA received."""

    def __init__(self, ns: str, out: Path) -> None:
        self.out = out
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", ns, "tcpdump", "-i", "any", "-n", "-tt", "-l", "-U",
                 "udp port 3544"],
                stdout=f, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(0.3)  # tcpdump has no readiness signal; let it open the capture

    def times(self) -> tuple[float | None, float | None]:
        """(epoch of the first RS sent, epoch of the first RA received) once stopped."""
        rs = ra = None
        for line in self.out.read_text(errors="replace").splitlines():
            fields = line.split()
            if len(fields) < 5:
                continue
            try:
                t = float(fields[0])
            except ValueError:
                continue
            if " > " not in line:
                continue
            dst = line.split(" > ", 1)[1].split()[0]
            if dst.endswith(".3544:") and rs is None:
                rs = t  # to the server's port: the RS
            elif ".3544 > " in line and rs is not None and ra is None:
                ra = t  # from the server's port: the RA
        return rs, ra

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def qualify_once(stack: h.Stack, impl: str, name: str, run_dir: Path) -> dict:
    lab = stack.lab
    spec = lab.spec
    conf = h.write_client_conf(run_dir / f"{name}.conf", spec)
    daemon = h.Daemon(lab, "cli", "client", conf, run_dir, implementation(impl), name=name)
    wire = WireWatch(lab.ns("cli"), run_dir / f"{name}.pcap.txt")
    watch = AddressWatch(lab.ns("cli"), spec.teredo_if)
    row: dict = {"impl": impl}
    try:
        epoch0, mono0 = time.time(), time.monotonic()
        stack.daemons.append(daemon.start())
        got = watch.wait(daemon.started_at, daemon, 20.0)
        time.sleep(0.05)
    finally:
        watch.close()
        wire.close()
    if got is None:
        row["error"] = daemon.log_tail()
    else:
        row["total"] = got[0]
        rs, ra = wire.times()
        if rs is not None and ra is not None:
            # tcpdump stamps wall-clock time, the address watch counts from the launch on the
            # monotonic clock: put both on the launch, so the three phases add up to the total
            launch = epoch0 + (daemon.started_at - mono0)
            row["to_rs"] = rs - launch
            row["rs_ra"] = ra - rs
            row["ra_addr"] = got[0] - (ra - launch)
    row["memory"] = tree_rows(daemon.pid or 0)
    stop(stack, daemon)
    wait_until(lambda: not h.link_exists(lab, "cli", spec.teredo_if), 5, 0.05)
    return row


def tree_rows(root: int) -> list[tuple[int, str, int, int]]:
    """(pid, command, PSS KiB, USS KiB) of every process under `root`."""
    rows = []
    for pid in process_tree(root):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        pss, uss = smaps_rollup_kib(pid)
        rows.append((pid, comm, pss, uss))
    return rows


def bare_python_kib() -> tuple[int, int]:
    """PSS, USS of an idle bare interpreter (the venv's): the floor of any Python process."""
    p = subprocess.Popen([h.venv_python(), "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.0)
        return smaps_rollup_kib(p.pid)
    finally:
        p.kill()
        p.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="qualifications per implementation")
    ap.add_argument("--impls", default="miredo,ours",
                    help="comma-separated: miredo, ours, ours@DIR (the engine of another "
                         "checkout, for a before/after comparison in one run)")
    ap.add_argument("--relay-runs", type=int, default=1,
                    help="idle relays per implementation, alternating (PSS: median)")
    ap.add_argument("--prefix", default=f"bs{os.getpid() % 100000}-")
    a = ap.parse_args(argv)
    from bench.__main__ import compile_engine, compile_tree

    compile_engine()
    impls = [i for i in a.impls.split(",") if i]
    for impl in impls:  # another checkout's engine ("ours@DIR"): its bytecode too
        if impl.startswith("ours@"):
            compile_tree(Path(impl[5:]))
    run_dir = Path(tempfile.mkdtemp(prefix="teredo-startup."))
    os.chmod(run_dir, 0o755)
    lab = NetnsLab(LabSpec(prefix=a.prefix, with_client2=False))
    stack = h.Stack(lab, run_dir)
    rows: list[dict] = []
    relays: dict[str, list[list[tuple[int, str, int, int]]]] = {i: [] for i in impls}
    try:
        lab.up()
        h.start_server(stack, implementation("miredo"))
        for _run in range(a.relay_runs):
            for impl in impls:  # one relay at a time: both use the relay namespace's port
                relay = h.start_relay(stack, implementation(impl))
                time.sleep(1.5)
                relays[impl].append(tree_rows(relay.pid or 0))
                stop(stack, relay)
                wait_until(lambda: not h.link_exists(lab, "rly", lab.spec.teredo_if), 5, 0.05)
        for run in range(a.runs):
            for n, impl in enumerate(impls):
                rows.append(qualify_once(stack, impl, f"q{n}{impl[0]}{run}", run_dir))
        print(f"bare interpreter: PSS/USS {bare_python_kib()} KiB")
        for impl, trees in relays.items():
            if not trees:
                continue
            totals = [sum(r[2] for r in tree) for tree in trees]
            tree = trees[totals.index(sorted(totals)[len(totals) // 2])]  # the median run's
            print(f"{impl} relay idle: PSS median {statistics.median(totals):.0f} KiB  "
                  f"({' '.join(str(t) for t in totals)})  median run: "
                  + "; ".join(f"{c}[{p}] PSS {s} USS {u}" for p, c, s, u in tree))
        for impl in impls:
            mine = [r for r in rows if r["impl"] == impl and "total" in r]
            bad = [r for r in rows if r["impl"] == impl and "error" in r]
            line = f"{impl} client: {len(mine)} ok, {len(bad)} failed"
            for key in ("total", "to_rs", "rs_ra", "ra_addr"):
                vals = [r[key] for r in mine if key in r]
                if vals:
                    line += f"; {key} {statistics.median(vals) * 1000:.1f} ms"
            print(line + "  (" + " ".join(f"{r.get('total', 0) * 1000:.0f}" for r in mine)
                  + ")")
            if mine:
                totals = [sum(r[2] for r in m["memory"]) for m in mine]
                tree = mine[-1]["memory"]
                print(f"  {impl} client just qualified: PSS median "
                      f"{statistics.median(totals):.0f} KiB ({' '.join(map(str, totals))}); "
                      "last: " + "; ".join(f"{c}[{p}] PSS {s} USS {u}" for p, c, s, u in tree))
            for r in bad:
                print(f"  failed: {r['error']}")
    finally:
        stack.stop()
        lab.down()
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
