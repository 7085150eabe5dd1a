//! dnet's control plane: the daemon, the CLI and everything between them.

pub mod api;
pub mod cli;
pub mod cni;
pub mod datapath;
pub mod dns;
pub mod docker;
pub mod driver;
pub mod engine;
pub mod error;
pub mod ipam;
pub mod mntns;
pub mod model;
pub mod netlink;
pub mod netns;
mod procsys;
pub mod spec;
pub mod store;
