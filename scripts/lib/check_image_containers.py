"""scripts/check-image's container checks: what the built image does when
its roles run as containers beside each other, as a node runs them.

Every container is named `ks-check-*` and removed afterwards. Directories
the containers share live under target/check-image/run/, made fresh for
each run: the agent's socket directory, the directory the init container
copies the wrapper into, the CSI provider's socket directory and fixture
files, the webhook's certificate.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_FLAGS = [
    "--runtime", "runc", "--network", "host",
    "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
]
# Detached containers: no systemd timer for the HEALTHCHECK (this host has
# no systemd); the checks run it with `podman healthcheck run`.
DETACHED = ["-d", "--health-interval", "disable"]
# The image's default user and the socket group the chart uses.
IMAGE_UID = 65532
IMAGE_USER = f"{IMAGE_UID}:{IMAGE_UID}"
SOCKET_GID = 7373
APP_UID = 1000
# runc puts a container's processes under <cgroup parent>/libpod-<id>: the
# kubelet gives each pod its parent the same way.
APP_CGROUP = "/kernelseal-check/app"
OTHER_CGROUP = "/kernelseal-check/other"
STRANGER_CGROUP = "/kernelseal-check/stranger"
# The capabilities deploy/manifests/agent/daemonset.yaml grants beyond a
# runtime's defaults.
AGENT_CAPS = ["BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE"]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], check=check, text=True, capture_output=True, timeout=timeout)


def check_deploy():
    """scripts/check-deploy as a module: its AdmissionReview helpers."""
    path = ROOT / "scripts" / "check-deploy"
    loader = importlib.machinery.SourceFileLoader("check_deploy", str(path))
    spec = importlib.util.spec_from_loader("check_deploy", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def names_cgroup(log: str, message: str, path: str) -> bool:
    """A log line with `message` whose cgroup field is exactly `path` (not
    a path relative to the agent's own cgroup namespace)."""
    field = re.compile(r'cgroup="?' + re.escape(path) + r'"?(\s|$)')
    return any(message in line and field.search(line) for line in log.splitlines())


def wait_for(ready, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.1)
    return False


class Checks:
    def __init__(self, phases, image: str, slim: str, client: str, run_dir: Path) -> None:
        self.phases = phases
        self.tag = image
        self.slim = slim
        self.client = client
        self.dir = run_dir
        self.remove_containers()
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        # Containers' users other than root must reach what is theirs.
        run_dir.chmod(0o755)

    def shared(self, name: str, owner: int = 0, mode: int = 0o755) -> Path:
        path = self.dir / name
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, owner, owner)
        path.chmod(mode)
        return path

    def remove_containers(self) -> None:
        names = podman("ps", "-a", "--format", "{{.Names}}", check=False).stdout.split()
        stale = [n for n in names if n.startswith("ks-check-")]
        if stale:
            podman("rm", "-f", "-t", "0", *stale, check=False)

    def start(self, name: str, what: str, ready, *args: str) -> bool:
        """A detached container `name` from `args`; fails `what` unless
        `ready()` holds within 30 s."""
        r = podman("run", *DETACHED, "--name", name, *RUN_FLAGS, *args, check=False)
        if r.returncode == 0 and wait_for(ready):
            return True
        self.phases.fail(what, f"{r.stderr.strip()} {self.logs(name)[-1500:]}")
        return False

    def stop(self, name: str, what: str, after=lambda: "") -> None:
        """SIGTERM: `what` passes when the container exits 0 and `after()`,
        called once it has stopped, finds nothing wrong."""
        r = podman("stop", "-t", "20", name, check=False)
        state = podman("inspect", "--format", "{{.State.ExitCode}}", name, check=False).stdout.strip()
        wrong = after()
        self.phases.check(what, r.returncode == 0 and state == "0" and not wrong,
                          f"exit code {state} {wrong} {r.stderr.strip()}")

    def logs(self, name: str) -> str:
        r = podman("logs", name, check=False)
        return r.stdout + r.stderr

    # -------------------------------------------------------------- image --

    def image(self) -> None:
        """The image on its own: version, user, a static wrapper, `check`."""
        p = self.phases
        r = podman("run", "--rm", *RUN_FLAGS, self.tag, "--version", check=False)
        p.check("kernelseal --version", r.returncode == 0 and r.stdout.startswith("kernelseal "),
                f"exit {r.returncode}: {r.stdout}{r.stderr}")
        # `exec` is the command's own (the wrapper), every other subcommand
        # kernelseal-core's: both halves answer.
        r = podman("run", "--rm", *RUN_FLAGS, self.tag, "exec", "--version", check=False)
        p.check("kernelseal exec --version (the command's own wrapper)",
                r.returncode == 0 and r.stdout.startswith("kernelseal-exec "),
                f"exit {r.returncode}: {r.stdout}{r.stderr}")
        user = podman("image", "inspect", "--format", "{{.Config.User}}", self.tag).stdout.strip()
        r = podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "/usr/bin/id", self.tag, "-u", check=False)
        p.check(f"runs as non-root by default (USER {user}, id -u {r.stdout.strip()})",
                user == IMAGE_USER and r.stdout.strip() == str(IMAGE_UID),
                f"USER {user!r}, id -u {r.stdout.strip()!r} {r.stderr.strip()}")
        # The wrapper and the `kernelseal` command run in front of apps.
        for binary in ("kernelseal-exec", "kernelseal"):
            r = podman("run", "--rm", *RUN_FLAGS, "--entrypoint", "/usr/bin/ldd", self.tag,
                       f"/usr/bin/{binary}", check=False)
            # glibc's ldd: "not a dynamic executable" for a static binary,
            # "statically linked" for a static PIE.
            said = r.stdout + r.stderr
            p.check(f"{binary} is statically linked",
                    "not a dynamic executable" in said or "statically linked" in said,
                    f"ldd says: {said.strip()}")
        self.check_command()

    def check_command(self) -> None:
        """`kernelseal check` as the agent's manifest runs it: exit 0 on a
        BPF-LSM host, 3 with its reasons where enforcement is impossible."""
        mounts = []
        for path in ("/sys/fs/bpf", "/sys/kernel/security"):
            if os.path.ismount(path):
                mounts += ["-v", f"{path}:{path}:ro" if "security" in path else f"{path}:{path}"]
        caps = [a for cap in AGENT_CAPS for a in ("--cap-add", cap)]
        r = podman("run", "--rm", *RUN_FLAGS, "--user", "0", "--pid", "host", *caps, *mounts,
                   self.tag, "check", check=False)
        out = r.stdout + r.stderr
        failed = [line for line in out.splitlines() if line.startswith("[FAIL]")]
        if r.returncode == 0:
            self.phases.ok("kernelseal check in the agent's container: enforcement possible (exit 0)")
        elif r.returncode == 3 and failed:
            reason = failed[-1].removeprefix("[FAIL]").strip()
            self.phases.ok(f"kernelseal check in the agent's container: exit 3, says why: {reason}")
        else:
            self.phases.fail("kernelseal check in the agent's container",
                             f"exit {r.returncode} without a [FAIL] reason: {out.strip()[-800:]}")

    # ------------------------------------------------------ agent and app --

    def agent_and_app(self) -> None:
        p = self.phases
        sockets = self.shared("kernelseal")
        wrapper = self.shared("wrapper", owner=IMAGE_UID)
        etc = self.shared("etc")
        secret = f"from-the-agent-{secrets.token_hex(4)}"
        other = f"for-another-container-{secrets.token_hex(4)}"
        (etc / "config.yaml").write_text(
            "version: v1\n"
            "policy: { mode: disabled }\n"
            "secrets:\n"
            "  - name: this-container\n"
            f"    selector: {{ path: /usr/bin/env, cgroupPath: {APP_CGROUP} }}\n"
            f"    secretRefs: [{{ name: CHECK_SECRET, source: {{ value: {secret} }} }}]\n"
            "  - name: another-container\n"
            f"    selector: {{ path: /usr/bin/env, cgroupPath: {OTHER_CGROUP} }}\n"
            f"    secretRefs: [{{ name: OTHER_SECRET, source: {{ value: {other} }} }}]\n"
        )
        # The init container as the webhook writes it: the image's own
        # wrapper copied into a volume the app container mounts.
        r = podman("run", "--rm", *RUN_FLAGS, "-v", f"{wrapper}:/kernelseal", "--entrypoint", "cp",
                   self.tag, "/usr/bin/kernelseal-exec", "/kernelseal/kernelseal-exec", check=False)
        if not p.check("init container copies kernelseal-exec out as uid 65532",
                       r.returncode == 0 and (wrapper / "kernelseal-exec").is_file(),
                       f"exit {r.returncode}: {r.stderr.strip()}"):
            return
        port = free_port()
        caps = [a for cap in AGENT_CAPS for a in ("--cap-add", cap)]
        sock = sockets / "kernelseal.sock"
        if not self.start(
            "ks-check-agent", "agent container (mode: disabled) serves its socket", sock.exists,
            "--user", "0", "--pid", "host",
            "--cgroupns", "private", *caps, "-e", f"KERNELSEAL_HEALTH_PORTS={port}",
            "-v", f"{sockets}:/run/kernelseal", "-v", f"{etc}:/etc/kernelseal:ro",
            self.tag, "agent", "--config", "/etc/kernelseal/config.yaml",
            "--socket-group", str(SOCKET_GID), "--metrics-addr", f"127.0.0.1:{port}",
        ):
            return
        st = sock.stat()
        p.check(f"agent container serves {sock.relative_to(ROOT)} (mode 0660, group {SOCKET_GID})",
                st.st_mode & 0o777 == 0o660 and st.st_gid == SOCKET_GID,
                f"mode {oct(st.st_mode & 0o777)}, group {st.st_gid}")
        log = self.logs("ks-check-agent")
        p.check("the agent in its own cgroup namespace joined the host's (--pid host)",
                "[IDENTITY] joined the cgroup namespace of PID" in log,
                f"no [IDENTITY] join line in its log: {log[-1500:]}")
        wait_for(lambda: podman("healthcheck", "run", "ks-check-agent", check=False).returncode == 0, 15)
        r = podman("healthcheck", "run", "ks-check-agent", check=False)
        p.check("HEALTHCHECK of the agent container: healthy", r.returncode == 0,
                f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")

        out, cid = self.app(wrapper, sockets, APP_CGROUP, "ks-check-app")
        p.check("app container (plain trixie, uid 1000, socket group) gets its secret through the copied wrapper",
                f"CHECK_SECRET={secret}" in out, f"its output: {out.strip()[-800:]}")
        p.check("the binding for another container's cgroupPath does not match the app",
                other not in out and "OTHER_SECRET" not in out, f"its output: {out.strip()[-800:]}")
        log = self.logs("ks-check-agent")
        path = f"{APP_CGROUP}/libpod-{cid}"
        p.check(f"the agent's log names the caller's cgroup as runc made it ({path[:48]}…)",
                bool(cid) and names_cgroup(log, "Secrets injected into PID", path),
                f"no injection line naming {path}: {log[-1500:]}")
        out, cid = self.app(wrapper, sockets, STRANGER_CGROUP, "ks-check-stranger")
        path = f"{STRANGER_CGROUP}/libpod-{cid}"
        log = self.logs("ks-check-agent")
        p.check("a container under neither cgroupPath gets nothing; the refusal names its cgroup",
                secret not in out and other not in out and bool(cid)
                and names_cgroup(log, "no binding matched", path),
                f"output {out.strip()[-500:]!r}; agent log: {log[-1500:]}")
        for value in (secret, other):
            if value in self.logs("ks-check-agent"):
                p.fail("the agent's log holds no secret", "a secret value is in it")
                break
        else:
            p.ok("the agent's log holds no secret")
        self.stop("ks-check-agent", "agent container stops on SIGTERM with exit 0")

    def app(self, wrapper: Path, sockets: Path, cgroup_parent: str, name: str) -> tuple[str, str]:
        """Runs /usr/bin/env through the copied wrapper in the plain trixie
        image: (its output, the container's id)."""
        cidfile = self.dir / f"{name}.cid"
        cidfile.unlink(missing_ok=True)
        r = podman(
            "run", "--rm", "--name", name, *RUN_FLAGS, "--cidfile", str(cidfile),
            "--user", f"{APP_UID}:{APP_UID}", "--group-add", str(SOCKET_GID),
            "--cgroup-parent", cgroup_parent,
            "-v", f"{wrapper}:/kernelseal:ro", "-v", f"{sockets}:/run/kernelseal:ro",
            self.slim, "/kernelseal/kernelseal-exec", "--", "/usr/bin/env",
            check=False,
        )
        cid = cidfile.read_text().strip() if cidfile.exists() else ""
        return f"exit {r.returncode}\n{r.stdout}{r.stderr}", cid

    # ---------------------------------------------------------------- CSI --

    def csi(self) -> None:
        p = self.phases
        fixture_path = ROOT / "csi-shim/tests/fixtures/mount_request.json"
        fixture = json.loads(fixture_path.read_text())
        provider_uid = IMAGE_UID
        csi_dir = self.shared("csi", owner=provider_uid)
        data = self.shared("fixture")
        keys = self.shared("csi-key", owner=provider_uid, mode=0o700)
        key = keys / "hmac.key"
        key.write_bytes(bytes.fromhex(fixture["hmac_key_hex"]))
        os.chown(key, provider_uid, provider_uid)
        key.chmod(0o600)
        port = free_port()
        env = [a for k, v in fixture["environment"].items() for a in ("-e", f"{k}={v}")]
        # The provider as its DaemonSet runs it: the image's user, no
        # capability; the driver (here the client) is root.
        sock = csi_dir / "kernelseal.sock"
        if not self.start(
            "ks-check-csi", "CSI provider container serves its socket", sock.exists,
            "--cap-drop", "all", *env, "-e", f"KERNELSEAL_HEALTH_PORTS={port}",
            "-v", f"{csi_dir}:/csi", "-v", f"{data}:/fixture:ro", "-v", f"{keys}:/key:ro",
            self.tag, "csi-provider", "--socket", "/csi/kernelseal.sock",
            "--health-addr", f"127.0.0.1:{port}", "--hmac-key-file", "/key/hmac.key",
            "--allow-env", "KS_CSI_FIXTURE_", "--allow-file-dir", "/fixture",
        ):
            return
        p.ok("CSI provider container (uid 65532, no capabilities) serves its socket in a shared directory")
        client = ROOT / "csi-shim"
        r = podman(
            "run", "--rm", "--name", "ks-check-csi-client", *RUN_FLAGS,
            "-v", f"{csi_dir}:/csi", "-v", f"{data}:/fixture", "-v", f"{client}:/csi-shim:ro",
            self.client, "python3", "/csi-shim/tests/python/csi_client_test.py",
            "--socket", "/csi/kernelseal.sock", "--data", "/fixture", "--health-port", str(port),
            "--proto", "/csi-shim/proto/provider.proto",
            "--fixture", "/csi-shim/tests/fixtures/mount_request.json",
            check=False, timeout=300,
        )
        p.check("the Python gRPC client in another container mounts the SecretProviderClass's objects",
                r.returncode == 0 and "PASS" in r.stdout, f"exit {r.returncode}: {(r.stdout + r.stderr).strip()[-1500:]}")
        r = podman("healthcheck", "run", "ks-check-csi", check=False)
        p.check("HEALTHCHECK of the CSI provider container: healthy", r.returncode == 0,
                f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        self.stop("ks-check-csi", "CSI provider container stops on SIGTERM with exit 0 and removes its socket",
                  after=lambda: "(socket left behind)" if sock.exists() else "")
        log = self.dir / "csi-provider.log"
        log.write_text(self.logs("ks-check-csi"))
        r = subprocess.run(
            ["python3", str(client / "tests/python/csi_client_test.py"), "--check-log", str(log),
             "--proto", str(client / "proto/provider.proto"), "--fixture", str(fixture_path)],
            text=True, capture_output=True,
        )
        p.check("the provider's log names each Mount's pod and holds no secret", r.returncode == 0,
                (r.stdout + r.stderr).strip()[-800:])

    # ------------------------------------------------------------ webhook --

    def webhook(self) -> None:
        p = self.phases
        deploy = check_deploy()
        tls = self.shared("tls", owner=IMAGE_UID)
        cert, key = tls / "tls.crt", tls / "tls.key"
        why = deploy.self_signed_certificate(cert, key)
        if why:
            p.fail("webhook certificate", why)
            return
        for f in (cert, key):
            os.chown(f, IMAGE_UID, IMAGE_UID)
        port = free_port()
        serving = f"serving admission reviews on https://127.0.0.1:{port}/"
        if not self.start(
            "ks-check-webhook", "webhook container serves HTTPS",
            lambda: serving in self.logs("ks-check-webhook"),
            "--cap-drop", "all", "-v", f"{tls}:/tls:ro", self.tag, "webhook",
            "--listen", f"127.0.0.1:{port}", "--cert-file", "/tls/tls.crt", "--key-file", "/tls/tls.key",
            "--namespace", "kernelseal", "--image", self.tag, "--shutdown-delay", "1s",
        ):
            return
        pod = deploy.pod_of_deployment(deploy.INJECTED)
        answer, why = deploy.post_review(port, cert, deploy.admission_review(pod))
        patched, patch, why = deploy.patched_pod(pod, answer) if answer else (None, [], why)
        if p.check("webhook container answers an AdmissionReview over verified TLS with its patch",
                   patched is not None, why):
            init = (patched["spec"].get("initContainers") or [{}])[-1]
            command = patched["spec"]["containers"][0].get("command") or []
            p.check(f"the patch copies the wrapper from {self.tag} and wraps the command "
                    f"({len(patch)} operations)",
                    init.get("image") == self.tag and "kernelseal-exec" in " ".join(command),
                    f"init container {init.get('image')!r}, command {command}")
        r = podman("healthcheck", "run", "ks-check-webhook", check=False)
        # The documented gap: HEALTHCHECK speaks plain HTTP, the webhook
        # only HTTPS. Also shows the healthcheck can fail.
        p.check("HEALTHCHECK of the webhook container: unhealthy, as documented (HTTPS only)",
                r.returncode != 0, "the plain-HTTP healthcheck passed against an HTTPS-only webhook")
        self.stop("ks-check-webhook", "webhook container stops on SIGTERM with exit 0")
