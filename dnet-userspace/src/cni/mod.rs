//! `dnet-cni`: the CNI plugin. It speaks CNI (spec 0.4.0, 1.0.0, 1.1.0) on
//! stdin, stdout and the `CNI_*` environment, and asks the daemon over its
//! API socket, so the endpoint and its eBPF exist before ADD returns. It
//! makes no link and writes no map itself.
//!
//! Results and errors go to stdout (the runtime reads nothing else); logs
//! go to stderr.

mod conf;
mod error;
mod result;

use std::{io::Read as _, process::ExitCode};

pub use conf::{DEFAULT_SOCKET, SUPPORTED_VERSIONS};
use conf::{Env, NetConf, at_least_1_1};
pub use error::CniError;
use error::{
    DAEMON_REFUSED, INCOMPATIBLE_VERSION, INVALID_ENV, IO_FAILURE, NOT_AVAILABLE, TRY_AGAIN_LATER,
    UNKNOWN_CONTAINER, cni_err,
};
use serde_json::{Value, json};

use crate::{
    api::{
        AttachCheck, AttachCollect, AttachRequest, AttachResponse, AttachTarget, DetachRequest,
        NetworkView,
        client::{Client, ClientError, segment},
    },
    model::{MacAddr, RuntimeRef},
};

/// The runtime name in the container records this plugin makes.
pub const RUNTIME: &str = "cni";

/// The plugin's entry point.
pub fn main() -> ExitCode {
    let env = Env::from_vars(std::env::vars());
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let version = serde_json::from_slice::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_owned))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.len() - 1].to_owned());
    let outcome = match read {
        Ok(_) => run(&env, &stdin, &version),
        Err(e) => Err(cni_err!(IO_FAILURE, "reading stdin: {e}")),
    };
    match outcome {
        Ok(Some(v)) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dnet-cni {}: {e}", env.command);
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// Runs one command; `Some` is the JSON to print.
fn run(env: &Env, stdin: &[u8], version: &str) -> Result<Option<Value>, CniError> {
    if env.command == "VERSION" {
        // Fast and without the daemon: libcni asks on every use.
        return Ok(Some(json!({
            "cniVersion": version,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = NetConf::parse(stdin)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cni_err!(IO_FAILURE, "cannot start the runtime: {e}"))?;
    let client = Client::new(&conf.socket());
    rt.block_on(async {
        match env.command.as_str() {
            "ADD" => add(env, &conf, &client).await.map(Some),
            "DEL" => del(env, &conf, &client).await.map(|()| None),
            "CHECK" => check(env, &conf, &client).await.map(|()| None),
            "STATUS" => status(&conf, &client).await.map(|()| None),
            "GC" => gc(&conf, &client).await.map(|()| None),
            "" => Err(cni_err!(INVALID_ENV, "CNI_COMMAND is not set")),
            other => Err(cni_err!(
                INVALID_ENV,
                "unknown CNI_COMMAND {other:?} (ADD, DEL, CHECK, STATUS, GC, VERSION)"
            )),
        }
    })
}

/// A client error as a CNI error: the daemon unreachable is `unreachable`
/// (try again later, or not available), its refusal 100 with its message.
fn daemon_err(e: ClientError, unreachable: u32) -> CniError {
    match e {
        ClientError::Connect { .. } => cni_err!(unreachable, "{e}"),
        ClientError::Api { status, message } => {
            cni_err!(DAEMON_REFUSED, "{message}").with_details(format!("dnet API status {status}"))
        }
        ClientError::Protocol(_) => cni_err!(unreachable, "{e}"),
    }
}

fn runtime_ref(env: &Env) -> Result<RuntimeRef, CniError> {
    Ok(RuntimeRef {
        runtime: RUNTIME.into(),
        id: env.container_id()?.to_owned(),
    })
}

async fn add(env: &Env, conf: &NetConf, client: &Client) -> Result<Value, CniError> {
    let network = conf.network()?;
    let netns = env.netns()?;
    let ifname = env.ifname()?;
    conf.refuse_bandwidth()?;
    let (ip, ip6) = conf.static_ips()?;
    let mut req = AttachRequest {
        network: network.to_owned(),
        target: AttachTarget::Netns {
            path: netns.to_owned(),
        },
        ifname: Some(ifname.to_owned()),
        ip,
        ip6,
        mac: conf.runtime_config.mac.clone().filter(|m| !m.is_empty()),
        publish: conf.publish()?,
        aliases: Vec::new(),
        // A name dnet does not take (a container id longer than 64
        // characters, say) is left to dnet.
        name: env.display_name().filter(|n| valid_name(n)),
        runtime: Some(runtime_ref(env)?),
    };
    let r: AttachResponse = match client.post("/v1/attach", &req).await {
        // The name is taken (a pod made again before its old sandbox
        // went): the daemon names it.
        Err(ClientError::Api { status, message })
            if status == 409 && message.starts_with("container name") && req.name.is_some() =>
        {
            eprintln!("dnet-cni ADD: {message}; letting dnet name the container");
            req.name = None;
            client.post("/v1/attach", &req).await
        }
        other => other,
    }
    .map_err(|e| daemon_err(e, TRY_AGAIN_LATER))?;
    let host_mac = r.host_ifname.as_deref().and_then(link_mac);
    Ok(result::add_result(&conf.cni_version, &r, netns, host_mac))
}

/// Whether dnet takes `name` for a runtime's container: a container name,
/// or a pod's `NAMESPACE/NAME`.
fn valid_name(name: &str) -> bool {
    let ok = |n: &str| crate::spec::validate_name("container", n).is_ok();
    match name.split_once('/') {
        Some((ns, pod)) => ok(ns) && ok(pod),
        None => ok(name),
    }
}

/// The MAC of a link in this namespace (the daemon's: runtimes call
/// plugins from the host's namespace).
fn link_mac(name: &str) -> Option<MacAddr> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    addrs
        .filter(|a| a.interface_name == name)
        .find_map(|a| a.address?.as_link_addr()?.addr())
        .map(MacAddr)
}

async fn del(env: &Env, conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let network = conf.network()?;
    let req = DetachRequest {
        network: Some(network.to_owned()),
        container: None,
        runtime: Some(runtime_ref(env)?),
        // Already gone (namespace, endpoint, both; a repeated DEL) is done.
        missing_ok: true,
    };
    client
        .post_empty("/v1/detach", &req)
        .await
        .map_err(|e| daemon_err(e, TRY_AGAIN_LATER))
}

async fn check(env: &Env, conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let network = conf.network()?;
    let netns = env.netns()?;
    let ifname = env.ifname()?;
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        cni_err!(
            error::INVALID_CONFIG,
            "CHECK needs prevResult in the network configuration"
        )
    })?;
    let req = AttachCheck {
        runtime: runtime_ref(env)?,
        network: network.to_owned(),
    };
    let r: AttachResponse = client
        .post("/v1/attach/check", &req)
        .await
        .map_err(|e| match e {
            ClientError::Api {
                status: 404,
                message,
            } => cni_err!(UNKNOWN_CONTAINER, "{message}"),
            e => daemon_err(e, TRY_AGAIN_LATER),
        })?;
    result::check_against(prev, &r, ifname, netns)
}

fn need_1_1(conf: &NetConf, cmd: &str) -> Result<(), CniError> {
    if at_least_1_1(&conf.cni_version) {
        Ok(())
    } else {
        Err(cni_err!(
            INCOMPATIBLE_VERSION,
            "{cmd} needs cniVersion 1.1.0 (the config says {})",
            conf.cni_version
        ))
    }
}

async fn status(conf: &NetConf, client: &Client) -> Result<(), CniError> {
    need_1_1(conf, "STATUS")?;
    let network = conf.network()?;
    client
        .get::<NetworkView>(&format!("/v1/networks/{}", segment(network)))
        .await
        .map(|_| ())
        .map_err(|e| match e {
            ClientError::Api { message, .. } => cni_err!(NOT_AVAILABLE, "{message}"),
            e => cni_err!(NOT_AVAILABLE, "{e}"),
        })
}

async fn gc(conf: &NetConf, client: &Client) -> Result<(), CniError> {
    need_1_1(conf, "GC")?;
    let network = conf.network()?;
    let keep = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| a.container_id.clone())
        .collect();
    let req = AttachCollect {
        runtime: RUNTIME.into(),
        network: Some(network.to_owned()),
        keep,
    };
    let r: crate::api::Collected = match client.post("/v1/attach/collect", &req).await {
        // No such network: nothing of this runtime is attached to it.
        Err(ClientError::Api {
            status: 404,
            message,
        }) => {
            eprintln!("dnet-cni GC: {message}: nothing to collect");
            return Ok(());
        }
        r => r.map_err(|e| daemon_err(e, TRY_AGAIN_LATER))?,
    };
    if !r.detached.is_empty() {
        eprintln!(
            "dnet-cni GC: detached {} from {network}",
            r.detached.join(", ")
        );
    }
    Ok(())
}
