//! The macvlan driver (its own issue): not built yet.

use async_trait::async_trait;

use super::{Attachment, Ctx, Driver};
use crate::{
    error::{Error, Result},
    model::{Network, State},
};

pub struct Macvlan;

#[async_trait]
impl Driver for Macvlan {
    async fn validate(&self, _ctx: &Ctx, _state: &State, _net: &Network) -> Result<()> {
        Err(Error::Invalid(
            "the macvlan driver is not available yet".into(),
        ))
    }
    async fn create_network(&self, _ctx: &mut Ctx, _net: &Network) -> Result<()> {
        Err(Error::Invalid(
            "the macvlan driver is not available yet".into(),
        ))
    }
    async fn delete_network(&self, _ctx: &mut Ctx, _net: &Network) -> Vec<Error> {
        Vec::new()
    }
    async fn network_ok(&self, _ctx: &Ctx, _net: &Network) -> bool {
        true
    }
    async fn attach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Result<()> {
        Err(Error::Invalid(
            "the macvlan driver is not available yet".into(),
        ))
    }
    async fn detach(&self, _ctx: &mut Ctx, _a: &Attachment<'_>) -> Vec<Error> {
        Vec::new()
    }
    async fn endpoint_ok(&self, _ctx: &Ctx, _a: &Attachment<'_>) -> bool {
        true
    }
}
