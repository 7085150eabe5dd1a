//! The none driver: the container's namespace has only `lo` (made up by
//! `netns::create`).

use async_trait::async_trait;

use super::{Attachment, Caps, Ctx, Driver, check_options};
use crate::{
    error::{Error, Result},
    model::{Network, State},
};

pub struct NoneDriver;

#[async_trait]
impl Driver for NoneDriver {
    fn caps(&self) -> Caps {
        Caps {
            exclusive: true,
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
