//! Names (issue 14): containers of a user-defined network find each other
//! by name through the resolver on the network's gateway; other names go
//! to the daemon's upstreams. Real queries from container namespaces.
//! Every test here is named `dns_*`.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use dnet_sandbox::{Sandbox, WORLD_IP, conntest_bin, out, wait_until};

/// The fake upstream in the world namespace.
const UPSTREAM_PORT: &str = "5353";
/// What the fake upstream answers for names under `example.`.
const UPSTREAM_ANSWER: &str = "192.0.2.7";

fn sandbox() -> Sandbox {
    Sandbox::with_daemon_args(&["--dns-upstream", &format!("{WORLD_IP}:{UPSTREAM_PORT}")])
}

/// A fake upstream (`conntest dns serve`) in the world namespace; killed on drop.
struct Upstream(Child);

impl Upstream {
    /// The daemon's upstream (`sandbox`'s `--dns-upstream`).
    fn start(sb: &Sandbox) -> Upstream {
        Upstream::on_port(sb, UPSTREAM_PORT.parse().unwrap())
    }

    /// One on `port` of the world address.
    fn on_port(sb: &Sandbox, port: u16) -> Upstream {
        let c = Command::new("nsenter")
            .arg(format!("--net={}", sb.world_netns_path().display()))
            .arg(conntest_bin())
            .args([
                "dns",
                "serve",
                &format!("{WORLD_IP}:{port}"),
                UPSTREAM_ANSWER,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the fake upstream");
        dnet_sandbox::wait_listening(&sb.world_netns_path(), "udp", port);
        Upstream(c)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(sb: &Sandbox, net: &str) -> String {
    let v = sb.dnet_json(&["network", "inspect", net]);
    let v = if v.is_array() { v[0].clone() } else { v };
    v["ipam"]["gateway"].as_str().expect("a gateway").to_owned()
}

/// `conntest dns query` from container `from`: its output lines.
fn ask(sb: &Sandbox, from: &str, server: &str, args: &[&str]) -> Vec<String> {
    let ct = conntest_bin();
    let mut a = vec![
        "exec",
        from,
        "--",
        ct.to_str().unwrap(),
        "dns",
        "query",
        server,
    ];
    a.extend(args);
    let o = sb.dnet(&a);
    assert!(
        o.status.success(),
        "query {args:?} from {from}: {}",
        out(&o)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn dns_containers_find_each_other_by_name_alias_and_network_name() {
    let sb = sandbox();
    let _up = Upstream::start(&sb);
    sb.dnet_ok(&["network", "create", "front"]);
    let gw = gateway(&sb, "front");
    sb.sleeper(
        "web",
        &[
            "--network",
            "front",
            "--network-alias",
            "www",
            "--network-alias",
            "pool",
        ],
    );
    sb.sleeper("web2", &["--network", "front", "--network-alias", "pool"]);
    sb.sleeper("client", &["--network", "front"]);
    let web = sb.ip_of("web");
    let web2 = sb.ip_of("web2");
    for name in ["web", "WEB.", "www", "web.front", "www.front"] {
        assert_eq!(
            ask(&sb, "client", &gw, &[name]),
            vec!["rcode NoError".to_owned(), format!("A {web}")],
            "{name}"
        );
    }
    // TCP too.
    assert_eq!(
        ask(&sb, "client", &gw, &["web.front", "a", "--tcp"]),
        vec!["rcode NoError".to_owned(), format!("A {web}")]
    );
    // One alias on two containers: both addresses.
    assert_eq!(
        sorted(ask(&sb, "client", &gw, &["pool"])),
        sorted(vec![
            "rcode NoError".to_owned(),
            format!("A {web}"),
            format!("A {web2}")
        ])
    );
    // A known name with no IPv6 address: an empty NOERROR, not forwarded.
    assert_eq!(
        ask(&sb, "client", &gw, &["web", "aaaa"]),
        vec!["rcode NoError"]
    );
    // PTR: name.network.
    let o: Vec<&str> = web.split('.').rev().collect();
    let arpa = format!("{}.in-addr.arpa", o.join("."));
    assert_eq!(
        ask(&sb, "client", &gw, &[&arpa, "ptr"]),
        vec!["rcode NoError".to_owned(), "PTR web.front.".to_owned()]
    );
    // Other names go upstream, UDP and TCP stay answered by dnet for its own.
    assert_eq!(
        ask(&sb, "client", &gw, &["host.example"]),
        vec!["rcode NoError".to_owned(), format!("A {UPSTREAM_ANSWER}")]
    );
    assert_eq!(
        ask(&sb, "client", &gw, &["nosuchname"]),
        vec!["rcode NXDomain"]
    );
    // The network's resolver is in the attach answer.
    let (status, v) = sb.api_post(
        "/v1/attach",
        &serde_json::json!({"network": "front", "target": {"kind": "netns",
            "path": sb.netns_of("web2").to_str().unwrap()}}),
    );
    // web2 is already on front: a conflict, but the other fields are checked
    // through a fresh namespace below.
    assert_eq!(status, 409, "{v}");
    let mut sb = sb;
    let ns = sb.add_netns("att");
    let (status, v) = sb.api_post(
        "/v1/attach",
        &serde_json::json!({"network": "front", "target": {"kind": "netns",
            "path": ns.to_str().unwrap()}, "name": "att"}),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["dns"], gw.as_str());
    let (status, v) = sb.api_post(
        "/v1/attach",
        &serde_json::json!({"network": "bridge", "target": {"kind": "netns",
            "path": ns.to_str().unwrap()}}),
    );
    assert_eq!(status, 201, "{v}");
    assert!(
        v["dns"].is_null(),
        "the default bridge has no resolver: {v}"
    );
}

#[test]
fn dns_names_are_scoped_to_the_asking_containers_networks() {
    let sb = sandbox();
    let _up = Upstream::start(&sb);
    sb.dnet_ok(&["network", "create", "front"]);
    sb.dnet_ok(&["network", "create", "back"]);
    let (gf, gb) = (gateway(&sb, "front"), gateway(&sb, "back"));
    sb.sleeper("web", &["--network", "front"]);
    sb.sleeper("other", &["--network", "back"]);
    sb.sleeper("old", &["--network", "bridge"]);
    // A container of another network: web is a name like any unknown one,
    // forwarded, and the upstream knows nothing of it.
    assert_eq!(ask(&sb, "other", &gb, &["web"]), vec!["rcode NXDomain"]);
    assert_eq!(
        ask(&sb, "other", &gb, &["web.front"]),
        vec!["rcode NXDomain"]
    );
    // Asking front's resolver does not help: the source decides.
    assert_eq!(ask(&sb, "other", &gf, &["web"]), vec!["rcode NXDomain"]);
    // Garbage never stops the resolver: a datagram that is no DNS query
    // (answered with FORMERR or not at all), then a real query.
    let ct = conntest_bin();
    let _ = sb.dnet(&[
        "exec",
        "other",
        "--",
        ct.to_str().unwrap(),
        "udp",
        &format!("{gb}:53"),
        "--timeout",
        "1",
    ]);
    assert_eq!(
        ask(&sb, "other", &gb, &["other"]).len(),
        2,
        "still answering"
    );
    // The default bridge has no name service: its containers are refused.
    assert_eq!(ask(&sb, "old", &gf, &["web"]), vec!["rcode Refused"]);
    // Connected to front, other sees web at once; disconnected, no longer.
    sb.dnet_ok(&["network", "connect", "--alias", "db", "front", "other"]);
    let web = sb.ip_of("web");
    assert_eq!(
        ask(&sb, "other", &gb, &["web"]),
        vec!["rcode NoError".to_owned(), format!("A {web}")]
    );
    let web_sees = ask(&sb, "web", &gf, &["db"]);
    assert_eq!(web_sees.len(), 2, "{web_sees:?}");
    sb.dnet_ok(&["network", "disconnect", "front", "other"]);
    assert_eq!(ask(&sb, "other", &gb, &["web"]), vec!["rcode NXDomain"]);
    assert_eq!(ask(&sb, "web", &gf, &["db"]), vec!["rcode NXDomain"]);
}

#[test]
fn dns_removed_containers_stop_resolving_and_names_survive_a_restart() {
    let mut sb = sandbox();
    let _up = Upstream::start(&sb);
    sb.dnet_ok(&["network", "create", "front"]);
    let gw = gateway(&sb, "front");
    sb.sleeper("web", &["--network", "front"]);
    sb.sleeper("gone", &["--network", "front"]);
    sb.sleeper("client", &["--network", "front"]);
    let web = sb.ip_of("web");
    assert_eq!(ask(&sb, "client", &gw, &["gone"]).len(), 2);
    sb.dnet_ok(&["rm", "-f", "gone"]);
    assert_eq!(ask(&sb, "client", &gw, &["gone"]), vec!["rcode NXDomain"]);
    // The daemon goes; its resolver comes back with the state.
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    let expect = ["rcode NoError".to_owned(), format!("A {web}")];
    assert!(
        wait_until(Duration::from_secs(5), || {
            sb.dnet(&[
                "exec",
                "client",
                "--",
                conntest_bin().to_str().unwrap(),
                "dns",
                "query",
                &gw,
                "web",
            ])
            .stdout
                == format!("{}\n", expect.join("\n")).into_bytes()
        }),
        "web does not resolve after a restart: {:?}",
        ask(&sb, "client", &gw, &["web"])
    );
    // A removed network's resolver goes with it.
    sb.dnet_ok(&["network", "create", "spare"]);
    let gs = gateway(&sb, "spare");
    assert!(dnet_sandbox::listening(&sb.host_netns_path(), "udp", 53));
    sb.dnet_ok(&["network", "rm", "spare"]);
    let ss = dnet_sandbox::in_netns(&sb.host_netns_path(), "ss", &["-Hlun"]);
    assert!(!out(&ss).contains(&format!("{gs}:53")), "{}", out(&ss));
}

#[test]
fn dns_forwarding_servfails_when_upstreams_fail_and_skips_internal_networks() {
    let sb = sandbox();
    sb.dnet_ok(&["network", "create", "front"]);
    sb.dnet_ok(&["network", "create", "--internal", "vault"]);
    let (gf, gv) = (gateway(&sb, "front"), gateway(&sb, "vault"));
    sb.sleeper("client", &["--network", "front"]);
    sb.sleeper("secret", &["--network", "vault"]);
    sb.sleeper("peer", &["--network", "vault"]);
    {
        let _up = Upstream::start(&sb);
        assert_eq!(
            ask(&sb, "client", &gf, &["host.example"]),
            vec!["rcode NoError".to_owned(), format!("A {UPSTREAM_ANSWER}")]
        );
        // Internal only: names of its network, nothing forwarded.
        let peer = sb.ip_of("peer");
        assert_eq!(
            ask(&sb, "secret", &gv, &["peer"]),
            vec!["rcode NoError".to_owned(), format!("A {peer}")]
        );
        assert_eq!(
            ask(&sb, "secret", &gv, &["host.example"]),
            vec!["rcode NXDomain"]
        );
    }
    // The upstream is down: SERVFAIL (after its timeout), never silence.
    assert_eq!(
        ask(&sb, "client", &gf, &["host.example", "a", "--timeout", "6"]),
        vec!["rcode ServFail"]
    );
}

/// A host file: its path, (device, inode) and contents.
type HostFile = (String, Option<(u64, u64)>, String);

/// The host's own files and name, to compare after the test.
fn host_files() -> Vec<HostFile> {
    use std::os::unix::fs::MetadataExt as _;
    let mut v: Vec<_> = ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]
        .iter()
        .map(|p| {
            (
                p.to_string(),
                std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino())),
                std::fs::read_to_string(p).unwrap_or_default(),
            )
        })
        .collect();
    v.push((
        "hostname".into(),
        None,
        nix::unistd::gethostname()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    ));
    v
}

#[test]
fn dns_run_containers_get_their_own_resolv_conf_hosts_and_hostname() {
    let before = host_files();
    let sb = sandbox();
    let _up = Upstream::start(&sb);
    sb.dnet_ok(&["network", "create", "front"]);
    let gw = gateway(&sb, "front");
    sb.sleeper("web", &["--network", "front", "--network-alias", "www"]);
    let web = sb.ip_of("web");
    let id = sb.container("web")["id"].as_str().unwrap().to_owned();
    // A foreground `dnet run` resolves a detached container through glibc
    // (getent: /etc/hosts, then DNS through its resolv.conf).
    for name in ["web", "www", "web.front"] {
        let o = sb.dnet_ok(&["run", "--network", "front", "--", "getent", "hosts", name]);
        assert!(o.starts_with(&format!("{web} ")), "{name}: {o}");
    }
    let o = sb.dnet(&[
        "run",
        "--network",
        "front",
        "--",
        "getent",
        "hosts",
        "nosuchname",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", out(&o));
    let o = sb.dnet_ok(&[
        "run",
        "--network",
        "front",
        "--",
        "getent",
        "hosts",
        "host.example",
    ]);
    assert!(o.starts_with(&format!("{UPSTREAM_ANSWER} ")), "{o}");
    // Its files, as `dnet exec` sees them.
    let rc = sb.dnet_ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains(&format!("nameserver {gw}\n")), "{rc}");
    assert!(rc.contains("ndots:0"), "{rc}");
    assert_eq!(rc.matches("nameserver").count(), 1, "{rc}");
    let hosts = sb.dnet_ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(
        hosts.contains(&format!("{web}\t{} web\n", &id[..12])),
        "{hosts}"
    );
    assert_eq!(
        sb.dnet_ok(&["exec", "web", "--", "hostname"]).trim(),
        &id[..12]
    );
    // A detached command sees the same.
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "--network",
        "front",
        "--hostname",
        "box.local",
        "--",
        "sh",
        "-c",
        "cat /etc/resolv.conf; hostname; sleep 300",
    ]);
    assert_eq!(
        sb.dnet_ok(&["exec", "box", "--", "hostname"]).trim(),
        "box.local"
    );
    assert_eq!(
        sb.dnet_ok(&["exec", "box", "--", "cat", "/etc/hostname"])
            .trim(),
        "box.local"
    );
    let o = sb.dnet_ok(&["exec", "box", "--", "getent", "hosts", "box.local"]);
    assert!(o.contains("box.local"), "its own name from /etc/hosts: {o}");
    // The default bridge: no resolver, the host's upstreams minus loopback.
    let rc = sb.dnet_ok(&["run", "--", "cat", "/etc/resolv.conf"]);
    assert!(!rc.contains("nameserver 127."), "{rc}");
    assert!(rc.contains("nameserver "), "{rc}");
    assert!(!rc.contains("ndots:0"), "{rc}");
    let rc = sb.dnet_ok(&[
        "run",
        "--dns",
        "198.18.0.1",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(rc.contains("nameserver 198.18.0.1\n"), "{rc}");
    assert!(
        sb.dnet_err(&["run", "--dns", "nope", "--", "true"])
            .contains("--dns")
    );
    assert!(
        sb.dnet_err(&["run", "--hostname", "bad_name", "--", "true"])
            .contains("hostname")
    );
    assert!(
        sb.dnet_err(&["run", "--network", "host", "--hostname", "x", "--", "true"])
            .contains("host network")
    );
    // The removed container's files and namespaces go with it.
    sb.dnet_ok(&["rm", "-f", "box"]);
    let dirs: Vec<_> = std::fs::read_dir(sb.state_dir().join("containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, vec![id.clone()], "only web's files are left");
    let mnts: Vec<_> = std::fs::read_dir(sb.state_dir().join("mntns"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        mnts.len(),
        2,
        "web's mount and UTS namespaces only: {mnts:?}"
    );
    drop(sb);
    assert_eq!(
        host_files(),
        before,
        "the host's files and name are untouched"
    );
}

#[test]
fn dns_a_containers_own_upstream_and_a_restart_keep_its_files() {
    let mut sb = sandbox();
    sb.dnet_ok(&["network", "create", "front"]);
    let gw = gateway(&sb, "front");
    // The container's own upstream (port 53 of the world), not the daemon's
    // (nothing listens on its port).
    let _up = Upstream::on_port(&sb, 53);
    sb.sleeper(
        "own",
        &["--network", "front", "--dns", &WORLD_IP.to_string()],
    );
    sb.sleeper("plain", &["--network", "front"]);
    assert_eq!(
        ask(&sb, "own", &gw, &["host.example"]),
        vec!["rcode NoError".to_owned(), format!("A {UPSTREAM_ANSWER}")]
    );
    assert_eq!(
        ask(&sb, "plain", &gw, &["host.example", "a", "--timeout", "6"]),
        vec!["rcode ServFail"]
    );
    let rc = sb.dnet_ok(&["exec", "own", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains(&format!("nameserver {gw}\n")), "{rc}");
    // After a crash and a restart: the same namespaces, the same answers.
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    let rc2 = sb.dnet_ok(&["exec", "own", "--", "cat", "/etc/resolv.conf"]);
    assert_eq!(rc, rc2);
    let o = sb.dnet_ok(&["exec", "plain", "--", "getent", "hosts", "own"]);
    assert!(o.starts_with(&format!("{} ", sb.ip_of("own"))), "{o}");
}

/// Container `name`'s address on network `net` (`dnet ps`).
fn ip_on(sb: &Sandbox, name: &str, net: &str) -> String {
    let c = sb.container(name);
    c["networks"]
        .as_array()
        .expect("networks")
        .iter()
        .find(|n| n["network"] == net)
        .and_then(|n| n["ip"].as_str())
        .unwrap_or_else(|| panic!("{name} is not on {net}: {c}"))
        .to_owned()
}

/// The nameserver lines of a container's resolv.conf.
fn nameservers(sb: &Sandbox, name: &str) -> Vec<String> {
    sb.dnet_ok(&["exec", name, "--", "cat", "/etc/resolv.conf"])
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(str::to_owned)
        .collect()
}

/// The lines of a container's /etc/hosts that name it (not localhost's).
fn own_hosts_lines(sb: &Sandbox, name: &str) -> Vec<String> {
    let h = sb.dnet_ok(&["exec", name, "--", "cat", "/etc/hosts"]);
    sorted(
        h.lines()
            .filter(|l| l.ends_with(&format!(" {name}")))
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn dns_hosts_and_resolv_conf_follow_network_connect_and_disconnect() {
    let sb = sandbox();
    sb.dnet_ok(&["network", "create", "front"]);
    sb.dnet_ok(&["network", "create", "back"]);
    let (gf, gb) = (gateway(&sb, "front"), gateway(&sb, "back"));
    // web starts on the default bridge: no resolver of dnet's.
    sb.sleeper("web", &["--network", "bridge"]);
    sb.sleeper("peer", &["--network", "back"]);
    let id = sb.container("web")["id"].as_str().unwrap()[..12].to_owned();
    let on_bridge = ip_on(&sb, "web", "bridge");
    let line = |ip: &str| format!("{ip}\t{id} web");
    let host_servers = nameservers(&sb, "web");
    assert!(!host_servers.contains(&gf), "{host_servers:?}");
    assert_eq!(own_hosts_lines(&sb, "web"), vec![line(&on_bridge)]);

    // Joined to front: its new address in hosts, front's resolver in
    // resolv.conf (its first user-defined network, as Docker switches to
    // its embedded resolver then).
    sb.dnet_ok(&["network", "connect", "front", "web"]);
    let on_front = ip_on(&sb, "web", "front");
    assert_eq!(
        own_hosts_lines(&sb, "web"),
        sorted(vec![line(&on_bridge), line(&on_front)])
    );
    assert_eq!(nameservers(&sb, "web"), vec![gf.clone()]);
    let rc = sb.dnet_ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("ndots:0"), "{rc}");

    // Joined to back too: front's resolver stays; glibc finds back's peer.
    sb.dnet_ok(&["network", "connect", "back", "web"]);
    let on_back = ip_on(&sb, "web", "back");
    assert_eq!(
        own_hosts_lines(&sb, "web"),
        sorted(vec![line(&on_bridge), line(&on_front), line(&on_back)])
    );
    assert_eq!(nameservers(&sb, "web"), vec![gf.clone()]);
    let peer = sb.ip_of("peer");
    let o = sb.dnet_ok(&["exec", "web", "--", "getent", "hosts", "peer"]);
    assert!(o.starts_with(&format!("{peer} ")), "{o}");

    // Left front: its address goes, back's resolver takes over.
    sb.dnet_ok(&["network", "disconnect", "front", "web"]);
    assert_eq!(
        own_hosts_lines(&sb, "web"),
        sorted(vec![line(&on_bridge), line(&on_back)])
    );
    assert_eq!(nameservers(&sb, "web"), vec![gb.clone()]);
    let o = sb.dnet_ok(&["exec", "web", "--", "getent", "hosts", "peer"]);
    assert!(o.starts_with(&format!("{peer} ")), "{o}");

    // Left back: the default bridge's file again.
    sb.dnet_ok(&["network", "disconnect", "back", "web"]);
    assert_eq!(own_hosts_lines(&sb, "web"), vec![line(&on_bridge)]);
    assert_eq!(nameservers(&sb, "web"), host_servers);
    let rc = sb.dnet_ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(!rc.contains("ndots:0"), "{rc}");
}

#[test]
fn dns_the_hosts_resolv_conf_is_followed() {
    let mut sb = Sandbox::without_daemon();
    // The daemon's "host resolv.conf": first a nameserver where nothing
    // listens (the daemon's own loopback), so forwarding fails at once.
    let host_rc = sb.dir.join("host-resolv.conf");
    std::fs::write(&host_rc, "nameserver 127.0.0.1\nsearch one.example\n").unwrap();
    sb.set_daemon_args(&["--resolv-conf", host_rc.to_str().unwrap()]);
    sb.start_daemon();
    // The upstream the new file will name, on port 53 of the world.
    let _up = Upstream::on_port(&sb, 53);
    sb.dnet_ok(&["network", "create", "front"]);
    let gw = gateway(&sb, "front");
    sb.sleeper("client", &["--network", "front"]);
    sb.sleeper("old", &["--network", "bridge"]);
    assert_eq!(
        ask(&sb, "client", &gw, &["host.example"]),
        vec!["rcode ServFail"]
    );
    let rc = sb.dnet_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("search one.example\n"), "{rc}");
    // The default bridge cannot use a loopback nameserver: Docker's fallback.
    assert_eq!(nameservers(&sb, "old"), vec!["8.8.8.8", "8.8.4.4"]);

    // The host's file is replaced the way resolvconf does it (a new file
    // renamed over the old one).
    let tmp = sb.dir.join("host-resolv.conf.new");
    std::fs::write(
        &tmp,
        format!("nameserver {WORLD_IP}\nsearch two.example\noptions edns0\n"),
    )
    .unwrap();
    std::fs::rename(&tmp, &host_rc).unwrap();
    let forwarded = vec!["rcode NoError".to_owned(), format!("A {UPSTREAM_ANSWER}")];
    assert!(
        wait_until(Duration::from_secs(10), || ask(
            &sb,
            "client",
            &gw,
            &["host.example"]
        ) == forwarded),
        "the new upstream is not used: {:?}",
        ask(&sb, "client", &gw, &["host.example"])
    );
    // The containers' own files follow (written after the resolver took
    // the new upstreams, so waited for): search and options everywhere,
    // the nameserver where it is the host's.
    let mut rc = String::new();
    let followed = wait_until(Duration::from_secs(10), || {
        rc = sb.dnet_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
        rc.contains("search two.example\n") && nameservers(&sb, "old") == vec![WORLD_IP.to_string()]
    });
    assert!(followed, "{rc}\n{:?}", nameservers(&sb, "old"));
    assert!(rc.contains("edns0") && rc.contains("ndots:0"), "{rc}");
    assert_eq!(nameservers(&sb, "client"), vec![gw.clone()]);
    // Through glibc, in a new container too.
    let o = sb.dnet_ok(&["exec", "client", "--", "getent", "hosts", "host.example"]);
    assert!(o.starts_with(&format!("{UPSTREAM_ANSWER} ")), "{o}");
    let rc = sb.dnet_ok(&["run", "--network", "front", "--", "cat", "/etc/resolv.conf"]);
    assert!(rc.contains("search two.example\n"), "{rc}");
}
