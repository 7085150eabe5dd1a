//! What Docker does not send the driver, learned from dockerd's own API
//! (`GET /networks/{id}` on its socket, `dnet daemon --docker-api-socket`):
//! the network's name, whose IPAM hands out its addresses, and the range
//! Docker's IPAM hands them out from (`--ip-range`).
//!
//! Never from inside a plugin callback: dockerd may hold its own locks
//! while it waits for the driver (a callback that calls back deadlocks).
//! A background task asks instead, once CreateNetwork has answered (the
//! handler wakes it) and at start for the Docker networks the state knows.
//! A network Docker does not show yet (its creation still under way) is
//! asked again, a second apart at first, then less often.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::engine::Engine;

/// Woken by CreateNetwork once it has answered (the task asks then).
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// How long one question to dockerd may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Tries a second apart for a network Docker does not show yet; then a
/// try every [`SLOW_RETRY`].
const FAST_TRIES: u32 = 30;
const SLOW_RETRY: Duration = Duration::from_secs(30);

/// Tells the task a network was just made (called after the handler's
/// work, never waiting on Docker).
pub fn network_made() {
    WAKE.notify_one();
}

/// What `GET /networks/{id}` says that dnet keeps.
#[derive(Debug, Default, Deserialize)]
struct Inspect {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "IPAM", default)]
    ipam: InspectIpam,
}

#[derive(Debug, Default, Deserialize)]
struct InspectIpam {
    #[serde(rename = "Driver", default)]
    driver: String,
    #[serde(rename = "Config", default)]
    config: Option<Vec<InspectPool>>,
}

#[derive(Debug, Default, Deserialize)]
struct InspectPool {
    #[serde(rename = "IPRange", default)]
    ip_range: String,
}

impl Inspect {
    /// The IPv4 range Docker's IPAM hands addresses out from, if one was
    /// given (`--ip-range`).
    fn ip_range(&self) -> Option<ipnetwork::Ipv4Network> {
        self.ipam
            .config
            .iter()
            .flatten()
            .find_map(|p| p.ip_range.parse().ok())
    }
}

/// dockerd's answer for a network: `None` if it does not know it.
async fn inspect(socket: &Path, id: &str) -> anyhow::Result<Option<Inspect>> {
    let ask = async {
        let stream = tokio::net::UnixStream::connect(socket).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = Request::get(format!("/networks/{id}"))
            .header("host", "docker")
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        match status {
            StatusCode::OK => Ok(Some(serde_json::from_slice(&body)?)),
            StatusCode::NOT_FOUND => Ok(None),
            s => anyhow::bail!("{s}: {}", String::from_utf8_lossy(&body).trim()),
        }
    };
    tokio::time::timeout(ASK_TIMEOUT, ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {ASK_TIMEOUT:?}"))?
}

/// Asks dockerd at `socket`, for the engine's lifetime, about the Docker
/// networks dnet has not learned yet. `driver` is the name Docker knows
/// dnet by (its plugin socket's file name): a network whose IPAM driver is
/// that one has dnet's addresses.
pub fn spawn(engine: &Arc<Engine>, socket: PathBuf, driver: String) {
    let weak = Arc::downgrade(engine);
    tokio::spawn(async move {
        // Docker network ids learned, and tries of those not yet.
        let mut learned: Vec<String> = Vec::new();
        let mut tries: BTreeMap<String, u32> = BTreeMap::new();
        let mut warned = false;
        loop {
            let Some(engine) = weak.upgrade() else { break };
            let known = engine.runtime_networks("docker").await;
            learned.retain(|id| known.iter().any(|rt| &rt.id == id));
            let todo: Vec<_> = known
                .into_iter()
                .filter(|rt| !learned.contains(&rt.id))
                .collect();
            tries.retain(|id, _| todo.iter().any(|rt| &rt.id == id));
            for rt in &todo {
                match inspect(&socket, &rt.id).await {
                    Ok(Some(i)) => {
                        let ours = i.ipam.driver == driver;
                        match engine
                            .learn_runtime_network(rt, &i.name, ours, i.ip_range())
                            .await
                        {
                            Ok(()) => {}
                            Err(e) => tracing::warn!(
                                network = %rt.id,
                                "Docker's name {:?}: {e}",
                                i.name
                            ),
                        }
                        learned.push(rt.id.clone());
                        tries.remove(&rt.id);
                        warned = false;
                    }
                    Ok(None) => *tries.entry(rt.id.clone()).or_default() += 1,
                    Err(e) => {
                        *tries.entry(rt.id.clone()).or_default() += 1;
                        if !warned {
                            tracing::warn!(
                                socket = %socket.display(),
                                "cannot ask dockerd about its networks (their names stay docker-ID; --docker-api-socket): {e:#}"
                            );
                            warned = true;
                        }
                    }
                }
            }
            drop(engine);
            let wait = match tries.values().min() {
                Some(&n) if n < FAST_TRIES => Duration::from_secs(1),
                Some(_) => SLOW_RETRY,
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                _ = WAKE.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_network_inspect_gives_name_ipam_driver_and_range() {
        // Docker 20.10's `GET /networks/ID`, trimmed.
        let i: Inspect = serde_json::from_str(
            r#"{"Name":"lan","Id":"3f1c","Driver":"dnet","EnableIPv6":false,
                "IPAM":{"Driver":"default","Options":{},"Config":[
                  {"Subnet":"198.18.0.0/24","IPRange":"198.18.0.64/26","Gateway":"198.18.0.1"}]},
                "Containers":{},"Options":{"driver":"macvlan"}}"#,
        )
        .unwrap();
        assert_eq!(i.name, "lan");
        assert_eq!(i.ipam.driver, "default");
        assert_eq!(i.ip_range(), Some("198.18.0.64/26".parse().unwrap()));
        // No range, no config (`"Config": null`).
        let i: Inspect = serde_json::from_str(
            r#"{"Name":"n","IPAM":{"Driver":"dnet","Config":[{"Subnet":"10.0.0.0/24"}]}}"#,
        )
        .unwrap();
        assert_eq!((i.ipam.driver.as_str(), i.ip_range()), ("dnet", None));
        let i: Inspect = serde_json::from_str(r#"{"Name":"n","IPAM":{"Config":null}}"#).unwrap();
        assert_eq!(i.ip_range(), None);
    }
}
