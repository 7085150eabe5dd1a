//! The ADD result in the version the config asks for, and CHECK's
//! comparison with `prevResult`.

use serde_json::{Value, json};

use super::error::{CHECK_MISMATCH, CniError, cni_err};
use crate::{api::AttachResponse, model::MacAddr};

/// The ADD result (SPEC.md "Success"): the host-side veth, the container's
/// interface (with `sandbox`), its address with `interface` and `gateway`,
/// the routes, and the resolver once dnet has one.
pub fn add_result(
    version: &str,
    r: &AttachResponse,
    netns: &str,
    host_mac: Option<MacAddr>,
) -> Value {
    let mut interfaces = Vec::new();
    if let Some(h) = &r.host_ifname {
        let mut i = json!({ "name": h });
        if let Some(m) = host_mac {
            i["mac"] = json!(m.to_string());
        }
        interfaces.push(i);
    }
    let mut ctr = json!({ "name": r.ifname, "sandbox": netns });
    if let Some(m) = r.mac {
        ctr["mac"] = json!(m.to_string());
    }
    if version == "1.1.0" {
        ctr["mtu"] = json!(r.mtu);
    }
    interfaces.push(ctr);
    let index = interfaces.len() - 1;
    let mut ips = Vec::new();
    if let (Some(ip), Some(prefix)) = (r.ip, r.prefix) {
        let mut a = json!({ "address": format!("{ip}/{prefix}"), "interface": index });
        if let Some(gw) = r.gateway {
            a["gateway"] = json!(gw.to_string());
        }
        if version == "0.4.0" {
            a["version"] = json!("4");
        }
        ips.push(a);
    }
    if let (Some(ip), Some(prefix)) = (r.ip6, r.prefix6) {
        let mut a = json!({ "address": format!("{ip}/{prefix}"), "interface": index });
        if let Some(gw) = r.gateway6 {
            a["gateway"] = json!(gw.to_string());
        }
        if version == "0.4.0" {
            a["version"] = json!("6");
        }
        ips.push(a);
    }
    let routes: Vec<Value> = r
        .routes
        .iter()
        .map(|rt| {
            let mut v = json!({ "dst": rt.dst });
            if let Some(gw) = rt.gateway {
                v["gw"] = json!(gw.to_string());
            }
            v
        })
        .collect();
    let mut out = json!({
        "cniVersion": version,
        "interfaces": interfaces,
        "ips": ips,
        "routes": routes,
    });
    out["dns"] = match r.dns {
        Some(d) => json!({ "nameservers": [d.to_string()] }),
        None => json!({}),
    };
    out
}

/// CHECK: the attachment must still be what `prev` (the ADD result the
/// runtime cached) says: the interface name and MAC, and its address.
pub fn check_against(
    prev: &Value,
    r: &AttachResponse,
    ifname: &str,
    netns: &str,
) -> Result<(), CniError> {
    let mut diffs = Vec::new();
    if r.ifname != ifname {
        diffs.push(format!(
            "the interface is {} in dnet, CNI_IFNAME is {ifname}",
            r.ifname
        ));
    }
    let ifaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    match ifaces.iter().find(|i| i["name"] == ifname) {
        None => diffs.push(format!("prevResult has no interface {ifname}")),
        Some(i) => {
            if let (Some(want), Some(have)) = (i["mac"].as_str(), r.mac)
                && !want.eq_ignore_ascii_case(&have.to_string())
            {
                diffs.push(format!("{ifname}'s MAC is {have}, prevResult says {want}"));
            }
            if let Some(s) = i["sandbox"].as_str()
                && s != netns
            {
                diffs.push(format!("prevResult's sandbox is {s}, CNI_NETNS is {netns}"));
            }
        }
    }
    let have = r.ip.zip(r.prefix).map(|(ip, p)| format!("{ip}/{p}"));
    let want: Vec<&str> = prev["ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["address"].as_str()).collect())
        .unwrap_or_default();
    match &have {
        Some(h) if !want.contains(&h.as_str()) => diffs.push(format!(
            "the address is {h}, prevResult says {}",
            if want.is_empty() {
                "none".to_owned()
            } else {
                want.join(", ")
            }
        )),
        None if !want.is_empty() => diffs.push(format!(
            "the endpoint has no address, prevResult says {}",
            want.join(", ")
        )),
        _ => {}
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(
            cni_err!(CHECK_MISMATCH, "the attachment differs from prevResult")
                .with_details(diffs.join("; ")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::RouteView;

    fn resp() -> AttachResponse {
        AttachResponse {
            container_id: "c".into(),
            container: "abc".into(),
            network_id: "n".into(),
            network: "bridge".into(),
            ifname: "eth0".into(),
            host_ifname: Some("dnet1234".into()),
            container_side: None,
            ip: Some("172.17.0.5".parse().unwrap()),
            prefix: Some(16),
            mac: Some("02:42:ac:11:00:05".parse().unwrap()),
            gateway: Some("172.17.0.1".parse().unwrap()),
            ip6: None,
            prefix6: None,
            gateway6: None,
            routes: vec![RouteView {
                dst: "0.0.0.0/0".into(),
                gateway: Some("172.17.0.1".parse().unwrap()),
            }],
            mtu: 1500,
            ports: vec![],
            dns: None,
        }
    }

    #[test]
    fn results_follow_the_asked_version() {
        let host: MacAddr = "aa:bb:cc:dd:ee:ff".parse().unwrap();
        let r = add_result("0.4.0", &resp(), "/run/netns/x", Some(host));
        assert_eq!(r["cniVersion"], "0.4.0");
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["ips"][0]["address"], "172.17.0.5/16");
        assert_eq!(r["ips"][0]["gateway"], "172.17.0.1");
        assert_eq!(
            r["interfaces"][0],
            json!({"name": "dnet1234", "mac": "aa:bb:cc:dd:ee:ff"})
        );
        assert_eq!(
            r["interfaces"][1],
            json!({"name": "eth0", "mac": "02:42:ac:11:00:05", "sandbox": "/run/netns/x"})
        );
        assert_eq!(
            r["routes"],
            json!([{"dst": "0.0.0.0/0", "gw": "172.17.0.1"}])
        );
        let r = add_result("1.0.0", &resp(), "/run/netns/x", None);
        assert!(r["ips"][0].get("version").is_none(), "{r}");
        assert!(r["interfaces"][0].get("mac").is_none());
        let r = add_result("1.1.0", &resp(), "/run/netns/x", None);
        assert_eq!(r["interfaces"][1]["mtu"], 1500);
    }

    #[test]
    fn a_dual_stack_result_lists_both_addresses() {
        let mut d = resp();
        d.ip6 = Some("fd00:17::5".parse().unwrap());
        d.prefix6 = Some(64);
        d.gateway6 = Some("fd00:17::1".parse().unwrap());
        d.routes.push(RouteView {
            dst: "::/0".into(),
            gateway: Some("fd00:17::1".parse().unwrap()),
        });
        let r = add_result("0.4.0", &d, "/run/netns/x", None);
        assert_eq!(
            r["ips"][1],
            json!({"address": "fd00:17::5/64", "gateway": "fd00:17::1", "interface": 1, "version": "6"})
        );
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "fd00:17::1"}));
        let prev = add_result("1.0.0", &d, "/run/netns/x", None);
        check_against(&prev, &d, "eth0", "/run/netns/x").unwrap();
    }

    #[test]
    fn check_finds_each_difference() {
        let prev = add_result("1.0.0", &resp(), "/run/netns/x", None);
        check_against(&prev, &resp(), "eth0", "/run/netns/x").unwrap();
        let mut other = resp();
        other.ip = Some("172.17.0.9".parse().unwrap());
        other.mac = Some("02:42:ac:11:00:09".parse().unwrap());
        let e = check_against(&prev, &other, "eth0", "/run/netns/x").unwrap_err();
        assert_eq!(e.code, CHECK_MISMATCH);
        assert!(e.details.contains("172.17.0.9/16"), "{e}");
        assert!(e.details.contains("02:42:ac:11:00:09"), "{e}");
        let e = check_against(&prev, &resp(), "eth1", "/run/netns/x").unwrap_err();
        assert!(e.details.contains("no interface eth1"), "{e}");
        let e = check_against(&prev, &resp(), "eth0", "/run/netns/y").unwrap_err();
        assert!(e.details.contains("sandbox"), "{e}");
    }
}
