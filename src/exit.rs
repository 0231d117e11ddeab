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

    /// The error and its causes on one line, each cause once: the library
    /// crates' errors name their cause in their own text as well as keeping
    /// it as their source, and a cause the line already says is not
    /// repeated.
    pub fn message(&self) -> String {
        let mut line = self.error.to_string();
        for cause in self.error.chain().skip(1) {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("socket /run/ks.sock: creating /run: {0}")]
    struct Whole(#[source] std::io::Error);

    #[test]
    fn a_cause_is_said_once() {
        let denied = || std::io::Error::from_raw_os_error(libc::EACCES);
        let whole = Failure::runtime(Whole(denied()));
        assert_eq!(
            whole.message(),
            "socket /run/ks.sock: creating /run: Permission denied (os error 13)"
        );
        let context = Failure::runtime(anyhow::Error::new(denied()).context("reading the config"));
        assert_eq!(
            context.message(),
            "reading the config: Permission denied (os error 13)"
        );
    }
}
