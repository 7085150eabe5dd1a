//! The wire types of Docker's remote network driver protocol (plugin API
//! v1, as libnetwork's `drivers/remote/api` has them in Docker 20.10).
//! Field names are Go's (`PascalCase`); every field may be missing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Plugin.Activate`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activate {
    pub implements: Vec<&'static str>,
}

/// `NetworkDriver.GetCapabilities`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    pub scope: &'static str,
    pub connectivity_scope: &'static str,
}

/// One entry of `IPv4Data`/`IPv6Data`: addresses as CIDR strings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    pub address_space: String,
    pub pool: String,
    pub gateway: String,
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` map),
    /// `com.docker.network.enable_ipv6`, `com.docker.network.internal`.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// `DeleteNetwork`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// `EndpointOperInfo`, `Leave`, `DeleteEndpoint`,
/// `RevokeExternalConnectivity`; `Join` and `ProgramExternalConnectivity`
/// with their extra fields.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct EndpointRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
    #[serde(rename = "Options", deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

/// Addresses Docker's IPAM gave the endpoint; in an answer, what the driver
/// chose where the request left a field empty.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Interface {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub interface: Option<Interface>,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointAnswer {
    /// Only the fields the request left empty; `None` if there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<Interface>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperInfo {
    pub value: BTreeMap<String, Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The link in the daemon's namespace that Docker moves.
    pub src_name: String,
    /// Docker names it this prefix plus a number (`eth0`).
    pub dst_prefix: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinAnswer {
    pub interface_name: InterfaceName,
    /// A plain IPv4 address; empty on internal networks.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// A plain IPv6 address on dual-stack networks; empty on internal ones.
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
    pub static_routes: Vec<Value>,
    pub disable_gateway_service: bool,
}

/// One `com.docker.network.portmap` entry (`types.PortBinding`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct PortBinding {
    /// 6 TCP, 17 UDP, 132 SCTP.
    pub proto: u8,
    #[serde(rename = "IP")]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP")]
    pub host_ip: String,
    pub host_port: u16,
    pub host_port_end: u16,
}

/// Go writes a nil map or slice as `null`: that is the empty one.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The empty success answer.
#[derive(Debug, Serialize)]
pub struct Empty {}

/// The error answer, with status 200.
#[derive(Debug, Serialize)]
pub struct ErrAnswer {
    #[serde(rename = "Err")]
    pub err: String,
}

/// `IpamDriver.GetCapabilities`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    pub requires_request_replay: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    pub local_default_address_space: &'static str,
    pub global_default_address_space: &'static str,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    pub address_space: String,
    pub pool: String,
    pub sub_pool: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    #[serde(rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolAnswer {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub pool: String,
    pub data: BTreeMap<String, String>,
}

/// `ReleasePool`, `RequestAddress`, `ReleaseAddress`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AddressRequest {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressAnswer {
    /// CIDR: the address with its subnet's prefix.
    pub address: String,
    pub data: BTreeMap<String, String>,
}

/// An IPAM call's error answer, with status 200.
#[derive(Debug, Serialize)]
pub struct IpamErrAnswer {
    #[serde(rename = "Error")]
    pub error: String,
}

/// A request body; an empty body (or `null`) is the default request.
pub fn parse<T: for<'de> Deserialize<'de> + Default>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the request body is not UTF-8")?;
    if text.trim().is_empty() || text.trim() == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| format!("bad request body: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_network_as_docker_sends_it() {
        let body = br#"{"NetworkID":"3f1c","Options":{"com.docker.network.enable_ipv6":false,
            "com.docker.network.generic":{"com.docker.network.driver.mtu":"1400","icc":"false"}},
            "IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"10.77.0.0/24","Gateway":"10.77.0.1/24","AuxAddresses":null}],
            "IPv6Data":null}"#;
        let r: CreateNetwork = parse(body).unwrap();
        assert_eq!(r.network_id, "3f1c");
        assert_eq!(r.ipv4_data[0].pool, "10.77.0.0/24");
        assert_eq!(r.ipv4_data[0].gateway, "10.77.0.1/24");
        assert_eq!(
            r.options["com.docker.network.generic"]["icc"],
            Value::from("false")
        );
    }

    #[test]
    fn empty_bodies_are_default_requests() {
        let r: NetworkRef = parse(b"").unwrap();
        assert_eq!(r.network_id, "");
        let r: EndpointRef = parse(b"null").unwrap();
        assert_eq!(r.endpoint_id, "");
        assert!(parse::<NetworkRef>(b"{").is_err());
    }

    #[test]
    fn answers_have_docker_field_names() {
        let j = serde_json::to_value(JoinAnswer {
            interface_name: InterfaceName {
                src_name: "dntmp1".into(),
                dst_prefix: "eth".into(),
            },
            gateway: "10.0.0.1".into(),
            gateway_ipv6: "fd00::1".into(),
            static_routes: vec![],
            disable_gateway_service: false,
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"InterfaceName":{"SrcName":"dntmp1","DstPrefix":"eth"},
                "Gateway":"10.0.0.1","GatewayIPv6":"fd00::1","StaticRoutes":[],
                "DisableGatewayService":false})
        );
        let j = serde_json::to_value(CreateEndpointAnswer {
            interface: Some(Interface {
                mac_address: "02:42:0a:00:00:02".into(),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"Interface":{"MacAddress":"02:42:0a:00:00:02"}})
        );
        let j = serde_json::to_value(Capabilities {
            scope: "local",
            connectivity_scope: "local",
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"Scope":"local","ConnectivityScope":"local"})
        );
        let j = serde_json::to_value(ErrAnswer { err: "x".into() }).unwrap();
        assert_eq!(j, serde_json::json!({"Err":"x"}));
    }

    #[test]
    fn ipam_calls_have_docker_field_names() {
        let r: RequestPool = parse(
            br#"{"AddressSpace":"dnet-local","Pool":"10.1.0.0/16","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert_eq!((r.pool.as_str(), r.v6), ("10.1.0.0/16", false));
        let r: AddressRequest = parse(
            br#"{"PoolID":"10.1.0.0/16","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(r.pool_id, "10.1.0.0/16");
        assert_eq!(
            serde_json::to_value(PoolAnswer {
                pool_id: "p".into(),
                pool: "10.1.0.0/16".into(),
                data: BTreeMap::new(),
            })
            .unwrap(),
            serde_json::json!({"PoolID":"p","Pool":"10.1.0.0/16","Data":{}})
        );
        assert_eq!(
            serde_json::to_value(IpamErrAnswer { error: "x".into() }).unwrap(),
            serde_json::json!({"Error":"x"})
        );
        assert_eq!(
            serde_json::to_value(IpamCapabilities {
                requires_mac_address: false,
                requires_request_replay: false,
            })
            .unwrap(),
            serde_json::json!({"RequiresMACAddress":false,"RequiresRequestReplay":false})
        );
    }

    #[test]
    fn port_bindings_parse() {
        let v = serde_json::json!([{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080},
            {"Proto":17,"IP":"","Port":53,"HostIP":"127.0.0.1","HostPort":0,"HostPortEnd":0}]);
        let b: Vec<PortBinding> = serde_json::from_value(v).unwrap();
        assert_eq!(b[0].host_port, 8080);
        assert_eq!(b[1].proto, 17);
        assert_eq!(b[1].host_ip, "127.0.0.1");
    }
}
