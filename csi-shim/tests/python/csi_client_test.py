#!/usr/bin/env python3
"""An independent client for `kernelseal csi-provider`: stubs generated at
test time from the project's .proto with grpcio-tools, Version and Mount
sent exactly as the Secrets Store CSI Driver sends them (the shared fixture),
the reply checked byte-for-byte against one built here, with object
versions recomputed independently (HMAC-SHA256, base64url).

    python3 csi_client_test.py --binary target/debug/kernelseal \
        --proto csi-shim/proto/provider.proto \
        --fixture csi-shim/tests/fixtures/mount_request.json

With --socket/--data/--health-port it talks to a provider started
elsewhere (scripts/check-image: the provider and this client in two
containers) and --check-log then checks that provider's log.

Needs: pip install grpcio grpcio-tools
"""
import argparse
import base64
import hashlib
import hmac
import importlib
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def gen_stubs(proto, out):
    os.makedirs(out, exist_ok=True)
    from grpc_tools import protoc
    import grpc_tools
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{os.path.dirname(proto)}", f"-I{include}",
                      f"--python_out={out}", f"--grpc_python_out={out}", os.path.basename(proto)])
    if rc != 0:
        fail(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(f"{name}_pb2"), importlib.import_module(f"{name}_pb2_grpc")


def yaml_objects(text):
    """The fixture's `objects`: a YAML list of flat string maps. A tiny
    reader, so the test needs no YAML library and shares no parser."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("- "):
            out.append({})
            line = line[2:]
        k, v = line.strip().split(":", 1)
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] == '"':
            v = v[1:-1]
        out[-1][k] = v
    return out


def version(key, namespace, obj, content):
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ns = namespace.encode()
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(struct.pack(">Q", len(ns)) + ns)
    mac.update(struct.pack(">Q", len(canonical)) + canonical)
    mac.update(struct.pack(">Q", len(content)) + content)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def write_fixture(fx, data):
    """The files the provider's `file` objects read."""
    os.makedirs(data, exist_ok=True)
    for name, content in fx["files"].items():
        open(os.path.join(data, name), "w").write(content)


def free_port():
    import socket as pysocket
    probe = pysocket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def wait_for_socket(sock, proc=None):
    deadline = time.time() + 30
    while not os.path.exists(sock):
        if proc is not None and proc.poll() is not None:
            fail(f"provider exited early: {proc.stdout.read().decode()}")
        if time.time() > deadline:
            fail(f"socket {sock} did not appear within 30s")
        time.sleep(0.05)


def exercise(pb, pb_grpc, fx, sock, data, health_port):
    """Version, Mount (byte-for-byte), a refused Mount, health and metrics
    against a provider serving on `sock` with the fixture's files in
    `data`, its environment and its HMAC key."""
    import grpc

    key = bytes.fromhex(fx["hmac_key_hex"])
    mode = os.stat(sock).st_mode & 0o777
    if mode != 0o600:
        fail(f"socket mode {oct(mode)}, want 0o600")
    # As the driver: grpc.Dial("unix://" + path).
    channel = grpc.insecure_channel(f"unix://{sock}")
    stub = pb_grpc.CSIDriverProviderStub(channel)
    v = stub.Version(pb.VersionRequest(version="v1alpha1"), timeout=10)
    want_v = pb.VersionResponse(version="v1alpha1", runtime_name="kernelseal",
                                runtime_version=v.runtime_version)
    if v.SerializeToString() != want_v.SerializeToString() or not v.runtime_version:
        fail(f"Version: {v}")

    # grpc-go (the driver) dialing a bare path sends that path as
    # :authority; emulate it explicitly too.
    go = grpc.insecure_channel(f"unix://{sock}", options=[
        ("grpc.default_authority", "/var/run/secrets-store-csi-providers/kernelseal.sock")])
    v2 = pb_grpc.CSIDriverProviderStub(go).Version(pb.VersionRequest(version="v1alpha1"), timeout=10)
    if v2.SerializeToString() != want_v.SerializeToString():
        fail(f"Version with a path authority: {v2}")
    go.close()

    r = fx["request"]
    attributes = r["attributes"].replace("${FIXTURE_DIR}", data)
    req = pb.MountRequest(attributes=attributes, secrets=r["secrets"],
                          target_path=r["target_path"], permission=r["permission"])
    resp = stub.Mount(req, timeout=10)

    attrs = json.loads(attributes)
    objects = yaml_objects(attrs["objects"])
    namespace = attrs["csi.storage.k8s.io/pod.namespace"]
    want = pb.MountResponse()
    for obj, exp in zip(objects, fx["expected"]):
        content = bytes.fromhex(exp["contents_hex"])
        want.object_version.add(id=obj["objectName"], version=version(key, namespace, obj, content))
        want.files.add(path=exp["path"], mode=exp["mode"], contents=content)
    got_bytes, want_bytes = resp.SerializeToString(), want.SerializeToString()
    if got_bytes != want_bytes:
        fail(f"Mount reply differs:\n got {resp}\nwant {want}")
    if resp.HasField("error"):
        fail("error set on success")

    # A bad request: a gRPC status naming the object, no files.
    bad = pb.MountRequest(attributes=attributes.replace("KS_CSI_FIXTURE_DB_PASSWORD", "PATH"),
                          secrets="null", target_path=r["target_path"], permission="420")
    try:
        stub.Mount(bad, timeout=10)
        fail("refused env object was served")
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.PERMISSION_DENIED or not e.details().startswith("object db-password: refused"):
            fail(f"bad request: {e.code()} {e.details()}")
    channel.close()

    import urllib.request
    base = f"http://127.0.0.1:{health_port}"
    for path, want_text in (("/healthz", "ok"), ("/ready", "ready")):
        body = urllib.request.urlopen(base + path, timeout=5).read().decode()
        if body.strip() != want_text:
            fail(f"{path}: {body!r}")
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    for line in ('kernelseal_csi_mounts_total{outcome="ok"} 1',
                 'kernelseal_csi_mounts_total{outcome="InvalidParameters"} 1',
                 "kernelseal_csi_objects_total 3"):
        if line not in metrics:
            fail(f"metrics lack {line!r}: {metrics}")


def check_provider_log(fx, out):
    for secret in list(fx["environment"].values()) + ["fixture-api-key-0815"]:
        if secret in out:
            fail(f"secret in the provider's log: {out}")
    if out.count("mount") < 2 or "shop/web-7d4b9c-x2x9z" not in out:
        fail(f"expected one log line per Mount with the pod: {out}")


def run_binary(a, fx, pb, pb_grpc, tmp):
    """Starts the provider binary itself, exercises it, stops it."""
    data = os.path.join(tmp, "data")
    write_fixture(fx, data)
    key_file = os.path.join(tmp, "hmac.key")
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, bytes.fromhex(fx["hmac_key_hex"]))
    os.close(fd)
    sock = os.path.join(tmp, "kernelseal.sock")
    health_port = free_port()
    env = dict(os.environ, **fx["environment"])
    proc = subprocess.Popen(
        [a.binary, "csi-provider", "--socket", sock, "--health-addr", f"127.0.0.1:{health_port}",
         "--hmac-key-file", key_file, "--allow-env", "KS_CSI_FIXTURE_", "--allow-file-dir", data],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_socket(sock, proc)
        exercise(pb, pb_grpc, fx, sock, data, health_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            fail("provider did not stop on SIGTERM")
    out = proc.stdout.read().decode()
    if rc != 0:
        fail(f"provider exited {rc} on SIGTERM: {out}")
    if os.path.exists(sock):
        fail("socket left behind after SIGTERM")
    check_provider_log(fx, out)
    print("PASS: Version and Mount byte-for-byte; SIGTERM removes the socket")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", help="start this kernelseal binary as the provider")
    ap.add_argument("--socket", help="instead, connect to a provider already serving here "
                    "(started with the fixture's environment, --hmac-key-file holding its key, "
                    "--allow-env KS_CSI_FIXTURE_ and --allow-file-dir DATA)")
    ap.add_argument("--data", help="with --socket: the directory the provider reads the "
                    "fixture's files from (written here)")
    ap.add_argument("--health-port", type=int, help="with --socket: the provider's --health-addr port")
    ap.add_argument("--check-log", help="only check this provider log for the fixture's secrets "
                    "and the per-Mount lines, then exit")
    ap.add_argument("--proto", required=True)
    ap.add_argument("--fixture", required=True)
    a = ap.parse_args()
    fx = json.load(open(a.fixture))
    if a.check_log:
        check_provider_log(fx, open(a.check_log).read())
        print("PASS: the provider's log names each Mount's pod and no secret")
        return
    if not a.binary and not (a.socket and a.data and a.health_port):
        fail("give --binary, or --socket with --data and --health-port")
    with tempfile.TemporaryDirectory() as tmp:
        pb, pb_grpc = gen_stubs(os.path.abspath(a.proto), os.path.join(tmp, "stubs"))
        if a.binary:
            run_binary(a, fx, pb, pb_grpc, tmp)
            return
        write_fixture(fx, a.data)
        wait_for_socket(a.socket)
        exercise(pb, pb_grpc, fx, a.socket, a.data, a.health_port)
    print("PASS: Version and Mount byte-for-byte against the serving provider")


if __name__ == "__main__":
    main()
