//! Docker's remote network driver, served by the daemon on its own Unix
//! socket (`/run/docker/plugins/NAME.sock`; NAME is the driver name of
//! `docker network create -d NAME`), over the same engine as the API: one
//! state, one lock, the shared attach path.
//!
//! The same socket serves Docker's IPAM driver (`--ipam-driver NAME`), so
//! that dnet alone picks subnets and addresses.
//!
//! Wire rules Docker 20.10 holds the driver to: every answer is status 200,
//! an error is `{"Err": "..."}` (network driver) or `{"Error": "..."}`
//! (IPAM); bodies may be empty; the `Host` header may be empty. Handlers
//! never call back into Docker.

mod ipam;
mod learn;
mod network;
pub mod protocol;

use std::{future::Future, path::Path, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
};
use serde::Serialize;

use self::protocol::{
    Activate, AddressSpaces, Capabilities, Empty, ErrAnswer, IpamCapabilities, IpamErrAnswer,
};
use crate::{engine::Engine, error::Error};

pub use learn::spawn as spawn_learner;
pub use network::docker_ref;

/// The socket's default path: the driver is called `dnet`.
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/dnet.sock";

/// dockerd's own API socket, where dnet learns what the plugin protocol
/// does not carry (see [`learn`]).
pub const DEFAULT_API_SOCKET: &str = "/var/run/docker.sock";

/// A handler's result as Docker wants it: 200 either way, the error under
/// `Err` (network driver) or `Error` (IPAM).
fn reply<T: Serialize>(call: &str, r: Result<T, Error>) -> Response {
    match r {
        Ok(t) => Json(t).into_response(),
        Err(e) => {
            tracing::warn!("docker {call}: {e}");
            if call.starts_with("IpamDriver.") {
                Json(IpamErrAnswer {
                    error: e.to_string(),
                })
                .into_response()
            } else {
                Json(ErrAnswer { err: e.to_string() }).into_response()
            }
        }
    }
}

type St = State<Arc<Engine>>;

/// A route per call: the body parsed (empty is the default request), the
/// handler run on the engine, its answer or error written Docker's way.
macro_rules! calls {
    ($router:expr, $($path:literal => $f:path),* $(,)?) => {
        $router
        $(
            .route(concat!("/", $path), post(|State(e): St, body: Bytes| async move {
                let start = std::time::Instant::now();
                let r = async {
                    let req = protocol::parse(&body).map_err(Error::Invalid)?;
                    $f(&e, req).await
                };
                let r = r.await;
                tracing::debug!(call = $path, took_us = start.elapsed().as_micros() as u64, "docker call");
                reply($path, r)
            }))
        )*
    };
}

/// The plugin's routes over an engine.
pub fn router(engine: Arc<Engine>) -> Router {
    let r = Router::new()
        .route(
            "/Plugin.Activate",
            post(|| async {
                Json(Activate {
                    implements: vec!["NetworkDriver", "IpamDriver"],
                })
            }),
        )
        .route(
            "/NetworkDriver.GetCapabilities",
            post(|| async {
                Json(Capabilities {
                    scope: "local",
                    connectivity_scope: "local",
                })
            }),
        )
        .route(
            "/NetworkDriver.DiscoverNew",
            post(|| async { Json(Empty {}) }),
        )
        .route(
            "/NetworkDriver.DiscoverDelete",
            post(|| async { Json(Empty {}) }),
        )
        .route(
            "/IpamDriver.GetCapabilities",
            post(|| async {
                Json(IpamCapabilities {
                    requires_mac_address: false,
                    requires_request_replay: false,
                })
            }),
        )
        .route(
            "/IpamDriver.GetDefaultAddressSpaces",
            post(|| async {
                Json(AddressSpaces {
                    local_default_address_space: "dnet-local",
                    global_default_address_space: "dnet-global",
                })
            }),
        );
    let r = calls!(r,
        "NetworkDriver.CreateNetwork" => network::create_network,
        "NetworkDriver.DeleteNetwork" => network::delete_network,
        "NetworkDriver.CreateEndpoint" => network::create_endpoint,
        "NetworkDriver.EndpointOperInfo" => network::endpoint_oper_info,
        "NetworkDriver.Join" => network::join,
        "NetworkDriver.Leave" => network::leave,
        "NetworkDriver.DeleteEndpoint" => network::delete_endpoint,
        "NetworkDriver.ProgramExternalConnectivity" => network::program_external_connectivity,
        "NetworkDriver.RevokeExternalConnectivity" => network::revoke_external_connectivity,
        "IpamDriver.RequestPool" => ipam::request_pool,
        "IpamDriver.ReleasePool" => ipam::release_pool,
        "IpamDriver.RequestAddress" => ipam::request_address,
        "IpamDriver.ReleaseAddress" => ipam::release_address,
    );
    r.fallback(|| async {
        (
            StatusCode::NOT_FOUND,
            Json(ErrAnswer {
                err: "dnet does not implement this plugin call".into(),
            }),
        )
    })
    .with_state(engine)
    .layer(axum::middleware::from_fn(crate::api::server::to_completion))
}

/// Opens the plugin's socket (its folder made if missing).
pub fn bind(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::api::server::bind_private(socket)
}

/// Serves the plugin on `listener` (bound at `socket`) until `shutdown`
/// completes, then removes the socket: a socket nobody answers on stalls
/// Docker.
pub async fn serve(
    engine: Arc<Engine>,
    listener: tokio::net::UnixListener,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(socket = %socket.display(), "Docker network driver listening");
    let r = axum::serve(listener, router(engine))
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = std::fs::remove_file(socket);
    r
}
