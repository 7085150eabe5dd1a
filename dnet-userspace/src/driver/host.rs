//! The host driver: the container shares the daemon's network namespace, so
//! there is no endpoint, no address and nothing to make.

use async_trait::async_trait;

use super::{Caps, Ctx, Driver, check_options};
use crate::{
    error::Result,
    model::{Network, State},
};

pub struct Host;

#[async_trait]
impl Driver for Host {
    fn caps(&self) -> Caps {
        Caps {
            exclusive: true,
            host_netns: true,
            ..Caps::default()
        }
    }
    async fn validate(&self, _ctx: &Ctx, _state: &State, net: &mut Network) -> Result<()> {
        check_options(net, &[])
    }
}
