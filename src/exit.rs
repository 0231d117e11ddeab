//! The binary's error type: a message plus the documented exit code.

pub struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    pub const RUNTIME: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const UNENFORCEABLE: u8 = 3;

    pub fn new(code: u8, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
        }
    }

    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Self::RUNTIME, error)
    }

    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Self::USAGE, error)
    }

    pub fn code(&self) -> u8 {
        self.code
    }

    /// The error and its causes on one line.
    pub fn message(&self) -> String {
        format!("{:#}", self.error)
    }
}
