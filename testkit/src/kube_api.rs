//! A stand-in for the Kubernetes API calls the agent's pod identity
//! makes: `GET /api/v1/pods?fieldSelector=spec.nodeName=<node>`, a
//! `PodList`, and `GET /api/v1/namespaces/<ns>/serviceaccounts/<name>`
//! (the IAM role annotation of `identity: pod`); and the one the admission
//! webhook makes: `GET /api/v1/namespaces/<ns>/secrets/<name>` (a pod's
//! pull secret). Over plain HTTP on 127.0.0.1 (kube-rs's `Client` takes an
//! `http://` server from a kubeconfig).
//!
//! It follows the documented API where a client could trip on it:
//! a bearer token is required (none or an unknown one: 401 `Status`), an
//! identity is authorized like its RBAC (the agent's [`AGENT_TOKEN`] may
//! list pods and get service accounts, the webhook's [`WEBHOOK_TOKEN`]
//! may get secrets, [`NO_LIST_TOKEN`] nothing: anything else is 403
//! `Status` worded as the API server words it), the field selector is
//! honoured (an unsupported field label: 400), a missing object is 404
//! `Status`, and any other path is 404. Tests change pods the way the kubelet does
//! (a container's ID published late, a new ID on a restart) and count the
//! lists, to hold the agent to its rate bounds.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// A service-account token whose identity may list pods cluster-wide
/// (the agent's ClusterRole).
pub const AGENT_TOKEN: &str = "standin-agent-token-5a1f";
/// A token of a real identity that lacks `list` on pods.
pub const NO_LIST_TOKEN: &str = "standin-no-list-token-77c2";
/// Who [`NO_LIST_TOKEN`] is, as the 403 names it.
pub const NO_LIST_USER: &str = "system:serviceaccount:default:no-pods";
/// A service-account token whose identity may `get` secrets cluster-wide
/// and nothing else (the webhook's ClusterRole with `--pull-secrets`).
pub const WEBHOOK_TOKEN: &str = "standin-webhook-token-3e9d";
/// Who [`WEBHOOK_TOKEN`] is.
pub const WEBHOOK_USER: &str = "system:serviceaccount:kernelseal:kernelseal-webhook";
const AGENT_USER: &str = "system:serviceaccount:kernelseal:kernelseal-agent";

/// What each identity may do: (user, verb, resource), all namespaces.
const GRANTS: &[(&str, &str, &str)] = &[
    (AGENT_USER, "list", "pods"),
    (AGENT_USER, "get", "serviceaccounts"),
    (WEBHOOK_USER, "get", "secrets"),
];

/// Field labels the API server accepts in a pod list's field selector.
const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.phase",
];

type Hook = Box<dyn FnOnce(&mut Pods) + Send>;

/// The pods the server holds, in the API's JSON.
pub struct Pods {
    items: Vec<Value>,
    resource_version: u64,
    /// Service accounts by (namespace, name).
    accounts: HashMap<(String, String), Value>,
    /// Secrets by (namespace, name).
    secrets: HashMap<(String, String), Value>,
}

impl Pods {
    fn pod_mut(&mut self, uid: &str) -> &mut Value {
        self.items
            .iter_mut()
            .find(|p| p["metadata"]["uid"] == uid)
            .unwrap_or_else(|| panic!("no pod {uid} in the stand-in"))
    }

    fn status_mut(&mut self, uid: &str, container: &str) -> &mut Value {
        self.resource_version += 1;
        self.pod_mut(uid)["status"]["containerStatuses"]
            .as_array_mut()
            .and_then(|all| all.iter_mut().find(|c| c["name"] == container))
            .unwrap_or_else(|| panic!("no container {container} in pod {uid}"))
    }

    /// The kubelet saw the container start: its status gets the runtime's
    /// ID (`containerd://<id>`) and a running state.
    pub fn start_container(&mut self, uid: &str, container: &str, id: &str) {
        let c = self.status_mut(uid, container);
        c["containerID"] = json!(format!("containerd://{id}"));
        c["imageID"] = json!("docker.io/library/standin@sha256:0");
        c["ready"] = json!(true);
        c["started"] = json!(true);
        c["state"] = json!({ "running": { "startedAt": "2025-01-01T00:00:01Z" } });
    }

    /// The container exited and the kubelet started a new one (a
    /// rollout's `onRotate: restart`, a crash): a new ID, the old one in
    /// `lastState`, the restart counted.
    pub fn restart_container(&mut self, uid: &str, container: &str, new_id: &str) {
        let c = self.status_mut(uid, container);
        let old = c["containerID"].clone();
        let restarts = c["restartCount"].as_u64().unwrap_or(0) + 1;
        c["lastState"] = json!({ "terminated": {
            "exitCode": 0, "reason": "Completed", "containerID": old,
            "startedAt": "2025-01-01T00:00:01Z", "finishedAt": "2025-01-01T00:01:00Z"
        } });
        c["restartCount"] = json!(restarts);
        c["containerID"] = json!(format!("containerd://{new_id}"));
        c["state"] = json!({ "running": { "startedAt": "2025-01-01T00:01:01Z" } });
    }

    pub fn add(&mut self, pod: Value) {
        self.resource_version += 1;
        self.items.push(pod);
    }

    /// A service account with these annotations.
    pub fn add_service_account(&mut self, namespace: &str, name: &str, annotations: Value) {
        self.resource_version += 1;
        let sa = json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {
                "name": name, "namespace": namespace,
                "uid": format!("sa-{namespace}-{name}"),
                "resourceVersion": self.resource_version.to_string(),
                "annotations": annotations
            }
        });
        self.accounts
            .insert((namespace.to_string(), name.to_string()), sa);
    }

    /// A Secret of `secret_type` whose `data` holds `values` (base64-encoded
    /// here, as the API carries them).
    pub fn add_secret(
        &mut self,
        namespace: &str,
        name: &str,
        secret_type: &str,
        values: &[(&str, &[u8])],
    ) {
        use base64::Engine;
        self.resource_version += 1;
        let data: serde_json::Map<String, Value> = values
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    json!(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": name, "namespace": namespace,
                "uid": format!("secret-{namespace}-{name}"),
                "resourceVersion": self.resource_version.to_string()
            },
            "type": secret_type,
            "data": data
        });
        self.secrets
            .insert((namespace.to_string(), name.to_string()), secret);
    }

    pub fn remove_secret(&mut self, namespace: &str, name: &str) {
        self.secrets
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

/// A pod as the API server returns it right after scheduling: its
/// containers created but not started, so no container has an ID yet.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, containers: &[&str]) -> Value {
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c, "image": "standin", "imageID": "", "ready": false,
                "started": false, "restartCount": 0, "lastState": {},
                "state": { "waiting": { "reason": "ContainerCreating" } }
            })
        })
        .collect();
    let specs: Vec<Value> = containers
        .iter()
        .map(|c| json!({ "name": c, "image": "standin" }))
        .collect();
    json!({
        "metadata": {
            "name": name, "namespace": namespace, "uid": uid,
            "labels": { "app": name }, "resourceVersion": "1"
        },
        "spec": { "nodeName": node, "serviceAccountName": name, "containers": specs },
        "status": { "phase": "Pending", "containerStatuses": statuses }
    })
}

struct Inner {
    pods: Mutex<Pods>,
    lists: AtomicUsize,
    /// Secret `get`s answered, whatever the answer.
    secret_gets: AtomicUsize,
    after_next_list: Mutex<Option<Hook>>,
}

/// The stand-in API server, serving on the Tokio runtime it was started
/// on until that runtime ends.
pub struct KubeApi {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    inner: Arc<Inner>,
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let inner = Arc::new(Inner {
            pods: Mutex::new(Pods {
                items: Vec::new(),
                resource_version: 1,
                accounts: HashMap::new(),
                secrets: HashMap::new(),
            }),
            lists: AtomicUsize::new(0),
            secret_gets: AtomicUsize::new(0),
            after_next_list: Mutex::new(None),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in API server");
        let url = format!("http://{}", listener.local_addr().expect("local address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        KubeApi { url, inner }
    }

    /// Changes the pods now.
    pub fn pods<R>(&self, f: impl FnOnce(&mut Pods) -> R) -> R {
        f(&mut self.inner.pods.lock().unwrap())
    }

    /// Changes the pods right after the next list is answered: that list
    /// still shows them as they are, every later one changed. The kubelet
    /// publishing a status while a client waits, without a race.
    pub fn after_next_list(&self, f: impl FnOnce(&mut Pods) + Send + 'static) {
        *self.inner.after_next_list.lock().unwrap() = Some(Box::new(f));
    }

    /// Pod lists answered so far (200s only).
    pub fn lists(&self) -> usize {
        self.inner.lists.load(Ordering::SeqCst)
    }

    /// Secret `get`s served so far (refusals and 404s included).
    pub fn secret_gets(&self) -> usize {
        self.inner.secret_gets.load(Ordering::SeqCst)
    }

    /// A kubeconfig for this server and `token`, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path, token: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\nusers:\n- name: agent\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: agent\ncurrent-context: standin\n",
            self.url
        );
        std::fs::write(&path, text).expect("write the kubeconfig");
        path
    }
}

/// A `Status` object, the API's error body.
fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason,
        "details": { "kind": "pods" }, "code": code.as_u16()
    });
    (code, axum::Json(body)).into_response()
}

fn allowed(user: &str, verb: &str, resource: &str) -> bool {
    GRANTS.contains(&(user, verb, resource))
}

/// The API server's 403 for a namespaced `get`.
fn forbidden_get(user: &str, resource: &str, ns: &str, name: &str) -> Response {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        format!(
            "{resource} \"{name}\" is forbidden: User \"{user}\" cannot get resource \"{resource}\" in API group \"\" in the namespace \"{ns}\""
        ),
    )
}

fn method_not_allowed(method: &Method) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource: {method}"),
    )
}

/// `key=value`, `key==value` or `key!=value` terms, comma-separated.
fn parse_selector(sel: &str) -> Result<Vec<(String, bool, String)>, String> {
    sel.split(',')
        .filter(|t| !t.is_empty())
        .map(|term| {
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{sel}'; can't understand '{term}'"
                ));
            };
            if !POD_FIELDS.contains(&key) {
                return Err(format!("field label not supported: {key}"));
            }
            Ok((key.to_string(), equal, value.to_string()))
        })
        .collect()
}

fn field<'a>(pod: &'a Value, key: &str) -> &'a str {
    key.split('.')
        .fold(pod, |v, part| &v[part])
        .as_str()
        .unwrap_or("")
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let user = match token {
        Some(AGENT_TOKEN) => AGENT_USER,
        Some(NO_LIST_TOKEN) => NO_LIST_USER,
        Some(WEBHOOK_TOKEN) => WEBHOOK_USER,
        _ => {
            return status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized".into(),
            );
        }
    };
    if let Some(rest) = uri.path().strip_prefix("/api/v1/namespaces/")
        && let Some((namespace, name)) = rest.split_once("/serviceaccounts/")
        && !name.contains('/')
    {
        return service_account(&inner, &method, user, namespace, name);
    }
    if let Some(rest) = uri.path().strip_prefix("/api/v1/namespaces/")
        && let Some((namespace, name)) = rest.split_once("/secrets/")
        && !name.contains('/')
    {
        return secret(&inner, &method, user, namespace, name);
    }
    if uri.path() != "/api/v1/pods" {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    }
    if method != Method::GET {
        return method_not_allowed(&method);
    }
    if !allowed(user, "list", "pods") {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "pods is forbidden: User \"{user}\" cannot list resource \"pods\" in API group \"\" at the cluster scope"
            ),
        );
    }
    let selector = match parse_selector(query.get("fieldSelector").map_or("", String::as_str)) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e),
    };
    let body = {
        let mut pods = inner.pods.lock().unwrap();
        let items: Vec<&Value> = pods
            .items
            .iter()
            .filter(|p| {
                selector
                    .iter()
                    .all(|(k, equal, v)| (field(p, k) == v) == *equal)
            })
            .collect();
        let body = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": { "resourceVersion": pods.resource_version.to_string() },
            "items": items
        });
        inner.lists.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = inner.after_next_list.lock().unwrap().take() {
            hook(&mut pods);
        }
        body
    };
    axum::Json(body).into_response()
}

/// `GET` of one service account: the agent's identity may `get` them,
/// the others may not; a missing one is the API's 404.
fn service_account(inner: &Inner, method: &Method, user: &str, ns: &str, name: &str) -> Response {
    if method != Method::GET {
        return method_not_allowed(method);
    }
    if !allowed(user, "get", "serviceaccounts") {
        return forbidden_get(user, "serviceaccounts", ns, name);
    }
    let pods = inner.pods.lock().unwrap();
    match pods.accounts.get(&(ns.to_string(), name.to_string())) {
        Some(sa) => axum::Json(sa.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("serviceaccounts \"{name}\" not found"),
        ),
    }
}

/// `GET` of one secret: only an identity granted `get` on secrets may; a
/// missing one is the API's 404.
fn secret(inner: &Inner, method: &Method, user: &str, ns: &str, name: &str) -> Response {
    if method != Method::GET {
        return method_not_allowed(method);
    }
    inner.secret_gets.fetch_add(1, Ordering::SeqCst);
    if !allowed(user, "get", "secrets") {
        return forbidden_get(user, "secrets", ns, name);
    }
    let pods = inner.pods.lock().unwrap();
    match pods.secrets.get(&(ns.to_string(), name.to_string())) {
        Some(s) => axum::Json(s.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("secrets \"{name}\" not found"),
        ),
    }
}
