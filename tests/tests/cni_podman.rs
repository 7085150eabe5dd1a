//! podman 4 with its CNI backend attaching containers to a dnet network
//! through `dnet-cni`: a containers.conf, storage and run folders of the
//! test's own, podman run from the sandbox's host namespace, containers
//! from a busybox-static rootfs folder (no image, no registry).

use std::{
    fs,
    os::unix::fs::symlink,
    path::PathBuf,
    process::{Command, Output},
};

use dnet_sandbox::{Sandbox, UPLINK_IP, assert_consistent, ok, out, stdout};
use serde_json::Value;

/// podman with everything of its own under one temp folder; `Drop`
/// removes its containers and the folder.
struct Podman {
    dir: PathBuf,
    host_ns: PathBuf,
}

const BUSYBOX: &str = "/bin/busybox";

impl Podman {
    fn new(sb: &Sandbox, network: &str) -> Podman {
        let dir = std::env::temp_dir().join(format!("{}-podman", sb.name));
        let p = Podman {
            dir: dir.clone(),
            host_ns: sb.host_netns_path(),
        };
        for d in [
            "rootfs/bin",
            "rootfs/www",
            "rootfs/etc",
            "tmp",
            "net.d",
            "bin",
            "cni-cache",
        ] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        fs::copy(BUSYBOX, dir.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "httpd", "nc", "ping", "ip", "cat", "printf"] {
            symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        fs::write(dir.join("rootfs/www/index.html"), "hello from podman\n").unwrap();
        fs::write(dir.join("rootfs/etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
        fs::write(dir.join("rootfs/etc/group"), "root:x:0:\n").unwrap();
        fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{d}/bin\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{d}/net.d\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        fs::write(
            dir.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/root\"\n",
                d = dir.display()
            ),
        )
        .unwrap();
        sb.dnet_ok(&[
            "cni",
            "install",
            "--bin-dir",
            dir.join("bin").to_str().unwrap(),
            "--conf-dir",
            dir.join("net.d").to_str().unwrap(),
            network,
        ]);
        p
    }

    fn podman(&self, args: &[&str]) -> Output {
        let d = &self.dir;
        Command::new("nsenter")
            .arg(format!("--net={}", self.host_ns.display()))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .env("TMPDIR", d.join("tmp"))
            .output()
            .expect("run podman")
    }

    fn podman_ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(ok(&o), "podman {args:?}: {}", out(&o));
        stdout(&o)
    }

    fn rootfs(&self) -> String {
        self.dir.join("rootfs").to_str().unwrap().to_owned()
    }

    fn inspect(&self, name: &str) -> Value {
        let j: Value = serde_json::from_str(&self.podman_ok(&["inspect", name])).unwrap();
        j[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `--ulimit` flags: as root, podman asks for 1048576 open files and
/// (with `--ulimit host`) limits above what runc may set on a machine
/// without CAP_SYS_RESOURCE; lowering a limit is always allowed.
fn ulimits() -> Vec<String> {
    [
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn http_get(o: Output) -> String {
    format!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn cni_podman_runs_containers_on_a_dnet_network() {
    let sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.89.0.0/24", "podnet"]);
    let pm = Podman::new(&sb, "podnet");
    let rootfs = pm.rootfs();
    let ulimits = ulimits();
    let run = |name: &str, extra: &[&str], cmd: &[&str]| {
        let mut a = vec!["run", "-d", "--name", name, "--network", "podnet"];
        a.extend(ulimits.iter().map(String::as_str));
        a.extend(extra);
        a.extend(["--rootfs", &rootfs]);
        a.extend(cmd);
        pm.podman_ok(&a)
    };
    run(
        "web",
        &["-p", "8080:80"],
        &["/bin/httpd", "-f", "-p", "80", "-h", "/www"],
    );
    run("client", &[], &["/bin/sleep", "300"]);

    let web = pm.inspect("web");
    let web_id = web["Id"].as_str().unwrap().to_owned();
    let web_ip = web["NetworkSettings"]["Networks"]["podnet"]["IPAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("web's address: {web}"))
        .to_owned();
    assert!(web_ip.starts_with("10.89.0."), "{web_ip}");
    // dnet shows podman's container under podman's id.
    let c = sb.container(&web_id);
    assert_eq!(c["networks"][0]["ip"], web_ip.as_str(), "{c}");
    assert_eq!(c["ports"][0]["host_port"], 8080, "{c}");
    let client_id = pm.inspect("client")["Id"].as_str().unwrap().to_owned();
    let mut ids: Vec<String> = sb
        .cni_records()
        .iter()
        .map(|c| c["runtime"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    let mut want = vec![web_id.clone(), client_id];
    want.sort();
    assert_eq!(
        ids, want,
        "one CNI record per podman container, under its id"
    );
    assert_consistent(&sb);

    // East-west, from inside podman's other container.
    let o = pm.podman(&["exec", "client", "/bin/ping", "-c", "1", "-W", "3", &web_ip]);
    assert!(ok(&o), "ping web from client: {}", out(&o));
    let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {web_ip} 80");
    let o = pm.podman(&["exec", "client", "/bin/sh", "-c", &get]);
    assert!(http_get(o).contains("hello from podman"), "web from client");
    // The published port from the world.
    let get = format!(
        "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | {BUSYBOX} timeout 5 {BUSYBOX} nc {UPLINK_IP} 8080"
    );
    let o = sb.in_world("sh", &["-c", &get]);
    let body = http_get(o);
    assert!(
        body.contains("hello from podman"),
        "-p 8080:80 from the world: {body}"
    );

    // podman rm leaves nothing in dnet.
    pm.podman_ok(&["rm", "-f", "-t", "0", "web", "client"]);
    assert!(sb.cni_records().is_empty(), "{}", sb.state());
    let o = sb.in_world("sh", &["-c", &get]);
    assert!(
        !http_get(o).contains("hello"),
        "the port went with the container"
    );
    assert_consistent(&sb);
}
