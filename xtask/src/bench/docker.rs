//! docker0's side: Debian's Docker daemon inside a sandbox host namespace
//! (entered with `nsenter --net`, never `ip netns exec`, which would hide
//! bpffs and the cgroup mounts), with its own data root, exec root, pid
//! file, socket and cgroup parent, so its docker0, veths and iptables rules
//! live in that namespace only. Containers come from a `docker import`ed
//! busybox rootfs; measurements run the host's tools inside their
//! namespaces (`/proc/PID/ns/net`, as `nsenter -t PID -n`).
//!
//! The daemon runs with `--userland-proxy=false` (no docker-proxy process
//! per published port: 10,000 of them would measure process count, not the
//! datapath) and the `vfs` storage driver (fewest mounts; storage does not
//! touch the network).

use std::{
    io::Write as _,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP};

use super::{
    env::{self, CpFigures, Env, FILLER_FIRST, Miss, Outcome, PP_PORT, PUBLISH_FIRST, Tools},
    parse, rules,
    sys::{self, Procs, in_netns},
};

const IMAGE: &str = "dnbench-busybox:latest";
/// Paths outside its folders that dockerd (or its containerd) creates.
const STRAY_PATHS: &[&str] = &["/run/docker", "/run/containerd", "/etc/docker/key.json"];

/// Feeds `doc` to `iptables-restore --noflush` inside a namespace.
pub fn iptables_restore(netns: &Path, doc: &str) -> anyhow::Result<()> {
    if doc.is_empty() {
        return Ok(());
    }
    let mut c = in_netns(netns, None, "iptables-restore", &["--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("iptables-restore")?;
    c.stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .context("iptables-restore stdin")?;
    let o = c.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "iptables-restore failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Makes a busybox rootfs tarball in `dir` from Debian's busybox-static.
pub fn busybox_tar(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin"))?;
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .context("busybox-static is not installed")?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for applet in ["sh", "sleep", "ip", "cat"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
    }
    let tar = dir.join("rootfs.tar");
    sys::ok(
        Command::new("tar")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    Ok(tar)
}

pub struct DockerEnv {
    procs: Procs,
    pp_procs: Procs,
    daemon: Option<Child>,
    made: Vec<PathBuf>,
    cgroup: String,
    docker: String,
    sock: PathBuf,
    tools: Tools,
    pin: bool,
    version: String,
    ew_client: PathBuf,
    ew_server: Ipv4Addr,
    filler: u32,
    cp_ready: usize,
    // Last: namespaces, mounts and folders go after the daemon.
    sb: Sandbox,
}

impl DockerEnv {
    /// Starts dockerd in a fresh sandbox; fails when it cannot run here.
    pub fn start(tools: &Tools, pin: bool) -> anyhow::Result<DockerEnv> {
        let dockerd = which("dockerd").context("dockerd is not installed")?;
        let docker = if Path::new("/usr/bin/docker").is_file() {
            "/usr/bin/docker".to_owned()
        } else {
            which("docker").context("no docker client")?
        };
        let sb = std::panic::catch_unwind(Sandbox::without_daemon)
            .map_err(|_| anyhow::anyhow!("cannot make the sandbox"))?;
        let made = STRAY_PATHS
            .iter()
            .map(PathBuf::from)
            .filter(|p| !p.exists())
            .collect();
        let dir = sb.dir.clone();
        let sock = dir.join("docker.sock");
        let cgroup = format!("{}-docker", sb.name);
        let mut e = DockerEnv {
            procs: Procs::default(),
            pp_procs: Procs::default(),
            daemon: None,
            made,
            cgroup: cgroup.clone(),
            docker,
            sock: sock.clone(),
            tools: tools.clone(),
            pin,
            version: String::new(),
            ew_client: PathBuf::new(),
            ew_server: Ipv4Addr::UNSPECIFIED,
            filler: 0,
            cp_ready: 0,
            sb,
        };
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        // A config file of its own: the machine's /etc/docker/daemon.json
        // stays out, and the trust key goes to our folder, not /etc/docker.
        let config = dir.join("daemon.json");
        std::fs::write(
            &config,
            serde_json::json!({"deprecated-key-path": dir.join("key.json")}).to_string(),
        )?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", e.sb.host_netns_path().display()))
            .arg(&dockerd)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--userland-proxy=false", "--storage-driver", "vfs"])
            .arg("--cgroup-parent")
            .arg(format!("/{cgroup}"))
            .arg("--config-file")
            .arg(&config)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("cannot start dockerd")?;
        e.daemon = Some(child);
        let mut exited = None;
        let up = sys::wait_for(Duration::from_secs(60), || {
            if let Some(Ok(Some(s))) = e.daemon.as_mut().map(Child::try_wait) {
                exited = Some(s);
                return true;
            }
            e.cmd(&["version", "--format", "{{.Server.Version}}"])
                .map(|v| e.version = v.trim().to_owned())
                .is_ok()
        });
        if let Some(s) = exited {
            bail!("dockerd exited ({s}): {}", e.log_tail());
        }
        if !up {
            bail!("dockerd did not answer within 60 s: {}", e.log_tail());
        }
        let tar = busybox_tar(&dir)?;
        e.cmd(&["import", tar.to_str().expect("utf-8"), IMAGE])?;
        e.cmd(&["run", "-d", "--name", "dnb-srv", IMAGE, "sleep", "1000000"])?;
        e.cmd(&["run", "-d", "--name", "dnb-cli", IMAGE, "sleep", "1000000"])?;
        let (srv_ns, srv_ip) = e.inspect("dnb-srv")?;
        let (cli_ns, _) = e.inspect("dnb-cli")?;
        e.ew_server = srv_ip;
        e.ew_client = cli_ns;
        env::start_servers(&mut e.procs, &srv_ns, tools, pin, true)?;
        env::start_world_servers(&mut e.procs, &e.sb.world_netns_path(), tools, pin)?;
        sys::client_sysctls(&e.ew_client)?;
        sys::client_sysctls(&e.sb.world_netns_path())?;
        Ok(e)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.sb.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// `docker -H unix://SOCK ARGS`: stdout, or the error.
    fn cmd(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new(&self.docker);
        c.arg("-H")
            .arg(format!("unix://{}", self.sock.display()))
            .args(args);
        sys::run_ok(c, Duration::from_secs(600))
    }

    /// A running container's namespace (`/proc/PID/ns/net`) and address.
    fn inspect(&self, name: &str) -> anyhow::Result<(PathBuf, Ipv4Addr)> {
        let out = self.cmd(&[
            "inspect",
            "-f",
            "{{.State.Pid}} {{.NetworkSettings.IPAddress}}",
            name,
        ])?;
        let mut w = out.split_whitespace();
        let pid: u32 = w.next().and_then(|p| p.parse().ok()).context("no pid")?;
        let ip = w
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Ok((PathBuf::from(format!("/proc/{pid}/ns/net")), ip))
    }

    fn timed(&self, names: &[String], args: &[&str]) -> anyhow::Result<f64> {
        let start = Instant::now();
        for n in names {
            let mut a = args.to_vec();
            a.push(n);
            self.cmd(&a)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    fn filler_rules(&self, op: &str) -> String {
        rules::filler("docker0", UPLINK_IP, FILLER_FIRST, self.filler, op).restore_doc()
    }

    /// Every process left in our cgroups, then the cgroups themselves.
    fn remove_cgroups(&self) {
        let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
            return;
        };
        for ctrl in rd.flatten() {
            let top = ctrl.path().join(&self.cgroup);
            if !top.is_dir() {
                continue;
            }
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            for d in &dirs {
                for f in ["cgroup.procs", "tasks"] {
                    for pid in std::fs::read_to_string(d.join(f))
                        .unwrap_or_default()
                        .lines()
                    {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            // SAFETY: signalling a process by pid.
                            unsafe {
                                libc::kill(pid, libc::SIGKILL);
                            }
                        }
                    }
                }
            }
            // Deepest first.
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                for _ in 0..50 {
                    if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
}

fn collect_dirs(d: &Path, out: &mut Vec<PathBuf>) {
    out.push(d.to_owned());
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

pub fn which(cmd: &str) -> Option<String> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|p| p.is_file())
            .map(|p| p.to_string_lossy().into_owned())
    })
}

impl Drop for DockerEnv {
    fn drop(&mut self) {
        self.procs.kill_all();
        self.pp_procs.kill_all();
        if let Some(mut d) = self.daemon.take() {
            if matches!(d.try_wait(), Ok(None)) {
                if let Ok(ids) = self.cmd(&["ps", "-aq"]) {
                    let ids: Vec<&str> = ids.split_whitespace().collect();
                    if !ids.is_empty() {
                        let mut a = vec!["rm", "-f"];
                        a.extend(ids);
                        let _ = self.cmd(&a);
                    }
                }
                // SAFETY: signalling our own child by pid.
                unsafe {
                    libc::kill(d.id() as i32, libc::SIGTERM);
                }
                let gone = sys::wait_for(Duration::from_secs(20), || {
                    matches!(d.try_wait(), Ok(Some(_)))
                });
                if !gone {
                    let _ = d.kill();
                }
            }
            let _ = d.wait();
        }
        // containerd and its shims live in the host namespace; the sandbox
        // kills them, and what is left in the containers' cgroups goes here.
        dnet_sandbox::kill_in_netns(&self.sb.host_netns_path());
        self.remove_cgroups();
        for p in &self.made {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

impl Env for DockerEnv {
    fn label(&self) -> String {
        "docker0".into()
    }
    fn describe(&self) -> String {
        format!(
            "real Docker {} (Debian docker.io) in a sandbox host namespace: docker0, iptables ({}), --userland-proxy=false",
            self.version,
            iptables_backend()
        )
    }
    fn conntrack_netns(&self) -> Vec<PathBuf> {
        vec![self.sb.host_netns_path()]
    }
    fn east_west(&self) -> (PathBuf, Ipv4Addr) {
        (self.ew_client.clone(), self.ew_server)
    }
    fn north_south(&self) -> Outcome<(PathBuf, Ipv4Addr)> {
        Ok((self.ew_client.clone(), WORLD_IP))
    }
    fn world(&self) -> PathBuf {
        self.sb.world_netns_path()
    }

    fn pp_setup(&mut self, others: u32) -> Outcome<(Ipv4Addr, u16)> {
        // Ports published before the measured one, in Docker's own rules.
        self.filler = others;
        iptables_restore(&self.sb.host_netns_path(), &self.filler_rules("-A"))?;
        let spec = format!("{UPLINK_IP}:{PP_PORT}:{PP_PORT}");
        self.cmd(&[
            "run", "-d", "--name", "dnb-pp", "-p", &spec, IMAGE, "sleep", "1000000",
        ])?;
        let (ns, _) = self.inspect("dnb-pp")?;
        let cpu = env::server_cpu(self.pin);
        self.pp_procs.spawn(in_netns(
            &ns,
            cpu,
            self.tools.connrate(),
            &["serve", &PP_PORT.to_string()],
        ))?;
        env::wait_listening(&ns, PP_PORT)?;
        // The measured port's DNAT must come last: the worst case, every
        // other port's rule is tried first.
        let chain = sys::output(&mut in_netns(
            &self.sb.host_netns_path(),
            None,
            "iptables",
            &["-t", "nat", "-S", "DOCKER"],
        ))?;
        let ports = parse::dnat_ports(&chain);
        if ports.last() != Some(&PP_PORT) || ports.len() != others as usize + 1 {
            return Err(Miss::Failed(anyhow::anyhow!(
                "docker0's DOCKER chain has {} DNAT rules, the measured one at {:?}; expected {} with it last",
                ports.len(),
                ports.iter().position(|p| *p == PP_PORT),
                others + 1
            )));
        }
        if !env::probe_published(&self.world(), &self.tools, UPLINK_IP, PP_PORT) {
            return Err(Miss::Failed(anyhow::anyhow!(
                "docker0's published port does not answer"
            )));
        }
        Ok((UPLINK_IP, PP_PORT))
    }

    fn pp_teardown(&mut self) -> anyhow::Result<()> {
        self.pp_procs.kill_all();
        let _ = self.cmd(&["rm", "-f", "dnb-pp"]);
        iptables_restore(&self.sb.host_netns_path(), &self.filler_rules("-D"))?;
        self.filler = 0;
        Ok(())
    }

    fn control_plane(&mut self, n: usize, ports: u32) -> Outcome<CpFigures> {
        let names: Vec<String> = (0..n).map(|i| format!("dnb-cp{i}")).collect();
        while self.cp_ready < n {
            let name = &names[self.cp_ready];
            self.cmd(&["run", "-d", "--name", name, IMAGE, "sleep", "1000000"])?;
            self.cmd(&["network", "disconnect", "bridge", name])?;
            self.cp_ready += 1;
        }
        let t_conn = self.timed(&names, &["network", "connect", "bridge"])?;
        let t_disc = self.timed(&names, &["network", "disconnect", "bridge"])?;
        let spec = format!(
            "{UPLINK_IP}:{PUBLISH_FIRST}-{last}:{PUBLISH_FIRST}-{last}",
            last = PUBLISH_FIRST as u32 + ports - 1
        );
        let start = Instant::now();
        self.cmd(&[
            "run", "-d", "--name", "dnb-pub", "-p", &spec, IMAGE, "sleep", "1000000",
        ])?;
        let t_pub = start.elapsed().as_secs_f64();
        let start = Instant::now();
        self.cmd(&["rm", "-f", "dnb-pub"])?;
        let t_unpub = start.elapsed().as_secs_f64();
        Ok(vec![
            ("cp_attach", t_conn),
            ("cp_detach", t_disc),
            ("cp_connect", t_conn),
            ("cp_disconnect", t_disc),
            ("cp_publish", t_pub),
            ("cp_unpublish", t_unpub),
        ])
    }
}

/// `nf_tables` or `legacy`, as `iptables --version` says.
pub fn iptables_backend() -> String {
    Command::new("iptables")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned();
            let (_, b) = s.split_once('(')?;
            Some(b.trim_end().trim_end_matches(')').to_owned())
        })
        .unwrap_or_else(|| "iptables".into())
}
