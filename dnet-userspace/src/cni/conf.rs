//! What the runtime hands the plugin: the network configuration on stdin
//! (with `runtimeConfig` for the declared capabilities and `prevResult`)
//! and the `CNI_*` environment.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::error::{
    CniError, DECODE, INCOMPATIBLE_VERSION, INVALID_CONFIG, INVALID_ENV, UNSUPPORTED_FIELD, cni_err,
};

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];

/// The API socket when the config names none.
pub const DEFAULT_SOCKET: &str = "/run/dnet/dnet.sock";

/// The plugin's network configuration. Keys it does not know are ignored
/// (the runtime adds its own, such as `capabilities`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    /// The dnet network to attach to (name or id).
    #[serde(default)]
    pub network: Option<String>,
    /// The daemon's API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC: the attachments the runtime still knows.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// `runtimeConfig`: what the declared capabilities carry.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMap>,
    #[serde(default)]
    pub ips: Vec<String>,
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub bandwidth: Option<Value>,
}

/// One `portMappings` entry: podman spells the keys `hostPort`, containerd
/// (Go field names) `HostPort`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct PortMap {
    #[serde(rename = "hostPort", alias = "HostPort")]
    pub host_port: u16,
    #[serde(rename = "containerPort", alias = "ContainerPort")]
    pub container_port: u16,
    #[serde(rename = "protocol", alias = "Protocol", default)]
    pub protocol: Option<String>,
    #[serde(rename = "hostIP", alias = "HostIP", alias = "hostIp", default)]
    pub host_ip: Option<String>,
}

/// One `cni.dev/valid-attachments` entry (its `ifname` does not matter:
/// dnet keys a runtime's attachments by container and network).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
}

/// The version a config asks for, checked.
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(cni_err!(
            INCOMPATIBLE_VERSION,
            "dnet-cni does not speak CNI version {v:?}"
        )
        .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))))
    }
}

/// Whether `v` is 1.1.0 or later (STATUS, GC).
pub fn at_least_1_1(v: &str) -> bool {
    v == "1.1.0"
}

impl NetConf {
    /// Parses stdin; a config that is not JSON, or not an object with a
    /// `cniVersion` this plugin speaks, fails.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin)
            .map_err(|e| cni_err!(DECODE, "cannot decode the network configuration: {e}"))?;
        check_version(&conf.cni_version)?;
        Ok(conf)
    }

    /// The dnet network, which the config must name.
    pub fn network(&self) -> Result<&str, CniError> {
        match self.network.as_deref() {
            Some(n) if !n.trim().is_empty() => Ok(n),
            _ => Err(cni_err!(
                INVALID_CONFIG,
                "the network configuration {:?} names no dnet network: add \"network\": \"NAME\"",
                self.name
            )),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }

    /// `-p` specs as `dnet run -p` takes them, from `portMappings`.
    pub fn publish(&self) -> Result<Vec<String>, CniError> {
        let maps = &self.runtime_config.port_mappings;
        // An all-addresses mapping's IPv6 twin (`::`) is covered by it:
        // dnet's all-addresses publish takes both families.
        let all_addresses =
            |m: &PortMap| matches!(m.host_ip.as_deref(), None | Some("" | "0.0.0.0"));
        let twin = |m: &PortMap| {
            m.host_ip.as_deref() == Some("::")
                && maps.iter().any(|o| {
                    all_addresses(o)
                        && (o.host_port, o.container_port) == (m.host_port, m.container_port)
                        && o.protocol
                            .as_deref()
                            .unwrap_or("tcp")
                            .eq_ignore_ascii_case(m.protocol.as_deref().unwrap_or("tcp"))
                })
        };
        maps.iter()
            .filter(|m| !twin(m))
            .map(|m| {
                let proto = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
                let proto = match proto.as_str() {
                    "" => "tcp",
                    "tcp" | "udp" => proto.as_str(),
                    other => {
                        return Err(cni_err!(
                            INVALID_CONFIG,
                            "portMappings: protocol {other:?} is not supported (tcp or udp)"
                        ));
                    }
                };
                if m.container_port == 0 {
                    return Err(cni_err!(
                        INVALID_CONFIG,
                        "portMappings: containerPort 0 is not a port"
                    ));
                }
                // An address publishes in its own family only, as `dnet
                // run -p` (the daemon refuses an IPv6 one on an IPv4-only
                // network).
                let host = match m.host_ip.as_deref() {
                    None | Some("") | Some("0.0.0.0") => String::new(),
                    Some(ip) => match ip.parse::<IpAddr>() {
                        Ok(IpAddr::V4(ip)) => format!("{ip}:"),
                        Ok(IpAddr::V6(ip)) => format!("[{ip}]:"),
                        Err(_) => {
                            return Err(cni_err!(
                                INVALID_CONFIG,
                                "portMappings: hostIP {ip:?} is not an IP address"
                            ));
                        }
                    },
                };
                Ok(format!(
                    "{host}{}:{}/{proto}",
                    m.host_port, m.container_port
                ))
            })
            .collect()
    }

    /// The static addresses asked for (`ips`), if any: one IPv4 and one
    /// IPv6 at most (the IPv6 one for a dual-stack network; the daemon
    /// refuses it elsewhere).
    pub fn static_ips(&self) -> Result<(Option<String>, Option<String>), CniError> {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in &self.runtime_config.ips {
            let addr = a.split_once('/').map_or(a.as_str(), |(ip, _)| ip);
            match addr.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(ip)) => v4.push(ip.to_string()),
                Ok(std::net::IpAddr::V6(ip)) => v6.push(ip.to_string()),
                Err(_) => {
                    return Err(cni_err!(INVALID_CONFIG, "ips: {a:?} is not an IP address"));
                }
            }
        }
        if v4.len() > 1 || v6.len() > 1 {
            return Err(cni_err!(
                INVALID_CONFIG,
                "ips: {} addresses asked, dnet gives one address per family per interface",
                v4.len() + v6.len()
            ));
        }
        Ok((v4.pop(), v6.pop()))
    }

    /// `bandwidth` is refused until dnet shapes traffic.
    pub fn refuse_bandwidth(&self) -> Result<(), CniError> {
        match &self.runtime_config.bandwidth {
            None | Some(Value::Null) => Ok(()),
            Some(Value::Object(m)) if m.is_empty() => Ok(()),
            Some(b) => Err(cni_err!(
                UNSUPPORTED_FIELD,
                "runtimeConfig.bandwidth = {b}: dnet does not shape traffic; remove the bandwidth capability or its limits"
            )),
        }
    }
}

/// The `CNI_*` environment.
#[derive(Clone, Debug, Default)]
pub struct Env {
    pub command: String,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// From `(name, value)` pairs (the process environment).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Env {
        let mut env = Env::default();
        for (k, v) in vars {
            let v = Some(v).filter(|v| !v.is_empty());
            match k.as_str() {
                "CNI_COMMAND" => env.command = v.unwrap_or_default(),
                "CNI_CONTAINERID" => env.container_id = v,
                "CNI_NETNS" => env.netns = v,
                "CNI_IFNAME" => env.ifname = v,
                "CNI_ARGS" => {
                    env.args = v
                        .unwrap_or_default()
                        .split(';')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                }
                _ => {}
            }
        }
        env
    }

    fn need<'a>(v: &'a Option<String>, name: &str, cmd: &str) -> Result<&'a str, CniError> {
        v.as_deref()
            .ok_or_else(|| cni_err!(INVALID_ENV, "{cmd} needs {name} in the environment"))
    }

    pub fn container_id(&self) -> Result<&str, CniError> {
        Self::need(&self.container_id, "CNI_CONTAINERID", &self.command)
    }

    pub fn netns(&self) -> Result<&str, CniError> {
        Self::need(&self.netns, "CNI_NETNS", &self.command)
    }

    pub fn ifname(&self) -> Result<&str, CniError> {
        let n = Self::need(&self.ifname, "CNI_IFNAME", &self.command)?;
        if n.len() > 15 {
            return Err(cni_err!(
                INVALID_ENV,
                "CNI_IFNAME {n:?} is longer than 15 characters"
            ));
        }
        Ok(n)
    }

    /// The name `dnet ps` shows: `K8S_POD_NAMESPACE/K8S_POD_NAME` when
    /// CNI_ARGS gives both, else the runtime's container id.
    pub fn display_name(&self) -> Option<String> {
        match (
            self.args.get("K8S_POD_NAMESPACE"),
            self.args.get("K8S_POD_NAME"),
        ) {
            (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => {
                Some(format!("{ns}/{pod}"))
            }
            _ => self.container_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: Value) -> NetConf {
        NetConf::parse(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn both_port_mapping_spellings_become_publish_specs() {
        let c = conf(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "dnet-cni", "network": "bridge",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "UDP", "HostIP": "198.18.0.2"},
                {"hostPort": 0, "containerPort": 443}
            ]},
            "unknownKey": {"ignored": true}
        }));
        assert_eq!(
            c.publish().unwrap(),
            ["8080:80/tcp", "198.18.0.2:5353:53/udp", "0:443/tcp"]
        );
    }

    #[test]
    fn ipv6_host_ips_publish_in_their_family() {
        let c = conf(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "dnet-cni", "network": "dual",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""},
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "::"},
                {"hostPort": 8081, "containerPort": 80, "hostIP": "::1"},
                {"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": "::"},
                {"hostPort": 8082, "containerPort": 80, "hostIP": "2001:2::2"}
            ]}
        }));
        assert_eq!(
            c.publish().unwrap(),
            [
                "8080:80/tcp",
                "[::1]:8081:80/tcp",
                "[::]:5353:53/udp",
                "[2001:2::2]:8082:80/tcp"
            ],
            "the all-addresses mapping's :: twin is covered by it"
        );
        let c = conf(serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "network": "dual",
            "runtimeConfig": {"portMappings": [
                {"hostPort": 8080, "containerPort": 80, "hostIP": "nonsense"}]}
        }));
        let e = c.publish().unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG);
        assert!(e.msg.contains("is not an IP address"), "{e}");
    }

    #[test]
    fn bad_configs_have_the_spec_codes() {
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, DECODE);
        assert_eq!(
            NetConf::parse(br#"{"cniVersion":"0.3.1","name":"n"}"#)
                .unwrap_err()
                .code,
            INCOMPATIBLE_VERSION
        );
        let c = conf(serde_json::json!({"cniVersion": "1.1.0", "name": "n"}));
        assert_eq!(c.network().unwrap_err().code, INVALID_CONFIG);
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "network": "x",
            "runtimeConfig": {"bandwidth": {"ingressRate": 1000}}}));
        let e = c.refuse_bandwidth().unwrap_err();
        assert_eq!(e.code, UNSUPPORTED_FIELD);
        assert!(e.msg.contains("bandwidth"), "{e}");
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "network": "x",
            "runtimeConfig": {"ips": ["fd00::5/64"]}}));
        assert_eq!(c.static_ips().unwrap(), (None, Some("fd00::5".into())));
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "network": "x",
            "runtimeConfig": {"ips": ["fd00::5/64", "fd00::6/64"]}}));
        assert_eq!(c.static_ips().unwrap_err().code, INVALID_CONFIG);
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "network": "x",
            "runtimeConfig": {"ips": ["nonsense"]}}));
        assert_eq!(c.static_ips().unwrap_err().code, INVALID_CONFIG);
        let c = conf(serde_json::json!({"cniVersion": "1.0.0", "network": "x",
            "runtimeConfig": {"ips": ["10.1.0.5/24"], "portMappings": [
                {"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]}}));
        assert_eq!(c.static_ips().unwrap(), (Some("10.1.0.5".into()), None));
        assert_eq!(c.publish().unwrap_err().code, INVALID_CONFIG);
    }

    #[test]
    fn the_display_name_is_the_pod_when_cni_args_give_it() {
        let env = |args: &str| {
            Env::from_vars([
                ("CNI_CONTAINERID".to_owned(), "abc123".to_owned()),
                ("CNI_ARGS".to_owned(), args.to_owned()),
            ])
        };
        assert_eq!(
            env("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0")
                .display_name()
                .as_deref(),
            Some("default/web-0")
        );
        assert_eq!(
            env("K8S_POD_NAME=web-0").display_name().as_deref(),
            Some("abc123")
        );
        assert_eq!(env("").display_name().as_deref(), Some("abc123"));
        let long = Env::from_vars([("CNI_IFNAME".to_owned(), "a".repeat(16))]);
        assert_eq!(long.ifname().unwrap_err().code, INVALID_ENV);
    }
}
