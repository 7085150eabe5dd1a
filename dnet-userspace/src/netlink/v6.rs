//! IPv6 addresses and routes of dual-stack networks: the
//! IPv6 counterparts of the IPv4 requests of [`Netlink`].

use std::net::Ipv6Addr;

use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};

use super::{Netlink, NetlinkError, markers::RTPROT_DNET, req};

/// An IPv6 address of a link.
pub type Address6 = super::Address<Ipv6Addr>;

/// Whether `IFA_F_*` flags leave an address [`Address6::stable`].
pub(crate) fn stable6(flags: u32) -> bool {
    const TEMPORARY: u32 = 0x01;
    const DADFAILED: u32 = 0x08;
    const DEPRECATED: u32 = 0x20;
    const TENTATIVE: u32 = 0x40;
    flags & (TEMPORARY | DADFAILED | DEPRECATED | TENTATIVE) == 0
}

/// An IPv6 route, as dnet sees it.
pub type Route6 = super::Route<Ipv6Addr>;

impl Netlink {
    /// Adds (or replaces) `ip/prefix` on a link, usable at once (no
    /// duplicate address detection) and without the prefix's connected
    /// route (`IFA_F_NODAD | IFA_F_NOPREFIXROUTE`); with `dnet`, marked as
    /// dnet's (`IFA_PROTO` 213), so that a restart finds its own.
    pub async fn add_address6(
        &self,
        index: u32,
        ip: Ipv6Addr,
        prefix: u8,
        dnet: bool,
    ) -> Result<(), NetlinkError> {
        let mut r = self
            .handle
            .address()
            .add(index, ip.into(), prefix)
            .replace();
        r.message_mut().attributes.push(AddressAttribute::Flags(
            AddressFlags::Nodad | AddressFlags::Noprefixroute,
        ));
        if dnet {
            r.message_mut()
                .attributes
                .push(AddressAttribute::Protocol(AddressProtocol::Other(
                    RTPROT_DNET,
                )));
        }
        r.execute()
            .await
            .map_err(req(format!("add address {ip}/{prefix}")))
    }

    /// Removes an IPv6 address; a missing one is not an error.
    pub async fn del_address6(
        &self,
        index: u32,
        ip: Ipv6Addr,
        prefix: u8,
    ) -> Result<(), NetlinkError> {
        self.address_del(AddressMessage::default(), index, ip, prefix)
            .await
    }

    /// IPv6 addresses of a link (or of every link).
    pub async fn addresses6(&self, index: Option<u32>) -> Result<Vec<Address6>, NetlinkError> {
        self.addresses_of(index).await
    }

    /// IPv6 routes of every table.
    pub async fn routes6(&self) -> Result<Vec<Route6>, NetlinkError> {
        self.routes_of().await
    }
}

#[cfg(test)]
mod stable_tests {
    #[test]
    fn nat66_never_takes_a_temporary_deprecated_tentative_or_failed_address() {
        assert!(super::stable6(0));
        assert!(super::stable6(0x80), "permanent");
        assert!(
            super::stable6(0x100),
            "managetempaddr: the stable one privacy derives from"
        );
        for f in [0x01, 0x08, 0x20, 0x40, 0x80 | 0x20] {
            assert!(!super::stable6(f), "{f:#x}");
        }
    }
}
