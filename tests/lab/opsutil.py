"""Helpers for the operations lab tests: standard gRPC tooling without generated stubs
(Debian's python3-grpcio has no grpc_health / grpc_reflection modules, so the tiny Health and
reflection messages are encoded by hand), a fake service manager for sd_notify, a temporary
Prometheus server, and test certificates made with openssl at run time."""

import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import grpc

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_OPTS = [("grpc.enable_http_proxy", 0)]


# ------------------------------------------------------------ protobuf wire --

def _varint(buf, i):
    v, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7


def _enc_varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_fields(buf):
    """[(field number, value)] of a message; length-delimited values are bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError("unsupported wire type %d" % wt)
        out.append((num, v))
    return out


def pb_string(num, s):
    b = s.encode()
    return _enc_varint(num << 3 | 2) + _enc_varint(len(b)) + b


# ------------------------------------------------------------------ gRPC --

def channel(addr, ca=None, cert=None, key=None):
    """Plaintext channel, or TLS with a CA (and a client certificate if given)."""
    if ca is None:
        return grpc.insecure_channel(addr, options=_OPTS)
    rd = lambda p: open(p, "rb").read() if p else None  # noqa: E731
    creds = grpc.ssl_channel_credentials(root_certificates=rd(ca), private_key=rd(key),
                                         certificate_chain=rd(cert))
    return grpc.secure_channel(addr, creds, options=_OPTS)


def health_check(addr, service="", timeout=3.0, **tls):
    """('SERVING' | 'NOT_SERVING' | ..., None) or (None, 'grpc error text')."""
    ch = channel(addr, **tls)
    try:
        call = ch.unary_unary(HEALTH_CHECK, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        resp = call(pb_string(1, service) if service else b"", timeout=timeout)
        status = dict(pb_fields(resp)).get(1, 0)
        return SERVING_STATUS.get(status, str(status)), None
    except grpc.RpcError as e:
        return None, "%s: %s" % (e.code().name, e.details())
    finally:
        ch.close()


def call_code(addr, method, stream=False, timeout=3.0, **tls):
    """Calls METHOD ("/pkg.Service/Name") with an empty request (a unary call, or a bidi stream
    that sends nothing): the gRPC status code name ("OK", "PERMISSION_DENIED", ...) and details."""
    ch = channel(addr, **tls)
    try:
        if stream:
            call = ch.stream_stream(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            for _ in call(iter([]), timeout=timeout):
                pass
        else:
            call = ch.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            call(b"", timeout=timeout)
        return "OK", ""
    except grpc.RpcError as e:
        return e.code().name, e.details() or ""
    finally:
        ch.close()


def list_services(addr, timeout=3.0, **tls):
    """(sorted service names, None) via server reflection, or (None, error)."""
    ch = channel(addr, **tls)
    try:
        call = ch.stream_stream(REFLECTION, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        names = []
        for resp in call(iter([pb_string(7, "")]), timeout=timeout):
            for num, v in pb_fields(resp):
                if num == 6:      # list_services_response
                    for n2, svc in pb_fields(v):
                        if n2 == 1:
                            names += [x.decode() for k, x in pb_fields(svc) if k == 1]
                elif num == 7:    # error_response
                    return None, "reflection error: %r" % (pb_fields(v),)
        return sorted(names), None
    except grpc.RpcError as e:
        return None, "%s: %s" % (e.code().name, e.details())
    finally:
        ch.close()


def file_containing_symbol(addr, symbol, timeout=3.0):
    """Serialized FileDescriptorProtos (bytes list) for a symbol, or (None, error)."""
    ch = channel(addr)
    try:
        call = ch.stream_stream(REFLECTION, request_serializer=lambda b: b, response_deserializer=lambda b: b)
        files = []
        for resp in call(iter([pb_string(4, symbol)]), timeout=timeout):
            for num, v in pb_fields(resp):
                if num == 4:
                    files += [x for k, x in pb_fields(v) if k == 1]
                elif num == 7:
                    return None, "reflection error for %s" % symbol
        return files, None
    except grpc.RpcError as e:
        return None, "%s: %s" % (e.code().name, e.details())
    finally:
        ch.close()


# ---------------------------------------------------------- service manager --

class FakeSystemd:
    """Binds the NOTIFY_SOCKET datagram socket and records every message with its time."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.msgs = []     # (monotonic time, {key: value})
        self._lock = threading.Lock()
        self._run = True
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self):
        while self._run:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            kv = dict(line.split("=", 1) for line in data.decode(errors="replace").splitlines() if "=" in line)
            with self._lock:
                self.msgs.append((time.monotonic(), kv))

    def count(self, key, value=None, since=0.0, until=None):
        with self._lock:
            return sum(1 for t, kv in self.msgs
                       if t >= since and (until is None or t <= until) and key in kv and
                       (value is None or kv[key] == value))

    def wait(self, key, value=None, timeout=10.0, since=0.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(key, value, since):
                return True
            time.sleep(0.05)
        return False

    def close(self):
        self._run = False
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


# ------------------------------------------------------------ Prometheus --

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Prometheus:
    """A real Prometheus server (Debian's binary) scraping the given targets every second."""

    def __init__(self, targets, directory):
        self.port = free_port()
        self.dir = directory
        cfg = os.path.join(directory, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                    "scrape_configs:\n  - job_name: ftpair\n    static_configs:\n"
                    "      - targets: [%s]\n" % ", ".join('"%s"' % t for t in targets))
        self.log = open(os.path.join(directory, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            ["prometheus", "--config.file=" + cfg, "--storage.tsdb.path=" + os.path.join(directory, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def api(self, path, **params):
        import json
        url = "http://127.0.0.1:%d%s?%s" % (self.port, path, urllib.parse.urlencode(params))
        try:
            with self._opener.open(url, timeout=3) as r:
                return json.loads(r.read().decode())
        except (OSError, ValueError):
            return None

    def query(self, expr):
        """{instance: float} of an instant query, or None."""
        doc = self.api("/api/v1/query", query=expr)
        if not doc or doc.get("status") != "success":
            return None
        return {r["metric"].get("instance", ""): float(r["value"][1]) for r in doc["data"]["result"]}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()


# ----------------------------------------------------------- certificates --

def make_certs(directory, ips):
    """A CA, a node certificate for the IPs (server and client use), an operator client
    certificate, and a rogue client certificate from another CA. {name: path}."""
    d = directory

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=d, timeout=60)

    def ca(name):
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".pem", "-days", "1", "-subj", "/CN=" + name)

    def leaf(name, ca_name, san):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        ext = os.path.join(d, name + ".ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth,clientAuth\n")
            if san:
                f.write("subjectAltName=" + san + "\n")
        run("x509", "-req", "-in", name + ".csr", "-CA", ca_name + ".pem", "-CAkey", ca_name + ".key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "1", "-extfile", ext)

    ca("ca")
    ca("rogue-ca")
    leaf("node", "ca", ",".join("IP:" + ip for ip in ips))
    leaf("operator", "ca", "DNS:operator")
    leaf("rogue", "rogue-ca", "DNS:operator")
    paths = {}
    for n in ("ca", "node", "operator", "rogue"):
        paths[n] = os.path.join(d, n + ".pem")
        if n != "ca":
            paths[n + "_key"] = os.path.join(d, n + ".key")
    return paths


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix)
