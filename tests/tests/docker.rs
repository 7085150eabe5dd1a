//! Real Docker on dnet: Debian's dockerd in a sandbox's host namespace uses
//! the dnet daemon of that sandbox as its network driver (`docker network
//! create -d <driver>`, the driver named after the sandbox so that runs
//! never meet). No mock: what Docker sends is what dnet gets.

use std::time::Duration;

use dnet_sandbox::{
    Sandbox, UPLINK_IP, UPLINK6, WORLD_IP, WORLD6, assert_consistent, ct,
    docker::{Dockerd, Turn},
    ok, out, stdout, wait_until,
};

const IMAGE: &str = "dnt-busybox:latest";

/// A sandbox whose dnet daemon serves the Docker driver, and a dockerd in
/// its host namespace. Docker goes first (fields drop in order): removing
/// its containers needs the driver.
struct Env {
    docker: Dockerd,
    sb: Sandbox,
    /// The driver's name: its socket's file name.
    driver: String,
}

impl Env {
    fn new() -> Env {
        Env::start(false)
    }

    /// With `ipv6`, the uplink has [`UPLINK6`] (the world [`WORLD6`]) and
    /// the host's default IPv6 route goes to the world, before dnet starts.
    fn start(ipv6: bool) -> Env {
        let turn = Turn::take();
        let mut sb = Sandbox::without_daemon();
        if ipv6 {
            sb.add_uplink6();
            sb.route6_via_world();
        }
        let driver = sb.name.clone();
        let sock = format!("--docker-plugin-socket=/run/docker/plugins/{driver}.sock");
        // dockerd's socket (made below): where dnet learns Docker's names.
        let api = format!(
            "--docker-api-socket={}",
            sb.dir.join("docker/docker.sock").display()
        );
        sb.set_daemon_args(&[&sock, &api]);
        sb.start_daemon();
        // No docker0: only dnet's networks.
        let docker = turn
            .start(
                &sb.host_netns_path(),
                &sb.dir,
                &sb.name,
                &["--bridge", "none"],
            )
            .unwrap_or_else(|e| panic!("dockerd: {e:#}"));
        docker
            .import_busybox(IMAGE)
            .unwrap_or_else(|e| panic!("docker import: {e:#}"));
        Env { docker, sb, driver }
    }

    fn docker(&self, args: &[&str]) -> String {
        self.docker.cmd(args).unwrap_or_else(|e| {
            panic!(
                "{e:#}\n--- dockerd log ---\n{}\n--- dnet log ---\n{}",
                self.docker.log_tail(20),
                self.sb.log_tail(30)
            )
        })
    }

    /// `docker ARGS`, which must fail: its stderr.
    fn docker_err(&self, args: &[&str]) -> String {
        let o = self.docker.output(args);
        assert!(!ok(&o), "docker {args:?} succeeded: {}", out(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `docker network create -d <driver> ARGS NAME`, which must fail and
    /// leave dnet's state as it was: its stderr.
    fn network_refused(&self, name: &str, args: &[&str]) -> String {
        let before = self.sb.state();
        let mut a = vec!["network", "create", "-d", self.driver.as_str()];
        a.extend(args);
        a.push(name);
        let e = self.docker_err(&a);
        assert_eq!(
            self.sb.state(),
            before,
            "the refused network {name} changed the state"
        );
        assert_consistent(&self.sb);
        e
    }

    /// The addresses of one family (`"ip"` or `"ip6"`) of the containers
    /// in `dnet ps` (their first network's).
    fn dnet_ips(&self, family: &str) -> Vec<String> {
        let ps = self.sb.dnet_json(&["ps"]);
        ps.as_array()
            .expect("containers")
            .iter()
            .filter_map(|c| c["networks"][0][family].as_str())
            .map(str::to_owned)
            .collect()
    }

    /// `docker network create -d <driver> ARGS NAME`: Docker's network id.
    /// Returns once dnet has learned the name from dockerd (its state does
    /// not change behind a test's back after that).
    fn network(&self, name: &str, args: &[&str]) -> String {
        let mut a = vec!["network", "create", "-d", self.driver.as_str()];
        a.extend(args);
        a.push(name);
        let id = self.docker(&a).trim().to_owned();
        assert!(
            wait_until(Duration::from_secs(20), || {
                self.dnet_network(&id).is_some_and(|n| n["name"] == name)
            }),
            "dnet did not learn Docker's name {name}: {:?}\n{}",
            self.dnet_network(&id),
            self.sb.log_tail(20)
        );
        id
    }

    /// `docker run -d --network NET ARGS IMAGE sleep 1000000`.
    fn run(&self, name: &str, net: &str, args: &[&str]) {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        a.extend(args);
        a.extend([IMAGE, "sleep", "1000000"]);
        self.docker(&a);
    }

    fn exec(&self, name: &str, cmd: &[&str]) -> std::process::Output {
        let mut a = vec!["exec", name];
        a.extend(cmd);
        self.docker.output(&a)
    }

    /// The dnet network Docker's network `id` is.
    fn dnet_network(&self, id: &str) -> Option<serde_json::Value> {
        self.sb
            .dnet_json(&["network", "ls"])
            .as_array()
            .expect("networks")
            .iter()
            .find(|n| n["runtime"]["id"] == id)
            .cloned()
    }

    /// `eth0`'s address and MAC inside a container, as it sees them.
    fn eth0(&self, name: &str) -> (String, String) {
        let o = self.exec(name, &["ip", "-o", "-4", "addr", "show", "eth0"]);
        assert!(ok(&o), "{}", out(&o));
        let addr = stdout(&o)
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .expect("an address")
            .to_owned();
        let o = self.exec(name, &["cat", "/sys/class/net/eth0/address"]);
        assert!(ok(&o), "{}", out(&o));
        (addr, stdout(&o))
    }

    /// Nothing of Docker's is left in dnet: no docker network or container
    /// record, and the kernel agrees with the state.
    fn assert_clean(&self) {
        let st = self.sb.state();
        assert!(
            st["containers"]
                .as_object()
                .is_none_or(|c| c.values().all(|c| c["runtime"].is_null())),
            "container records left: {st}"
        );
        assert!(
            st["networks"]
                .as_object()
                .is_none_or(|n| n.values().all(|n| n["runtime"].is_null())),
            "network records left: {st}"
        );
        assert_consistent(&self.sb);
    }
}

#[test]
fn docker_containers_on_a_dnet_network() {
    let env = Env::new();
    let id = env.network(
        "dn1",
        &["--subnet", "10.89.0.0/24", "--gateway", "10.89.0.1"],
    );
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["ipam"]["subnet"], "10.89.0.0/24");
    assert_eq!(net["ipam"]["gateway"], "10.89.0.1");
    assert_eq!(net["runtime"]["runtime"], "docker");
    // Docker does not send the name: dnet asks dockerd's API for it, after
    // CreateNetwork has answered (`env.network` waits for it), and the
    // network goes by it in dnet too.
    let inspect = env.sb.dnet_json(&["network", "inspect", "dn1"]);
    assert_eq!(inspect[0]["runtime"]["id"], id.as_str(), "{inspect}");
    // Docker's IPAM hands out this network's addresses and knows none of
    // dnet's: dnet's own containers are refused there, and nothing is made.
    let before = env.sb.state();
    let e = env.sb.dnet_err(&[
        "run",
        "-d",
        "--name",
        "own",
        "--network",
        "dn1",
        "--",
        "sleep",
        "300",
    ]);
    assert!(e.contains("IPAM") && e.contains("--ipam-driver"), "{e}");
    assert_eq!(env.sb.state(), before);

    env.run("c1", "dn1", &[]);
    env.run("c2", "dn1", &["--ip", "10.89.0.77"]);
    let (a1, mac1) = env.eth0("c1");
    let (a2, mac2) = env.eth0("c2");
    assert!(a1.starts_with("10.89.0.") && a1.ends_with("/24"), "{a1}");
    assert_eq!(a2, "10.89.0.77/24");
    let ip1 = a1.trim_end_matches("/24").to_owned();
    let octets: Vec<u8> = ip1.split('.').map(|o| o.parse().unwrap()).collect();
    assert_eq!(
        mac1,
        format!(
            "02:42:{:02x}:{:02x}:{:02x}:{:02x}",
            octets[0], octets[1], octets[2], octets[3]
        )
    );
    assert_eq!(mac2, "02:42:0a:59:00:4d");

    // dnet knows them, with Docker's addresses.
    let ips = env.dnet_ips("ip");
    assert!(
        ips.contains(&ip1) && ips.contains(&"10.89.0.77".to_owned()),
        "{ips:?}"
    );

    // East-west, the gateway, and out through dnet's NAT.
    for (from, to) in [
        ("c1", "10.89.0.77"),
        ("c2", ip1.as_str()),
        ("c1", "10.89.0.1"),
    ] {
        let o = env.exec(from, &["ping", "-c", "1", "-W", "2", to]);
        assert!(ok(&o), "{from} -> {to}: {}", out(&o));
    }
    // Docker's embedded DNS names them on the dnet network.
    let o = env.exec("c1", &["ping", "-c", "1", "-W", "2", "c2"]);
    assert!(
        ok(&o) && stdout(&o).contains("10.89.0.77"),
        "c1 -> c2 by name: {}",
        out(&o)
    );
    let o = env.exec("c1", &["ip", "route"]);
    assert!(stdout(&o).contains("default via 10.89.0.1"), "{}", out(&o));
    let o = env.exec("c1", &["ping", "-c", "1", "-W", "2", &WORLD_IP.to_string()]);
    assert!(ok(&o), "c1 -> the world: {}", out(&o));
    // One interface: no docker_gwbridge.
    let o = env.exec("c1", &["ip", "-o", "link"]);
    assert_eq!(
        stdout(&o).lines().count(),
        2,
        "lo and eth0 only: {}",
        out(&o)
    );
    assert_consistent(&env.sb);
    // Their endpoints count like any other, and their flows out are
    // dnet's NAT's.
    let stats = env.sb.dnet_json(&["stats"]);
    let counted = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ip"] == ip1.as_str() || e["ip"] == "10.89.0.77")
        .filter(|e| e["tx_packets"].as_u64() > Some(0) && e["rx_packets"].as_u64() > Some(0))
        .count();
    assert_eq!(counted, 2, "{stats}");
    let o = env.exec("c1", &["ping", "-c", "1", "-W", "2", &WORLD_IP.to_string()]);
    assert!(ok(&o), "{}", out(&o));
    let flows = env.sb.flows();
    assert!(
        flows.iter().any(|f| f.to_string().contains(&ip1)),
        "c1's flow in conntrack ls: {flows:?}"
    );

    env.docker(&["rm", "-f", "c1", "c2"]);
    env.docker(&["network", "rm", "dn1"]);
    assert!(env.dnet_network(&id).is_none());
    env.assert_clean();
}

#[test]
fn docker_published_ports() {
    let mut env = Env::new();
    env.network("dn2", &["--subnet", "10.90.0.0/24"]);
    env.run(
        "web",
        "dn2",
        &[
            "-p",
            "8080:80",
            "-p",
            "5353:53/udp",
            "-p",
            "80",
            "-p",
            "127.0.0.1:8081:80",
            "-p",
            "9000-9005:80",
        ],
    );
    let pid = env.docker.pid_of("web").expect("web's pid");
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    env.sb.spawn_in(&ns, &ct(), &["serve", "tcp", "80"]);
    env.sb.spawn_in(&ns, &ct(), &["serve", "udp", "53"]);
    dnet_sandbox::wait_listening(&ns, "tcp", 80);
    dnet_sandbox::wait_listening(&ns, "udp", 53);

    // dnet shows the ports Docker cannot (docker ps is empty for remote drivers).
    let ps = env.sb.dnet_json(&["ps"]);
    let web = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| !c["ports"].as_array().is_none_or(Vec::is_empty))
        .expect("a container with ports")
        .clone();
    let ports = web["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 5, "{web}");
    let picked = ports
        .iter()
        .find(|p| {
            p["container_port"] == 80
                && p["host_port"]
                    .as_u64()
                    .is_some_and(|h| ![8080, 8081, 9000].contains(&h))
        })
        .expect("the port dnet picked")["host_port"]
        .as_u64()
        .unwrap();
    assert!(picked > 0);
    // From a range, the first free port.
    assert!(
        ports.iter().any(|p| p["host_port"] == 9000),
        "9000 of 9000-9005: {web}"
    );
    assert!(
        ports
            .iter()
            .any(|p| p["host_port"] == 8081 && p["host_ip"] == "127.0.0.1"),
        "{web}"
    );

    let up = UPLINK_IP.to_string();
    for port in [8080, 9000, picked] {
        let target = format!("{up}:{port}");
        assert!(
            wait_until(Duration::from_secs(5), || ok(&env
                .sb
                .in_world(&ct(), &["tcp", &target]))),
            "{target} from the world: {}",
            out(&env.sb.in_world(&ct(), &["tcp", &target]))
        );
    }
    let o = env.sb.in_world(&ct(), &["tcp", &format!("{up}:8080")]);
    assert!(
        stdout(&o).starts_with(&format!("{WORLD_IP}:")),
        "the container sees the client: {}",
        out(&o)
    );

    let o = env.sb.in_world(&ct(), &["udp", &format!("{up}:5353")]);
    assert!(ok(&o), "5353/udp from the world: {}", out(&o));
    // On loopback only: from the host, not from the world.
    let o = env.sb.in_host(&ct(), &["tcp", "127.0.0.1:8081"]);
    assert!(ok(&o), "127.0.0.1:8081 from the host: {}", out(&o));
    let o = env
        .sb
        .in_world(&ct(), &["tcp", &format!("{up}:8081"), "--timeout", "1"]);
    assert!(!ok(&o), "8081 is on loopback only: {}", out(&o));

    env.docker(&["rm", "-f", "web"]);
    assert!(
        !ok(&env
            .sb
            .in_world(&ct(), &["tcp", &format!("{up}:8080"), "--timeout", "1"])),
        "the port is gone with the container"
    );
    let maps = env.sb.map_contents();
    assert!(!maps.contains("8080"), "a service entry is left: {maps}");
    env.docker(&["network", "rm", "dn2"]);
    env.assert_clean();
}

#[test]
fn docker_bad_input_changes_nothing() {
    let env = Env::new();
    let e = env.network_refused("bad1", &["-o", "foo=bar"]);
    assert!(e.contains("unknown option \"foo\""), "{e}");
    let e = env.network_refused("bad2", &["-o", "driver=macvlan", "-o", "parent=nosuch0"]);
    assert!(e.contains("\"nosuch0\" does not exist"), "{e}");

    env.network("dn3", &["--subnet", "10.91.0.0/24"]);
    // A subnet dnet already has.
    let e = env.network_refused("bad3", &["--subnet", "10.91.0.0/25"]);
    assert!(e.contains("overlaps"), "{e}");
    let before = env.sb.state();
    let e = env.docker_err(&[
        "run",
        "-d",
        "--name",
        "sctp",
        "--network",
        "dn3",
        "-p",
        "9000:9000/sctp",
        IMAGE,
        "sleep",
        "100",
    ]);
    assert!(e.contains("sctp"), "{e}");
    // Docker removes the endpoint it could not finish: nothing stays.
    assert!(
        wait_until(Duration::from_secs(5), || env.sb.state() == before),
        "the refused port left: {}",
        serde_json::to_string_pretty(&env.sb.state()).unwrap()
    );
    assert_consistent(&env.sb);
    let _ = env.docker.output(&["rm", "-f", "sctp"]);
    env.docker(&["network", "rm", "dn3"]);
    env.assert_clean();
}

#[test]
fn docker_internal_mtu_connect_disconnect() {
    let env = Env::new();
    env.network(
        "closed",
        &[
            "--internal",
            "--subnet",
            "10.92.0.0/24",
            "-o",
            "com.docker.network.driver.mtu=1400",
        ],
    );
    env.network("open", &["--subnet", "10.93.0.0/24", "-o", "icc=false"]);
    env.run("c3", "closed", &[]);
    let o = env.exec("c3", &["ip", "route"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        !stdout(&o).contains("default"),
        "no default route: {}",
        out(&o)
    );
    let o = env.exec("c3", &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(stdout(&o), "1400", "{}", out(&o));
    let o = env.exec("c3", &["ping", "-c", "1", "-W", "1", &WORLD_IP.to_string()]);
    assert!(!ok(&o), "an internal network has no way out: {}", out(&o));
    // One interface: no docker_gwbridge for the internal network either.
    let o = env.exec("c3", &["ip", "-o", "link"]);
    assert_eq!(
        stdout(&o).lines().count(),
        2,
        "lo and eth0 only: {}",
        out(&o)
    );

    // A second network, while it runs.
    env.docker(&["network", "connect", "open", "c3"]);
    let o = env.exec("c3", &["ip", "-o", "-4", "addr", "show", "eth1"]);
    assert!(stdout(&o).contains("inet 10.93.0."), "{}", out(&o));
    let records = |env: &Env| {
        env.sb.state()["containers"].as_object().map_or(0, |c| {
            c.values().filter(|c| !c["runtime"].is_null()).count()
        })
    };
    assert_eq!(records(&env), 2, "one record per Docker endpoint");
    assert_consistent(&env.sb);
    env.docker(&["network", "disconnect", "open", "c3"]);
    env.sb.settle();
    let o = env.exec("c3", &["ip", "link", "show", "eth1"]);
    assert!(!ok(&o), "eth1 is gone: {}", out(&o));
    assert_eq!(records(&env), 1);
    assert_consistent(&env.sb);

    env.docker(&["rm", "-f", "c3"]);
    env.docker(&["network", "rm", "closed", "open"]);
    env.assert_clean();
}

/// `POST /<call>` on the plugin socket as dockerd sends it (an empty
/// `Host:` header, Docker's content type, maybe no body): status and body.
fn plugin_call(sock: &str, call: &str, body: &str) -> (u16, serde_json::Value) {
    let o = std::process::Command::new("curl")
        .args(["-sS", "--unix-socket", sock, "-X", "POST"])
        .args(["-H", "Host;"])
        .args([
            "-H",
            "Content-Type: application/vnd.docker.plugins.v1.2+json",
        ])
        .args(["-d", body, "-w", "\n%{http_code}"])
        .arg(format!("http://localhost/{call}"))
        .output()
        .expect("run curl");
    assert!(ok(&o), "curl {call}: {}", out(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("curl's status line");
    let body = serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON from {call}: {body}"));
    (code.trim().parse().expect("a status"), body)
}

#[test]
fn docker_protocol_without_docker() {
    let mut sb = Sandbox::without_daemon();
    let sock = sb.dir.join("plugin.sock").display().to_string();
    sb.set_daemon_args(&[
        &format!("--docker-plugin-socket={sock}"),
        "--docker-api-socket=",
    ]);
    sb.start_daemon();
    let call = |c: &str, b: &str| plugin_call(&sock, c, b);
    assert_eq!(
        call("Plugin.Activate", ""),
        (
            200,
            serde_json::json!({"Implements": ["NetworkDriver", "IpamDriver"]})
        )
    );
    assert_eq!(
        call("NetworkDriver.GetCapabilities", ""),
        (
            200,
            serde_json::json!({"Scope": "local", "ConnectivityScope": "local"})
        )
    );
    let net = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12";
    let ep = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let create = serde_json::json!({"NetworkID": net,
        "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.94.0.0/24",
            "Gateway": "10.94.0.1/24", "AuxAddresses": null}],
        "IPv6Data": null})
    .to_string();
    // Repeats (dockerd retries) answer as the first call did.
    for _ in 0..2 {
        assert_eq!(
            call("NetworkDriver.CreateNetwork", &create),
            (200, serde_json::json!({}))
        );
    }
    let nets = sb.dnet_json(&["network", "ls"]);
    let made: Vec<_> = nets
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["runtime"]["id"] == net)
        .collect();
    assert_eq!(made.len(), 1, "{nets}");
    assert_eq!(made[0]["name"], "docker-ab12cd34ef56");

    let endpoint = serde_json::json!({"NetworkID": net, "EndpointID": ep,
        "Interface": {"Address": "10.94.0.5/24", "AddressIPv6": "", "MacAddress": ""},
        "Options": {}})
    .to_string();
    for _ in 0..2 {
        assert_eq!(
            call("NetworkDriver.CreateEndpoint", &endpoint),
            (
                200,
                serde_json::json!({"Interface": {"MacAddress": "02:42:0a:5e:00:05"}})
            )
        );
    }
    let refs = serde_json::json!({"NetworkID": net, "EndpointID": ep}).to_string();
    assert_eq!(
        call("NetworkDriver.EndpointOperInfo", &refs),
        (200, serde_json::json!({"Value": {}}))
    );
    let join = serde_json::json!({"NetworkID": net, "EndpointID": ep,
        "SandboxKey": "/var/run/docker/netns/x", "Options": {}})
    .to_string();
    let (code, j) = call("NetworkDriver.Join", &join);
    assert_eq!(code, 200);
    assert_eq!(j["Gateway"], "10.94.0.1", "{j}");
    assert_eq!(j["InterfaceName"]["DstPrefix"], "eth");
    let src = j["InterfaceName"]["SrcName"].as_str().expect("SrcName");
    assert!(
        sb.host_links().iter().any(|l| l == src),
        "{src} in the host"
    );
    let program = serde_json::json!({"NetworkID": net, "EndpointID": ep, "Options": {
        "com.docker.network.portmap": [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "",
            "HostPort": 8080, "HostPortEnd": 8080}]}})
    .to_string();
    for _ in 0..2 {
        assert_eq!(
            call("NetworkDriver.ProgramExternalConnectivity", &program),
            (200, serde_json::json!({}))
        );
    }
    let ps = sb.dnet_json(&["ps"]);
    assert_eq!(ps[0]["ports"][0]["host_port"], 8080, "{ps}");
    // Errors: status 200 and {"Err": ...}; nothing changes.
    let before = sb.state();
    let sctp = program.replace("\"Proto\":6", "\"Proto\":132");
    let (code, e) = call("NetworkDriver.ProgramExternalConnectivity", &sctp);
    assert_eq!(code, 200);
    assert!(e["Err"].as_str().is_some_and(|e| e.contains("sctp")), "{e}");
    // An IPv6 host address publishes in its family only: on this
    // IPv4-only network, refused clearly.
    let v6 = program.replace("\"HostIP\":\"\"", "\"HostIP\":\"::1\"");
    assert!(v6.contains("::1"), "{v6}");
    let (code, e) = call("NetworkDriver.ProgramExternalConnectivity", &v6);
    assert_eq!(code, 200);
    assert!(
        e["Err"].as_str().is_some_and(|e| e.contains("IPv4-only")),
        "{e}"
    );
    let (code, e) = call("NetworkDriver.CreateNetwork", "{\"NetworkID\": 5}");
    assert_eq!(code, 200);
    assert!(
        e["Err"]
            .as_str()
            .is_some_and(|e| e.contains("bad request body")),
        "{e}"
    );
    assert_eq!(sb.state(), before);

    for c in [
        "NetworkDriver.RevokeExternalConnectivity",
        "NetworkDriver.Leave",
        "NetworkDriver.DeleteEndpoint",
        "NetworkDriver.DeleteEndpoint",
    ] {
        assert_eq!(call(c, &refs), (200, serde_json::json!({})), "{c}");
    }
    let del = serde_json::json!({"NetworkID": net}).to_string();
    for _ in 0..2 {
        assert_eq!(
            call("NetworkDriver.DeleteNetwork", &del),
            (200, serde_json::json!({}))
        );
    }
    let st = sb.state();
    assert!(
        st["containers"].as_object().is_none_or(|c| c.is_empty()),
        "{st}"
    );
    assert!(
        st["networks"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n["runtime"].is_null()),
        "{st}"
    );
    assert_consistent(&sb);
    // IPAM, IPv6: the pool's id is its subnet, the gateway its first host,
    // an endpoint's address the next free one; a repeat gets the same
    // pool; releases are idempotent; an overlapping pool is refused.
    let pool6 = serde_json::json!({"AddressSpace": "dnet-local", "Pool": "fd00:95::/64",
        "SubPool": "", "Options": null, "V6": true})
    .to_string();
    for _ in 0..2 {
        assert_eq!(
            call("IpamDriver.RequestPool", &pool6),
            (
                200,
                serde_json::json!({"PoolID": "fd00:95::/64", "Pool": "fd00:95::/64", "Data": {}})
            )
        );
    }
    let addr = |options: serde_json::Value| {
        serde_json::json!({"PoolID": "fd00:95::/64", "Address": "", "Options": options}).to_string()
    };
    let gw = addr(serde_json::json!({"RequestAddressType": "com.docker.network.gateway"}));
    assert_eq!(
        call("IpamDriver.RequestAddress", &gw),
        (
            200,
            serde_json::json!({"Address": "fd00:95::1/64", "Data": {}})
        )
    );
    assert_eq!(
        call("IpamDriver.RequestAddress", &addr(serde_json::Value::Null)),
        (
            200,
            serde_json::json!({"Address": "fd00:95::2/64", "Data": {}})
        )
    );
    let (code, body) = call(
        "IpamDriver.RequestPool",
        &serde_json::json!({"Pool": "fd00:95::/56", "V6": true}).to_string(),
    );
    assert!(
        code == 200
            && body["Error"]
                .as_str()
                .is_some_and(|e| e.contains("overlaps")),
        "{body}"
    );
    let rel = serde_json::json!({"PoolID": "fd00:95::/64", "Address": "fd00:95::2"}).to_string();
    for c in [
        "IpamDriver.ReleaseAddress",
        "IpamDriver.ReleaseAddress",
        "IpamDriver.ReleasePool",
        "IpamDriver.ReleasePool",
    ] {
        assert_eq!(call(c, &rel), (200, serde_json::json!({})), "{c}");
    }
    // The socket goes with the daemon.
    sb.stop_daemon(libc::SIGTERM);
    assert!(!std::path::Path::new(&sock).exists(), "the socket is left");
}

#[test]
fn docker_containers_outlive_a_dnet_crash() {
    let mut env = Env::new();
    env.network("dn5", &["--subnet", "10.95.0.0/24"]);
    env.run("c5", "dn5", &["--ip", "10.95.0.5"]);
    env.run("c6", "dn5", &["--ip", "10.95.0.6"]);
    env.sb.stop_daemon(libc::SIGKILL);
    // Forwarding goes on without the daemon.
    let o = env.exec("c5", &["ping", "-c", "1", "-W", "2", "10.95.0.6"]);
    assert!(ok(&o), "c5 -> c6 with dnet down: {}", out(&o));
    // Back on the same socket, with the same containers.
    env.sb.start_daemon();
    let o = env.exec("c6", &["ping", "-c", "1", "-W", "2", "10.95.0.5"]);
    assert!(ok(&o), "c6 -> c5 after the restart: {}", out(&o));
    env.run("c7", "dn5", &[]);
    let o = env.exec("c7", &["ping", "-c", "1", "-W", "2", "10.95.0.5"]);
    assert!(ok(&o), "a new container after the restart: {}", out(&o));
    assert_consistent(&env.sb);
    env.docker(&["rm", "-f", "c5", "c6", "c7"]);
    env.docker(&["network", "rm", "dn5"]);
    env.assert_clean();
}

#[test]
fn docker_ipam_driver() {
    let env = Env::new();
    let d = env.driver.clone();
    let id = env.network(
        "ipn",
        &[
            "--ipam-driver",
            &d,
            "--subnet",
            "10.96.0.0/24",
            "--ip-range",
            "10.96.0.128/25",
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network");
    assert_eq!(net["ipam"]["subnet"], "10.96.0.0/24");
    assert_eq!(net["ipam"]["gateway"], "10.96.0.1");
    assert_eq!(net["ipam"]["ip_range"], "10.96.0.128/25");
    env.run("c8", "ipn", &[]);
    env.run("c9", "ipn", &[]);
    env.run("c10", "ipn", &["--ip", "10.96.0.10"]);
    let mut got = vec![env.eth0("c8").0, env.eth0("c9").0, env.eth0("c10").0];
    got.sort();
    assert_eq!(got, ["10.96.0.10/24", "10.96.0.128/24", "10.96.0.129/24"]);
    let o = env.exec("c8", &["ping", "-c", "1", "-W", "2", "10.96.0.10"]);
    assert!(ok(&o), "{}", out(&o));
    // dnet's IPAM hands out the addresses here: dnet's own containers may
    // join, and take none of Docker's.
    env.sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "--network",
        "ipn",
        "--",
        "sleep",
        "300",
    ]);
    let own = env.sb.ip_of("own");
    assert!(
        own.starts_with("10.96.0.")
            && !["10.96.0.10", "10.96.0.128", "10.96.0.129"].contains(&own.as_str()),
        "{own}"
    );
    let o = env.exec("c8", &["ping", "-c", "1", "-W", "2", &own]);
    assert!(ok(&o), "c8 -> dnet's own: {}", out(&o));
    env.sb.dnet_ok(&["rm", "-f", "own"]);
    // dnet picks the subnet when none is given, from its own pools.
    let id2 = env.network("ipauto", &["--ipam-driver", &d]);
    let auto = env.dnet_network(&id2).expect("the second network");
    let subnet = auto["ipam"]["subnet"].as_str().unwrap().to_owned();
    assert!(subnet.starts_with("172."), "{subnet}");
    // Overlaps are refused by dnet's IPAM, and nothing is made.
    let e = env.network_refused("bad", &["--ipam-driver", &d, "--subnet", "10.96.0.0/16"]);
    assert!(e.contains("overlaps"), "{e}");
    // An address is free again once its container is gone.
    env.docker(&["rm", "-f", "c8"]);
    env.run("c11", "ipn", &[]);
    assert_eq!(env.eth0("c11").0, "10.96.0.128/24");
    env.docker(&["rm", "-f", "c9", "c10", "c11"]);
    env.docker(&["network", "rm", "ipn", "ipauto"]);
    env.assert_clean();
}

#[test]
fn docker_dockerd_crash_and_restart() {
    let mut env = Env::new();
    env.network("dn6", &["--subnet", "10.97.0.0/24"]);
    env.run("gone", "dn6", &["--ip", "10.97.0.5"]);
    env.run("back", "dn6", &["--ip", "10.97.0.6", "--restart", "always"]);
    let runtime_records = |env: &Env| {
        env.sb.state()["containers"].as_object().map_or(0, |c| {
            c.values().filter(|c| !c["runtime"].is_null()).count()
        })
    };
    assert_eq!(runtime_records(&env), 2);
    // The old namespace of `back` is held open across the restart, as a
    // slow stop holds it (Docker stops the old containers with a 10 s
    // timeout, `sleep` ignores SIGTERM, and the kernel tears a namespace
    // down after that): its veth stays, so only Docker's word (it hands
    // the address to the new endpoint) can tell dnet the old endpoint went.
    let pid = env.docker.pid_of("back").expect("back's pid");
    let old_ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    env.sb.spawn_in(&old_ns, "sleep", &["120"]);
    env.docker
        .crash_and_restart()
        .unwrap_or_else(|e| panic!("restarting dockerd: {e:#}"));
    // The container with a restart policy is back on the dnet network.
    assert!(
        wait_until(Duration::from_secs(30), || {
            ok(&env.exec("back", &["ping", "-c", "1", "-W", "1", "10.97.0.1"]))
        }),
        "back is not back on dn6:\n{}\n{}",
        env.docker.log_tail(20),
        env.sb.log_tail(30)
    );
    assert_eq!(env.eth0("back").0, "10.97.0.6/24");
    // The other's endpoint, which Docker dropped, is gone from dnet.
    assert!(
        wait_until(Duration::from_secs(20), || runtime_records(&env) == 1),
        "records: {}",
        serde_json::to_string_pretty(&env.sb.state()).unwrap()
    );
    assert_consistent(&env.sb);
    env.docker(&["rm", "-f", "gone", "back"]);
    env.docker(&["network", "rm", "dn6"]);
    env.assert_clean();
}

/// `-o driver=macvlan`: dnet makes the macvlan child in the host namespace
/// under a temporary name and returns it in Join, as Docker's own macvlan
/// driver does; Docker moves it into the container. The parent is the
/// sandbox host's `eth0`, the world namespace plays the LAN (198.18.0.0/24,
/// its router at .1, the host at .2).
#[test]
fn docker_macvlan_network() {
    let mut env = Env::new();
    let links_before = env.sb.host_links();
    let id = env.network(
        "lan",
        &[
            "-o",
            "driver=macvlan",
            "-o",
            "parent=eth0",
            "--subnet",
            "198.18.0.0/24",
            "--gateway",
            "198.18.0.1",
            "--ip-range",
            "198.18.0.64/26",
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["driver"], "macvlan", "{net}");
    assert_eq!(net["options"]["parent"], "eth0", "{net}");
    // Docker's IPAM keeps its `--ip-range` to itself in CreateNetwork: dnet
    // learns it from dockerd's API with the name, and shows it.
    assert!(
        wait_until(Duration::from_secs(20), || {
            env.dnet_network(&id)
                .is_some_and(|n| n["name"] == "lan" && n["ipam"]["ip_range"] == "198.18.0.64/26")
        }),
        "{:?}",
        env.dnet_network(&id)
    );
    env.run("m1", "lan", &[]);
    env.run("m2", "lan", &["--ip", "198.18.0.100"]);

    // eth0 in the container is a macvlan child of the host's eth0, with
    // Docker's address and the 02:42 MAC.
    let (a2, mac2) = env.eth0("m2");
    assert_eq!(a2, "198.18.0.100/24");
    assert_eq!(mac2, "02:42:c6:12:00:64");
    let (a1, _) = env.eth0("m1");
    let ip1 = a1.trim_end_matches("/24").to_owned();
    let pid = env.docker.pid_of("m1").expect("m1's pid");
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let o = dnet_sandbox::in_netns(&ns, "ip", &["-j", "-d", "link", "show", "eth0"]);
    assert!(ok(&o), "{}", out(&o));
    let l: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("ip -j");
    assert_eq!(l[0]["linkinfo"]["info_kind"], "macvlan", "{l}");
    // No temporary link is left in the host namespace.
    let host = env.sb.host_links();
    assert!(
        !host.iter().any(|l| l.starts_with("dnmv")),
        "a child stayed in the host namespace: {host:?}"
    );

    // The containers are hosts of the LAN: the world reaches them at their
    // own addresses and sees theirs (no NAT), and they reach each other.
    let o = env
        .sb
        .in_world("ping", &["-c", "1", "-W", "2", "198.18.0.100"]);
    assert!(ok(&o), "the world -> m2: {}", out(&o));
    let o = env.exec("m1", &["ping", "-c", "1", "-W", "2", "198.18.0.100"]);
    assert!(ok(&o), "m1 -> m2: {}", out(&o));
    let world = env.sb.world_netns_path();
    env.sb.spawn_in(&world, &ct(), &["serve", "tcp", "7300"]);
    dnet_sandbox::wait_listening(&world, "tcp", 7300);
    let o = dnet_sandbox::in_netns(&ns, &ct(), &["tcp", "198.18.0.1:7300"]);
    assert!(
        ok(&o) && stdout(&o).starts_with(&format!("{ip1}:")),
        "the world sees m1's own address: {}",
        out(&o)
    );
    let o = env.exec("m1", &["ip", "route"]);
    assert!(stdout(&o).contains("default via 198.18.0.1"), "{}", out(&o));
    let ips = env.dnet_ips("ip");
    assert!(
        ips.contains(&ip1) && ips.contains(&"198.18.0.100".to_owned()),
        "{ips:?}"
    );
    assert_consistent(&env.sb);

    env.docker(&["rm", "-f", "m1", "m2"]);
    env.docker(&["network", "rm", "lan"]);
    assert!(env.dnet_network(&id).is_none());
    env.assert_clean();

    // With dnet's IPAM: the pool is the parent's LAN, routed on the parent,
    // which a macvlan network expects (a bridge's pool there is refused,
    // when the network is made).
    let d = env.driver.clone();
    let lan = [
        "--ipam-driver",
        d.as_str(),
        "--subnet",
        "198.18.0.0/24",
        "--gateway",
        "198.18.0.1",
        "--ip-range",
        "198.18.0.64/26",
    ];
    let e = env.network_refused("br", &lan);
    assert!(e.contains("overlaps the route"), "{e}");
    // Host access needs dnet's IPAM: Docker's would not know the host's
    // address.
    let e = env.network_refused(
        "ha",
        &[
            "-o",
            "driver=macvlan",
            "-o",
            "parent=eth0",
            "-o",
            "host_access=true",
            "--subnet",
            "198.18.0.0/24",
            "--gateway",
            "198.18.0.1",
        ],
    );
    assert!(e.contains("needs dnet's IPAM"), "{e}");
    let mut args = vec![
        "-o",
        "driver=macvlan",
        "-o",
        "parent=eth0",
        "-o",
        "host_access=true",
    ];
    args.extend(lan);
    let id = env.network("lan2", &args);
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["driver"], "macvlan", "{net}");
    assert_eq!(net["ipam"]["ip_range"], "198.18.0.64/26", "{net}");
    // The host's address is the range's first; the container's the next.
    assert_eq!(net["host_address"], "198.18.0.64", "{net}");
    env.run("m3", "lan2", &[]);
    assert_eq!(env.eth0("m3").0, "198.18.0.65/24");
    let o = env
        .sb
        .in_world("ping", &["-c", "1", "-W", "2", "198.18.0.65"]);
    assert!(ok(&o), "the world -> m3: {}", out(&o));
    // With host access the host reaches Docker's container through its own
    // macvlan interface, and the container the host at its address there.
    let o = env
        .sb
        .in_host("ping", &["-c", "1", "-W", "2", "198.18.0.65"]);
    assert!(ok(&o), "the host -> m3: {}", out(&o));
    let o = env.exec("m3", &["ping", "-c", "1", "-W", "2", "198.18.0.64"]);
    assert!(ok(&o), "m3 -> the host: {}", out(&o));
    env.docker(&["rm", "-f", "m3"]);
    env.docker(&["network", "rm", "lan2"]);
    env.assert_clean();
    assert_eq!(env.sb.host_links(), links_before, "links left in the host");
}

/// `-o driver=macvlan --ipv6` with the LAN's IPv6 subnet: Docker's IPAM
/// addresses both families (`--ip-range` and `--ip6` too); the containers
/// are IPv6 hosts of the LAN, reached by the world at their own addresses
/// and seen by it with theirs, their default IPv6 route via the LAN's
/// router. The parent's own IPv6 address is refused with nothing left.
/// Then with dnet's IPAM (`--ipam-driver`): the pools are the LAN's, and
/// the addresses it hands out skip the parent's own of each family.
#[test]
fn docker_dual_stack_macvlan_network() {
    let mut env = Env::start(true);
    let links_before = env.sb.host_links();
    let id = env.network(
        "lan6",
        &[
            "-o",
            "driver=macvlan",
            "-o",
            "parent=eth0",
            "--ipv6",
            "--subnet",
            "198.18.0.0/24",
            "--gateway",
            "198.18.0.1",
            "--ip-range",
            "198.18.0.64/26",
            "--subnet",
            "2001:2::/64",
            "--gateway",
            WORLD6,
            "--ip-range",
            "2001:2::100/120",
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["driver"], "macvlan", "{net}");
    assert_eq!(net["ipam6"]["subnet"], "2001:2::/64", "{net}");
    assert_eq!(net["ipam6"]["gateway"], WORLD6, "{net}");
    env.run("m1", "lan6", &[]);
    env.run("m2", "lan6", &["--ip6", "2001:2::99"]);
    assert_eq!(global_addr6(&env, "m1"), ["2001:2::100/64"]);
    assert_eq!(global_addr6(&env, "m2"), ["2001:2::99/64"]);
    let o = env.exec("m1", &["ip", "-6", "route"]);
    assert!(
        stdout(&o).contains(&format!("default via {WORLD6} dev eth0")),
        "{}",
        out(&o)
    );

    // Hosts of the LAN: the world reaches them at their own addresses and
    // sees theirs (no NAT66), and they reach each other.
    let o = env
        .sb
        .in_world("ping", &["-6", "-c", "1", "-W", "2", "2001:2::99"]);
    assert!(ok(&o), "the world -> m2 over IPv6: {}", out(&o));
    let o = ping6(&env, "m1", "2001:2::99");
    assert!(ok(&o), "m1 -> m2 over IPv6: {}", out(&o));
    assert_world_sees6(&mut env, "m1", "2001:2::100");
    assert_consistent(&env.sb);

    // The parent's own address is not the container's to take. (Once dnet
    // has learnt Docker's name for the network, which changes its state.)
    assert!(
        wait_until(Duration::from_secs(20), || {
            env.dnet_network(&id).is_some_and(|n| n["name"] == "lan6")
        }),
        "{:?}",
        env.dnet_network(&id)
    );
    let before = env.sb.snapshot();
    let e = env.docker_err(&[
        "run",
        "-d",
        "--name",
        "m3",
        "--network",
        "lan6",
        "--ip6",
        UPLINK6,
        IMAGE,
        "sleep",
        "300",
    ]);
    assert!(e.contains(UPLINK6), "{e}");
    env.docker(&["rm", "-f", "m3"]);
    assert_eq!(env.sb.snapshot(), before, "the refused run left something");

    env.docker(&["rm", "-f", "m1", "m2"]);
    env.docker(&["network", "rm", "lan6"]);
    assert!(env.dnet_network(&id).is_none());
    env.assert_clean();

    // With dnet's IPAM: both pools are the LAN's, and dnet hands out the
    // addresses of both families, never the gateway's or the parent's own
    // (::2), nor an address in use.
    let d = env.driver.clone();
    let id = env.network(
        "lan6d",
        &[
            "-o",
            "driver=macvlan",
            "-o",
            "parent=eth0",
            "--ipam-driver",
            &d,
            "--ipv6",
            "--subnet",
            "198.18.0.0/24",
            "--gateway",
            "198.18.0.1",
            "--subnet",
            "2001:2::/64",
            "--gateway",
            WORLD6,
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["driver"], "macvlan", "{net}");
    assert_eq!(net["ipam6"]["subnet"], "2001:2::/64", "{net}");
    assert_eq!(net["ipam6"]["gateway"], WORLD6, "{net}");
    env.run("m4", "lan6d", &[]);
    env.run("m5", "lan6d", &["--ip6", "2001:2::99"]);
    assert_eq!(global_addr6(&env, "m4"), ["2001:2::3/64"]);
    assert_eq!(global_addr6(&env, "m5"), ["2001:2::99/64"]);
    assert_eq!(env.eth0("m4").0, "198.18.0.3/24");
    let o = env
        .sb
        .in_world("ping", &["-6", "-c", "1", "-W", "2", "2001:2::3"]);
    assert!(ok(&o), "the world -> m4 over IPv6: {}", out(&o));
    let o = ping6(&env, "m5", "2001:2::3");
    assert!(ok(&o), "m5 -> m4 over IPv6: {}", out(&o));
    assert_world_sees6(&mut env, "m5", "2001:2::99");
    for taken in [UPLINK6, "2001:2::3"] {
        let e = env.docker_err(&[
            "run",
            "-d",
            "--name",
            "m6",
            "--network",
            "lan6d",
            "--ip6",
            taken,
            IMAGE,
            "sleep",
            "300",
        ]);
        assert!(e.contains(taken), "{e}");
        env.docker(&["rm", "-f", "m6"]);
    }
    assert_consistent(&env.sb);
    env.docker(&["rm", "-f", "m4", "m5"]);
    env.docker(&["network", "rm", "lan6d"]);
    assert!(env.dnet_network(&id).is_none());
    env.assert_clean();
    assert_eq!(env.sb.host_links(), links_before, "links left in the host");
}

/// `conntest dns query 127.0.0.11 ARGS` in a Docker container's namespace:
/// Docker's embedded resolver answers there. Its output lines.
fn ask_docker_dns(env: &Env, container: &str, args: &[&str]) -> Vec<String> {
    let pid = env.docker.pid_of(container).expect("a pid");
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    let mut a = vec!["dns", "query", "127.0.0.11"];
    a.extend(args);
    let o = dnet_sandbox::in_netns(&ns, &ct(), &a);
    assert!(ok(&o), "query {args:?} from {container}: {}", out(&o));
    stdout(&o).lines().map(str::to_owned).collect()
}

/// Docker's embedded DNS on a dnet network: containers find each other by
/// name, and the queries it forwards leave from the container, through
/// dnet's NAT, to the container's upstream (`--dns`, a fake one in the
/// world).
#[test]
fn docker_embedded_dns_on_a_dnet_network() {
    let mut env = Env::new();
    let world = env.sb.world_netns_path();
    let upstream = format!("{WORLD_IP}:53");
    env.sb
        .spawn_in(&world, &ct(), &["dns", "serve", &upstream, "192.0.2.7"]);
    dnet_sandbox::wait_listening(&world, "udp", 53);
    env.network("dn6", &["--subnet", "10.96.0.0/24"]);
    let dns = WORLD_IP.to_string();
    env.run("d1", "dn6", &["--dns", &dns]);
    env.run("d2", "dn6", &["--dns", &dns, "--ip", "10.96.0.20"]);
    let (a1, _) = env.eth0("d1");
    let ip1 = a1.trim_end_matches("/24").to_owned();

    // A name of the network: Docker's resolver answers itself.
    assert_eq!(
        ask_docker_dns(&env, "d1", &["d2"]),
        vec!["rcode NoError".to_owned(), "A 10.96.0.20".to_owned()]
    );
    // Another name: forwarded to the upstream from d1's namespace, out
    // through dnet's NAT (its flow is in dnet's table, translated).
    assert_eq!(
        ask_docker_dns(&env, "d1", &["host.example"]),
        vec!["rcode NoError".to_owned(), "A 192.0.2.7".to_owned()]
    );
    let flows = env.sb.flows();
    assert!(
        flows.iter().any(|f| {
            let s = f.to_string();
            s.contains(&ip1) && s.contains(&WORLD_IP.to_string()) && s.contains("53")
        }),
        "d1's query to the upstream in dnet's conntrack: {flows:?}"
    );

    env.docker(&["rm", "-f", "d1", "d2"]);
    env.docker(&["network", "rm", "dn6"]);
    env.assert_clean();
}

/// Published ports follow the container's gateway endpoint: Docker revokes
/// them on the endpoint that loses the default route and programs them on
/// the one that gains it, and dnet's DNAT follows.
#[test]
fn docker_published_ports_follow_the_gateway_endpoint() {
    let mut env = Env::new();
    env.network("pa", &["--subnet", "10.97.0.0/24"]);
    env.network("pb", &["--subnet", "10.98.0.0/24"]);
    env.run("gw", "pa", &["-p", "8085:80"]);
    let pid = env.docker.pid_of("gw").expect("gw's pid");
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    env.sb.spawn_in(&ns, &ct(), &["serve", "tcp", "80"]);
    dnet_sandbox::wait_listening(&ns, "tcp", 80);
    let target = format!("{UPLINK_IP}:8085");
    let reaches = |env: &Env| {
        wait_until(Duration::from_secs(5), || {
            ok(&env.sb.in_world(&ct(), &["tcp", &target, "--timeout", "1"]))
        })
    };
    // Where dnet's DNAT for 8085 leads: the address of the record that
    // holds the port.
    let port_holder = |env: &Env| -> Vec<String> {
        env.sb
            .dnet_json(&["ps"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["host_port"] == 8085))
            })
            .filter_map(|c| c["networks"][0]["ip"].as_str().map(str::to_owned))
            .collect()
    };
    assert!(reaches(&env), "8085 through pa");
    let first = port_holder(&env);
    assert!(
        first.len() == 1 && first[0].starts_with("10.97.0."),
        "{first:?}"
    );

    // A second network: the gateway endpoint may stay or move; the port
    // is on exactly one endpoint and answers.
    env.docker(&["network", "connect", "pb", "gw"]);
    assert!(reaches(&env), "8085 after connect");
    let holder = port_holder(&env);
    assert_eq!(holder.len(), 1, "{holder:?}");
    // The network holding the port goes: the other takes it over.
    let (gone, stays) = if holder[0].starts_with("10.97.0.") {
        ("pa", "10.98.0.")
    } else {
        ("pb", "10.97.0.")
    };
    env.docker(&["network", "disconnect", gone, "gw"]);
    let moved = wait_until(Duration::from_secs(5), || {
        let h = port_holder(&env);
        h.len() == 1 && h[0].starts_with(stays)
    });
    assert!(moved, "the port moved to {stays}x: {:?}", port_holder(&env));
    assert!(reaches(&env), "8085 through the new gateway endpoint");
    assert_consistent(&env.sb);

    env.docker(&["rm", "-f", "gw"]);
    env.docker(&["network", "rm", "pa", "pb"]);
    let maps = env.sb.map_contents();
    assert!(!maps.contains("8085"), "a service entry is left: {maps}");
    env.assert_clean();
}

/// `ping -6` from a Docker container: every one of two echoes answered.
fn ping6(env: &Env, from: &str, to: &str) -> std::process::Output {
    env.exec(
        from,
        &["ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "2", to],
    )
}

/// Docker container `name` reaches a TCP server on the world's IPv6
/// address, and the world sees the connection come from `seen` (the
/// uplink's address through NAT66, the container's own on a LAN).
fn assert_world_sees6(env: &mut Env, name: &str, seen: &str) {
    let world = env.sb.world_netns_path();
    env.sb.spawn_in(&world, &ct(), &["serve", "tcp", "[::]:80"]);
    dnet_sandbox::wait_listening(&world, "tcp", 80);
    let ns = std::path::PathBuf::from(format!("/proc/{}/ns/net", env.docker.pid_of(name).unwrap()));
    let o = dnet_sandbox::in_netns(&ns, &ct(), &["tcp", &format!("[{WORLD6}]:80")]);
    assert!(
        ok(&o) && stdout(&o).starts_with(&format!("[{seen}]:")),
        "{name} -> the world over IPv6, to be seen as {seen}: {}",
        out(&o)
    );
}

/// `docker network create --ipv6` with Docker's default IPAM: a dual-stack
/// dnet network with Docker's IPv6 subnet and gateway; containers get
/// Docker's IPv6 address on `eth0` (`--ip6` too), their default IPv6 route
/// through the gateway Join gave, and reach each other (by name too:
/// Docker's embedded DNS answers AAAA) and the gateway over IPv6 through
/// dnet's datapath, the world's IPv6 address through dnet's NAT66, and a
/// `-p` port is reached from the world over IPv6 and IPv4. An IPv6 subnet
/// dnet refuses leaves nothing behind.
#[test]
fn docker_dual_stack_network() {
    let mut env = Env::start(true);
    let e = env.network_refused(
        "bad6",
        &[
            "--ipv6",
            "--subnet",
            "10.92.0.0/24",
            "--subnet",
            "fe80::/64",
        ],
    );
    assert!(e.contains("link-local"), "{e}");

    let id = env.network(
        "dn6",
        &[
            "--ipv6",
            "--subnet",
            "10.92.0.0/24",
            "--subnet",
            "fd00:92::/64",
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network of Docker's");
    assert_eq!(net["ipam"]["subnet"], "10.92.0.0/24", "{net}");
    assert_eq!(net["ipam6"]["subnet"], "fd00:92::/64", "{net}");
    assert_eq!(net["ipam6"]["gateway"], "fd00:92::1", "{net}");

    env.run("c1", "dn6", &[]);
    env.run("c2", "dn6", &["--ip6", "fd00:92::77", "-p", "8086:80"]);
    let a1 = global_addr6(&env, "c1");
    assert_eq!(a1.len(), 1, "c1's global IPv6 addresses: {a1:?}");
    assert!(
        a1[0].starts_with("fd00:92::") && a1[0].ends_with("/64"),
        "{a1:?}"
    );
    let ip1 = a1[0].trim_end_matches("/64").to_owned();
    assert_eq!(global_addr6(&env, "c2"), vec!["fd00:92::77/64".to_owned()]);

    // dnet has them, with Docker's IPv6 addresses.
    let ips = env.dnet_ips("ip6");
    assert!(
        ips.contains(&ip1) && ips.contains(&"fd00:92::77".to_owned()),
        "{ips:?}"
    );

    // Join's GatewayIPv6 is the container's default IPv6 route.
    let o = env.exec("c1", &["ip", "-6", "route"]);
    assert!(stdout(&o).contains("default via fd00:92::1"), "{}", out(&o));

    // Over IPv6, east-west and to the gateway, through dnet's datapath.
    for (from, to) in [
        ("c1", "fd00:92::77"),
        ("c2", ip1.as_str()),
        ("c1", "fd00:92::1"),
        ("c2", "fd00:92::1"),
    ] {
        let o = ping6(&env, from, to);
        assert!(ok(&o), "{from} -> {to}: {}", out(&o));
    }
    // By name: Docker's embedded DNS answers AAAA with the address dnet
    // forwards to.
    assert_eq!(
        ask_docker_dns(&env, "c1", &["c2", "aaaa"]),
        ["rcode NoError", "AAAA fd00:92::77"]
    );
    let o = ping6(&env, "c1", "c2");
    assert!(
        ok(&o) && stdout(&o).contains("fd00:92::77"),
        "c1 -> c2 by name over IPv6: {}",
        out(&o)
    );

    assert_world_sees6(&mut env, "c1", UPLINK6);
    let o = ping6(&env, "c1", WORLD6);
    assert!(ok(&o), "c1 -> the world's IPv6: {}", out(&o));

    // c2's `-p 8086:80` from the world, over IPv6 and IPv4: it sees the
    // world's own address (the server listens on [::]: IPv4 reads
    // v4-mapped).
    let c2 = std::path::PathBuf::from(format!("/proc/{}/ns/net", env.docker.pid_of("c2").unwrap()));
    env.sb.spawn_in(&c2, &ct(), &["serve", "tcp", "[::]:80"]);
    dnet_sandbox::wait_listening(&c2, "tcp", 80);
    for (to, seen) in [
        (format!("[{UPLINK6}]:8086"), format!("[{WORLD6}]:")),
        (format!("{UPLINK_IP}:8086"), format!("[::ffff:{WORLD_IP}]:")),
    ] {
        let tcp = || env.sb.in_world(&ct(), &["tcp", &to]);
        assert!(
            wait_until(Duration::from_secs(5), || ok(&tcp())),
            "{to} from the world: {}",
            out(&tcp())
        );
        let o = tcp();
        assert!(stdout(&o).starts_with(&seen), "{to}: c2 saw {}", out(&o));
    }

    // IPv4 still works beside it.
    let o = env.exec("c1", &["ping", "-c", "1", "-W", "2", "10.92.0.1"]);
    assert!(ok(&o), "c1 -> the IPv4 gateway: {}", out(&o));
    // The datapath counted c1's IPv6 packets.
    let stats = env.sb.dnet_json(&["stats"]);
    let counted = stats["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["ip6"] == ip1.as_str() && e["tx_packets"].as_u64() > Some(0));
    assert!(counted, "{stats}");
    assert_consistent(&env.sb);

    env.docker(&["rm", "-f", "c1", "c2"]);
    env.docker(&["network", "rm", "dn6"]);
    assert!(env.dnet_network(&id).is_none());
    env.assert_clean();
}

/// The global IPv6 addresses on a container's `eth0`.
fn global_addr6(env: &Env, name: &str) -> Vec<String> {
    let o = env.exec(name, &["ip", "-o", "-6", "addr", "show", "eth0"]);
    assert!(ok(&o), "{}", out(&o));
    stdout(&o)
        .lines()
        .filter(|l| l.contains("scope global"))
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "inet6")
                .nth(1)
                .map(str::to_owned)
        })
        .collect()
}

/// `docker network create --ipv6 --ipam-driver <dnet>`: dnet's IPAM hands
/// out both families (the IPv6 pool, its gateway, `--ip-range` and each
/// endpoint's address, `--ip6` too), or picks a /64 of its own ULA /48 when
/// no IPv6 subnet is given; names resolve to those addresses and NAT66
/// takes them to the world; overlapping IPv6 pools are refused with nothing
/// made. Which networks dnet addresses is in its state: restarted with
/// dockerd's API out of reach, dnet still lets its own containers join.
#[test]
fn docker_ipam_driver_dual_stack() {
    let mut env = Env::start(true);
    let d = env.driver.clone();
    let id = env.network(
        "ds",
        &[
            "--ipam-driver",
            &d,
            "--ipv6",
            "--subnet",
            "10.93.0.0/24",
            "--subnet",
            "fd00:93::/64",
            "--ip-range",
            "fd00:93::100/120",
        ],
    );
    let net = env.dnet_network(&id).expect("the dnet network");
    assert_eq!(net["ipam"]["subnet"], "10.93.0.0/24", "{net}");
    assert_eq!(net["ipam6"]["subnet"], "fd00:93::/64", "{net}");
    assert_eq!(net["ipam6"]["gateway"], "fd00:93::1", "{net}");
    assert_eq!(net["ipam6"]["ip_range"], "fd00:93::100/120", "{net}");
    env.run("c1", "ds", &[]);
    env.run("c2", "ds", &["--ip6", "fd00:93::77"]);
    assert_eq!(global_addr6(&env, "c1"), ["fd00:93::100/64"]);
    assert_eq!(global_addr6(&env, "c2"), ["fd00:93::77/64"]);
    for (from, to) in [("c1", "fd00:93::77"), ("c2", "fd00:93::1")] {
        let o = ping6(&env, from, to);
        assert!(ok(&o), "{from} -> {to}: {}", out(&o));
    }
    // By name (Docker's embedded DNS answers AAAA with dnet's address),
    // and out to the world's IPv6 through dnet's NAT66, seen as the uplink.
    assert_eq!(
        ask_docker_dns(&env, "c1", &["c2", "aaaa"]),
        ["rcode NoError", "AAAA fd00:93::77"]
    );
    assert_world_sees6(&mut env, "c1", UPLINK6);

    // No IPv6 subnet given: dnet picks a /64 of its ULA /48.
    let id2 = env.network("ds-auto", &["--ipam-driver", &d, "--ipv6"]);
    let auto = env.dnet_network(&id2).expect("the second network");
    let subnet6 = auto["ipam6"]["subnet"].as_str().expect("an IPv6 subnet");
    assert!(
        subnet6.starts_with("fd") && subnet6.ends_with("/64"),
        "{auto}"
    );
    env.run("c3", "ds-auto", &[]);
    let a3 = global_addr6(&env, "c3");
    let prefix = subnet6.trim_end_matches("::/64");
    assert!(
        a3.len() == 1 && a3[0].starts_with(prefix),
        "{a3:?} {subnet6}"
    );

    // An overlapping IPv6 pool is refused, and nothing is made.
    let e = env.network_refused(
        "bad6",
        &[
            "--ipam-driver",
            &d,
            "--ipv6",
            "--subnet",
            "10.94.0.0/24",
            "--subnet",
            "fd00:93::/56",
        ],
    );
    assert!(e.contains("overlaps"), "{e}");

    // Restarted without dockerd's API, dnet still knows that its IPAM
    // addresses "ds": its own containers may join, beside Docker's.
    env.sb.stop_daemon(libc::SIGTERM);
    let sock = format!("--docker-plugin-socket=/run/docker/plugins/{d}.sock");
    env.sb.set_daemon_args(&[&sock, "--docker-api-socket="]);
    env.sb.start_daemon();
    env.sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "own",
        "--network",
        "ds",
        "--",
        "sleep",
        "300",
    ]);
    let own = env.sb.container("own");
    let own6 = own["networks"][0]["ip6"].as_str().expect("an IPv6 address");
    assert!(
        own6.starts_with("fd00:93::") && own6 != "fd00:93::100" && own6 != "fd00:93::77",
        "{own}"
    );
    let o = ping6(&env, "c1", own6);
    assert!(ok(&o), "c1 -> dnet's own: {}", out(&o));
    env.sb.dnet_ok(&["rm", "-f", "own"]);

    env.docker(&["rm", "-f", "c1", "c2", "c3"]);
    env.docker(&["network", "rm", "ds", "ds-auto"]);
    env.assert_clean();
}
