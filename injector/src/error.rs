/// Why a delivery did not happen. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("cannot identify the caller: {0}")]
    Identity(String),
    #[error("socket {path}: {reason}")]
    Socket { path: String, reason: String },
    #[error("secret files at {path}: {reason}")]
    Files { path: String, reason: String },
    #[error("binding {binding:?}: {reason}")]
    Binding { binding: String, reason: String },
    #[error("protecting PID {pid} failed: {reason}")]
    Protect { pid: u32, reason: String },
    #[error("providers: {0}")]
    Providers(String),
}
