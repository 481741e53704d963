#!/usr/bin/env python3
"""The soak's stand-in Moodle (bench/soak.sh), Python standard library only, on 127.0.0.1.

  GET  /ready                       200 "ok" (the proxy's health check)
  GET  /course/view.php?id=N        200, an 8 KiB page naming N
  GET  /pluginfile.php/...          200, empty, X-Accel-Redirect to the dataroot's file.bin
                                    (as Moodle's xsendfile() answers)
  POST /webservice/rest/server.php  200 JSON naming wsfunction
  GET  /ws                          101 WebSocket handshake, then every frame echoed back

HTTP/1.1 with keep-alive, so the proxy pools its connections. Usage: upstream.py PORT
"""

import base64
import hashlib
import http.server
import socketserver
import sys
import urllib.parse

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PAGE = b"x" * 8192


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: the soak counts outcomes itself
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/ready":
            self.send(200, b"ok")
        elif path == "/course/view.php":
            n = urllib.parse.parse_qs(query).get("id", ["0"])[0]
            self.send(200, b"<h1>course " + n.encode()[:20] + b"</h1>" + PAGE,
                      [("Content-Type", "text/html; charset=utf-8")])
        elif path.startswith("/pluginfile.php/"):
            self.send(200, b"", [
                ("X-Accel-Redirect", "/moodledata-internal/file.bin"),
                ("Content-Type", "application/octet-stream"),
                ("Content-Disposition", "attachment; filename=\"file.bin\""),
                ("ETag", "\"soak-file\""),
            ])
        elif path == "/ws":
            self.websocket()
        else:
            self.send(404, b"not found")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/webservice/rest/server.php"):
            form = urllib.parse.parse_qs(body.decode("latin-1"))
            fn = form.get("wsfunction", ["?"])[0]
            self.send(200, ('{"function":"%s","ok":true}' % fn[:64]).encode(),
                      [("Content-Type", "application/json")])
        else:
            self.send(404, b"not found")

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, n = head[0] & 0x0F, head[1] & 0x7F
            if n == 126:
                n = int.from_bytes(self.rfile.read(2), "big")
            elif n == 127:
                n = int.from_bytes(self.rfile.read(8), "big")
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytearray(self.rfile.read(n))
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
            if opcode == 8:  # close: answer it and end
                self.wfile.write(b"\x88\x00")
                self.wfile.flush()
                return
            # an unmasked frame of the same opcode (payloads here stay under 126 bytes)
            self.wfile.write(bytes([0x80 | opcode, len(data)]) + bytes(data))
            self.wfile.flush()


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


if __name__ == "__main__":
    Server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
