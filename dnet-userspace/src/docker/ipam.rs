//! `IpamDriver.*`: Docker's IPAM calls (`--ipam-driver NAME`) answered by
//! dnet's address rules, so that dnet alone picks subnets and addresses.
//! A pool's id is its subnet.

use std::collections::BTreeMap;

use super::protocol::{AddressAnswer, AddressRequest, Empty, PoolAnswer, RequestPool};
use crate::{engine::Engine, error::Result};

/// What Docker puts in `Options` when it asks for the gateway.
const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
const GATEWAY: &str = "com.docker.network.gateway";

pub async fn request_pool(e: &Engine, r: RequestPool) -> Result<PoolAnswer> {
    let subnet = e
        .request_pool(
            (!r.pool.is_empty()).then_some(r.pool.as_str()),
            (!r.sub_pool.is_empty()).then_some(r.sub_pool.as_str()),
            r.v6,
        )
        .await?;
    Ok(PoolAnswer {
        pool_id: subnet.to_string(),
        pool: subnet.to_string(),
        data: BTreeMap::new(),
    })
}

pub async fn release_pool(e: &Engine, r: AddressRequest) -> Result<Empty> {
    e.release_pool(&r.pool_id).await?;
    Ok(Empty {})
}

pub async fn request_address(e: &Engine, r: AddressRequest) -> Result<AddressAnswer> {
    let gateway = r.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY);
    let (ip, prefix) = e
        .request_address(
            &r.pool_id,
            (!r.address.is_empty()).then_some(r.address.as_str()),
            gateway,
        )
        .await?;
    Ok(AddressAnswer {
        address: format!("{ip}/{prefix}"),
        data: BTreeMap::new(),
    })
}

pub async fn release_address(e: &Engine, r: AddressRequest) -> Result<Empty> {
    e.release_address(&r.pool_id, &r.address).await?;
    Ok(Empty {})
}
