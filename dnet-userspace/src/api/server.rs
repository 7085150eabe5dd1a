//! The API server: axum over the daemon's Unix socket.

use std::{future::Future, path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::Request,
    extract::{
        ConnectInfo, Path as UrlPath, Query, State, connect_info::Connected,
        rejection::JsonRejection,
    },
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;

use super::{
    AttachCheck, AttachCollect, AttachRequest, ConnectRequest, ContainerCreate, DetachRequest,
    DisconnectRequest, ErrorBody, NetworkCreate,
};
use crate::{engine::Engine, error::Error};

/// An engine error as an HTTP response.
struct ApiError(Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(Error::Invalid(format!(
            "bad request body: {}",
            r.body_text()
        )))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("{}", self.0);
        }
        (
            status,
            Json(ErrorBody {
                message: self.0.to_string(),
            }),
        )
            .into_response()
    }
}

type Api<T> = Result<Json<T>, ApiError>;
type Engine_ = State<Arc<Engine>>;

/// The routes, over an engine.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/v1/info", get(info))
        .route("/v1/networks", get(networks).post(create_network))
        .route("/v1/networks/{name}", get(network).delete(remove_network))
        .route("/v1/networks/{name}/connect", post(connect))
        .route("/v1/networks/{name}/disconnect", post(disconnect))
        .route("/v1/containers", get(containers).post(create_container))
        .route(
            "/v1/containers/{name}",
            get(container).delete(remove_container),
        )
        .route("/v1/attach", post(attach))
        .route("/v1/attach/check", post(attach_check))
        .route("/v1/attach/collect", post(attach_collect))
        .route("/v1/detach", post(detach))
        .route("/v1/stats", get(stats))
        .route("/v1/conntrack", get(conntrack).delete(flush_conntrack))
        .fallback(|| async {
            ApiError(Error::NotFound(
                "no such API path (this daemon serves /v1/...)".into(),
            ))
        })
        .with_state(engine)
        .layer(axum::middleware::from_fn(to_completion))
}

/// Runs a request's handler in a task of its own, so that a client hanging
/// up (Ctrl-C, a runtime's timeout) never cancels an operation half-way: a
/// dropped handler would leave a half-made link, map entry or state write
/// (the state's temporary file is written on another thread while the
/// kernel objects are made). The answer of a request nobody waits for is
/// dropped; the operation itself completes or undoes itself as usual.
pub(crate) async fn to_completion(req: Request, next: Next) -> Response {
    match tokio::spawn(next.run(req)).await {
        Ok(response) => response,
        Err(e) => {
            ApiError(Error::Conflict(format!("the request's task failed: {e}"))).into_response()
        }
    }
}

/// Binds the socket in a fresh 0700 folder beside `socket`, sets its mode
/// to 0660 there and renames it into place: it is never reachable by others
/// with a wider mode, not even for an instant.
pub(crate) fn bind_private(socket: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let dir = socket.parent().unwrap_or(Path::new("."));
    let name = socket
        .file_name()
        .ok_or_else(|| std::io::Error::other("the socket path has no file name"))?;
    let private = dir.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let made = (|| {
        let tmp = private.join("s");
        let listener = tokio::net::UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))?;
        std::fs::rename(&tmp, socket)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    made
}

/// Serves the API on `socket` until `shutdown` completes.
pub async fn serve(
    engine: Arc<Engine>,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = bind_private(socket)?;
    tracing::info!(socket = %socket.display(), "API listening");
    axum::serve(
        listener,
        router(engine).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn info(State(e): Engine_) -> Api<super::Info> {
    Ok(Json(e.info().await))
}

async fn networks(State(e): Engine_) -> Api<Vec<super::NetworkView>> {
    Ok(Json(e.networks().await))
}

async fn create_network(
    State(e): Engine_,
    body: Result<Json<NetworkCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<super::NetworkView>), ApiError> {
    let Json(req) = body?;
    Ok((StatusCode::CREATED, Json(e.create_network(req).await?)))
}

async fn network(State(e): Engine_, UrlPath(name): UrlPath<String>) -> Api<super::NetworkView> {
    Ok(Json(e.network(&name).await?))
}

async fn remove_network(
    State(e): Engine_,
    UrlPath(name): UrlPath<String>,
) -> Result<StatusCode, ApiError> {
    e.remove_network(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn connect(
    State(e): Engine_,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<ConnectRequest>, JsonRejection>,
) -> Api<super::ContainerView> {
    let Json(req) = body?;
    Ok(Json(e.connect(&name, req).await?))
}

async fn disconnect(
    State(e): Engine_,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<DisconnectRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body?;
    e.disconnect(&name, req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn attach(
    State(e): Engine_,
    body: Result<Json<AttachRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<super::AttachResponse>), ApiError> {
    let Json(req) = body?;
    let (resp, created) = e.attach_created(req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(resp)))
}

async fn attach_check(
    State(e): Engine_,
    body: Result<Json<AttachCheck>, JsonRejection>,
) -> Api<super::AttachResponse> {
    let Json(req) = body?;
    Ok(Json(e.attach_check(req).await?))
}

async fn attach_collect(
    State(e): Engine_,
    body: Result<Json<AttachCollect>, JsonRejection>,
) -> Api<super::Collected> {
    let Json(req) = body?;
    Ok(Json(e.attach_collect(req).await?))
}

async fn detach(
    State(e): Engine_,
    body: Result<Json<DetachRequest>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(req) = body?;
    e.detach(req).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn containers(State(e): Engine_) -> Api<Vec<super::ContainerView>> {
    Ok(Json(e.containers().await))
}

/// The process at the other end of an API connection, as the kernel tells
/// it (`SO_PEERCRED`), not as a request claims.
#[derive(Clone, Copy, Debug)]
struct Peer {
    pid: Option<u32>,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::UnixListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        let pid = stream
            .io()
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        Peer { pid }
    }
}

async fn create_container(
    State(e): Engine_,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<ContainerCreate>, JsonRejection>,
) -> Result<(StatusCode, Json<super::ContainerView>), ApiError> {
    let Json(mut req) = body?;
    // A foreground container is owned by the process that asked for it:
    // the kernel names it, so a client cannot tie a container's life to
    // another process.
    if req.owner_pid.is_some() {
        req.owner_pid = Some(peer.pid.ok_or_else(|| {
            ApiError(Error::Invalid(
                "the API connection's peer process is unknown (SO_PEERCRED)".into(),
            ))
        })?);
    }
    Ok((StatusCode::CREATED, Json(e.create_container(req).await?)))
}

async fn container(State(e): Engine_, UrlPath(name): UrlPath<String>) -> Api<super::ContainerView> {
    Ok(Json(e.container(&name).await?))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove_container(
    State(e): Engine_,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    e.remove_container(&name, q.force).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn stats(State(e): Engine_) -> Api<super::StatsView> {
    Ok(Json(e.stats().await?))
}

async fn conntrack(State(e): Engine_) -> Api<Vec<super::FlowView>> {
    Ok(Json(e.conntrack().await?))
}

#[derive(serde::Serialize)]
struct Flushed {
    entries: usize,
}

async fn flush_conntrack(State(e): Engine_) -> Api<Flushed> {
    Ok(Json(Flushed {
        entries: e.flush_conntrack().await?,
    }))
}
