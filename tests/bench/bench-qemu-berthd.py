#!/usr/bin/env python3
"""The qemu plugin in berthd against raw QEMU, in the same run (docs/performance.md).

Medians over RUNS runs (default 10) of:
  raw QEMU start-to-running, quit-to-gone, SIGKILL-to-gone (bench-qemu-raw.sh, qmp-timer),
           and the wall time of 20 raw QEMUs launched at once until the last one runs; the
           same with the plugin's own QEMU command line, interleaved with the berthd runs
  berthd: define+start+destroy+undefine cycle, domain.start (to running), domain.destroy,
          kill -9 of QEMU to the domain-stopped event at a client, 20 parallel domain.start
          (wall time), berthd VmRSS idle and with 20 running domains
and the ratios to raw QEMU; with virsh installed, virsh create/destroy of the same definition
(not installed on the machine of docs/performance.md).

Usage: bench-qemu-berthd.py --build BUILD_DIR --qmp-timer QMP_TIMER --raw RAW_SCRIPT
                            [--runs N] [--parallel N]
The JSON-RPC client is this file's (python3 stdlib, newline-delimited JSON over the unix
socket, docs/api.md).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


class Client:
    """One connection; calls wait for their reply, notifications are queued."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1
        self.notes = []

    def close(self):
        self.sock.close()

    def _line(self, timeout=None):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("berthd closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, method, params=None):
        rid = self.next_id
        self.next_id += 1
        req = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self._line()
            if msg.get("id") == rid:
                if "error" in msg:
                    raise RuntimeError(f"{method} {params}: {msg['error']['message']}")
                return msg["result"]
            if msg.get("method") == "event":
                self.notes.append(msg["params"])

    def event(self, etype, name, timeout=10.0):
        end = time.monotonic() + timeout
        while True:
            while self.notes:
                e = self.notes.pop(0)
                if e["type"] == etype and e["object"]["name"] == name:
                    return e
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {etype} event for {name}")
            msg = self._line(left)
            if msg.get("method") == "event":
                self.notes.append(msg["params"])


def median(values):
    return statistics.median(values) if values else float("nan")


def ms(t0):
    return (time.monotonic() - t0) * 1000.0


def domain_xml(name, dtype):
    return (f"<domain type='{dtype}'><name>{name}</name><memory unit='MiB'>128</memory>"
            "<vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os></domain>")


def vmrss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Berthd:
    def __init__(self, build, tmp):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "run", "berthd.sock")
        os.makedirs(os.path.join(tmp, "plugins"))
        os.makedirs(os.path.join(tmp, "etc", "domains"))
        build = os.path.abspath(build)
        os.symlink(os.path.join(build, "plugins", "qemu", "qemu.so"),
                   os.path.join(tmp, "plugins", "qemu.so"))
        self.conf = os.path.join(tmp, "etc", "berthd.conf")
        with open(self.conf, "w") as f:
            f.write(f"""[agent]
config_dir={tmp}/etc
state_dir={tmp}/state
run_dir={tmp}/run
domains_dir={tmp}/etc/domains
plugin_dir={tmp}/plugins
plugins=qemu;
required_plugins=qemu;
log_level=warning
[rpc]
unix_socket={self.sock}
unix_socket_ro={tmp}/run/berthd-ro.sock
""")
        self.log = open(os.path.join(tmp, "berthd.log"), "w")
        self.proc = subprocess.Popen([os.path.join(build, "agent", "berthd"), "--config",
                                      self.conf, "--foreground"], stderr=self.log)
        end = time.monotonic() + 30
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                Client(self.sock).close()
                return
            except OSError:
                time.sleep(0.02)
        self.proc.kill()
        self.proc.wait()
        with open(self.log.name) as f:
            sys.stderr.write(f.read())
        raise RuntimeError("berthd did not start")

    def qemu_pid(self, name):
        path = os.path.join(self.tmp, "run", "domains", name + ".json")
        try:
            with open(path) as f:
                status = json.loads(json.load(f)["plugins"]["qemu"])
            return int(status["pid"])
        except (OSError, KeyError, ValueError):
            return 0

    def kill_all(self):
        """Kills berthd and every QEMU it left (by the pids in its status files)."""
        self.proc.kill()
        self.proc.wait()
        rundir = os.path.join(self.tmp, "run", "domains")
        for e in os.listdir(rundir) if os.path.isdir(rundir) else []:
            if e.endswith(".json"):
                pid = self.qemu_pid(e[:-5])
                if pid > 0:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass


def parallel(sock, method, names):
    """Calls @method on every name at once, one connection and thread each; wall time in ms."""
    errors = []
    barrier = threading.Barrier(len(names) + 1)

    def one(name):
        c = Client(sock)
        barrier.wait()
        try:
            c.call(method, {"name": name})
        except Exception as e:  # reported below
            errors.append(str(e))
        c.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join()
    took = ms(t0)
    if errors:
        raise RuntimeError(f"{method}: {errors[0]}")
    return took


def raw_figures(args):
    out = subprocess.run([args.raw, args.qmp_timer, str(args.runs)], check=True,
                         capture_output=True, text=True).stdout
    print(out, end="")
    fig = {}
    for line in out.splitlines():
        parts = line.split()
        if "median" in parts:
            fig[parts[0]] = float(parts[parts.index("median") + 1])
    return fig


def raw_parallel(args, n, argv=None):
    """@n raw QEMUs launched at once through qmp-timer: the wall time until the last one runs
    (the largest start-to-running), in ms. Each keeps running until all do, as under berthd.
    @argv: the plugin's command line instead of the minimal one of bench-qemu-raw.sh."""
    qemu = shutil.which("qemu-system-x86_64")
    accel = "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"
    tmp = tempfile.mkdtemp(prefix="berth-qemu-rawpar-")
    try:
        procs = []
        for i in range(n):
            sock = os.path.join(tmp, f"q{i}.sock")
            if argv:
                cmd = with_socket(argv, sock)
            else:
                cmd = [qemu, "-machine", "q35", "-accel", accel, "-m", "128", "-nodefaults",
                       "-display", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"]
            procs.append(subprocess.Popen(
                [args.qmp_timer, "--socket", sock, "--stop", "kill", "--wait-stdin", "--"] + cmd,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL))
        starts = []
        for p in procs:
            text = b""
            while not text.endswith(b" "):
                c = p.stdout.read(1)
                if not c:
                    raise RuntimeError("qmp-timer failed")
                text += c
            starts.append(float(text))
        # All running (and in their firmware): now stop them.
        for p in procs:
            p.communicate()
        return max(starts)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def with_socket(argv, sock):
    """The plugin's command line @argv with its monitor socket moved to @sock."""
    old = [a for a in argv if "qmp.sock" in a][0]
    old_path = [p[len("path="):] for p in old.split(",") if p.startswith("path=")][0]
    return [a.replace(old_path, sock) for a in argv]


def plugin_argv(pid):
    """The command line berthd gave the QEMU @pid."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def raw_once(args, argv, stop):
    """One qmp-timer run of the plugin's own command line @argv (its monitor socket moved to a
    temp dir): (start-to-running, stop-to-gone) in ms."""
    tmp = tempfile.mkdtemp(prefix="berth-qemu-rawargv-")
    sock = os.path.join(tmp, "qmp.sock")
    try:
        r = subprocess.run([args.qmp_timer, "--socket", sock, "--stop", stop, "--"] +
                           with_socket(argv, sock),
                           check=True, capture_output=True, text=True).stdout.split()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return float(r[0]), float(r[1])


def libvirt_figures(dtype, runs):
    """virsh create (a transient domain: start to running) and virsh destroy of the same
    definition through libvirtd (qemu:///system), medians in ms, virsh's own start-up included.
    None when libvirt cannot be used here."""
    uri = os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system")
    tmp = tempfile.mkdtemp(prefix="berth-qemu-libvirt-")
    xml = os.path.join(tmp, "d.xml")
    name = f"berth-bench-{os.getpid()}"
    with open(xml, "w") as f:
        f.write(domain_xml(name, dtype))
    starts, destroys, cycles = [], [], []

    def virsh(*argv):
        subprocess.run(["virsh", "-q", "-c", uri, *argv], check=True, capture_output=True)

    try:
        for _ in range(runs):
            t0 = time.monotonic()
            virsh("create", xml)
            starts.append(ms(t0))
            t0 = time.monotonic()
            virsh("destroy", name)
            destroys.append(ms(t0))
            # The persistent cycle, as berthd's define+start+destroy+undefine.
            t0 = time.monotonic()
            virsh("define", xml)
            virsh("start", name)
            virsh("destroy", name)
            virsh("undefine", name)
            cycles.append(ms(t0))
    except subprocess.CalledProcessError as e:
        print(f"libvirt: virsh failed: {e.stderr.decode(errors='replace').strip()}")
        subprocess.run(["virsh", "-q", "-c", uri, "destroy", name], capture_output=True)
        subprocess.run(["virsh", "-q", "-c", uri, "undefine", name], capture_output=True)
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return starts, destroys, cycles


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--qmp-timer", required=True)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--parallel", type=int, default=20)
    args = ap.parse_args()
    if not shutil.which("qemu-system-x86_64"):
        print("SKIP: qemu-system-x86_64 is not installed")
        return 77
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        dtype = "kvm"
    except OSError:
        dtype = "qemu"
    npar = args.parallel
    print(f"load before: {open('/proc/loadavg').read().split()[0:3]}, "
          f"{os.cpu_count()} CPUs, domain type '{dtype}'")

    # The floor: bench-qemu-raw.sh's minimal command line.
    raw = raw_figures(args)
    raw_par = [raw_parallel(args, npar) for _ in range(args.runs)]
    raw[f"{npar}-parallel"] = median(raw_par)
    print(f"{npar} parallel starts-to-running (wall) median {median(raw_par):8.1f} ms  "
          f"(min {min(raw_par):.1f}, max {max(raw_par):.1f}, n={len(raw_par)})")

    # berthd, with raw runs of the plugin's own command line interleaved with its runs, so
    # that the noise of this machine hits both alike.
    pa = {"start": [], "quit": [], "kill": [], "par": []}
    b = {"cycle": [], "start": [], "destroy": [], "crash": [], "par": [], "pardestroy": [],
         "rss": []}
    tmp = tempfile.mkdtemp(prefix="berth-qemu-berthd-")
    d = None
    try:
        d = Berthd(args.build, tmp)
        c = Client(d.sock)
        ev = Client(d.sock)
        ev.call("events.subscribe", {"filter": {"type": "domain-stopped"}})
        time.sleep(1)
        rss_idle = vmrss_kib(d.proc.pid)

        for i in range(args.runs):
            t0 = time.monotonic()
            c.call("domain.define", {"xml": domain_xml("cyc", dtype)})
            c.call("domain.start", {"name": "cyc"})
            c.call("domain.destroy", {"name": "cyc"})
            c.call("domain.undefine", {"name": "cyc"})
            b["cycle"].append(ms(t0))

        c.call("domain.define", {"xml": domain_xml("one", dtype)})
        c.call("domain.start", {"name": "one"})
        argv = plugin_argv(d.qemu_pid("one"))
        c.call("domain.destroy", {"name": "one"})
        ev.event("domain-stopped", "one")
        for i in range(args.runs):
            st, gone = raw_once(args, argv, "quit")
            pa["start"].append(st)
            pa["quit"].append(gone)
            t0 = time.monotonic()
            r = c.call("domain.start", {"name": "one"})
            b["start"].append(ms(t0))
            assert r["state"] == "running", r
            t0 = time.monotonic()
            r = c.call("domain.destroy", {"name": "one"})
            b["destroy"].append(ms(t0))
            assert r["state"] == "shutoff", r
            ev.event("domain-stopped", "one")

            st, gone = raw_once(args, argv, "kill")
            pa["start"].append(st)
            pa["kill"].append(gone)
            c.call("domain.start", {"name": "one"})
            pid = d.qemu_pid("one")
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            e = ev.event("domain-stopped", "one")
            b["crash"].append(ms(t0))
            assert e["detail"]["reason"] == "crashed", e

        names = [f"p{i:02d}" for i in range(npar)]
        for n in names:
            c.call("domain.define", {"xml": domain_xml(n, dtype)})
        for i in range(args.runs):
            pa["par"].append(raw_parallel(args, npar, argv))
            b["par"].append(parallel(d.sock, "domain.start", names))
            running = c.call("domain.list", {"state": "running"})
            assert len(running) == len(names), running
            b["rss"].append(vmrss_kib(d.proc.pid))
            b["pardestroy"].append(parallel(d.sock, "domain.destroy", names))
        c.close()
        ev.close()
    finally:
        if d:
            d.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    raw["plugin-argv-start"] = median(pa["start"])
    raw["plugin-argv-quit"] = median(pa["quit"])
    raw["plugin-argv-kill"] = median(pa["kill"])
    raw[f"plugin-argv-{npar}-parallel"] = median(pa["par"])

    def line(label, values, *raw_keys):
        text = f"{label:40s} median {median(values):8.1f} ms"
        text += f"  (min {min(values):.1f}, max {max(values):.1f}, n={len(values)})"
        for key in raw_keys:
            text += f"  {median(values) / raw[key]:.2f}x {key}"
        print(text)

    print(f"raw QEMU with the plugin's command line ({len(argv)} args: root ports, memfd, "
          "sandbox ...), interleaved with the berthd runs below")
    line("start-to-running", pa["start"], "start-to-running")
    line("quit-to-gone", pa["quit"])
    line("SIGKILL-to-gone", pa["kill"])
    line(f"{npar} parallel starts-to-running (wall)", pa["par"], f"{npar}-parallel")
    print(f"berthd + qemu plugin (q35, type '{dtype}', 128 MiB, {args.runs} runs; ratios to raw "
          "QEMU with the minimal and with the plugin's command line)")
    line("define+start+destroy+undefine cycle", b["cycle"], "start-to-running",
         "plugin-argv-start")
    line("domain.start (to running)", b["start"], "start-to-running", "plugin-argv-start")
    line("domain.destroy (to shutoff)", b["destroy"], "quit-to-gone", "plugin-argv-quit")
    line("kill -9 to domain-stopped event", b["crash"], "SIGKILL-to-gone", "plugin-argv-kill")
    line(f"{npar} parallel domain.start (wall)", b["par"], f"{npar}-parallel",
         f"plugin-argv-{npar}-parallel")
    line(f"{npar} parallel domain.destroy (wall)", b["pardestroy"])
    print(f"{'berthd VmRSS idle':40s} {rss_idle / 1024:8.1f} MiB")
    print(f"{'berthd VmRSS with %d running domains' % npar:40s} "
          f"{median(b['rss']) / 1024:8.1f} MiB (median)")
    lv = libvirt_figures(dtype, args.runs) if shutil.which("virsh") else None
    if lv:
        print("libvirt (virsh create / virsh destroy, the same definition; virsh's start-up "
              "included)")
        line("virsh create (to running)", lv[0], "plugin-argv-start")
        print(f"{'  libvirt / berthd domain.start':40s} {median(lv[0]) / median(b['start']):8.1f}x")
        line("virsh destroy", lv[1], "plugin-argv-quit")
        print(f"{'  libvirt / berthd domain.destroy':40s} "
              f"{median(lv[1]) / median(b['destroy']):8.1f}x")
        line("virsh define+start+destroy+undefine", lv[2])
        print(f"{'  libvirt / berthd cycle':40s} {median(lv[2]) / median(b['cycle']):8.1f}x")
    elif not shutil.which("virsh"):
        print("libvirt: not installed")
    print(f"load after: {open('/proc/loadavg').read().split()[0:3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
