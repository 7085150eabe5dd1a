//! `NetworkDriver.*`: Docker's calls translated to the engine's, in
//! process. Docker knows networks and endpoints by its own ids, which dnet
//! keeps as runtime refs (`docker` + id); every handler is idempotent,
//! because dockerd retries a call whose connection failed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use serde_json::Value;

use super::protocol::{
    CreateEndpoint, CreateEndpointAnswer, CreateNetwork, Empty, EndpointRef, Interface,
    InterfaceName, JoinAnswer, NetworkRef, OperInfo, PortBinding,
};
use crate::{
    api::{AttachRequest, AttachTarget, DetachRequest, NetworkCreate},
    engine::{Engine, PortRequest},
    error::{Error, Result},
    invalid,
    model::RuntimeRef,
    not_found,
    spec::Proto,
};

const GENERIC: &str = "com.docker.network.generic";
const INTERNAL: &str = "com.docker.network.internal";
const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
const PORTMAP: &str = "com.docker.network.portmap";

/// How often, and how long apart, a CreateEndpoint that clashes with an
/// endpoint Docker may have dropped is tried again.
const COLLECT_TRIES: u32 = 10;
const COLLECT_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

/// `-o` keys Docker users write, and dnet's bridge option each sets.
const OPTION_MAP: &[(&str, &str)] = &[
    ("com.docker.network.driver.mtu", "mtu"),
    ("mtu", "mtu"),
    ("com.docker.network.bridge.enable_icc", "icc"),
    ("icc", "icc"),
];

/// `-o` keys of a `-o driver=macvlan` network (Docker's own macvlan
/// driver's), and dnet's macvlan option each sets.
const MACVLAN_OPTION_MAP: &[(&str, &str)] = &[
    ("parent", "parent"),
    ("macvlan_mode", "macvlan_mode"),
    // dnet's own (Docker's macvlan driver has none): the network's checks
    // ask for dnet's IPAM with it.
    ("host_access", "host_access"),
    ("com.docker.network.driver.mtu", "mtu"),
    ("mtu", "mtu"),
];

/// dnet's key for a Docker id.
pub fn docker_ref(id: &str) -> RuntimeRef {
    RuntimeRef {
        runtime: "docker".into(),
        id: id.to_owned(),
    }
}

/// The first 12 characters of a Docker id, as `docker ps` shows them.
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A Docker id: hex digits.
fn check_id(what: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid!("bad {what} {id:?}: expected Docker's hex id"));
    }
    Ok(())
}

/// The address of a CIDR string (`10.0.0.1/24` → `10.0.0.1`).
fn cidr_addr(s: &str) -> &str {
    s.split_once('/').map_or(s, |(a, _)| a)
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

/// The dnet network a `CreateNetwork` asks for. Bad input is refused here,
/// before anything is made.
pub fn network_request(r: &CreateNetwork) -> Result<NetworkCreate> {
    check_id("network id", &r.network_id)?;
    // `--ipv6`: Docker's IPAM sends the IPv6 pool it gave the network.
    let ipv6 = truthy(r.options.get(ENABLE_IPV6)) || !r.ipv6_data.is_empty();
    let generic = match r.options.get(GENERIC) {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m.clone().into_iter().collect(),
        Some(other) => return Err(invalid!("bad {GENERIC}: {other}")),
    };
    let generic: BTreeMap<String, String> = generic
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    let driver = match generic.get("driver").map(String::as_str) {
        None | Some("bridge") => "bridge",
        Some("macvlan") => "macvlan",
        Some(other) => {
            return Err(invalid!(
                "-o driver={other}: unknown driver (dnet's Docker driver makes bridge and macvlan networks)"
            ));
        }
    };
    let (map, takes) = if driver == "macvlan" {
        (
            MACVLAN_OPTION_MAP,
            "-o parent=IFACE, -o macvlan_mode=MODE, -o host_access=true and -o com.docker.network.driver.mtu=N",
        )
    } else {
        (
            OPTION_MAP,
            "-o com.docker.network.driver.mtu=N and -o icc=false",
        )
    };
    let mut options = Vec::new();
    for (k, v) in generic.iter().filter(|(k, _)| *k != "driver") {
        let Some((_, dnet_key)) = map.iter().find(|(d, _)| d == k) else {
            return Err(invalid!(
                "unknown option {k:?} (dnet's Docker driver takes, for a {driver} network, {takes})"
            ));
        };
        options.push(format!("{dnet_key}={v}"));
    }
    let (subnet, gateway) = match r.ipv4_data.as_slice() {
        [] => (None, None),
        [d] => (
            (!d.pool.is_empty()).then(|| d.pool.clone()),
            (!d.gateway.is_empty()).then(|| cidr_addr(&d.gateway).to_owned()),
        ),
        _ => {
            return Err(invalid!(
                "a dnet network has one IPv4 subnet: give one --subnet"
            ));
        }
    };
    let (subnet6, gateway6) = match r.ipv6_data.as_slice() {
        [] => (None, None),
        [d] => (
            (!d.pool.is_empty()).then(|| d.pool.clone()),
            (!d.gateway.is_empty()).then(|| cidr_addr(&d.gateway).to_owned()),
        ),
        _ => {
            return Err(invalid!(
                "a dnet network has one IPv6 subnet: give one IPv6 --subnet"
            ));
        }
    };
    Ok(NetworkCreate {
        name: format!("docker-{}", short(&r.network_id)),
        driver: Some(driver.into()),
        subnet,
        gateway,
        ip_range: None,
        internal: truthy(r.options.get(INTERNAL)),
        options,
        ipv6,
        subnet6,
        gateway6,
        ip_range6: None,
    })
}

pub async fn create_network(e: &Engine, r: CreateNetwork) -> Result<Empty> {
    let mut req = network_request(&r)?;
    // With dnet's IPAM, the ranges the pools were asked with (Docker does
    // not tell the driver).
    if let Some(subnet) = &req.subnet
        && let Some(range) = e.pool_range(subnet).await
    {
        req.ip_range = Some(range.to_string());
    }
    if let Some(subnet6) = &req.subnet6
        && let Some(range6) = e.pool_range(subnet6).await
    {
        req.ip_range6 = Some(range6.to_string());
    }
    let (net, made) = e
        .create_runtime_network(req, docker_ref(&r.network_id))
        .await?;
    if !made {
        tracing::debug!(network = %net.name, "CreateNetwork repeated");
    }
    // Its name is asked of dockerd once this call has answered.
    super::learn::network_made();
    Ok(Empty {})
}

pub async fn delete_network(e: &Engine, r: NetworkRef) -> Result<Empty> {
    check_id("network id", &r.network_id)?;
    e.remove_runtime_network(&docker_ref(&r.network_id)).await?;
    Ok(Empty {})
}

pub async fn create_endpoint(e: &Engine, r: CreateEndpoint) -> Result<CreateEndpointAnswer> {
    check_id("endpoint id", &r.endpoint_id)?;
    let net = e
        .runtime_network(&docker_ref(&r.network_id))
        .await
        .ok_or_else(|| not_found!("dnet has no network of Docker's {}", short(&r.network_id)))?;
    let asked = r.interface.unwrap_or_default();
    let req = AttachRequest {
        network: net.id.clone(),
        target: AttachTarget::HostSide,
        ifname: None,
        ip: (!asked.address.is_empty()).then(|| cidr_addr(&asked.address).to_owned()),
        ip6: (!asked.address_ipv6.is_empty()).then(|| cidr_addr(&asked.address_ipv6).to_owned()),
        mac: (!asked.mac_address.is_empty()).then(|| asked.mac_address.clone()),
        publish: Vec::new(),
        aliases: Vec::new(),
        name: Some(format!("docker-{}", short(&r.endpoint_id))),
        runtime: Some(docker_ref(&r.endpoint_id)),
    };
    // After an unclean restart, dockerd drops its old endpoints without a
    // call and starts its containers again at once, with their addresses:
    // what it dropped goes first. An old endpoint that holds the address
    // Docker gives now is one Docker dropped (Docker hands out no address
    // of a live endpoint of its own), even while its namespace, stopped
    // with Docker's 10 s timeout, still holds its veth. Other endpoints
    // whose veth is on its way out are waited for a short while (well
    // under any timeout of Docker's, which has none).
    let ip: Option<Ipv4Addr> = req
        .ip
        .as_deref()
        .map(|ip| {
            ip.parse()
                .map_err(|_| invalid!("bad address {ip:?} from Docker: expected IPv4"))
        })
        .transpose()?;
    let ip6: Option<Ipv6Addr> = req
        .ip6
        .as_deref()
        .map(|ip| {
            ip.parse()
                .map_err(|_| invalid!("bad address {ip:?} from Docker: expected IPv6"))
        })
        .transpose()?;
    e.collect_runtime_holders(&net.id, &docker_ref(&r.endpoint_id), ip, ip6)
        .await?;
    let mut tries = 0;
    let resp = loop {
        e.collect_runtime_endpoints().await?;
        match e.attach(req.clone()).await {
            Err(Error::Conflict(_)) if tries < COLLECT_TRIES => {
                tries += 1;
                tokio::time::sleep(COLLECT_WAIT).await;
            }
            r => break r?,
        }
    };
    // Docker refuses an answer that changes what it gave: only the empty
    // fields are filled in.
    let mut answer = Interface::default();
    if asked.address.is_empty()
        && let (Some(ip), Some(prefix)) = (resp.ip, resp.prefix)
    {
        answer.address = format!("{ip}/{prefix}");
    }
    if asked.mac_address.is_empty()
        && let Some(mac) = resp.mac
    {
        answer.mac_address = mac.to_string();
    }
    if asked.address_ipv6.is_empty()
        && let (Some(ip6), Some(prefix6)) = (resp.ip6, resp.prefix6)
    {
        answer.address_ipv6 = format!("{ip6}/{prefix6}");
    }
    Ok(CreateEndpointAnswer {
        interface: (answer != Interface::default()).then_some(answer),
    })
}

pub async fn endpoint_oper_info(_e: &Engine, _r: EndpointRef) -> Result<OperInfo> {
    Ok(OperInfo {
        value: BTreeMap::new(),
    })
}

pub async fn join(e: &Engine, r: EndpointRef) -> Result<JoinAnswer> {
    let att = e
        .runtime_attachment(&docker_ref(&r.endpoint_id))
        .await
        .ok_or_else(|| not_found!("dnet has no endpoint {}", short(&r.endpoint_id)))?;
    let src_name = att.container_side.ok_or_else(|| {
        Error::Conflict("the endpoint's link is not in the host namespace".into())
    })?;
    Ok(JoinAnswer {
        interface_name: InterfaceName {
            src_name,
            dst_prefix: "eth".into(),
        },
        gateway: att.gateway.map(|g| g.to_string()).unwrap_or_default(),
        gateway_ipv6: att.gateway6.map(|g| g.to_string()).unwrap_or_default(),
        static_routes: Vec::new(),
        disable_gateway_service: false,
    })
}

pub async fn leave(_e: &Engine, _r: EndpointRef) -> Result<Empty> {
    // Docker moves the link back itself; DeleteEndpoint removes it.
    Ok(Empty {})
}

pub async fn delete_endpoint(e: &Engine, r: EndpointRef) -> Result<Empty> {
    check_id("endpoint id", &r.endpoint_id)?;
    e.detach(DetachRequest {
        network: None,
        container: None,
        runtime: Some(docker_ref(&r.endpoint_id)),
        missing_ok: true,
    })
    .await?;
    Ok(Empty {})
}

/// Docker's port bindings as dnet's requests.
pub fn port_requests(options: &BTreeMap<String, Value>) -> Result<Vec<PortRequest>> {
    let bindings: Vec<PortBinding> = match options.get(PORTMAP) {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| invalid!("bad {PORTMAP}: {e}"))?,
    };
    // Docker sends an all-addresses binding with its IPv6 twin (`::`):
    // dnet's all-addresses publish covers both families already.
    let all_addresses = |b: &PortBinding| matches!(b.host_ip.as_str(), "" | "0.0.0.0");
    let twin = |b: &PortBinding| {
        b.host_ip == "::"
            && bindings.iter().any(|o| {
                all_addresses(o)
                    && (o.proto, o.port, o.host_port, o.host_port_end)
                        == (b.proto, b.port, b.host_port, b.host_port_end)
            })
    };
    let mut out = Vec::new();
    for b in bindings.iter().filter(|b| !twin(b)) {
        let proto = match b.proto {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => {
                return Err(invalid!(
                    "port {}/sctp: dnet publishes TCP and UDP ports only",
                    b.port
                ));
            }
            n => return Err(invalid!("port {}: unknown protocol number {n}", b.port)),
        };
        // An address publishes in its own family only (`::`: every IPv6
        // address), as `dnet run -p`; the engine refuses an IPv6 one on an
        // IPv4-only network.
        let host_ip = match b.host_ip.as_str() {
            "" | "0.0.0.0" => None,
            s => Some(
                s.parse::<IpAddr>()
                    .map_err(|_| invalid!("host address {s:?} is not an IP address"))?,
            ),
        };
        if b.port == 0 {
            return Err(invalid!("container port 0 cannot be published"));
        }
        if b.host_port_end != 0 && b.host_port_end < b.host_port {
            return Err(invalid!(
                "host port range {}-{} runs backwards",
                b.host_port,
                b.host_port_end
            ));
        }
        out.push(PortRequest {
            proto,
            container_port: b.port,
            host_ip,
            host_port: b.host_port,
            host_port_end: b.host_port_end,
        });
    }
    Ok(out)
}

pub async fn program_external_connectivity(e: &Engine, r: EndpointRef) -> Result<Empty> {
    let reqs = port_requests(&r.options)?;
    let ports = e
        .set_runtime_ports(&docker_ref(&r.endpoint_id), &reqs)
        .await?;
    for p in &ports {
        tracing::debug!(endpoint = short(&r.endpoint_id), "published {p}");
    }
    Ok(Empty {})
}

pub async fn revoke_external_connectivity(e: &Engine, r: EndpointRef) -> Result<Empty> {
    match e.set_runtime_ports(&docker_ref(&r.endpoint_id), &[]).await {
        Ok(_) | Err(Error::NotFound(_)) => Ok(Empty {}),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::protocol::{IpamData, parse};

    fn create(options: Value) -> CreateNetwork {
        CreateNetwork {
            network_id: "0123456789abcdef".into(),
            options: serde_json::from_value(options).unwrap(),
            ipv4_data: vec![IpamData {
                pool: "10.77.0.0/24".into(),
                gateway: "10.77.0.1/24".into(),
                ..Default::default()
            }],
            ipv6_data: Vec::new(),
        }
    }

    #[test]
    fn a_network_request_takes_docker_options() {
        let r = network_request(&create(serde_json::json!({
            GENERIC: {"com.docker.network.driver.mtu": "1400", "icc": "false"},
            INTERNAL: true,
        })))
        .unwrap();
        assert_eq!(r.name, "docker-0123456789ab");
        assert_eq!(r.subnet.as_deref(), Some("10.77.0.0/24"));
        assert_eq!(r.gateway.as_deref(), Some("10.77.0.1"));
        assert!(r.internal);
        assert_eq!(r.options, vec!["mtu=1400", "icc=false"]);
        assert_eq!(r.driver.as_deref(), Some("bridge"));
    }

    #[test]
    fn a_dual_stack_network_request_takes_dockers_ipv6_pool() {
        let mut c = create(serde_json::json!({ENABLE_IPV6: true}));
        c.ipv6_data = vec![IpamData {
            pool: "fd00:77::/64".into(),
            gateway: "fd00:77::1/64".into(),
            ..Default::default()
        }];
        let r = network_request(&c).unwrap();
        assert!(r.ipv6);
        assert_eq!(r.subnet6.as_deref(), Some("fd00:77::/64"));
        assert_eq!(r.gateway6.as_deref(), Some("fd00:77::1"));
        c.ipv6_data.push(c.ipv6_data[0].clone());
        let e = network_request(&c).unwrap_err().to_string();
        assert!(e.contains("one IPv6 subnet"), "{e}");
        let r = network_request(&create(serde_json::json!({}))).unwrap();
        assert!(!r.ipv6 && r.subnet6.is_none());
    }

    #[test]
    fn a_macvlan_network_request_takes_dockers_macvlan_options() {
        let r = network_request(&create(serde_json::json!({
            GENERIC: {"driver": "macvlan", "parent": "eth0", "macvlan_mode": "bridge", "host_access": "true"},
        })))
        .unwrap();
        assert_eq!(r.driver.as_deref(), Some("macvlan"));
        assert_eq!(
            r.options,
            vec!["host_access=true", "macvlan_mode=bridge", "parent=eth0"]
        );
        // `--ipv6` with the LAN's IPv6 subnet: a dual-stack macvlan network
        // (the engine checks the subnet against the parent's LAN).
        let mut c = create(serde_json::json!({
            GENERIC: {"driver": "macvlan", "parent": "eth0"},
            ENABLE_IPV6: true,
        }));
        c.ipv6_data = vec![IpamData {
            pool: "2001:db8::/64".into(),
            gateway: "2001:db8::1/64".into(),
            ..Default::default()
        }];
        let r = network_request(&c).unwrap();
        assert_eq!(r.driver.as_deref(), Some("macvlan"));
        assert!(r.ipv6);
        assert_eq!(r.subnet6.as_deref(), Some("2001:db8::/64"));
        assert_eq!(r.gateway6.as_deref(), Some("2001:db8::1"));
    }

    #[test]
    fn bad_network_requests_are_refused() {
        for (opts, says) in [
            (
                serde_json::json!({GENERIC: {"foo": "bar"}}),
                "unknown option",
            ),
            (
                serde_json::json!({GENERIC: {"driver": "macvlan", "icc": "false"}}),
                "for a macvlan network",
            ),
            (
                serde_json::json!({GENERIC: {"driver": "ipvlan"}}),
                "unknown driver",
            ),
        ] {
            let e = network_request(&create(opts)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let mut r = create(serde_json::json!({}));
        r.network_id = "../x".into();
        assert!(network_request(&r).is_err());
        let mut r = create(serde_json::json!({}));
        r.ipv4_data.push(r.ipv4_data[0].clone());
        assert!(network_request(&r).is_err());
    }

    #[test]
    fn port_bindings_become_requests() {
        let opts: EndpointRef = parse(
            br#"{"EndpointID":"ab","Options":{"com.docker.network.portmap":[
                {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
                {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":0,"HostPortEnd":0},
                {"Proto":6,"IP":"","Port":80,"HostIP":"::","HostPort":8080,"HostPortEnd":8080}]}}"#,
        )
        .unwrap();
        let r = port_requests(&opts.options).unwrap();
        assert_eq!(r.len(), 2, "the all-addresses binding's :: twin is covered");
        assert_eq!(
            (r[0].proto, r[0].host_port, r[0].host_ip),
            (Proto::Tcp, 8080, None)
        );
        assert_eq!(r[1].host_ip, Some(Ipv4Addr::LOCALHOST.into()));
        // IPv6 host addresses publish in their family, as `dnet run -p
        // [IPv6]:H:C` (`::` alone: every IPv6 address).
        let v6: BTreeMap<String, Value> = serde_json::from_value(serde_json::json!({
            PORTMAP: [
                {"Proto":6,"Port":80,"HostIP":"::1","HostPort":8081,"HostPortEnd":8081},
                {"Proto":17,"Port":53,"HostIP":"::","HostPort":5353,"HostPortEnd":5353},
                {"Proto":6,"Port":80,"HostIP":"2001:2::2","HostPort":8082,"HostPortEnd":8082}]
        }))
        .unwrap();
        let r = port_requests(&v6).unwrap();
        assert_eq!(
            r.iter().map(|r| r.host_ip).collect::<Vec<_>>(),
            [
                Some(Ipv6Addr::LOCALHOST.into()),
                Some(Ipv6Addr::UNSPECIFIED.into()),
                Some("2001:2::2".parse().unwrap())
            ]
        );
        assert_eq!((r[1].proto, r[1].host_port), (Proto::Udp, 5353));
        let bad: BTreeMap<String, Value> = serde_json::from_value(serde_json::json!({
            PORTMAP: [{"Proto":6,"Port":80,"HostIP":"nonsense","HostPort":1,"HostPortEnd":1}]
        }))
        .unwrap();
        let e = port_requests(&bad).unwrap_err().to_string();
        assert!(e.contains("\"nonsense\" is not an IP address"), "{e}");
        let sctp: BTreeMap<String, Value> = serde_json::from_value(serde_json::json!({
            PORTMAP: [{"Proto":132,"Port":9,"HostPort":9,"HostPortEnd":9}]
        }))
        .unwrap();
        assert!(
            port_requests(&sctp)
                .unwrap_err()
                .to_string()
                .contains("sctp")
        );
        assert!(port_requests(&BTreeMap::new()).unwrap().is_empty());
    }
}
