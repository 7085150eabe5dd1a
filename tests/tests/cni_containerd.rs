//! containerd 1.6's `ctr run --cni` attaching a container to a dnet
//! network through `dnet-cni`: a containerd of the test's own (its root,
//! state and socket in a temp folder, started in the sandbox's host
//! namespace), a busybox-static rootfs folder (no image), and ctr run in a
//! private mount namespace where the temp folders are mounted over
//! `/opt/cni/bin` and `/etc/cni/net.d` (ctr reads no other place), so the
//! machine's own folders are never touched.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use dnet_sandbox::{Sandbox, assert_consistent, ct, ok, out, wait_until};

const BUSYBOX: &str = "/bin/busybox";

/// A containerd of the test's own; `Drop` stops it and removes its folder.
struct Containerd {
    dir: PathBuf,
    host_ns: PathBuf,
    daemon: Child,
}

impl Containerd {
    fn start(sb: &Sandbox) -> Containerd {
        let dir = std::env::temp_dir().join(format!("{}-containerd", sb.name));
        for d in ["rootfs/bin", "net.d", "bin", "root", "state", "opt"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, dir.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "nc", "ping", "ip", "printf", "cat"] {
            symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        fs::write(
            dir.join("config.toml"),
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let daemon = Command::new("nsenter")
            .arg(format!("--net={}", sb.host_netns_path().display()))
            .arg("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir,
            host_ns: sb.host_netns_path(),
            daemon,
        };
        assert!(
            wait_until(Duration::from_secs(20), || c
                .ctr(&["version"])
                .status
                .success()),
            "containerd did not answer: {}",
            fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
        );
        c
    }

    /// `ctr` against this containerd, in a private mount namespace whose
    /// `/opt/cni/bin` and `/etc/cni/net.d` are this test's folders.
    fn ctr_cmd(&self, args: &[&str]) -> Command {
        let d = self.dir.display();
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let script = format!(
            "set -e; mount --make-rprivate /; mount -t tmpfs dnet-cni-test /opt; \
             mkdir -p /opt/cni/bin; mount --bind {d}/bin /opt/cni/bin; \
             mount --bind {d}/net.d /etc/cni/net.d; \
             exec ctr --address {d}/containerd.sock {}",
            quoted.join(" ")
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.host_ns.display()))
            .args(["unshare", "-m", "sh", "-c", &script]);
        cmd
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("run ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A container a failed run left (`--rm` removes it otherwise).
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", "ctr1"]);
        let _ = self.ctr(&["task", "delete", "-f", "ctr1"]);
        let _ = self.ctr(&["container", "delete", "ctr1"]);
        // SAFETY: kill(2) on the pid of our own child, which we reap next.
        unsafe {
            libc::kill(self.daemon.id() as i32, libc::SIGTERM);
        }
        let _ = self.daemon.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn cni_containerd_ctr_run_attaches_to_a_dnet_network() {
    if !Path::new(BUSYBOX).exists() {
        panic!("{BUSYBOX} is missing (busybox-static): cargo xtask setup installs it");
    }
    let sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.90.0.0/24", "ctrnet"]);
    let cd = Containerd::start(&sb);
    sb.dnet_ok(&[
        "cni",
        "install",
        "--bin-dir",
        cd.dir.join("bin").to_str().unwrap(),
        "--conf-dir",
        cd.dir.join("net.d").to_str().unwrap(),
        "ctrnet",
    ]);
    // A dnet container to reach east-west.
    let ctb = ct();
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "ctrnet",
        "--",
        &ctb,
        "serve",
        "tcp",
        "80",
    ]);
    sb.wait_server("srv", "tcp", 80);
    let srv = sb.ip_of("srv");

    let rootfs = cd.dir.join("rootfs");
    let script = format!(
        "ip -o -4 addr show eth0; ping -c 1 -W 3 10.90.0.1 && echo gateway-ok; \
         printf 'hello\\n' | nc -w 3 {srv} 80; echo; sleep 2"
    );
    let cgroup = format!("/{}-ctr1", sb.name);
    let child = cd
        .ctr_cmd(&[
            "run",
            "--rm",
            "--cni",
            "--cgroup",
            &cgroup,
            "--rootfs",
            rootfs.to_str().unwrap(),
            "ctr1",
            "/bin/sh",
            "-c",
            &script,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ctr run");
    // While it runs, dnet shows it under containerd's id for it.
    let seen = wait_until(Duration::from_secs(10), || {
        sb.cni_records()
            .iter()
            .any(|c| c["runtime"]["id"] == "default-ctr1" && c["name"] == "default-ctr1")
    });
    let o = child.wait_with_output().unwrap();
    let text = out(&o);
    assert!(
        seen,
        "no CNI record for default-ctr1: {}\n{text}",
        sb.state()
    );
    assert!(ok(&o), "ctr run: {text}");
    let ip = text
        .split_once("inet ")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(ip, _)| ip.to_owned())
        .unwrap_or_else(|| panic!("eth0 has no address: {text}"));
    assert!(ip.starts_with("10.90.0."), "{ip}");
    assert!(text.contains("gateway-ok"), "the gateway answers: {text}");
    assert!(
        text.contains(&format!("{ip}:")),
        "the dnet container saw the CNI container's address {ip}: {text}"
    );
    // ctr run --rm ran DEL.
    assert!(sb.cni_records().is_empty(), "{}", sb.state());
    assert_consistent(&sb);
}
