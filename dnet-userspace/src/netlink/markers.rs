//! How dnet marks what it makes in the kernel, so that every start finds
//! exactly its own and removes what the state no longer holds (see
//! `engine::reconcile`): link aliases, the label of gateway addresses, and
//! the protocol of its routes and addresses. The one place they are spelled.

use netlink_packet_route::route::RouteProtocol;

/// The protocol number of dnet's routes (`ip route` shows `proto 213`) and
/// addresses (`IFA_PROTO`).
pub const RTPROT_DNET: u8 = 213;

/// The label of the bridge networks' gateway addresses on `lo`.
pub const GATEWAY_LABEL: &str = "lo:dnet";

/// What every alias dnet gives a link starts with.
const ALIAS: &str = "dnet:";
/// A bridge endpoint's host-side veth: `dnet:ep:CONTAINER-ID`.
const ENDPOINT: &str = "dnet:ep:";
/// A macvlan network's own interface on its parent (`host_access`):
/// `dnet:net:NETWORK-ID`.
const NETWORK: &str = "dnet:net:";
/// A macvlan child: `dnet:mv:NETWORK-ID`.
const MACVLAN_CHILD: &str = "dnet:mv:";

/// The protocol dnet's routes carry.
pub fn route_protocol() -> RouteProtocol {
    RouteProtocol::Other(RTPROT_DNET)
}

/// Whether a route is dnet's.
pub fn is_dnet_route(protocol: RouteProtocol) -> bool {
    protocol == route_protocol()
}

/// Whether a link alias is one dnet gives.
pub fn is_dnet_alias(alias: &str) -> bool {
    alias.starts_with(ALIAS)
}

/// The alias of a bridge endpoint's host-side veth.
pub fn endpoint_alias(container_id: &str) -> String {
    format!("{ENDPOINT}{container_id}")
}

/// Whether a link alias is a bridge endpoint's.
pub fn is_endpoint_alias(alias: &str) -> bool {
    alias.starts_with(ENDPOINT)
}

/// The alias of a macvlan network's own interface on its parent.
pub fn network_alias(network_id: &str) -> String {
    format!("{NETWORK}{network_id}")
}

/// The network whose own interface carries `alias`, if it is one.
pub fn network_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(NETWORK)
}

/// The alias of a macvlan child.
pub fn child_alias(network_id: &str) -> String {
    format!("{MACVLAN_CHILD}{network_id}")
}

/// The network of the macvlan child that carries `alias`, if it is one.
pub fn network_of_child_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix(MACVLAN_CHILD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_alias_is_dnet_s_and_tells_its_kind_and_id() {
        let ep = endpoint_alias("c1");
        assert_eq!(ep, "dnet:ep:c1");
        assert!(is_endpoint_alias(&ep) && is_dnet_alias(&ep));
        assert_eq!(network_of_alias(&ep), None);
        let net = network_alias("n1");
        assert_eq!(net, "dnet:net:n1");
        assert_eq!(network_of_alias(&net), Some("n1"));
        assert!(!is_endpoint_alias(&net) && is_dnet_alias(&net));
        let child = child_alias("n1");
        assert_eq!(child, "dnet:mv:n1");
        assert_eq!(network_of_child_alias(&child), Some("n1"));
        assert_eq!(network_of_alias(&child), None);
        assert!(!is_dnet_alias("eth0") && !is_dnet_alias("lo:dnet"));
    }

    #[test]
    fn dnet_s_routes_are_told_by_their_protocol() {
        assert!(is_dnet_route(RouteProtocol::Other(213)));
        assert!(!is_dnet_route(RouteProtocol::Boot));
        assert!(!is_dnet_route(RouteProtocol::Kernel));
    }
}
