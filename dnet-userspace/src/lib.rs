//! dnet's control plane: the daemon, the CLI and everything between them.

pub mod datapath;
pub mod ipam;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod spec;
pub mod store;
