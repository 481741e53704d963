#!/usr/bin/env python3
"""The soak's traffic and its controller (bench/soak.sh), Python standard library only.

For --seconds, against the proxy on 127.0.0.1, each kind of client in its own thread:
  page       keep-alive GETs of a course page on the plain listener, and every 5th on a new TLS
             connection (which notes the certificate the listener served)
  range      offloaded downloads (X-Accel-Redirect) with a random byte range, every 4th whole;
             the bytes are checked against the file
  ws_call    web-service calls: token A faster than its rate limit (429 expected, counted as
             limited), token B well under it (a 429 there is a failure)
  websocket  one WebSocket held open the whole time, a frame echoed every second
  slow_head  a request head sent one byte at a time over about two seconds
  slow_read  a whole download read 32 KiB at a time, slowly
and the controller: SIGHUP every --reload-every seconds, a new certificate (and key) swapped in
before the reload every --swap-every seconds; RSS, open fds and upstream connections sampled.
Prints a JSON summary on the last line; exit 1 when any request failed that should have passed.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.request

P = argparse.ArgumentParser()
P.add_argument("--http", type=int, required=True)
P.add_argument("--tls", type=int, required=True)
P.add_argument("--admin", type=int, required=True)
P.add_argument("--upstream", type=int, required=True)
P.add_argument("--pid", type=int, required=True)
P.add_argument("--seconds", type=int, required=True)
P.add_argument("--reload-every", type=int, default=10)
P.add_argument("--swap-every", type=int, default=60)
P.add_argument("--cert", required=True)
P.add_argument("--key", required=True)
P.add_argument("--file", required=True)
A = P.parse_args()

stop = threading.Event()
lock = threading.Lock()
outcomes = {}  # (kind, outcome) -> count
failures = []  # the first few unexpected outcomes, for the report
certs_seen = set()
FILE = open(A.file, "rb").read()
EXPECTED = {("page", "200"), ("page_tls", "200"), ("range", "206"), ("whole", "200"),
            ("ws_call_a", "200"), ("ws_call_a", "429 limited"), ("ws_call_b", "200"),
            ("websocket", "echo"), ("slow_head", "200"), ("slow_read", "200")}


def count(kind, outcome, detail=""):
    with lock:
        outcomes[(kind, outcome)] = outcomes.get((kind, outcome), 0) + 1
        if (kind, outcome) not in EXPECTED and len(failures) < 20:
            failures.append("%.1fs %s %s %s" % (time.time() - T0, kind, outcome, detail))


def conn():
    return http.client.HTTPConnection("127.0.0.1", A.http, timeout=30)


def pages():
    c, i = conn(), 0
    while not stop.is_set():
        i += 1
        try:
            if i % 5 == 0:
                tls_page(i)
                continue
            c.request("GET", "/course/view.php?id=%d" % i, headers={"Host": "lms.test"})
            r = c.getresponse()
            body = r.read()
            ok = r.status == 200 and b"course %d<" % i in body
            count("page", str(r.status) if ok or r.status != 200 else "bad body")
        except Exception as e:  # noqa: BLE001 - every error is an outcome
            count("page", type(e).__name__, str(e))
            c.close()
            c = conn()


def tls_page(i):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        c = http.client.HTTPSConnection("127.0.0.1", A.tls, timeout=30, context=ctx)
        c.request("GET", "/course/view.php?id=%d" % i, headers={"Host": "lms.test"})
        r = c.getresponse()
        r.read()
        der = c.sock.getpeercert(binary_form=True)
        with lock:
            certs_seen.add(hashlib.sha256(der).hexdigest()[:16])
        count("page_tls", str(r.status))
        c.close()
    except Exception as e:  # noqa: BLE001
        count("page_tls", type(e).__name__, str(e))


def downloads():
    c, i = conn(), 0
    while not stop.is_set():
        i += 1
        try:
            if i % 4 == 0:
                c.request("GET", "/pluginfile.php/1/mod_resource/content/0/file.bin",
                          headers={"Host": "lms.test"})
                r = c.getresponse()
                body = r.read()
                ok = r.status == 200 and body == FILE
                count("whole", str(r.status) if ok or r.status != 200 else "bad bytes")
            else:
                a = random.randrange(len(FILE))
                b = min(len(FILE) - 1, a + random.randrange(1, 200_000))
                c.request("GET", "/pluginfile.php/1/mod_resource/content/0/file.bin",
                          headers={"Host": "lms.test", "Range": "bytes=%d-%d" % (a, b)})
                r = c.getresponse()
                body = r.read()
                ok = r.status == 206 and body == FILE[a:b + 1]
                count("range", str(r.status) if ok or r.status != 206 else "bad bytes")
        except Exception as e:  # noqa: BLE001
            count("range", type(e).__name__, str(e))
            c.close()
            c = conn()
        stop.wait(0.05)


def ws_calls(kind, token, pause):
    c, i = conn(), 0
    while not stop.is_set():
        i += 1
        body = "wstoken=%s&wsfunction=core_webservice_get_site_info&moodlewsrestformat=json" % token
        try:
            c.request("POST", "/webservice/rest/server.php", body=body, headers={
                "Host": "lms.test", "Content-Type": "application/x-www-form-urlencoded"})
            r = c.getresponse()
            r.read()
            outcome = str(r.status)
            if r.status == 429 and kind == "ws_call_a":
                outcome = "429 limited"
            count(kind, outcome)
            if r.getheader("Connection", "").lower() == "close":
                c.close()
                c = conn()
        except Exception as e:  # noqa: BLE001
            count(kind, type(e).__name__, str(e))
            c.close()
            c = conn()
        stop.wait(pause)


def websocket():
    def connect():
        s = socket.create_connection(("127.0.0.1", A.http), timeout=30)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: lms.test\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            part = s.recv(1024)
            if not part:
                raise ConnectionError("closed during the handshake")
            head += part
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.split(b"\r\n")[0].decode("latin-1"))
        return s

    s, n = None, 0
    while not stop.is_set():
        try:
            if s is None:
                s = connect()
            n += 1
            payload = b"soak %d" % n
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
            got = b""
            while len(got) < 2 + len(payload):
                part = s.recv(256)
                if not part:
                    raise ConnectionError("closed")
                got += part
            count("websocket", "echo" if got[2:] == payload else "bad echo")
        except Exception as e:  # noqa: BLE001
            count("websocket", type(e).__name__, str(e))
            if s:
                s.close()
            s = None
        stop.wait(1.0)
    if s:
        try:
            s.sendall(b"\x88\x80" + os.urandom(4))
        finally:
            s.close()


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        part = s.recv(65536)
        if not part:
            break
        data += part
    return data


def slow_clients():
    i = 0
    while not stop.is_set():
        i += 1
        try:
            if i % 2:
                s = socket.create_connection(("127.0.0.1", A.http), timeout=30)
                req = b"GET /course/view.php?id=7 HTTP/1.1\r\nHost: lms.test\r\nConnection: close\r\n\r\n"
                for k in range(len(req)):
                    s.sendall(req[k:k + 1])
                    time.sleep(2.0 / len(req))
                status = read_response(s).split(b" ")[1:2]
                s.close()
                count("slow_head", status[0].decode() if status else "no answer")
            else:
                c = conn()
                c.request("GET", "/pluginfile.php/1/mod_resource/content/0/file.bin",
                          headers={"Host": "lms.test"})
                r = c.getresponse()
                body = b""
                while True:
                    part = r.read(32768)
                    if not part:
                        break
                    body += part
                    time.sleep(0.02)
                c.close()
                count("slow_read", str(r.status) if body == FILE else "bad bytes")
        except Exception as e:  # noqa: BLE001
            count("slow_head" if i % 2 else "slow_read", type(e).__name__, str(e))
        stop.wait(0.5)


def rss_kib():
    for line in open("/proc/%d/status" % A.pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds():
    return len(os.listdir("/proc/%d/fd" % A.pid))


def upstream_conns():
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == A.upstream:
                n += 1
    return n


def sample(label):
    return {"at": label, "t": round(time.time() - T0), "rss_kib": rss_kib(), "fds": fds(),
            "upstream_conns": upstream_conns()}


def reloads_ok():
    try:
        text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % A.admin, timeout=5).read()
    except OSError:
        return -1
    for line in text.decode().splitlines():
        if line.startswith("moodle_edge_config_reloads_total") and 'result="ok"' in line:
            return int(float(line.split()[-1]))
    return 0


def swap_cert():
    d = os.path.dirname(A.cert)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=lms.test",
                    "-addext", "subjectAltName=DNS:lms.test,IP:127.0.0.1",
                    "-keyout", d + "/new-key.pem", "-out", d + "/new-cert.pem"],
                   check=True, capture_output=True)
    os.replace(d + "/new-key.pem", A.key)
    os.replace(d + "/new-cert.pem", A.cert)


T0 = time.time()
threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in [
    (pages, ()), (downloads, ()), (ws_calls, ("ws_call_a", "a" * 32, 0.2)),
    (ws_calls, ("ws_call_b", "b" * 32, 2.0)), (websocket, ()), (slow_clients, ())]]
for t in threads:
    t.start()
time.sleep(min(10, A.seconds / 4))
samples = [sample("start")]
reloads_sent = swaps = 0
reloads_before = reloads_ok()
next_reload = time.time() + A.reload_every
next_swap = time.time() + A.swap_every
next_sample = time.time() + 60
end = T0 + A.seconds
while time.time() < end:
    time.sleep(max(0.0, min(next_reload, next_sample, end) - time.time()))
    now = time.time()
    if now >= next_reload and now < end:
        if now >= next_swap:
            swap_cert()
            swaps += 1
            next_swap += A.swap_every
        os.kill(A.pid, signal.SIGHUP)
        reloads_sent += 1
        next_reload += A.reload_every
    if now >= next_sample:
        samples.append(sample("minute"))
        next_sample += 60
samples.append(sample("end"))
stop.set()
for t in threads:
    t.join(timeout=60)
time.sleep(2)
samples.append(sample("idle"))
reloads_done = reloads_ok() - reloads_before
bad = sum(n for k, n in outcomes.items() if k not in EXPECTED)
summary = {
    "seconds": A.seconds,
    "outcomes": {"%s %s" % k: n for k, n in sorted(outcomes.items())},
    "unexpected": bad,
    "first_failures": failures,
    "reloads_sent": reloads_sent,
    "reloads_ok": reloads_done,
    "cert_swaps": swaps,
    "distinct_certs_seen": len(certs_seen),
    "samples": samples,
}
print(json.dumps(summary))
raise SystemExit(1 if bad or reloads_done != reloads_sent else 0)
