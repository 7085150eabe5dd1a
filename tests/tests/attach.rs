//! The attach API (`POST /v1/attach`, `POST /v1/detach`) that the Docker
//! and CNI front ends use, driven over the daemon's socket.

use std::{path::Path, time::Duration};

use dnet_sandbox::{Sandbox, WORLD_IP, assert_consistent, ct, in_netns, ok, out};
use serde_json::{Value, json};

fn ns_name(path: &Path) -> String {
    path.file_name().unwrap().to_str().unwrap().to_owned()
}

/// The links of a namespace as `ip -j link show` gives them.
fn links_in(ns: &Path) -> Vec<Value> {
    let o = in_netns(ns, "ip", &["-j", "link", "show"]);
    assert!(ok(&o), "ip link in {}: {}", ns.display(), out(&o));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn has_link(links: &[Value], name: &str) -> bool {
    links.iter().any(|l| l["ifname"] == name)
}

#[test]
fn attach_puts_an_interface_with_its_address_and_mac_in_a_namespace() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("a");
    let req = json!({
        "network": "bridge",
        "target": {"kind": "netns", "path": ns},
        "ip": "172.17.0.50",
        "mac": "02:00:00:aa:bb:cc",
        "aliases": ["web"],
        "runtime": {"runtime": "cni", "id": "ctr1"},
    });
    let (code, r) = sb.api_post("/v1/attach", &req);
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["ifname"], "eth0");
    assert_eq!(r["ip"], "172.17.0.50");
    assert_eq!(r["prefix"], 16);
    assert_eq!(r["mac"], "02:00:00:aa:bb:cc");
    assert_eq!(r["gateway"], "172.17.0.1");
    assert_eq!(r["network"], "bridge");
    assert_eq!(r["container_side"], Value::Null);
    assert!(
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["dst"] == "0.0.0.0/0" && x["gateway"] == "172.17.0.1"),
        "a default route: {r}"
    );

    let o = in_netns(&ns, "ip", &["-j", "addr", "show", "eth0"]);
    assert!(ok(&o), "{}", out(&o));
    let eth0: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(eth0[0]["address"], "02:00:00:aa:bb:cc");
    assert!(
        eth0[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == "172.17.0.50" && a["prefixlen"] == 16),
        "eth0: {eth0}"
    );
    let o = in_netns(&ns, &ct(), &["ping", "172.17.0.1"]);
    assert!(ok(&o), "ping the gateway: {}", out(&o));
    assert_consistent(&sb);

    // A second endpoint reaches the first.
    sb.sleeper("b", &[]);
    let o = sb.conntest_in("b", &["ping", "172.17.0.50"]);
    assert!(ok(&o), "ping the attached namespace: {}", out(&o));

    // The same runtime ref and network again: the same attachment.
    let (code, again) = sb.api_post("/v1/attach", &req);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["container_id"], r["container_id"]);
    assert_eq!(again["ip"], r["ip"]);
    assert_eq!(again["host_ifname"], r["host_ifname"]);
    let st = sb.state();
    let c = &st["containers"][r["container_id"].as_str().unwrap()];
    assert_eq!(c["runtime"], json!({"runtime": "cni", "id": "ctr1"}));
    assert_eq!(c["endpoints"][0]["aliases"], json!(["web"]));

    let (code, body) = sb.api_post(
        "/v1/detach",
        &json!({"runtime": {"runtime": "cni", "id": "ctr1"}, "network": "bridge"}),
    );
    assert_eq!(code, 204, "{body}");
    sb.settle();
    assert!(!has_link(&links_in(&ns), "eth0"), "eth0 left after detach");
    assert!(
        sb.state()["containers"]
            .get(r["container_id"].as_str().unwrap())
            .is_none(),
        "the record of a runtime's container goes with its last endpoint"
    );
    assert_consistent(&sb);

    // Nothing left to detach: success only when asked.
    let gone = json!({"runtime": {"runtime": "cni", "id": "ctr1"}, "network": "bridge"});
    let (code, body) = sb.api_post("/v1/detach", &gone);
    assert_eq!(code, 404, "{body}");
    let mut ok_gone = gone.clone();
    ok_gone["missing_ok"] = json!(true);
    let (code, body) = sb.api_post("/v1/detach", &ok_gone);
    assert_eq!(code, 204, "{body}");
    let (code, _) = sb.api_post(
        "/v1/detach",
        &json!({"container": "nosuch", "missing_ok": true}),
    );
    assert_eq!(code, 204);
}

#[test]
fn host_side_attach_leaves_a_down_link_for_the_runtime_and_detach_removes_it() {
    let mut sb = Sandbox::new();
    let req = json!({
        "network": "bridge",
        "target": {"kind": "host_side"},
        "runtime": {"runtime": "docker", "id": "ep1"},
    });
    let (code, r) = sb.api_post("/v1/attach", &req);
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["ifname"], "eth0");
    let side = r["container_side"]
        .as_str()
        .expect("container_side")
        .to_owned();
    let host = r["host_ifname"].as_str().expect("host_ifname").to_owned();
    let links = links_in(&sb.host_netns_path());
    let l = links
        .iter()
        .find(|l| l["ifname"] == side.as_str())
        .unwrap_or_else(|| panic!("{side} in the daemon's namespace"));
    assert!(
        !l["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "the container end is down: {l}"
    );
    assert_eq!(l["address"], r["mac"]);
    assert!(has_link(&links, &host));
    assert_consistent(&sb);

    let (code, again) = sb.api_post("/v1/attach", &req);
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["container_side"], r["container_side"]);

    // The runtime moves it into the container and configures it.
    let ns = sb.add_netns("d");
    let ip = r["ip"].as_str().unwrap();
    let o = sb.in_host("ip", &["link", "set", &side, "netns", &ns_name(&ns)]);
    assert!(ok(&o), "moving {side}: {}", out(&o));
    let cidr = format!("{ip}/16");
    for args in [
        vec!["link", "set", side.as_str(), "name", "eth0"],
        vec!["addr", "add", &cidr, "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
        vec![
            "route",
            "add",
            "default",
            "via",
            "172.17.0.1",
            "dev",
            "eth0",
        ],
    ] {
        let o = in_netns(&ns, "ip", &args);
        assert!(ok(&o), "ip {args:?}: {}", out(&o));
    }
    let o = in_netns(&ns, &ct(), &["ping", "172.17.0.1"]);
    assert!(ok(&o), "ping the gateway from the moved end: {}", out(&o));

    let (code, body) = sb.api_post(
        "/v1/detach",
        &json!({"runtime": {"runtime": "docker", "id": "ep1"}}),
    );
    assert_eq!(code, 204, "{body}");
    sb.settle();
    assert!(!has_link(&links_in(&sb.host_netns_path()), &host));
    assert!(
        !has_link(&links_in(&ns), "eth0"),
        "the moved end went with its pair"
    );
    assert!(
        sb.state()["containers"]
            .as_object()
            .unwrap()
            .values()
            .all(|c| c["netns"]["kind"] != "runtime")
    );
    assert_consistent(&sb);
}

#[test]
fn bad_attach_input_changes_nothing() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("b");
    let taken = sb.add_netns("t");
    let (code, body) = sb.api_post(
        "/v1/attach",
        &json!({"network": "bridge", "target": {"kind": "netns", "path": taken}, "ip": "172.17.0.9"}),
    );
    assert_eq!(code, 201, "{body}");
    let before = sb.snapshot();
    let ns_links = links_in(&ns).len();
    let target = json!({"kind": "netns", "path": ns});
    let cases: Vec<(Value, u16, &str)> = vec![
        (
            json!({"network": "nosuch", "target": target}),
            404,
            "not found",
        ),
        (
            json!({"network": "bridge", "target": target, "ip": "10.9.9.9"}),
            400,
            "not a usable address",
        ),
        (
            json!({"network": "bridge", "target": target, "ip": "nonsense"}),
            400,
            "invalid --ip",
        ),
        (
            json!({"network": "bridge", "target": target, "ip": "172.17.0.9"}),
            409,
            "172.17.0.9",
        ),
        (
            json!({"network": "bridge", "target": target, "mac": "01:00:5e:00:00:01"}),
            400,
            "multicast",
        ),
        (
            json!({"network": "bridge", "target": target, "mac": "nope"}),
            400,
            "invalid MAC",
        ),
        (
            json!({"network": "bridge", "target": target, "ifname": "a/b"}),
            400,
            "invalid interface name",
        ),
        (
            json!({"network": "bridge", "target": target, "publish": ["nope"]}),
            400,
            "invalid publish spec \"nope\"",
        ),
        (
            json!({"network": "host", "target": {"kind": "host_side"}}),
            400,
            "a bridge or macvlan network",
        ),
        (
            json!({"network": "bridge", "target": {"kind": "netns", "path": "/nonexistent"}}),
            400,
            "not a network namespace",
        ),
    ];
    for (req, want, msg) in cases {
        let (code, body) = sb.api_post("/v1/attach", &req);
        assert_eq!(code, want, "{req}: {body}");
        assert!(
            body["message"].as_str().unwrap_or("").contains(msg),
            "{req}: {body}"
        );
        assert_eq!(sb.snapshot(), before, "{req} changed something");
        assert_eq!(
            links_in(&ns).len(),
            ns_links,
            "{req} left a link in the namespace"
        );
    }
    assert_consistent(&sb);
}

#[test]
fn network_connect_takes_aliases_through_the_same_attach() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("c");
    let path = ns.to_str().unwrap();
    let err = sb.dnet_err(&[
        "network", "connect", "--alias", "no/pe", "bridge", "--netns", path,
    ]);
    assert!(err.contains("alias"), "{err}");
    assert!(!has_link(&links_in(&ns), "eth0"));
    assert!(sb.state()["containers"].as_object().unwrap().is_empty());
    sb.dnet_ok(&[
        "network", "connect", "--alias", "db", "--alias", "primary", "bridge", "--netns", path,
        "--name", "ext",
    ]);
    let st = sb.state();
    let c = st["containers"]
        .as_object()
        .unwrap()
        .values()
        .find(|c| c["name"] == "ext")
        .expect("the container record")
        .clone();
    assert_eq!(c["endpoints"][0]["aliases"], json!(["db", "primary"]));
    assert!(has_link(&links_in(&ns), "eth0"));
    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    sb.settle();
    assert!(!has_link(&links_in(&ns), "eth0"));
    assert_consistent(&sb);
}

/// The daemon's own namespace and PID 1's are never attached as a
/// container's (issue 10 item 10): nothing is made, nothing recorded.
#[test]
fn the_hosts_own_namespaces_are_never_attached() {
    let mut sb = Sandbox::new();
    let own = sb.host_netns_path();
    let cases = [
        (
            own.display().to_string(),
            "the daemon's own network namespace",
        ),
        (
            "/proc/1/ns/net".to_owned(),
            "the host's (PID 1's) network namespace",
        ),
    ];
    for (path, want) in &cases {
        let before = sb.snapshot();
        let err = sb.dnet_err(&["network", "connect", "bridge", "--netns", path]);
        // Where PID 1 is out of reach (these machines: a supervisor in a
        // parent user namespace), its namespace cannot even be opened.
        let unreadable = path.starts_with("/proc/1/")
            && std::fs::File::open(path).is_err()
            && err.contains("is not a network namespace");
        assert!(err.contains(want) || unreadable, "{path}: {err}");
        assert_eq!(
            sb.snapshot(),
            before,
            "{path}: a refused connect changed something"
        );
    }
    // Positive control: a namespace of its own is attached.
    let ns = sb.add_netns("c");
    sb.dnet_ok(&[
        "network",
        "connect",
        "bridge",
        "--netns",
        ns.to_str().unwrap(),
    ]);
    assert!(has_link(&links_in(&ns), "eth0"), "{:?}", links_in(&ns));
}

/// Routes already in a foreign namespace are its owner's (issue 10 item
/// 10): its default route stays, and a route to the network's subnet makes
/// the attach fail with nothing changed.
#[test]
fn an_attach_never_replaces_a_route_of_the_namespace() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.98.0.0/24", "n1"]);
    let ns_with = |sb: &mut Sandbox, tag: &str, route: &[&str]| {
        let ns = sb.add_netns(tag);
        for args in [
            &[
                "link", "add", "own0", "type", "veth", "peer", "name", "own1",
            ][..],
            &["link", "set", "own0", "up"],
            &["link", "set", "own1", "up"],
            &["addr", "add", "10.99.0.2/24", "dev", "own0"],
            route,
        ] {
            let o = in_netns(&ns, "ip", args);
            assert!(o.status.success(), "ip {args:?}: {o:?}");
        }
        ns
    };
    let routes = |ns: &Path| out(&in_netns(ns, "ip", &["-4", "route", "show"]));

    // Its default route stays; dnet's subnet route is added beside it.
    let a = ns_with(
        &mut sb,
        "a",
        &["route", "add", "default", "via", "10.99.0.1"],
    );
    sb.dnet_ok(&["network", "connect", "n1", "--netns", a.to_str().unwrap()]);
    let r = routes(&a);
    assert!(r.contains("default via 10.99.0.1 dev own0"), "{r}");
    assert!(!r.contains("default via 10.98.0.1"), "{r}");
    assert!(r.contains("10.98.0.0/24 via 10.98.0.1"), "{r}");

    // A route of its own to the subnet: refused, nothing changed.
    let b = ns_with(
        &mut sb,
        "b",
        &["route", "add", "10.98.0.0/24", "via", "10.99.0.1"],
    );
    let (before, before_routes) = (sb.snapshot(), routes(&b));
    let err = sb.dnet_err(&["network", "connect", "n1", "--netns", b.to_str().unwrap()]);
    assert!(err.contains("already has a route to 10.98.0.0/24"), "{err}");
    assert_eq!(sb.snapshot(), before, "a refused attach changed something");
    assert_eq!(routes(&b), before_routes);
    let links = out(&in_netns(&b, "ip", &["-br", "link"]));
    assert!(!links.contains("eth0"), "{links}");
}

/// Disconnecting the network that gave a container its default route
/// re-elects the next non-internal network's gateway (issue 10 item 15), as
/// Docker does.
#[test]
fn disconnecting_the_default_routes_network_reelects_the_next_gateway() {
    let sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.96.0.0/24", "n1"]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.97.0.0/24", "n2"]);
    sb.sleeper("x", &["--network", "n1"]);
    // An internal network between them gives no way out: never elected.
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.95.0.0/24",
        "closed",
    ]);
    sb.dnet_ok(&["network", "connect", "closed", "x"]);
    sb.dnet_ok(&["network", "connect", "n2", "x"]);
    let default = || {
        let r = sb.dnet_ok(&["exec", "x", "--", "ip", "-4", "route", "show", "default"]);
        r.trim().to_owned()
    };
    assert!(
        default().starts_with("default via 10.96.0.1"),
        "{}",
        default()
    );
    sb.dnet_ok(&["network", "disconnect", "n1", "x"]);
    assert!(
        default().starts_with("default via 10.97.0.1"),
        "{}",
        default()
    );
    // The world is still reached through the new gateway.
    assert!(sb.reaches_world("x"));
}

/// An internal network never gives a container its default route, as in
/// Docker: on internal networks only it has none (the world is unreachable
/// at once, `ENETUNREACH`, not by a drop), yet reaches its peers; a network
/// that is not internal, connected later, gives it its gateway as the
/// default route, and the world is reached. The attach API's routes say the
/// same to a CNI runtime.
#[test]
fn an_internal_network_gives_no_default_route_a_later_normal_one_does() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.91.0.0/24",
        "closed",
    ]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.92.0.0/24", "open"]);
    sb.server("y", "closed", "tcp", 5000);
    let y = format!("{}:5000", sb.ip_of("y"));
    sb.sleeper("x", &["--network", "closed"]);
    let routes = || sb.dnet_ok(&["exec", "x", "--", "ip", "-4", "route", "show"]);
    let r = routes();
    assert!(!r.contains("default"), "{r}");
    assert!(r.contains("10.91.0.0/24 via 10.91.0.1"), "{r}");
    let o = sb.conntest_in("x", &["tcp", &y]);
    assert!(ok(&o), "the peer on the internal network: {}", out(&o));
    let world = format!("{WORLD_IP}:80");
    let o = sb.conntest_in("x", &["tcp", &world, "--timeout", "1"]);
    assert!(
        out(&o).contains("Network is unreachable"),
        "no route, not a drop: {}",
        out(&o)
    );
    assert_eq!(sb.drops("x", "internal-network"), 0);

    sb.dnet_ok(&["network", "connect", "open", "x"]);
    let r = routes();
    assert!(r.contains("default via 10.92.0.1"), "{r}");
    assert!(sb.reaches_world("x"), "the world through open");
    let o = sb.conntest_in("x", &["tcp", &y]);
    assert!(ok(&o), "the peer still: {}", out(&o));

    // The same through the attach API (what dnet-cni reports).
    let ns = sb.add_netns("a");
    let attach = |net: &str| {
        let req = json!({"network": net, "target": {"kind": "netns", "path": ns}});
        let (code, r) = sb.api_post("/v1/attach", &req);
        assert_eq!(code, 201, "{r}");
        r
    };
    let is_default = |rt: &Value| rt["dst"] == "0.0.0.0/0";
    let r = attach("closed");
    assert_eq!(r["gateway"], Value::Null, "{r}");
    assert!(
        !r["routes"].as_array().unwrap().iter().any(is_default),
        "{r}"
    );
    let ns_routes = || out(&in_netns(&ns, "ip", &["-4", "route", "show"]));
    assert!(!ns_routes().contains("default"), "{}", ns_routes());
    let r = attach("open");
    let default: Vec<_> = r["routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rt| is_default(rt))
        .collect();
    assert_eq!(
        default,
        [&json!({"dst": "0.0.0.0/0", "gateway": "10.92.0.1"})],
        "{r}"
    );
    assert!(
        ns_routes().contains("default via 10.92.0.1"),
        "{}",
        ns_routes()
    );
}

/// A daemon killed between a disconnect's commit and the re-election
/// (`DNET_CRASH_AT=disconnect:committed`): at the next start reconcile
/// removes the old endpoint, and with it the default route, and re-elects
/// the next network's gateway (issue 10 item 15). Only there: the start
/// looks at the namespaces the disconnect marked in its commit, not at
/// every container's (another's default route, removed by its user, stays
/// removed).
#[test]
fn a_daemon_killed_before_the_reelection_reelects_at_start() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.93.0.0/24", "n1"]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.94.0.0/24", "n2"]);
    sb.sleeper("x", &["--network", "n1"]);
    sb.dnet_ok(&["network", "connect", "n2", "x"]);
    sb.sleeper("y", &["--network", "n2"]);
    sb.dnet_ok(&["exec", "y", "--", "ip", "route", "del", "default"]);
    sb.stop_daemon(libc::SIGTERM);
    sb.set_daemon_env(&[("DNET_CRASH_AT", "disconnect:committed")]);
    sb.start_daemon();
    let o = sb.dnet(&["network", "disconnect", "n1", "x"]);
    assert!(!o.status.success(), "the daemon answered: {o:?}");
    let status = sb
        .wait_daemon_exit(Duration::from_secs(30))
        .expect("the daemon stopped at the point");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{status}"
    );
    sb.set_daemon_env(&[]);
    sb.start_daemon();
    let r = sb.dnet_ok(&["exec", "x", "--", "ip", "-4", "route", "show", "default"]);
    assert!(r.trim().starts_with("default via 10.94.0.1"), "{r:?}");
    let r = sb.dnet_ok(&["exec", "y", "--", "ip", "-4", "route", "show", "default"]);
    assert_eq!(r.trim(), "", "the start left y's routes alone");
    // Its resolv.conf and hosts follow the state too (they were written
    // for n1 before the kill): the resolver of n2, no address of n1.
    let rc = sb.dnet_ok(&["exec", "x", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("nameserver 10.94.0.1"), "{rc}");
    assert!(!rc.contains("10.93.0.1"), "{rc}");
    let hosts = sb.dnet_ok(&["exec", "x", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("10.94.0."), "{hosts}");
    assert!(!hosts.contains("10.93.0."), "{hosts}");
    // The world is reached through it.
    assert!(sb.reaches_world("x"));
}

/// A namespace that already has an interface of the name the endpoint
/// takes refuses the attach with a message that says so, and nothing is
/// left of it: no link, pin, map entry or record; the namespace keeps its
/// own interfaces.
#[test]
fn an_interface_name_the_namespace_has_is_refused_clearly() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("n");
    let o = in_netns(
        &ns,
        "ip",
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "own1",
        ],
    );
    assert!(ok(&o), "{}", out(&o));
    let before = sb.snapshot();
    let ns_links = links_in(&ns);
    let path = ns.to_str().unwrap();
    let err = sb.dnet_err(&["network", "connect", "bridge", "--netns", path]);
    assert!(
        err.contains("already has an interface called eth0"),
        "{err}"
    );
    let (code, body) = sb.api_post(
        "/v1/attach",
        &json!({"network": "bridge", "target": {"kind": "netns", "path": path},
                "ifname": "own1", "runtime": {"runtime": "cni", "id": "n1"}}),
    );
    assert_eq!(code, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("already has an interface called own1")),
        "{body}"
    );
    assert_eq!(sb.snapshot(), before, "a refused attach changed something");
    assert_eq!(links_in(&ns), ns_links);
    assert_consistent(&sb);
}
