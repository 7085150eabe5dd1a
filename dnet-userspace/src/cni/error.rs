//! CNI's error result: a code, a message and details, printed on stdout
//! with a non-zero exit (SPEC.md, "Error").

use serde::Serialize;

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content.
pub const DECODE: u32 = 6;
/// Invalid network config.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later (the daemon is unreachable).
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin is not available.
pub const NOT_AVAILABLE: u32 = 50;
/// dnet's own: the daemon refused; the message is the daemon's.
pub const DAEMON_REFUSED: u32 = 100;
/// dnet's own: CHECK found the attachment differs from `prevResult`.
pub const CHECK_MISMATCH: u32 = 101;

/// A CNI error: `code` as the spec numbers them, `msg` short, `details`
/// longer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON the runtime reads on stdout.
    pub fn to_json(&self, cni_version: &str) -> serde_json::Value {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_value(Body {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("plain fields")
    }
}

/// `CniError::new(code, format!(...))`.
macro_rules! cni_err {
    ($code:expr, $($t:tt)*) => { $crate::cni::error::CniError::new($code, format!($($t)*)) };
}
pub(crate) use cni_err;
