"""
What an admin client that sends and never reads costs grott (issue 17).

    python bench/admin_flood.py                       # this checkout
    python bench/admin_flood.py --source /work/main   # another checkout, to compare

Starts grott (`twistd -n grott`, cloud-free, admin socket on a loopback
port) as a subprocess, connects one admin client that writes COUNT lines of
`help` (or `stats`) as fast as the socket takes them and never reads, and
samples grott's RSS (VmRSS from /proc/PID/status) until it has not grown
for 3 s or BOUND seconds have passed.  Prints one JSON line: RSS before,
peak and growth in MB, the bytes the client managed to send, and the
seconds it ran.  Everything it started is killed at the end.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_680_000)
    parser.add_argument("--command", default="help")
    parser.add_argument("--bound", type=float, default=60.0)
    parser.add_argument("--source", default=ROOT, help="checkout whose grott runs")
    parser.add_argument("--rate-limit", type=float, default=None,
                        help="command.rate_limit (absent: the default; old checkouts lack it)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="grott-admin-flood-")
    admin = free_port()
    config = os.path.join(tmp, "config.yaml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(f"proxy:\n  listen: tcp:{free_port()}:interface=127.0.0.1\n  upstream: none\n"
                f"command:\n  listen: tcp:{admin}:interface=127.0.0.1\n"
                + (f"  rate_limit: {args.rate_limit}\n" if args.rate_limit else "") +
                f"plugins:\n  directory: {tmp}/plugins\nlog:\n  level: warn\n")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(args.source))
    # twistd's module has no __main__ block: run it the way the twistd script does.
    twistd = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"
    proc = subprocess.Popen([sys.executable, "-c", twistd, "-n", "--pidfile=",
                             "grott", "--config", config], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", admin), timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("grott did not start") from None
                time.sleep(0.1)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        before = rss_mb(proc.pid)
        data = (args.command + "\n").encode() * args.count
        client.setblocking(False)
        sent, peak, stable_since, start = 0, before, time.monotonic(), time.monotonic()
        while time.monotonic() - start < args.bound:
            if sent < len(data):
                try:
                    sent += client.send(data[sent:sent + 65536])
                except BlockingIOError:
                    pass
                except OSError:
                    break  # grott closed the client
            rss = rss_mb(proc.pid)
            if rss > peak + 0.5:
                peak, stable_since = rss, time.monotonic()
            elif time.monotonic() - stable_since > 3:
                break
            time.sleep(0.01)
        print(json.dumps({"source": args.source, "command": args.command, "lines": args.count,
                          "rate_limit": args.rate_limit,
                          "bytes_sent": sent, "rss_before_mb": round(before, 1),
                          "rss_peak_mb": round(peak, 1), "growth_mb": round(peak - before, 1),
                          "seconds": round(time.monotonic() - start, 1)}))
        client.close()
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
