//! The none driver: the container's namespace has only `lo` (made up by
//! `netns::create`).

use async_trait::async_trait;

use super::{Caps, Ctx, Driver, check_options};
use crate::{
    error::Result,
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
}
