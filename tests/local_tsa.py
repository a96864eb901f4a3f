"""A local RFC 3161 time-stamping authority for the tests: Debian's `openssl ts` behind a
small HTTP server, with a self-signed TSA certificate made on the spot."""

import http.server
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.helpers import QuietHandler, http_serve

CONFIG = """
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = All the Patents test TSA
[ tsa_ext ]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
[ tsa_config ]
serial = {dir}/serial
signer_cert = {dir}/tsa.crt
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


class LocalTSA:
    def __init__(self):
        self.openssl = shutil.which("openssl")
        self.dir = Path(tempfile.mkdtemp(prefix="tsa-"))
        self.config = self.dir / "tsa.cnf"
        self.config.write_text(CONFIG.format(dir=self.dir))
        (self.dir / "serial").write_text("01\n")
        subprocess.run(
            [
                self.openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-keyout",
                str(self.dir / "tsa.key"),
                "-out",
                str(self.dir / "tsa.crt"),
                "-config",
                str(self.config),
                "-extensions",
                "tsa_ext",
            ],
            check=True,
            capture_output=True,
        )
        self.cert = self.dir / "tsa.crt"
        self.requests = 0
        self.down = False
        self.answer_for = None  # bytes: stamp these instead of what was asked
        self.trickle = 0.0  # seconds between the reply's bytes
        tsa = self

        class Handler(QuietHandler, http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                if tsa.down:
                    self.send_error(503, "TSA down for the test")
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if tsa.answer_for is not None:  # a genuine token, for other data
                    body = tsa.query_for(tsa.answer_for)
                with tempfile.TemporaryDirectory(dir=tsa.dir) as tmp:
                    query, reply = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
                    query.write_bytes(body)
                    subprocess.run(
                        [
                            tsa.openssl,
                            "ts",
                            "-reply",
                            "-config",
                            str(tsa.config),
                            "-section",
                            "tsa_config",
                            "-queryfile",
                            str(query),
                            "-out",
                            str(reply),
                        ],
                        check=True,
                        capture_output=True,
                    )
                    data = reply.read_bytes()
                tsa.requests += 1
                if tsa.trickle:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/timestamp-reply")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    for byte in data:
                        if tsa.down:
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(tsa.trickle)
                    return
                self.reply(data, "application/timestamp-reply")

        self.server, self.url = http_serve(Handler, path="/tsa")

    def query_for(self, data: bytes) -> bytes:
        with tempfile.TemporaryDirectory(dir=self.dir) as tmp:
            source = Path(tmp) / "data"
            source.write_bytes(data)
            return subprocess.run(
                [self.openssl, "ts", "-query", "-data", str(source), "-sha256", "-cert"],
                check=True,
                capture_output=True,
            ).stdout

    def close(self):
        self.down = True
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.dir, ignore_errors=True)
