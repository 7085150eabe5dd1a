//! The daemon's error: what went wrong, with enough context to act on, and
//! the HTTP status the API answers with.

use crate::{
    datapath::DatapathError, ipam::IpamError, netlink::NetlinkError, netns::NetnsError,
    spec::SpecError, store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is wrong (bad syntax, bad value).
    #[error("{0}")]
    Invalid(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request clashes with the current state (duplicate, in use).
    #[error("{0}")]
    Conflict(String),
    /// The request is never allowed (removing a predefined network).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<IpamError> for Error {
    fn from(e: IpamError) -> Self {
        match e {
            IpamError::AddressInUse(_)
            | IpamError::Exhausted(_)
            | IpamError::AddressInUse6(_)
            | IpamError::Exhausted6(_) => Error::Conflict(e.to_string()),
            _ => Error::Invalid(e.to_string()),
        }
    }
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl Error {
    /// The HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            Error::Invalid(_) => 400,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict(_) => 409,
            _ => 500,
        }
    }

    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `Error::Invalid(format!(...))`.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => { $crate::error::Error::Invalid(format!($($t)*)) };
}

/// `Error::Conflict(format!(...))`.
#[macro_export]
macro_rules! conflict {
    ($($t:tt)*) => { $crate::error::Error::Conflict(format!($($t)*)) };
}

/// `Error::NotFound(format!(...))`.
#[macro_export]
macro_rules! not_found {
    ($($t:tt)*) => { $crate::error::Error::NotFound(format!($($t)*)) };
}
