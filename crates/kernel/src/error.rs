//! The kernel layer's error type.
//!
//! Every error says what was being done when it happened (`creating veth vb0123456789ab for
//! bridge br-…: File exists`), so the daemon can pass it to the user unchanged.

use std::io;

/// What went wrong while executing a plan or reading kernel state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The kernel refused a netlink request, or the request could not be sent.
    #[error("{op}: {}", describe(.error))]
    Netlink {
        /// What was being done (`creating veth … for bridge …`).
        op: String,
        /// The error, usually an errno from the kernel's `NLMSG_ERROR` answer.
        error: io::Error,
    },
    /// A system call (setns, unshare, mount, …) or a file operation failed.
    #[error("{op}: {}", describe(.error))]
    Io {
        /// What was being done.
        op: String,
        /// The underlying error.
        error: io::Error,
    },
    /// The `nft` binary is not installed.
    #[error("nft (nftables) not found in PATH: install it with `apt-get install nftables`")]
    NftMissing,
    /// `nft` rejected a script or a command; nothing was applied (nft batches are atomic).
    #[error("{op}: nft failed ({status}): {stderr}")]
    Nft {
        /// What was being done.
        op: String,
        /// The exit status, as printed by the standard library.
        status: String,
        /// nft's standard error, trimmed.
        stderr: String,
    },
    /// A value in a plan, or an answer from the kernel or from nft, could not be used.
    #[error("{what}: {reason}")]
    Invalid {
        /// What was being done or parsed.
        what: String,
        /// Why it is unusable.
        reason: String,
    },
    /// A kernel limit was reached (`EXFULL`: a bridge holds its 1,023 ports); the message says
    /// which and what to do. Not a fault of berth's: the daemon answers 409.
    #[error("{what}")]
    Full {
        /// What is full, and what to do.
        what: String,
    },
    /// A named object (link, namespace, …) does not exist.
    #[error("{what}: not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
}

/// Result of the kernel layer.
pub type Result<T> = std::result::Result<T, KernelError>;

impl KernelError {
    /// Whether the error means "the object does not exist" (`ENODEV`, `ENOENT`, `ESRCH`,
    /// `EADDRNOTAVAIL`, or [`KernelError::NotFound`]): callers that remove things treat it as
    /// success.
    pub fn is_not_found(&self) -> bool {
        match self {
            KernelError::NotFound { .. } => true,
            KernelError::Netlink { error, .. } | KernelError::Io { error, .. } => {
                error.kind() == io::ErrorKind::NotFound
                    || matches!(
                        error.raw_os_error(),
                        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
                    )
            }
            _ => false,
        }
    }

    /// Whether a kernel limit was reached ([`KernelError::Full`]).
    pub fn is_full(&self) -> bool {
        matches!(self, KernelError::Full { .. })
    }

    /// The errno behind the error, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            KernelError::Netlink { error, .. } | KernelError::Io { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }

    /// A netlink error for `op`.
    pub(crate) fn netlink(op: impl Into<String>, error: io::Error) -> Self {
        KernelError::Netlink {
            op: op.into(),
            error,
        }
    }

    /// A system-call or file error for `op`.
    pub(crate) fn io(op: impl Into<String>, error: impl Into<io::Error>) -> Self {
        KernelError::Io {
            op: op.into(),
            error: error.into(),
        }
    }

    /// An unusable value.
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        KernelError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the operation of the error with more context (`setting up endpoint X: `).
    pub(crate) fn context(self, prefix: &str) -> Self {
        match self {
            KernelError::Netlink { op, error } => KernelError::Netlink {
                op: format!("{prefix}: {op}"),
                error,
            },
            KernelError::Io { op, error } => KernelError::Io {
                op: format!("{prefix}: {op}"),
                error,
            },
            KernelError::Nft { op, status, stderr } => KernelError::Nft {
                op: format!("{prefix}: {op}"),
                status,
                stderr,
            },
            KernelError::Invalid { what, reason } => KernelError::Invalid {
                what: format!("{prefix}: {what}"),
                reason,
            },
            KernelError::NotFound { what } => KernelError::NotFound {
                what: format!("{prefix}: {what}"),
            },
            KernelError::Full { what } => KernelError::Full {
                what: format!("{prefix}: {what}"),
            },
            other => other,
        }
    }
}

/// An errno as its plain description (`File exists`), other errors as they print.
fn describe(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_string(),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_operation_and_the_errno() {
        let e = KernelError::netlink(
            "creating veth vb0123456789ab for bridge br-1",
            io::Error::from_raw_os_error(libc::EEXIST),
        );
        assert_eq!(
            e.to_string(),
            "creating veth vb0123456789ab for bridge br-1: File exists"
        );
        assert!(!e.is_not_found());
        let e = KernelError::netlink("deleting x", io::Error::from_raw_os_error(libc::ENODEV));
        assert!(e.is_not_found());
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV));
    }
}
