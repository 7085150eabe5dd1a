//! The sandbox for dnet's scenario tests, demo and benchmark.
//!
//! A [`Sandbox`] is a "host" network namespace whose uplink `eth0` is one
//! end of a veth pair, the other end in a "world" namespace that plays the
//! outside network (198.18.0.0/24, the benchmarking range). A dnet daemon
//! runs inside the host namespace with its own state folder, socket and
//! bpffs folder, entered with `nsenter --net` (`ip netns exec` would hide
//! bpffs). Names are unique per process and sandbox, so sandboxes run in
//! parallel; `Drop` removes everything, also after a panic.
//!
//! Nothing here touches the machine's own network namespace.

pub mod bpf;
pub mod docker;
pub mod leaks;

use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

/// The world side of the uplink.
pub const WORLD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The host's uplink address.
pub const UPLINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// The uplink's IPv6 address in the dual-stack sandboxes (IPv6's
/// benchmarking range, RFC 5180), and the world's.
pub const UPLINK6: &str = "2001:2::2";
pub const WORLD6: &str = "2001:2::1";

/// A sandbox whose uplink has an IPv6 address too ([`UPLINK6`], the world
/// [`WORLD6`]), before its daemon starts.
pub fn dual_stack_sandbox() -> Sandbox {
    let mut sb = Sandbox::without_daemon();
    sb.add_uplink6();
    sb.start_daemon();
    sb
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The `dnet` binary under test: `$DNET_BIN`, else the workspace's debug build.
pub fn dnet_bin() -> PathBuf {
    std::env::var_os("DNET_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/dnet"))
}

/// The `conntest` binary: `$CONNTEST_BIN`, else next to `dnet`.
pub fn conntest_bin() -> PathBuf {
    std::env::var_os("CONNTEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| dnet_bin().with_file_name("conntest"))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Runs a command, returning its output; panics only if it cannot start.
pub fn sh(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn sh_ok(program: &str, args: &[&str]) -> String {
    let o = sh(program, args);
    assert!(
        o.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until `f` is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Sandbox {
    /// Unique name: `dnt<pid>x<n>`.
    pub name: String,
    pub host_ns: String,
    pub world_ns: String,
    /// The daemon's folder: state, socket, log.
    pub dir: PathBuf,
    pub bpffs: PathBuf,
    daemon: Option<Child>,
    /// Extra `dnet daemon` flags.
    daemon_args: Vec<String>,
    /// Extra environment of the daemon (`DNET_CRASH_AT`, say).
    daemon_env: Vec<(String, String)>,
    /// Background processes started in the sandbox (servers), killed on drop.
    children: Vec<Child>,
    /// More namespaces of the sandbox ([`Sandbox::add_netns`]).
    extra_ns: Vec<String>,
}

impl Sandbox {
    /// A new sandbox with its daemon running.
    // Not `Default`: making one starts a daemon.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Sandbox {
        let mut sb = Sandbox::without_daemon();
        sb.start_daemon();
        sb
    }

    /// Gives the uplink [`UPLINK6`] and the world [`WORLD6`] (/64, no DAD).
    pub fn add_uplink6(&self) {
        for (ns, a) in [(&self.host_ns, UPLINK6), (&self.world_ns, WORLD6)] {
            let a = format!("{a}/64");
            sh_ok("ip", &["-n", ns, "addr", "add", &a, "dev", "eth0", "nodad"]);
        }
    }

    /// The host's default IPv6 route: via [`WORLD6`].
    pub fn route6_via_world(&self) {
        sh_ok(
            "ip",
            &[
                "-n",
                &self.host_ns,
                "-6",
                "route",
                "add",
                "default",
                "via",
                WORLD6,
            ],
        );
    }

    /// A sandbox whose daemon runs with extra flags.
    pub fn with_daemon_args(args: &[&str]) -> Sandbox {
        let mut sb = Sandbox::without_daemon();
        sb.daemon_args = args.iter().map(|a| a.to_string()).collect();
        sb.start_daemon();
        sb
    }

    /// The namespaces and folders, no daemon yet.
    pub fn without_daemon() -> Sandbox {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        leaks::record_pid(std::process::id());
        let name = format!("dnt{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        let sb = Sandbox {
            host_ns: format!("{name}h"),
            world_ns: format!("{name}w"),
            bpffs: PathBuf::from("/sys/fs/bpf").join(&name),
            dir,
            name,
            daemon: None,
            daemon_args: Vec::new(),
            daemon_env: Vec::new(),
            children: Vec::new(),
            extra_ns: Vec::new(),
        };
        fs::create_dir_all(&sb.dir).expect("sandbox folder");
        sh_ok("ip", &["netns", "add", &sb.host_ns]);
        sh_ok("ip", &["netns", "add", &sb.world_ns]);
        let (h, w) = (sb.host_ns.as_str(), sb.world_ns.as_str());
        sh_ok(
            "ip",
            &[
                "-n", h, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", w,
            ],
        );
        sh_ok(
            "ip",
            &[
                "-n",
                h,
                "addr",
                "add",
                &format!("{UPLINK_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        sh_ok(
            "ip",
            &[
                "-n",
                w,
                "addr",
                "add",
                &format!("{WORLD_IP}/24"),
                "dev",
                "eth0",
            ],
        );
        for ns in [h, w] {
            sh_ok("ip", &["-n", ns, "link", "set", "lo", "up"]);
            sh_ok("ip", &["-n", ns, "link", "set", "eth0", "up"]);
        }
        sh_ok(
            "ip",
            &[
                "-n",
                h,
                "route",
                "add",
                "default",
                "via",
                &WORLD_IP.to_string(),
            ],
        );
        sb
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("dnet.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// A new, empty namespace `<name><suffix>` (loopback up) that goes
    /// with the sandbox: another runtime's container, a far network.
    pub fn add_netns(&mut self, suffix: &str) -> PathBuf {
        let ns = format!("{}{suffix}", self.name);
        sh_ok("ip", &["netns", "add", &ns]);
        self.extra_ns.push(ns.clone());
        sh_ok("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        PathBuf::from("/run/netns").join(ns)
    }

    /// `/run/netns/<name>` of the host namespace.
    pub fn host_netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.host_ns)
    }

    pub fn world_netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.world_ns)
    }

    /// Starts the daemon inside the host namespace and waits for its API.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "daemon already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("daemon log");
        let child = Command::new("nsenter")
            .arg(format!("--net={}", self.host_netns_path().display()))
            .arg(dnet_bin())
            .arg("--socket")
            .arg(self.socket())
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--bpffs")
            .arg(&self.bpffs)
            .arg("--log-level")
            .arg("dnet=debug,info")
            // Docker's plugin folder is the machine's: a sandbox's daemon
            // serves the driver only where a test asks for it.
            .args(
                (!self
                    .daemon_args
                    .iter()
                    .any(|a| a.starts_with("--docker-plugin-socket")))
                .then_some("--docker-plugin-socket="),
            )
            .args(&self.daemon_args)
            .envs(self.daemon_env.iter().map(|(k, v)| (k, v)))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        self.daemon = Some(child);
        let up = wait_until(Duration::from_secs(60), || {
            if let Some(c) = self.daemon.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("daemon exited with {status}:\n{}", self.log_tail(40));
            }
            self.dnet(&["info"]).status.success()
        });
        assert!(up, "daemon did not answer:\n{}", self.log_tail(40));
    }

    /// The extra `dnet daemon` flags of the next start.
    pub fn set_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The extra environment of the daemon's next start (replaces the last).
    pub fn set_daemon_env(&mut self, env: &[(&str, &str)]) {
        self.daemon_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    /// Waits (bounded) for the daemon to exit by itself; its exit status,
    /// or `None` if it still runs.
    pub fn wait_daemon_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            status.is_some()
        });
        if status.is_some() {
            self.daemon = None;
        }
        status
    }

    /// Kills the daemon with `signal` (SIGKILL for a crash) and reaps it.
    pub fn stop_daemon(&mut self, signal: i32) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: sending a signal to our own child by pid.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
            let _ = c.wait();
        }
    }

    /// The daemon's pid, if it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `dnet` against this sandbox's daemon.
    pub fn dnet(&self, args: &[&str]) -> Output {
        Command::new(dnet_bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("run dnet")
    }

    /// Runs `dnet`, which must succeed; returns stdout.
    pub fn dnet_ok(&self, args: &[&str]) -> String {
        let o = self.dnet(args);
        assert!(
            o.status.success(),
            "dnet {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Waits (bounded) until the daemon has no link removal finishing in
    /// the background (`pending_removals` of `dnet info`): what a test then
    /// reads of the kernel is what the daemon made of its last request.
    /// Nothing to wait for when the daemon is not running.
    pub fn settle(&self) {
        if self.daemon.is_none() {
            return;
        }
        let mut last = String::new();
        let settled = wait_until(Duration::from_secs(30), || {
            let o = self.dnet(&["info", "--format", "json"]);
            last = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success()
                && serde_json::from_slice::<serde_json::Value>(&o.stdout)
                    .is_ok_and(|i| i["pending_removals"].as_u64() == Some(0))
        });
        assert!(settled, "removals still under way: {last}");
    }

    /// Runs `dnet`, which must fail; returns stderr.
    pub fn dnet_err(&self, args: &[&str]) -> String {
        let o = self.dnet(args);
        assert!(
            !o.status.success(),
            "dnet {args:?} succeeded but should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// `dnet ... --format json`, parsed.
    pub fn dnet_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.dnet_ok(&a)).expect("JSON from dnet")
    }

    /// Runs a command inside the host namespace.
    pub fn in_host(&self, program: &str, args: &[&str]) -> Output {
        in_netns(&self.host_netns_path(), program, args)
    }

    /// Runs a command inside the world namespace.
    pub fn in_world(&self, program: &str, args: &[&str]) -> Output {
        in_netns(&self.world_netns_path(), program, args)
    }

    /// Runs conntest inside a container (`dnet exec`); returns its output.
    pub fn conntest_in(&self, container: &str, args: &[&str]) -> Output {
        let ct = conntest_bin();
        let mut a = vec!["exec", container, "--", ct.to_str().expect("utf-8 path")];
        a.extend(args);
        self.dnet(&a)
    }

    /// Starts a detached container running a conntest server, and waits
    /// until it listens.
    pub fn server(&self, name: &str, network: &str, proto: &str, port: u16) {
        self.server_at(name, network, proto, &port.to_string(), port);
    }

    /// [`Sandbox::server`], listening on `bind` (`PORT` or `[ADDR]:PORT`).
    fn server_at(&self, name: &str, network: &str, proto: &str, bind: &str, port: u16) {
        let ct = conntest_bin();
        self.dnet_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "--",
            ct.to_str().expect("utf-8 path"),
            "serve",
            proto,
            bind,
        ]);
        self.wait_server(name, proto, port);
    }

    /// Waits (bounded) until a server listens on `proto` `port` in
    /// container `name`.
    pub fn wait_server(&self, name: &str, proto: &str, port: u16) {
        wait_listening(&self.netns_of(name), proto, port);
    }

    /// The namespace file of container `name`.
    pub fn netns_of(&self, name: &str) -> PathBuf {
        PathBuf::from(
            self.container(name)["netns_path"]
                .as_str()
                .expect("a namespace path"),
        )
    }

    /// Packets `ifname` received in the namespace at `netns` (the kernel's
    /// counter, read without the daemon): a client's `eth0` counts the
    /// answers that reach it.
    pub fn rx_packets(&self, netns: &Path, ifname: &str) -> u64 {
        let o = in_netns(netns, "ip", &["-j", "-s", "link", "show", "dev", ifname]);
        assert!(o.status.success(), "ip -s link show {ifname}: {o:?}");
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j");
        j[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .expect("rx packets")
    }

    /// Kills the daemon with SIGKILL while a flow runs, and restarts it:
    /// `packets` (a kernel counter of the flow's answers) must grow before the
    /// kill (the flow runs) and while the daemon is down (it runs without
    /// the daemon). The flow must last long enough for both.
    pub fn kill_9_and_restart_during_flow(&mut self, mut packets: impl FnMut(&Sandbox) -> u64) {
        let p0 = packets(self);
        assert!(
            wait_until(Duration::from_secs(10), || packets(self) >= p0 + 20),
            "the flow does not run"
        );
        self.stop_daemon(libc::SIGKILL);
        let p1 = packets(self);
        assert!(
            wait_until(Duration::from_secs(10), || packets(self) >= p1 + 20),
            "the flow stopped with the daemon"
        );
        self.start_daemon();
    }

    /// Starts a background process in a namespace, killed when the sandbox goes.
    pub fn spawn_in(&mut self, netns: &Path, program: &str, args: &[&str]) {
        let c = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in namespace");
        self.children.push(c);
    }

    /// `ip -j` output of the host namespace, parsed.
    pub fn host_ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["-j", "-n", self.host_ns.as_str()];
        a.extend(args);
        serde_json::from_str(&sh_ok("ip", &a)).expect("ip -j")
    }

    /// Names of the host namespace's links.
    pub fn host_links(&self) -> Vec<String> {
        self.host_ip_json(&["link", "show"])
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect()
    }

    /// The programs of dnet's filters (`pref 1`, handle 1, cls_bpf) on a
    /// host-side veth: (ingress, egress), each the name the program was
    /// attached under, if there is one.
    pub fn veth_programs(&self, veth: &str) -> (Option<String>, Option<String>) {
        let hook = |dir: &str| {
            let o = sh_ok(
                "tc",
                &["-n", &self.host_ns, "filter", "show", "dev", veth, dir],
            );
            // filter protocol all pref 1 bpf chain 0 handle 0x1 NAME direct-action ...
            o.lines().find_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let at = |k: &str| w.iter().position(|x| *x == k).map(|i| i + 1);
                (w.contains(&"bpf") && at("pref").and_then(|i| w.get(i)) == Some(&"1"))
                    .then(|| at("handle").and_then(|i| w.get(i..i + 2)))
                    .flatten()
                    .filter(|h| h[0] == "0x1")
                    .map(|h| h[1].to_owned())
            })
        };
        (hook("ingress"), hook("egress"))
    }

    /// Files under the daemon's bpffs folder (pins), sorted.
    pub fn pins(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["maps", "links", "host"] {
            if let Ok(rd) = fs::read_dir(self.bpffs.join(sub)) {
                out.extend(
                    rd.flatten()
                        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy())),
                );
            }
        }
        out.sort();
        out
    }

    /// Namespaces the daemon made (files under its state folder).
    pub fn netns_files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.state_dir().join("netns"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The committed state, parsed: the snapshot `state.json` with the
    /// commits of `state.log` replayed over it (the format is
    /// `dnet-userspace/src/store.rs`'s; a line that does not parse, one a
    /// commit under way has not finished, ends the replay).
    pub fn state(&self) -> serde_json::Value {
        use serde_json::Value;
        let snapshot = fs::read_to_string(self.state_dir().join("state.json")).ok();
        let log = fs::read_to_string(self.state_dir().join("state.log")).ok();
        let mut st = match (&snapshot, &log) {
            (None, None) => return Value::Null,
            (Some(s), _) => match serde_json::from_str::<Value>(s) {
                Ok(st) => st,
                Err(_) => return Value::Null,
            },
            (None, Some(_)) => serde_json::json!({"networks": {}, "containers": {}}),
        };
        let log = log.unwrap_or_default();
        let mut prepared = std::collections::BTreeMap::new();
        let apply = |st: &mut Value, changes: &Value| {
            for key in ["networks", "containers"] {
                for (id, v) in changes[key].as_object().into_iter().flatten() {
                    let records = st[key].as_object_mut().expect("records");
                    match v {
                        Value::Null => records.remove(id),
                        v => records.insert(id.clone(), v.clone()),
                    };
                }
            }
            if let Some(rest) = changes["rest"].as_object() {
                let st = st.as_object_mut().expect("state");
                for (k, v) in rest {
                    match v {
                        Value::Null => st.remove(k),
                        Value::Array(a) if a.is_empty() => st.remove(k),
                        v => st.insert(k.clone(), v.clone()),
                    };
                }
            }
        };
        for line in log.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let Some(e) = line
                .get(9..)
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
            else {
                break;
            };
            if let Some(c) = e.get("commit") {
                apply(&mut st, c);
            } else if let Some(p) = e.get("prepared") {
                prepared.insert(p["id"].as_u64(), p["changes"].clone());
            } else if let Some(c) = e
                .get("publish")
                .and_then(|p| prepared.remove(&p["id"].as_u64()))
            {
                apply(&mut st, &c);
            }
        }
        st
    }

    /// The contents of every pinned map but the counters (`DNET_STATS`),
    /// read from bpffs without the daemon: services, endpoints by address
    /// and by interface, members, networks, subnets, conntrack entries,
    /// the config. One section per map, entries sorted.
    pub fn map_contents(&self) -> String {
        let mut out = Vec::new();
        for name in dnet_common::maps::ALL {
            if name == dnet_common::maps::STATS {
                continue;
            }
            let path = self.bpffs.join("maps").join(name);
            if !path.exists() {
                continue;
            }
            let dump =
                bpf::map_dump(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            out.push(format!("{name}:\n{dump}"));
        }
        out.join("\n")
    }

    /// Everything that tells the host namespace's network apart: links,
    /// addresses, routes, pins, namespaces, map contents, the reserved
    /// ports, and (last) the state. Equal snapshots mean nothing changed.
    pub fn snapshot(&self) -> String {
        self.settle();
        let norm = |s: String| -> String {
            // Lifetimes count down on their own; keep the rest of the line.
            s.lines()
                .map(|l| l.split("valid_lft").next().unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let h = self.host_ns.as_str();
        [
            sh_ok("ip", &["-n", h, "-o", "link", "show"]),
            // IPv4 only, as the routes below.
            norm(sh_ok("ip", &["-n", h, "-4", "-o", "addr", "show"])),
            // IPv4 only: dnet makes no IPv6 routes, and the kernel adds
            // the uplink's link-local one when its address check ends,
            // at any moment of a test.
            sh_ok("ip", &["-n", h, "-4", "route", "show", "table", "all"]),
            self.pins().join("\n"),
            self.netns_files().join("\n"),
            self.map_contents(),
            {
                let o = self.in_host("cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
                assert!(o.status.success(), "reserved ports: {o:?}");
                String::from_utf8_lossy(&o.stdout).into_owned()
            },
            serde_json::to_string_pretty(&self.state()).unwrap_or_default(),
        ]
        .join("\n---\n")
    }
}

/// The committed state, `ip` and bpffs agree: every kernel object dnet made
/// belongs to a record and every record's objects are there.
pub fn assert_consistent(sb: &Sandbox) {
    sb.settle();
    let st = sb.state();
    let containers = st["containers"].as_object().cloned().unwrap_or_default();
    let networks = st["networks"].as_object().cloned().unwrap_or_default();
    let mut veths: Vec<String> = containers
        .values()
        .flat_map(|c| c["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["host_ifname"].as_str().map(str::to_owned))
        .collect();
    // The container ends of host-side attachments stay in the daemon's
    // namespace until their runtime moves them.
    let temp: Vec<String> = containers
        .values()
        .filter(|c| c["netns"]["kind"] == "runtime")
        .flat_map(|c| c["endpoints"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| {
            e["host_ifname"]
                .as_str()
                .map(|h| format!("dntmp{}", h.trim_start_matches("veth")))
        })
        .collect();
    veths.sort();
    // Every veth of the host namespace but the sandbox's uplink, whatever
    // its alias (dnet sets it in a second call, after the pair exists).
    let links = sb.host_ip_json(&["-d", "link", "show"]);
    let mut dnet_links: Vec<String> = links
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["linkinfo"]["info_kind"] == "veth" && l["ifname"] != "eth0")
        .filter(|l| !temp.iter().any(|t| l["ifname"] == t.as_str()))
        .map(|l| l["ifname"].as_str().unwrap().to_owned())
        .collect();
    dnet_links.sort();
    assert_eq!(dnet_links, veths, "veths in the kernel vs the state");
    for l in links.as_array().unwrap() {
        if veths.iter().any(|v| l["ifname"] == v.as_str()) {
            assert!(
                l["ifalias"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("dnet:ep:")),
                "a veth of the state without its alias: {l}"
            );
        }
    }

    let mut ns_files = sb.netns_files();
    ns_files.sort();
    let mut owned: Vec<String> = containers
        .values()
        .filter(|c| c["netns"]["kind"] == "owned")
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    owned.sort();
    assert_eq!(ns_files, owned, "namespaces vs the state");

    let mut gateways: Vec<String> = networks
        .values()
        .filter(|n| n["driver"] == "bridge")
        .map(|n| n["ipam"]["gateway"].as_str().unwrap().to_owned())
        .collect();
    gateways.sort();
    let addrs = sb.host_ip_json(&["addr", "show", "lo"]);
    let mut lo_gw: Vec<String> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["label"] == "lo:dnet")
        .map(|a| a["local"].as_str().unwrap().to_owned())
        .collect();
    lo_gw.sort();
    assert_eq!(lo_gw, gateways, "gateway addresses vs the state");

    let routes = sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "route",
            "show",
            "proto",
            "213",
            "type",
            "unreachable",
        ],
    );
    let mut unreachable: Vec<String> = routes
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    unreachable.sort();
    let mut subnets: Vec<String> = networks
        .values()
        .filter(|n| n["driver"] == "bridge")
        .map(|n| n["ipam"]["subnet"].as_str().unwrap().to_owned())
        .collect();
    subnets.sort();
    assert_eq!(unreachable, subnets, "subnet routes vs the state");

    // The container programs sit in filters of each veth (no pin), and no
    // tcx link pin of an older build is left.
    for v in &veths {
        assert_eq!(
            sb.veth_programs(v),
            (
                Some("lxc_from_container".to_owned()),
                Some("lxc_to_container".to_owned())
            ),
            "the programs of {v}"
        );
    }
    let pinned: Vec<String> = sb
        .pins()
        .into_iter()
        .filter(|p| p.starts_with("links/"))
        .collect();
    assert_eq!(pinned, Vec::<String>::new(), "link pins");
}

/// The conntest binary's path, as an argument.
pub fn ct() -> String {
    conntest_bin().to_str().expect("utf-8 path").to_owned()
}

/// The command succeeded.
pub fn ok(o: &Output) -> bool {
    o.status.success()
}

/// stdout and stderr together, for messages.
pub fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// stdout, trimmed.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

impl Sandbox {
    /// `POST path` with a JSON body on the daemon's API socket (curl);
    /// returns the HTTP status and the body (`null` when empty).
    pub fn api_post(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let o = Command::new("curl")
            .arg("-sS")
            .arg("--unix-socket")
            .arg(self.socket())
            .args(["-H", "Content-Type: application/json", "-X", "POST"])
            .args(["-d", &body.to_string()])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("http://dnet{path}"))
            .output()
            .expect("run curl");
        assert!(o.status.success(), "curl {path}: {}", out(&o));
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("curl's status line");
        let code: u16 = code.trim().parse().expect("an HTTP status");
        let body = if body.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON from {path}: {body}"))
        };
        (code, body)
    }

    /// Container `name` as `dnet ps --format json` shows it.
    pub fn container(&self, name: &str) -> serde_json::Value {
        let ps = self.dnet_json(&["ps"]);
        ps.as_array()
            .expect("containers")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// A container's IPv4 on its first interface.
    pub fn ip_of(&self, name: &str) -> String {
        self.container(name)["networks"][0]["ip"]
            .as_str()
            .expect("an address")
            .to_owned()
    }

    /// Drops of one reason for one container (`dnet stats --format json`).
    pub fn drops(&self, container: &str, reason: &str) -> u64 {
        let s = self.dnet_json(&["stats"]);
        s["endpoints"]
            .as_array()
            .expect("endpoints")
            .iter()
            .filter(|e| e["container"] == container)
            .map(|e| e["drops"][reason].as_u64().unwrap_or(0))
            .sum()
    }

    /// The containers of the committed state that a CNI runtime attached
    /// (`runtime.runtime == "cni"`).
    pub fn cni_records(&self) -> Vec<serde_json::Value> {
        self.state()["containers"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter(|c| c["runtime"]["runtime"] == "cni")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `dnet conntrack ls --format json`.
    pub fn flows(&self) -> Vec<serde_json::Value> {
        self.dnet_json(&["conntrack", "ls"])
            .as_array()
            .expect("flows")
            .clone()
    }
}

/// Whether a socket of `proto` (`tcp` or `udp`) listens on `port` in the
/// namespace at `netns` (its `/proc/net/{tcp,udp}`, read from inside).
pub fn listening(netns: &Path, proto: &str, port: u16) -> bool {
    let table = match proto {
        "tcp" => "/proc/net/tcp",
        "udp" => "/proc/net/udp",
        _ => panic!("unknown protocol {proto}"),
    };
    let o = in_netns(netns, "cat", &[table]);
    assert!(
        o.status.success(),
        "reading {table} in {}: {o:?}",
        netns.display()
    );
    // An IPv6 (or dual-stack `[::]`) socket is in the `6` table, which
    // may be missing.
    let o6 = in_netns(netns, "cat", &[&format!("{table}6")]);
    // local_address is ADDR:PORT in hex; TCP LISTEN is state 0A, a bound
    // UDP socket 07.
    let state = if proto == "tcp" { "0A" } else { "07" };
    [o, o6].iter().filter(|o| o.status.success()).any(|o| {
        String::from_utf8_lossy(&o.stdout).lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3
                && f[1].rsplit(':').next() == Some(format!("{port:04X}").as_str())
                && f[3] == state
        })
    })
}

/// Waits (bounded) until a server listens; panics if none does.
pub fn wait_listening(netns: &Path, proto: &str, port: u16) {
    assert!(
        wait_until(Duration::from_secs(10), || listening(netns, proto, port)),
        "nothing listens on {proto} {port} in {}",
        netns.display()
    );
}

/// Runs a command inside the namespace at `netns` (`nsenter --net`).
pub fn in_netns(netns: &Path, program: &str, args: &[&str]) -> Output {
    Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg(program)
        .args(args)
        .output()
        .expect("nsenter")
}

/// Mount points under `dir`, deepest first (none if mountinfo cannot be
/// read: cleanup goes on, and the leak check, which fails on that, tells).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = leaks::parse_mountinfo(&info)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// The processes whose network namespace is the one at `path`.
pub fn pids_in_netns(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(m) = fs::metadata(path) else {
        return Vec::new();
    };
    let id = (m.dev(), m.ino());
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let n = fs::metadata(e.path().join("ns/net")).ok()?;
            ((n.dev(), n.ino()) == id).then_some(pid)
        })
        .collect()
}

/// Kills every process whose network namespace is the one at `path`.
pub fn kill_in_netns(path: &Path) {
    for pid in pids_in_netns(path) {
        // SAFETY: sending a signal by pid.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// The pid in a sandbox name of ours, `dnt<pid>x…` (tests, demo, bench's
/// dnet side) or `dnb<pid>x…` (the bench's other sides), or in the bpffs
/// folder of a datapath test, `dnet-test-<pid>-…`.
pub fn owner_pid(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix("dnet-test-") {
        return rest.split_once('-')?.0.parse().ok();
    }
    let rest = name
        .strip_prefix("dnt")
        .or_else(|| name.strip_prefix("dnb"))?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Removes what sandboxes of runs that are gone left behind: a run killed
/// with SIGKILL, or a machine restarted in the middle of one, never ran its
/// `Drop`. A sandbox is stale when no process has the pid in its name;
/// its processes, mounts, namespaces and folders go. Returns the names it
/// removed.
pub fn reap_stale() -> Vec<String> {
    reap_stale_where(|_| true)
}

/// [`reap_stale`] for the stale names that `filter` accepts only (a test
/// reaps what it made, and leaves other leftovers to the leak check).
pub fn reap_stale_where(filter: impl Fn(&str) -> bool) -> Vec<String> {
    let me = std::process::id();
    let stale = |n: &str| {
        filter(n)
            && owner_pid(n).is_some_and(|p| p != me && !Path::new(&format!("/proc/{p}")).exists())
    };
    let names = |dir: &str| -> Vec<String> {
        fs::read_dir(dir)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| stale(n))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut removed = Vec::new();
    for name in names(&std::env::temp_dir().to_string_lossy()) {
        let dir = std::env::temp_dir().join(&name);
        for m in mounts_under(&dir) {
            kill_in_netns(&m);
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        if fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir.display().to_string());
        }
    }
    for name in names("/run/netns") {
        kill_in_netns(&Path::new("/run/netns").join(&name));
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        removed.push(format!("netns {name}"));
    }
    for name in names("/sys/fs/bpf") {
        let dir = Path::new("/sys/fs/bpf").join(&name);
        if fs::remove_dir_all(&dir).is_ok() {
            removed.push(dir.display().to_string());
        }
    }
    removed
}

/// The cgroups a daemon running in the namespace at `netns` makes for its
/// detached containers: `dnet/ns<inode>` under the cgroup v2 root (dnet's
/// `engine::process::instance_cgroup`). None without cgroup v2.
pub fn daemon_cgroup(netns: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let ino = fs::metadata(netns).ok()?.ino();
    Some(cgroup2_root()?.join("dnet").join(format!("ns{ino}")))
}

/// Where the cgroup v2 hierarchy is mounted.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = leaks::parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").ok()?).ok()?;
    Some(mounts.into_iter().find(|m| m.fstype == "cgroup2")?.point)
}

/// Kills what is in the cgroups under `dir` and removes them and `dir`
/// (bounded wait: a killed process leaves its cgroup a moment later).
fn remove_cgroup_tree(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten().filter(|e| e.path().is_dir()) {
        let _ = fs::write(e.path().join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(2);
        while fs::remove_dir(e.path()).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Not eprintln!: a closed stderr must not panic in a panic,
            // which would abort before the cleanup below.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "--- daemon log of {} ---\n{}",
                self.name,
                self.log_tail(60)
            );
        }
        // Containers first, through the daemon, while it runs.
        if self.daemon.is_some() {
            let ps = self.dnet(&["ps", "-q"]);
            for id in String::from_utf8_lossy(&ps.stdout).split_whitespace() {
                let _ = self.dnet(&["rm", "-f", id]);
            }
        }
        self.stop_daemon(libc::SIGTERM);
        for mut c in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Whatever the daemon left (a test may have killed it mid-way).
        for m in mounts_under(&self.dir) {
            kill_in_netns(&m);
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for ns in [&self.host_ns, &self.world_ns]
            .into_iter()
            .chain(&self.extra_ns)
        {
            let p = PathBuf::from("/run/netns").join(ns);
            kill_in_netns(&p);
            // A daemon killed mid-way leaves its containers' cgroups.
            if let Some(cg) = daemon_cgroup(&p) {
                remove_cgroup_tree(&cg);
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = fs::remove_dir_all(&self.bpffs);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Fixtures the scenarios share.
impl Sandbox {
    /// Starts a detached container `name` that sleeps (five minutes), made
    /// with the extra `dnet run` flags `flags` (`--network NET`, say).
    pub fn sleeper(&self, name: &str, flags: &[&str]) {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend(flags);
        a.extend(["--", "sleep", "300"]);
        self.dnet_ok(&a);
    }

    /// [`Sandbox::server`] on `[::]:PORT`: IPv6 and IPv4 clients alike.
    pub fn server6(&self, name: &str, network: &str, proto: &str, port: u16) {
        self.server_at(name, network, proto, &format!("[::]:{port}"), port);
    }

    /// `ping -6` from container `from` to `to`: both echoes answered.
    pub fn ping6(&self, from: &str, to: &str) -> bool {
        ok(&self.dnet(&[
            "exec", from, "--", "ping", "-6", "-n", "-c", "2", "-i", "0.2", "-W", "2", to,
        ]))
    }

    /// `dnet network create --ipv6 --subnet V4 --subnet V6 NAME`.
    pub fn dual_stack_network(&self, name: &str, v4: &str, v6: &str) {
        self.dnet_ok(&[
            "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, name,
        ]);
    }

    /// One ping (two seconds at most) from container `name` to `to`, with
    /// the extra ping flags `flags` (`-t TTL`, say).
    pub fn ping_from(&self, name: &str, to: &str, flags: &[&str]) -> Output {
        let mut a = vec!["exec", name, "--", "ping", "-c", "1", "-W", "2"];
        a.extend(flags);
        a.push(to);
        self.dnet(&a)
    }

    /// Whether container `name` reaches the world: one ping of [`WORLD_IP`].
    pub fn reaches_world(&self, name: &str) -> bool {
        let o = self.ping_from(name, &WORLD_IP.to_string(), &[]);
        if !o.status.success() {
            eprintln!("{name} does not reach the world: {}", out(&o));
        }
        o.status.success()
    }
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_reads_our_sandbox_names_only() {
        assert_eq!(owner_pid("dnt29480x0h"), Some(29480));
        assert_eq!(owner_pid("dnb12x4lw"), Some(12));
        assert_eq!(owner_pid("dnt29480"), None);
        assert_eq!(owner_pid("dntx1"), None);
        assert_eq!(owner_pid("dnet-test-31-swap"), Some(31));
        assert_eq!(owner_pid("dnet-test-swap"), None);
        assert_eq!(owner_pid("docker"), None);
    }
}
