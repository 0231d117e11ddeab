//! `identity: pod` under enforcement on the real kernel: the wrapper in a
//! cgroup shaped as the kubelet writes it (cgroup v2, systemd driver,
//! containerd) sends its pod's projected token, the agent checks it
//! against the pod the kernel names (cgroup path → the node's pod list)
//! and reads Vault as that pod; the process it becomes is as closed to
//! root as any wrapped process. The Kubernetes API and Vault are the
//! testkit's stand-ins, served from this process on the guest's loopback;
//! the agent reaches them as a DaemonSet's agent would (`KUBECONFIG`,
//! `NODE_NAME`). tests/pod_identity.rs is the same path on the host,
//! without enforcement.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kernelseal_testkit::kube_api::{AGENT_TOKEN, KubeApi, pod};
use kernelseal_testkit::sa_token::{CLUSTER_KEY, TokenSpec, mint};
use kernelseal_testkit::vault::{Policy as VaultPolicy, Role, VaultSpec, VaultStandin};
use serde_json::json;

use crate::agent::{Agent, KERNELSEAL, Policy, log_text, wait_log_line};
use crate::identity_suite::join_cgroup;
use crate::loopback::loopback_up;
use crate::suite::{Ctx, TestResult, all_allowed, all_refused};
use crate::victim::Victim;

/// The stand-ins' files: the kubeconfig and the pods' token files.
const DIR: &str = "/tmp/ks-podid";
const CG_ROOT: &str = "/sys/fs/cgroup";
pub(crate) const NODE: &str = "vm-node-1";
pub(crate) const NAMESPACE: &str = "shop";
pub(crate) const WEB_POD: &str = "web-7d9f4c6b8-x2kq9";
pub(crate) const WEB_UID: &str = "6b1e0c7a-3f52-4d9e-8a17-c4d2e9f05b31";
pub(crate) const WEB_CID: &str = "9c0f3b7e1a2d4c5b6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5";
const BILLING_POD: &str = "billing-5c8d7f9b6-m4t7r";
const BILLING_UID: &str = "d27a5e91-0c4b-4f86-9e3a-71b6c5d8e2f0";
const BILLING_CID: &str = "3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f";
pub(crate) const WEB_SECRET: &str = "vm-web-db-pass-Q7r2";
pub(crate) const WEB_PATH: &str = "web/db";

/// The pods' binding: selected by service account, read as the pod.
const BINDING: &str = "  - name: pod-web\n    selector: { serviceAccount: web }\n    identity: pod\n    secretRefs:\n      - { name: DB_PASSWORD, source: { vaultRef: { path: web/db, key: password } } }\n";

/// A container's cgroup as the kubelet (systemd driver) and containerd
/// name it; removed, innermost first, on drop.
pub(crate) struct ContainerCgroup {
    dir: PathBuf,
    procs: CString,
}

impl ContainerCgroup {
    pub(crate) fn create(pod_uid: &str, container_id: &str) -> Result<Self, String> {
        let dir = Path::new(CG_ROOT)
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!(
                "kubepods-besteffort-pod{}.slice",
                pod_uid.replace('-', "_")
            ))
            .join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let procs = CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .map_err(|e| e.to_string())?;
        Ok(ContainerCgroup { dir, procs })
    }

    /// A setup hook that moves the child it runs in into this cgroup.
    pub(crate) fn joiner(&self) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
        let procs = self.procs.clone();
        move || join_cgroup(&procs)
    }

    /// The path as `/proc/PID/cgroup` shows it (`0::/kubepods.slice/…`).
    fn proc_line(&self) -> String {
        let rel = self.dir.strip_prefix(CG_ROOT).unwrap_or(&self.dir);
        format!("0::/{}", rel.display())
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        // Up to kubepods.slice; a parent still used by another pod stays
        // (EBUSY).
        for d in self.dir.ancestors().take(4) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The testkit's stand-ins panic where they cannot start (no port to bind,
/// no file to write): here that is a failed test, not the end of the suite.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let why = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("{what}: {why}")
    })
}

/// The node's pod list: web and billing, each with its container running.
/// Serves on `runtime` as long as it lives.
fn node(runtime: &tokio::runtime::Runtime) -> Result<KubeApi, String> {
    let api = no_panic("starting the Kubernetes API stand-in", || {
        runtime.block_on(KubeApi::start())
    })?;
    api.pods(|p| {
        for (name, account, uid, cid) in [
            (WEB_POD, "web", WEB_UID, WEB_CID),
            (BILLING_POD, "billing", BILLING_UID, BILLING_CID),
        ] {
            let mut one = pod(NAMESPACE, name, uid, NODE, &["app"]);
            one["spec"]["serviceAccountName"] = json!(account);
            p.add(one);
            p.start_container(uid, "app", cid);
        }
    });
    Ok(api)
}

/// Vault: web's service account logs in to role `web`, whose policy reads
/// only web's path.
fn vault() -> Result<VaultStandin, String> {
    no_panic("starting the Vault stand-in", || {
        VaultStandin::start(
            VaultSpec::default()
                .role(
                    "web",
                    Role::new(&["web"], &[NAMESPACE], &["web-read"]).audience("vault"),
                )
                .policy(
                    "web-read",
                    VaultPolicy::new().path("secret/data/web/*", &["read"]),
                )
                .secret(WEB_PATH, json!({ "password": WEB_SECRET })),
        )
    })
}

/// A kubeconfig for `api` that names the cluster's CA, as every real
/// one (and the in-cluster config) does: without one the agent's
/// Kubernetes client trusts the system's roots, and the guest has none, so
/// no client could be built. The CA is made for this test and never used
/// (the stand-in speaks plain HTTP).
fn kubeconfig(api: &KubeApi) -> Result<String, String> {
    let mut params = rcgen::CertificateParams::new(vec!["kubernetes".to_string()])
        .map_err(|e| format!("the cluster CA's parameters: {e}"))?;
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().map_err(|e| format!("the cluster CA's key: {e}"))?;
    let ca = params
        .self_signed(&key)
        .map_err(|e| format!("the cluster CA: {e}"))?;
    let ca_path = format!("{DIR}/cluster-ca.crt");
    std::fs::write(&ca_path, ca.pem()).map_err(|e| format!("{ca_path}: {e}"))?;
    let path = no_panic("writing the kubeconfig", || {
        api.kubeconfig(Path::new(DIR), AGENT_TOKEN)
    })?;
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let server = format!("    server: {}\n", api.url);
    if !text.contains(&server) {
        return Err(format!(
            "no {server:?} in the stand-in's kubeconfig: {text}"
        ));
    }
    let text = text.replace(
        &server,
        &format!("{server}    certificate-authority: {ca_path}\n"),
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_string_lossy().into_owned())
}

/// What the API server puts in a projected token of pod `pod_name` of
/// this node (audience `vault`, an hour); signed by [`token`].
pub(crate) fn token_spec(pod_name: &str, account: &str, uid: &str) -> TokenSpec {
    TokenSpec {
        node_name: NODE.to_string(),
        ..TokenSpec::new(NAMESPACE, account, pod_name, uid)
    }
}

/// The token `spec` says, signed with the stand-in cluster's key.
pub(crate) fn token(spec: &TokenSpec) -> String {
    mint(spec, CLUSTER_KEY)
}

/// A pod's projected token (audience `vault`), written where the wrapper
/// is told to read it; returns the file and the token.
fn token_file(
    name: &str,
    pod_name: &str,
    account: &str,
    uid: &str,
) -> Result<(String, String), String> {
    let jwt = token(&token_spec(pod_name, account, uid));
    let path = format!("{DIR}/{name}");
    std::fs::write(&path, &jwt).map_err(|e| format!("{path}: {e}"))?;
    Ok((path, jwt))
}

/// The node's stand-in cluster: the Kubernetes API with web's and
/// billing's pods ([`node`]), Vault ([`vault`]) and the agent's kubeconfig,
/// on the guest's loopback for as long as it lives.
pub(crate) struct StandinCluster {
    /// Kept to serve the node's pods, never read.
    _api: KubeApi,
    pub(crate) vault: VaultStandin,
    kubeconfig: String,
    /// Serves the API stand-in; dropped after it.
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl StandinCluster {
    pub(crate) fn start() -> Result<Self, String> {
        loopback_up()?;
        std::fs::create_dir_all(DIR).map_err(|e| format!("{DIR}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("the Kubernetes API stand-in's runtime: {e}"))?;
        let api = node(&runtime)?;
        let vault = vault()?;
        let kubeconfig = kubeconfig(&api)?;
        Ok(StandinCluster {
            _api: api,
            vault,
            kubeconfig,
            runtime,
        })
    }

    /// Runs `body` with the agent of a DaemonSet on this node (its
    /// kubeconfig and node name, `podIdentity: required`, web's binding
    /// [`BINDING`] reading this Vault as the pod), then restarts the
    /// suite's agent, whatever `body` gave.
    pub(crate) fn with_agent(
        &self,
        ctx: &mut Ctx,
        body: impl FnOnce() -> TestResult,
    ) -> TestResult {
        let top = format!(
            "podIdentity: required\nproviders:\n  vault: {{ type: vault, address: \"{}\" }}\n",
            self.vault.addr()
        );
        let yaml = Policy::ENFORCE_ALL.yaml_with(BINDING, &top);
        let env = [
            ("KUBECONFIG", self.kubeconfig.as_str()),
            ("NODE_NAME", NODE),
        ];
        with_agent(ctx, &yaml, &env, body)
    }
}

/// Runs `body` with the agent restarted on `yaml` with `env`, then
/// restarts the suite's agent, whatever `body` gave.
pub(crate) fn with_agent(
    ctx: &mut Ctx,
    yaml: &str,
    env: &[(&str, &str)],
    body: impl FnOnce() -> TestResult,
) -> TestResult {
    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    stopping.stop()?;
    let result = Agent::start_with_env(yaml, &["--unpin-on-exit"], env).and_then(|agent| {
        ctx.agent = agent;
        body()
    });
    let stopping = std::mem::replace(&mut ctx.agent, Agent::detached());
    let stopped = stopping.stop();
    ctx.agent = Agent::start(Policy::ENFORCE_ALL)?;
    result.and(stopped)
}

/// `kernelseal exec --token-file TOKEN -- /bin/true` in `cgroup`: exit code
/// and stderr.
fn wrap_true_in(cgroup: &ContainerCgroup, token: &str) -> Result<(Option<i32>, String), String> {
    let mut cmd = Command::new(KERNELSEAL);
    cmd.args([
        "exec",
        "--timeout",
        "10s",
        "--token-file",
        token,
        "--",
        "/bin/true",
    ])
    .stdin(Stdio::null());
    // SAFETY: join_cgroup only makes syscalls.
    unsafe { cmd.pre_exec(cgroup.joiner()) };
    let out = cmd
        .output()
        .map_err(|e| format!("running the wrapper: {e}"))?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    ))
}

/// The process's cgroup must be `cgroup`: the kernel's word the agent
/// identifies the pod by.
pub(crate) fn in_cgroup(label: &str, pid: u32, cgroup: &ContainerCgroup) -> TestResult {
    let path = format!("/proc/{pid}/cgroup");
    let got = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    if got.trim() == cgroup.proc_line() {
        Ok(())
    } else {
        Err(format!(
            "{label} (pid {pid}) is in {:?}, not {:?}",
            got.trim(),
            cgroup.proc_line()
        ))
    }
}

/// A wrapped app in web's container reads Vault as web's pod and is closed
/// to root on every vector; an app beside it without the wrapper is open.
/// A caller there presenting billing's token is refused before Vault sees
/// a login. Neither the secret nor a token reaches the agent's log.
pub fn wrapper_reads_vault_as_the_pod_and_root_is_refused(ctx: &mut Ctx) -> TestResult {
    let cluster = StandinCluster::start()?;
    let vault = &cluster.vault;
    let web_cg = ContainerCgroup::create(WEB_UID, WEB_CID)?;
    let (web_token, web_jwt) = token_file("web-token", WEB_POD, "web", WEB_UID)?;
    let (billing_token, billing_jwt) =
        token_file("billing-token", BILLING_POD, "billing", BILLING_UID)?;
    cluster.with_agent(ctx, || {
        // Another pod's token: refused on its claims, Vault never asked.
        let (code, err) = wrap_true_in(&web_cg, &billing_token)?;
        if code != Some(125)
            || !err.contains("binding \"pod-web\" reads as the pod (identity: pod)")
            || !err.contains(&format!(
                "the service-account token belongs to pod {BILLING_UID}"
            ))
            || !err.contains(&format!("not to the calling pod {WEB_UID}"))
        {
            return Err(format!(
                "a caller in web's container with billing's token: exit {code:?}, stderr {err:?}"
            ));
        }
        if (vault.logins(), vault.total_reads()) != (0, 0) {
            return Err(format!(
                "Vault saw {} login(s) and {} read(s) for a token refused by the agent",
                vault.logins(),
                vault.total_reads()
            ));
        }

        // The pod's own token: the app gets web's secret through Vault.
        let wrapper_args = ["--timeout", "10s", "--token-file", web_token.as_str()];
        let mut app = Victim::spawn_wrapped_with(&wrapper_args, web_cg.joiner())?;
        in_cgroup("the wrapped app", app.pid, &web_cg)?;
        let seen = app.ask(&format!("envequals DB_PASSWORD {WEB_SECRET}"))?;
        if seen != "envequals yes" {
            return Err(format!("the wrapped app's DB_PASSWORD: {seen}"));
        }
        if (vault.logins_for("web"), vault.reads(WEB_PATH)) != (1, 1) {
            return Err(format!(
                "Vault: {} login(s) as web, {} read(s) of {WEB_PATH}; want 1 and 1",
                vault.logins_for("web"),
                vault.reads(WEB_PATH)
            ));
        }

        // Root reading it back: every vector refused; beside it, the same
        // program without the wrapper is open to all of them.
        all_refused("the wrapped app", app.pid, app.pid, app.addr)?;
        wait_log_line(&[
            "[LSM BLOCKED]",
            &format!("attempted environ access to PID={}", app.pid),
        ])?;
        let control = Victim::spawn_with(web_cg.joiner())?;
        in_cgroup("the unwrapped app", control.pid, &web_cg)?;
        all_allowed("the unwrapped app", control.pid, control.pid, control.addr)?;

        wait_log_line(&[
            "binding \"pod-web\" reads as the pod (identity: pod): the service-account token belongs to pod",
        ])?;
        not_in_agent_log(&[
            ("the secret", WEB_SECRET),
            ("web's token", web_jwt.as_str()),
            ("billing's token", billing_jwt.as_str()),
        ])
    })
}

/// None of `values` (named by the first of each pair) is in the agent's
/// log, nor the last `.`-separated part of any.
pub(crate) fn not_in_agent_log(values: &[(&str, &str)]) -> TestResult {
    let log = log_text();
    for (what, value) in values {
        // A line that cut a token could still hold its signature, the part
        // that makes it usable.
        let signature = value.rsplit('.').next().unwrap_or(value);
        if log.contains(value) || log.contains(signature) {
            return Err(format!("{what} is in the agent's log"));
        }
    }
    Ok(())
}
