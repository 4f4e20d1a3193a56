//! Errors of the planning layer.
//!
//! Every message is written for a person reading it in a terminal: it says what was being done
//! and, where there is one, what to do instead. Where Docker has a message for the same
//! situation, berth uses Docker's words exactly, because scripts and the stock `docker` CLI
//! match on them. [`PlanError::kind`] tells the API layer which HTTP status to answer with.

use thiserror::Error;

/// The class of an error, mapped by the API layer to an HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request itself is wrong (HTTP 400).
    InvalidArgument,
    /// The named object does not exist (HTTP 404).
    NotFound,
    /// The request clashes with existing state (HTTP 409).
    Conflict,
    /// The request is well-formed but not allowed (HTTP 403).
    Forbidden,
}

impl ErrorKind {
    /// The HTTP status code Docker answers with for this kind of error.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::InvalidArgument => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Forbidden => 403,
        }
    }
}

/// Everything the planner can refuse.
///
/// A few situations have their own variant because callers match on them (or because Docker's
/// wording must be kept exactly); the rest carry a ready-made message in one of the generic
/// variants, which only differ by [`ErrorKind`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// A network with this name exists already (Docker's message).
    #[error("network with name {0} already exists")]
    NetworkExists(String),
    /// No network matches the name or id (Docker's message).
    #[error("network {0} not found")]
    NetworkNotFound(String),
    /// No container matches the name or id (Docker's message).
    #[error("No such container: {0}")]
    ContainerNotFound(String),
    /// A network still has endpoints and cannot be removed (Docker's message).
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    NetworkInUse {
        /// Network name.
        name: String,
        /// Full network id.
        id: String,
    },
    /// The container is already attached to the network.
    #[error("container {container:?} is already connected to network {network:?}")]
    AlreadyConnected {
        /// Container name.
        container: String,
        /// Network name.
        network: String,
    },
    /// A requested address is taken.
    #[error("address {addr} is already in use on network {network:?}{}", by.as_ref().map(|c| format!(" (container {c:?})")).unwrap_or_default())]
    AddressInUse {
        /// The address.
        addr: std::net::IpAddr,
        /// Network name.
        network: String,
        /// The container holding it, when known.
        by: Option<String>,
    },
    /// Every address of the allocation range is taken.
    #[error("no free address left on network {network:?} ({range})")]
    AddressesExhausted {
        /// Network name.
        network: String,
        /// The range that was searched (the ip range when set, else the subnet).
        range: ipnet::IpNet,
    },
    /// The request is malformed (HTTP 400); the message says what and why.
    #[error("{0}")]
    Invalid(String),
    /// The request clashes with existing state (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The request is not allowed (HTTP 403).
    #[error("{0}")]
    Forbidden(String),
    /// Something named does not exist (HTTP 404).
    #[error("{0}")]
    NotFound(String),
}

impl PlanError {
    /// The class of this error (the HTTP status to answer with).
    pub fn kind(&self) -> ErrorKind {
        match self {
            PlanError::NetworkExists(_)
            | PlanError::AlreadyConnected { .. }
            | PlanError::AddressInUse { .. }
            | PlanError::Conflict(_) => ErrorKind::Conflict,
            PlanError::NetworkNotFound(_)
            | PlanError::ContainerNotFound(_)
            | PlanError::NotFound(_) => ErrorKind::NotFound,
            PlanError::NetworkInUse { .. } | PlanError::Forbidden(_) => ErrorKind::Forbidden,
            // The request clashes with the addresses handed out already.
            PlanError::AddressesExhausted { .. } => ErrorKind::Conflict,
            PlanError::Invalid(_) => ErrorKind::InvalidArgument,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests fail loudly on purpose.
mod tests {
    use super::*;

    #[test]
    fn docker_messages_and_kinds() {
        let e = PlanError::NetworkExists("n3".into());
        assert_eq!(e.to_string(), "network with name n3 already exists");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let e = PlanError::NetworkNotFound("nosuchnet".into());
        assert_eq!(e.to_string(), "network nosuchnet not found");
        assert_eq!(e.kind().http_status(), 404);
        let id = "5023a32964ca40abf8641b64ec027580d2854bea43dd811749251ae56bcf6a29";
        let e = PlanError::NetworkInUse {
            name: "n2".into(),
            id: id.into(),
        };
        assert_eq!(
            e.to_string(),
            format!("error while removing network: network n2 id {id} has active endpoints")
        );
        assert_eq!(e.kind(), ErrorKind::Forbidden);
    }

    #[test]
    fn address_messages() {
        let e = PlanError::AddressInUse {
            addr: "10.1.0.5".parse().unwrap(),
            network: "web".into(),
            by: Some("api".into()),
        };
        assert_eq!(
            e.to_string(),
            r#"address 10.1.0.5 is already in use on network "web" (container "api")"#
        );
        let e = PlanError::AddressInUse {
            addr: "10.1.0.5".parse().unwrap(),
            network: "web".into(),
            by: None,
        };
        assert_eq!(
            e.to_string(),
            r#"address 10.1.0.5 is already in use on network "web""#
        );
        let e = PlanError::AddressesExhausted {
            network: "web".into(),
            range: "10.1.0.0/30".parse().unwrap(),
        };
        assert_eq!(
            e.to_string(),
            r#"no free address left on network "web" (10.1.0.0/30)"#
        );
    }
}
