//! The host driver: the container shares the daemon's network namespace, so
//! there is no endpoint, no address and nothing to make.

use async_trait::async_trait;

use super::{Attachment, Caps, Ctx, Driver, check_options};
use crate::{
    error::{Error, Result},
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
    async fn create_network(&self, _ctx: &mut Ctx, _net: &Network) -> Result<()> {
        Ok(())
    }
    async fn delete_network(&self, _ctx: &mut Ctx, _net: &Network) -> Vec<Error> {
        Vec::new()
    }
    async fn network_ok(&self, _ctx: &Ctx, _net: &Network) -> bool {
        true
    }
    async fn attach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Result<()> {
        Ok(())
    }
    async fn detach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Vec<Error> {
        Vec::new()
    }
    async fn endpoint_ok(&self, _ctx: &Ctx, _a: &Attachment<'_>) -> bool {
        true
    }
}
