//! `dnet-cni` driven exactly as libcni drives a plugin: the `CNI_*`
//! environment (and nothing else of ours), the config on stdin, the result
//! or error read from stdout, the exit code; run from the daemon's
//! namespace, as a runtime on the host runs it.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use dnet_sandbox::{Sandbox, UPLINK_IP, assert_consistent, ct, dnet_bin, in_netns, ok, out};
use serde_json::{Value, json};

fn plugin() -> PathBuf {
    dnet_bin().with_file_name("dnet-cni")
}

/// One plugin call's outcome.
#[derive(Debug)]
struct Call {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Call {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|_| panic!("JSON on stdout: {self:?}"))
    }

    /// The call failed with this CNI code (and said why on stderr only
    /// as a log).
    fn assert_error(&self, code: u64, msg_has: &str) -> Value {
        assert_ne!(self.code, 0, "should fail: {self:?}");
        let e = self.json();
        assert_eq!(e["code"], code, "{self:?}");
        assert!(
            e["msg"].as_str().unwrap_or("").contains(msg_has),
            "msg should contain {msg_has:?}: {self:?}"
        );
        assert!(e["cniVersion"].is_string(), "{e}");
        e
    }

    fn assert_ok(&self) {
        assert_eq!(self.code, 0, "{self:?}");
    }
}

/// What libcni sets for one call.
struct Cni<'a> {
    host_ns: PathBuf,
    command: &'a str,
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    args: &'a str,
}

impl Cni<'_> {
    fn call(&self, conf: &Value) -> Call {
        self.call_raw(conf.to_string().as_bytes())
    }

    fn call_raw(&self, stdin: &[u8]) -> Call {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host_ns.display()))
            .arg(plugin())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", self.command)
            .env("CNI_PATH", plugin().parent().unwrap())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in [
            ("CNI_CONTAINERID", self.container_id),
            ("CNI_NETNS", self.netns),
            ("CNI_IFNAME", self.ifname),
            ("CNI_ARGS", self.args),
        ] {
            if !v.is_empty() {
                cmd.env(k, v);
            }
        }
        let mut child = cmd.spawn().expect("run dnet-cni");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let o = child.wait_with_output().unwrap();
        Call {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn conf(sb: &Sandbox, version: &str, network: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "dnet-test",
        "type": "dnet-cni",
        "network": network,
        "socket": sb.socket(),
    })
}

fn cni<'a>(sb: &Sandbox, command: &'a str, id: &'a str, netns: &'a str) -> Cni<'a> {
    Cni {
        host_ns: sb.host_netns_path(),
        command,
        container_id: id,
        netns,
        ifname: "eth0",
        args: "",
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn cni_version_answers_every_version_fast_without_a_daemon() {
    let sb = Sandbox::without_daemon();
    for v in ["0.4.0", "1.0.0", "1.1.0"] {
        let c = cni(&sb, "VERSION", "", "").call(&json!({"cniVersion": v}));
        c.assert_ok();
        let j = c.json();
        assert_eq!(j["cniVersion"], v);
        assert_eq!(j["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));
        assert!(c.stderr.is_empty(), "{c:?}");
    }
}

#[test]
fn cni_add_check_del_in_every_version() {
    let mut sb = Sandbox::new();
    for (n, v) in ["0.4.0", "1.0.0", "1.1.0"].into_iter().enumerate() {
        let ns = sb.add_netns(&format!("v{n}"));
        let id = format!("ctr{n}aaaa");
        let mut c = conf(&sb, v, "bridge");
        // Keys the plugin does not know are left alone.
        c["capabilities"] = json!({"portMappings": true});
        c["someRuntimeKey"] = json!({"x": 1});
        let add = cni(&sb, "ADD", &id, s(&ns)).call(&c);
        add.assert_ok();
        let r = add.json();
        assert_eq!(r["cniVersion"], v, "{r}");
        let ifs = r["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 2, "{r}");
        assert!(ifs[0]["sandbox"].is_null(), "the host side has no sandbox");
        assert!(ifs[0]["mac"].is_string(), "the host side's mac: {r}");
        assert_eq!(ifs[1]["name"], "eth0");
        assert_eq!(ifs[1]["sandbox"], s(&ns));
        let mac = ifs[1]["mac"].as_str().unwrap();
        let ip = r["ips"][0]["address"].as_str().unwrap();
        let addr = ip.split('/').next().unwrap();
        let o: Vec<u8> = addr.split('.').map(|x| x.parse().unwrap()).collect();
        assert_eq!(
            mac,
            format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
            "the seed's 02:42 + IPv4 MAC"
        );
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["ips"][0]["gateway"], "172.17.0.1");
        assert_eq!(r["ips"][0]["version"].is_string(), v == "0.4.0", "{r}");
        assert!(
            r["routes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["dst"] == "0.0.0.0/0" && x["gw"] == "172.17.0.1"),
            "{r}"
        );
        // The endpoint works when ADD returns.
        let l = in_netns(&ns, "ip", &["-j", "addr", "show", "eth0"]);
        assert!(ok(&l), "{}", out(&l));
        let l: Value = serde_json::from_slice(&l.stdout).unwrap();
        assert_eq!(l[0]["address"], mac);
        let p = in_netns(&ns, &ct(), &["ping", "172.17.0.1"]);
        assert!(ok(&p), "ping the gateway right after ADD: {}", out(&p));
        let shown = sb.container(&id);
        assert_eq!(
            shown["networks"][0]["ip"], addr,
            "dnet ps shows {id}: {shown}"
        );

        // A repeated ADD answers the same attachment.
        let again = cni(&sb, "ADD", &id, s(&ns)).call(&c);
        again.assert_ok();
        assert_eq!(again.json()["ips"], r["ips"]);
        assert_eq!(sb.cni_records().len(), 1);

        // CHECK against the cached result; a different one fails.
        let mut chk = c.clone();
        chk["prevResult"] = r.clone();
        cni(&sb, "CHECK", &id, s(&ns)).call(&chk).assert_ok();
        let mut bad = chk.clone();
        bad["prevResult"]["ips"][0]["address"] = json!("172.17.9.9/16");
        let e = cni(&sb, "CHECK", &id, s(&ns))
            .call(&bad)
            .assert_error(101, "differs");
        assert!(e["details"].as_str().unwrap().contains("172.17.9.9"), "{e}");
        cni(&sb, "CHECK", &id, s(&ns))
            .call(&c)
            .assert_error(7, "prevResult");
        if v == "1.1.0" {
            cni(&sb, "STATUS", "", "").call(&c).assert_ok();
        }
        assert_consistent(&sb);

        let del = cni(&sb, "DEL", &id, s(&ns)).call(&c);
        del.assert_ok();
        assert!(del.stdout.is_empty(), "{del:?}");
        assert!(sb.cni_records().is_empty());
        sb.settle();
        let l = in_netns(&ns, "ip", &["link", "show", "eth0"]);
        assert!(!ok(&l), "eth0 went with DEL");
        // Repeated DEL is success; CHECK of nothing is an unknown container.
        cni(&sb, "DEL", &id, s(&ns)).call(&c).assert_ok();
        cni(&sb, "CHECK", &id, s(&ns))
            .call(&chk)
            .assert_error(3, "no container");
        assert_consistent(&sb);
    }
}

#[test]
fn cni_del_succeeds_when_the_namespace_the_endpoint_or_both_are_gone() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("a");
    let c = conf(&sb, "1.0.0", "bridge");
    cni(&sb, "ADD", "gone1", s(&ns)).call(&c).assert_ok();
    // The namespace vanishes before DEL (the runtime removed it first).
    let name = ns.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(ok(&dnet_sandbox::sh("ip", &["netns", "del", &name])));
    let del = cni(&sb, "DEL", "gone1", s(&ns)).call(&c);
    del.assert_ok();
    assert!(sb.cni_records().is_empty(), "the record went");
    // CNI_NETNS empty on DEL, an id never added, a network since removed.
    cni(&sb, "DEL", "gone1", "").call(&c).assert_ok();
    cni(&sb, "DEL", "never", "").call(&c).assert_ok();
    cni(&sb, "DEL", "never", "")
        .call(&conf(&sb, "1.0.0", "nosuchnet"))
        .assert_ok();
    assert_consistent(&sb);
}

#[test]
fn cni_del_with_the_daemon_down_fails_and_its_next_start_collects_what_is_left() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("a");
    let c = conf(&sb, "1.0.0", "bridge");
    cni(&sb, "ADD", "down1", s(&ns)).call(&c).assert_ok();
    sb.stop_daemon(libc::SIGTERM);
    cni(&sb, "DEL", "down1", s(&ns))
        .call(&c)
        .assert_error(11, "cannot reach the dnet daemon");
    cni(&sb, "ADD", "down2", s(&ns))
        .call(&c)
        .assert_error(11, "cannot reach the dnet daemon");
    // The runtime removes the namespace anyway; the next start forgets it.
    let name = ns.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(ok(&dnet_sandbox::sh("ip", &["netns", "del", &name])));
    sb.start_daemon();
    assert!(sb.cni_records().is_empty(), "{}", sb.state());
    cni(&sb, "DEL", "down1", s(&ns)).call(&c).assert_ok();
    assert_consistent(&sb);
}

#[test]
fn cni_one_container_on_two_networks_leaves_them_one_by_one() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.91.0.0/24", "second"]);
    let ns = sb.add_netns("a");
    let one = conf(&sb, "1.0.0", "bridge");
    let two = conf(&sb, "1.0.0", "second");
    cni(&sb, "ADD", "multi", s(&ns)).call(&one).assert_ok();
    let mut eth1 = cni(&sb, "ADD", "multi", s(&ns));
    eth1.ifname = "eth1";
    let r = eth1.call(&two);
    r.assert_ok();
    let r = r.json();
    assert_eq!(r["interfaces"][1]["name"], "eth1");
    // A user-defined network's resolver is its gateway.
    assert_eq!(r["dns"]["nameservers"], json!(["10.91.0.1"]), "{r}");
    assert!(
        r["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.91.0."),
        "{r}"
    );
    let recs = sb.cni_records();
    assert_eq!(recs.len(), 1, "one container, two endpoints");
    assert_eq!(recs[0]["endpoints"].as_array().unwrap().len(), 2);
    let p = in_netns(&ns, &ct(), &["ping", "172.17.0.1", "10.91.0.1"]);
    assert!(ok(&p), "both gateways: {}", out(&p));
    let mut del1 = cni(&sb, "DEL", "multi", s(&ns));
    del1.ifname = "eth1";
    del1.call(&two).assert_ok();
    sb.settle();
    assert!(!ok(&in_netns(&ns, "ip", &["link", "show", "eth1"])));
    assert!(ok(&in_netns(&ns, "ip", &["link", "show", "eth0"])));
    assert_eq!(sb.cni_records().len(), 1);
    cni(&sb, "DEL", "multi", s(&ns)).call(&one).assert_ok();
    assert!(sb.cni_records().is_empty());
    assert_consistent(&sb);
}

/// ADD and DEL, one after the other, twenty times: each pair leaves
/// nothing behind (its latency is a figure for the bench, not a test).
#[test]
fn cni_add_and_del_repeated_leave_nothing() {
    let mut sb = Sandbox::new();
    let c = conf(&sb, "1.0.0", "bridge");
    for i in 0..20 {
        let ns = sb.add_netns(&format!("l{i}"));
        let id = format!("lat{i}");
        cni(&sb, "ADD", &id, s(&ns)).call(&c).assert_ok();
        assert_eq!(sb.cni_records().len(), 1);
        cni(&sb, "DEL", &id, s(&ns)).call(&c).assert_ok();
        assert!(sb.cni_records().is_empty());
    }
}

#[test]
fn cni_bad_input_gives_the_spec_codes_and_changes_nothing() {
    let mut sb = Sandbox::new();
    let ns = sb.add_netns("a");
    let good = conf(&sb, "1.0.0", "bridge");
    let before = sb.snapshot();
    let add = |c: &Value| cni(&sb, "ADD", "bad1", s(&ns)).call(c);
    cni(&sb, "ADD", "bad1", s(&ns))
        .call_raw(b"{\"cniVersion\": \"1.0.0\", ")
        .assert_error(6, "decode");
    let mut c = good.clone();
    c.as_object_mut().unwrap().remove("network");
    add(&c).assert_error(7, "network");
    add(&conf(&sb, "0.3.1", "bridge")).assert_error(1, "0.3.1");
    add(&conf(&sb, "1.0.0", "nosuchnet")).assert_error(100, "not found");
    let mut c = good.clone();
    c["runtimeConfig"] = json!({"bandwidth": {"ingressRate": 1000000, "ingressBurst": 1000}});
    add(&c).assert_error(2, "bandwidth");
    let mut c = good.clone();
    c["runtimeConfig"] =
        json!({"portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "sctp"}]});
    add(&c).assert_error(7, "sctp");
    let mut c = good.clone();
    c["runtimeConfig"] = json!({"ips": ["172.99.0.5/16"]});
    add(&c).assert_error(100, "172.99.0.5");
    let mut c = good.clone();
    c["runtimeConfig"] = json!({"mac": "01:00:00:00:00:01"});
    add(&c).assert_error(100, "multicast");
    cni(&sb, "ADD", "bad1", "")
        .call(&good)
        .assert_error(4, "CNI_NETNS");
    cni(&sb, "ADD", "bad1", "/nonexistent/netns")
        .call(&good)
        .assert_error(100, "not a network namespace");
    cni(&sb, "FROB", "bad1", s(&ns))
        .call(&good)
        .assert_error(4, "FROB");
    cni(&sb, "STATUS", "", "")
        .call(&good)
        .assert_error(1, "1.1.0");
    cni(&sb, "STATUS", "", "")
        .call(&conf(&sb, "1.1.0", "nosuchnet"))
        .assert_error(50, "not found");
    let mut c = good.clone();
    c["socket"] = json!("/nonexistent/dnet.sock");
    let e = add(&c).assert_error(11, "cannot reach the dnet daemon");
    assert_eq!(e["cniVersion"], "1.0.0");
    let mut c = conf(&sb, "1.1.0", "bridge");
    c["socket"] = json!("/nonexistent/dnet.sock");
    cni(&sb, "STATUS", "", "")
        .call(&c)
        .assert_error(50, "cannot reach");
    assert_eq!(sb.snapshot(), before, "bad input changed something");
    assert!(in_netns(&ns, "ip", &["link", "show", "eth0"]).status.code() != Some(0));
}

#[test]
fn cni_port_mappings_publish_like_dnet_run_and_pods_are_named() {
    let mut sb = Sandbox::new();
    let a = sb.add_netns("a");
    let b = sb.add_netns("b");
    // podman's spelling, with a static address and MAC.
    let mut ca = conf(&sb, "1.0.0", "bridge");
    ca["runtimeConfig"] = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}],
        "ips": ["172.17.0.80/16"],
        "mac": "02:00:00:00:00:80",
    });
    let mut add_a = cni(&sb, "ADD", "podmanctr", s(&a));
    add_a.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0";
    let r = add_a.call(&ca);
    r.assert_ok();
    let r = r.json();
    assert_eq!(r["ips"][0]["address"], "172.17.0.80/16");
    assert_eq!(r["interfaces"][1]["mac"], "02:00:00:00:00:80");
    // The same pod again (a new sandbox before the old one's DEL): dnet
    // names it.
    let a2 = sb.add_netns("a2");
    let mut add_a2 = cni(&sb, "ADD", "podmanctr2", s(&a2));
    add_a2.args = add_a.args;
    add_a2.call(&conf(&sb, "1.0.0", "bridge")).assert_ok();
    let names: Vec<String> = sb
        .cni_records()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"default/web-0".to_owned()), "{names:?}");
    cni(&sb, "DEL", "podmanctr2", s(&a2))
        .call(&conf(&sb, "1.0.0", "bridge"))
        .assert_ok();
    let web = sb.container("default/web-0");
    assert_eq!(web["ports"][0]["host_port"], 8080, "{web}");
    // containerd's spelling.
    let mut cb = conf(&sb, "1.0.0", "bridge");
    cb["runtimeConfig"] = json!({
        "portMappings": [{"HostPort": 5353, "ContainerPort": 53, "Protocol": "udp", "HostIP": ""}],
    });
    cni(&sb, "ADD", "containerdctr", s(&b))
        .call(&cb)
        .assert_ok();
    let db = sb.container("containerdctr");
    assert_eq!(db["ports"][0]["host_port"], 5353, "{db}");
    assert_eq!(db["ports"][0]["proto"], "udp", "{db}");

    // East-west, and the published ports from the world.
    sb.spawn_in(&a, &ct(), &["serve", "tcp", "80"]);
    sb.spawn_in(&b, &ct(), &["serve", "udp", "53"]);
    dnet_sandbox::wait_listening(&a, "tcp", 80);
    dnet_sandbox::wait_listening(&b, "udp", 53);
    let o = in_netns(&b, &ct(), &["tcp", "172.17.0.80:80"]);
    assert!(ok(&o), "east-west: {}", out(&o));
    let o = sb.in_world(&ct(), &["tcp", &format!("{UPLINK_IP}:8080")]);
    assert!(
        ok(&o),
        "the world reaches the published tcp port: {}",
        out(&o)
    );
    let o = sb.in_world(&ct(), &["udp", &format!("{UPLINK_IP}:5353")]);
    assert!(
        ok(&o),
        "the world reaches the published udp port: {}",
        out(&o)
    );
    // stats name the pod.
    let stats = sb.dnet_json(&["stats"]);
    assert!(
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["container"] == "default/web-0" && e["rx_packets"].as_u64() > Some(0)),
        "{stats}"
    );
    assert_consistent(&sb);

    cni(&sb, "DEL", "podmanctr", s(&a)).call(&ca).assert_ok();
    cni(&sb, "DEL", "containerdctr", s(&b))
        .call(&cb)
        .assert_ok();
    let o = sb.in_world(
        &ct(),
        &["tcp", &format!("{UPLINK_IP}:8080"), "--timeout", "1"],
    );
    assert!(!ok(&o), "the port went with DEL: {}", out(&o));
    assert!(sb.cni_records().is_empty());
    assert_consistent(&sb);
}

#[test]
fn cni_pods_resolve_by_pod_name_on_a_user_defined_network() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.92.0.0/24", "front"]);
    let gw = "10.92.0.1";
    let conf = conf(&sb, "1.0.0", "front");
    let mut ips = Vec::new();
    for (id, pod) in [("ctrweb", "web-0"), ("ctrdb", "db-0")] {
        let ns = sb.add_netns(pod);
        let mut add = cni(&sb, "ADD", id, s(&ns));
        let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME={pod}");
        add.args = &args;
        let r = add.call(&conf);
        r.assert_ok();
        let r = r.json();
        assert_eq!(r["dns"]["nameservers"], json!([gw]), "{r}");
        let ip = r["ips"][0]["address"].as_str().unwrap();
        ips.push((id, ns, ip.split('/').next().unwrap().to_owned()));
    }
    let (db_ns, web_ip) = (&ips[1].1, &ips[0].2);
    // Recorded as NAMESPACE/POD, named in DNS by the pod's name (its host
    // name in Kubernetes; podman gives its container name as the pod's).
    assert!(sb.cni_records().iter().any(|c| c["name"] == "shop/web-0"));
    let ask = |args: &[&str]| {
        let mut a = vec!["dns", "query", gw];
        a.extend(args);
        let o = in_netns(db_ns, &ct(), &a);
        assert!(ok(&o), "{args:?}: {}", out(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    for name in ["web-0", "WEB-0.front."] {
        assert_eq!(
            ask(&[name]),
            format!("rcode NoError\nA {web_ip}\n"),
            "{name}"
        );
    }
    // No IPv6 address: an empty NOERROR, not forwarded.
    assert_eq!(ask(&["web-0", "aaaa"]), "rcode NoError\n");
    let arpa: Vec<&str> = web_ip.split('.').rev().collect();
    assert_eq!(
        ask(&[&format!("{}.in-addr.arpa", arpa.join(".")), "ptr"]),
        "rcode NoError\nPTR web-0.front.\n"
    );
    for (id, ns, _) in &ips {
        cni(&sb, "DEL", id, s(ns)).call(&conf).assert_ok();
    }
    assert!(sb.cni_records().is_empty());
}

#[test]
fn cni_gc_collects_the_attachments_the_runtime_no_longer_lists() {
    let mut sb = Sandbox::new();
    let c = conf(&sb, "1.1.0", "bridge");
    for (id, sfx) in [("keep1", "a"), ("drop1", "b"), ("keep2", "c")] {
        let ns = sb.add_netns(sfx);
        cni(&sb, "ADD", id, s(&ns)).call(&c).assert_ok();
    }
    let mut gc = c.clone();
    gc["cni.dev/valid-attachments"] = json!([
        {"containerID": "keep1", "ifname": "eth0"},
        {"containerID": "keep2", "ifname": "eth0"},
    ]);
    cni(&sb, "GC", "", "").call(&gc).assert_ok();
    let mut ids: Vec<String> = sb
        .cni_records()
        .iter()
        .map(|c| c["runtime"]["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["keep1", "keep2"]);
    // A network that is gone has nothing to collect.
    let mut gone = gc.clone();
    gone["network"] = json!("nosuchnet");
    cni(&sb, "GC", "", "").call(&gone).assert_ok();
    assert_eq!(sb.cni_records().len(), 2);
    // GC is 1.1.0 only.
    let mut old = gc.clone();
    old["cniVersion"] = json!("1.0.0");
    cni(&sb, "GC", "", "").call(&old).assert_error(1, "1.1.0");
    assert_consistent(&sb);
}

#[test]
fn cni_install_writes_the_plugin_and_a_conflist_only_for_a_known_network() {
    let sb = Sandbox::new();
    let dir = std::env::temp_dir().join(format!("{}-cni-install", sb.name));
    let (bin, confd) = (dir.join("bin"), dir.join("net.d"));
    let _cleanup = Remove(dir.clone());
    sb.dnet_ok(&["network", "create", "--subnet", "10.88.0.0/16", "cninet"]);
    let e = sb.dnet_err(&[
        "cni",
        "install",
        "--bin-dir",
        s(&bin),
        "--conf-dir",
        s(&confd),
        "nosuchnet",
    ]);
    assert!(e.contains("not found"), "{e}");
    assert!(
        !bin.exists() && !confd.exists(),
        "nothing written on bad input"
    );
    sb.dnet_ok(&[
        "cni",
        "install",
        "--bin-dir",
        s(&bin),
        "--conf-dir",
        s(&confd),
        "cninet",
    ]);
    let plugin_bytes = std::fs::read(bin.join("dnet-cni")).unwrap();
    assert_eq!(plugin_bytes, std::fs::read(plugin()).unwrap());
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(bin.join("dnet-cni"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let list: Value =
        serde_json::from_slice(&std::fs::read(confd.join("10-dnet-cninet.conflist")).unwrap())
            .unwrap();
    assert_eq!(list["cniVersion"], "1.0.0");
    assert_eq!(list["name"], "cninet");
    let p = &list["plugins"][0];
    assert_eq!(p["type"], "dnet-cni");
    assert_eq!(p["network"], "cninet");
    assert_eq!(p["socket"], s(&sb.socket()));
    assert_eq!(
        p["capabilities"],
        json!({"portMappings": true, "ips": true, "mac": true})
    );
    assert_eq!(
        std::fs::read_dir(&confd).unwrap().count(),
        1,
        "no temp files left"
    );
}

/// Removes a folder when dropped.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn cni_on_a_dual_stack_network_gives_and_reports_both_addresses() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.76.0.0/24",
        "--subnet",
        "fd00:76::/64",
        "dual",
    ]);
    let ns = sb.add_netns("d");
    let c = conf(&sb, "0.4.0", "dual");
    let add = cni(&sb, "ADD", "ctr6aaaa", s(&ns)).call(&c);
    add.assert_ok();
    let r = add.json();
    assert_eq!(
        r["ips"][1],
        json!({"address": "fd00:76::2/64", "gateway": "fd00:76::1", "interface": 1, "version": "6"}),
        "{r}"
    );
    assert!(
        r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["dst"] == "::/0" && x["gw"] == "fd00:76::1"),
        "{r}"
    );
    // The namespace (another runtime's) has the address, and it works:
    // the gateway answers over IPv6.
    let l = in_netns(
        &ns,
        "ip",
        &["-6", "-o", "addr", "show", "eth0", "scope", "global"],
    );
    assert!(
        String::from_utf8_lossy(&l.stdout).contains("fd00:76::2/64"),
        "{}",
        out(&l)
    );
    let p = in_netns(
        &ns,
        "ping",
        &["-6", "-n", "-c", "1", "-W", "2", "fd00:76::1"],
    );
    assert!(ok(&p), "{}", out(&p));
    cni(&sb, "CHECK", "ctr6aaaa", s(&ns))
        .call(&{
            let mut c = c.clone();
            c["prevResult"] = r.clone();
            c
        })
        .assert_ok();
    cni(&sb, "DEL", "ctr6aaaa", s(&ns)).call(&c).assert_ok();
    assert_consistent(&sb);
    // A static IPv6 address (runtimeConfig `ips`), and one refused on an
    // IPv4-only network.
    let mut c6 = c.clone();
    c6["runtimeConfig"] = json!({"ips": ["10.76.0.50/24", "fd00:76::50/64"]});
    let add = cni(&sb, "ADD", "ctr6bbbb", s(&ns)).call(&c6);
    add.assert_ok();
    let r = add.json();
    assert_eq!(r["ips"][0]["address"], "10.76.0.50/24", "{r}");
    assert_eq!(r["ips"][1]["address"], "fd00:76::50/64", "{r}");
    cni(&sb, "DEL", "ctr6bbbb", s(&ns)).call(&c6).assert_ok();
    let mut v4 = conf(&sb, "1.0.0", "bridge");
    v4["runtimeConfig"] = json!({"ips": ["fd00:76::51/64"]});
    cni(&sb, "ADD", "ctr6cccc", s(&ns))
        .call(&v4)
        .assert_error(100, "not dual-stack");
    assert_consistent(&sb);
    // Port mappings on IPv6 host addresses publish in their family, as
    // `dnet run -p [IPv6]:H:C`; on an IPv4-only network they are refused.
    let mappings = json!({"portMappings": [
        {"hostPort": 8085, "containerPort": 80, "protocol": "tcp", "hostIP": "::1"},
        {"HostPort": 5355, "ContainerPort": 53, "Protocol": "udp", "HostIP": "::"}]});
    let mut cp = c.clone();
    cp["runtimeConfig"] = mappings.clone();
    cni(&sb, "ADD", "ctr6dddd", s(&ns)).call(&cp).assert_ok();
    let d = sb.container("ctr6dddd");
    assert_eq!(
        (&d["ports"][0]["host_ip"], &d["ports"][0]["host_port"]),
        (&json!("::1"), &json!(8085)),
        "{d}"
    );
    assert_eq!(d["ports"][1]["host_ip"], "::", "{d}");
    cni(&sb, "DEL", "ctr6dddd", s(&ns)).call(&cp).assert_ok();
    let before = sb.snapshot();
    let mut v4p = conf(&sb, "1.0.0", "bridge");
    v4p["runtimeConfig"] = mappings;
    cni(&sb, "ADD", "ctr6eeee", s(&ns))
        .call(&v4p)
        .assert_error(100, "IPv4-only");
    assert_eq!(sb.snapshot(), before, "a refused ADD changed something");
    assert_consistent(&sb);
}
