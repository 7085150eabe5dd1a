//! Containers dnet makes (`dnet run`, `dnet create`), with their own
//! namespaces and processes, and the records of namespaces another runtime
//! made.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    path::PathBuf,
    sync::{Arc, Mutex as StdMutex},
};

use super::{EndpointOpts, Engine, Inner, crash, etc, parse_ip, process};
use crate::{
    api::{ContainerCreate, ContainerView},
    conflict, driver,
    error::Result,
    invalid,
    model::{Container, Netns, Process, new_id, now},
    netns, spec,
};

impl Engine {
    pub async fn create_container(&self, req: ContainerCreate) -> Result<ContainerView> {
        let mut inner = self.inner.lock().await;
        let id = inner.create_container(req, &self.exits).await?;
        Ok(inner.container_view(&inner.state.containers[&id]))
    }

    pub async fn containers(&self) -> Vec<ContainerView> {
        let inner = self.inner.lock().await;
        let mut v: Vec<ContainerView> = inner
            .state
            .containers
            .values()
            .map(|c| inner.container_view(c))
            .collect();
        v.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
        v
    }

    pub async fn container(&self, key: &str) -> Result<ContainerView> {
        let inner = self.inner.lock().await;
        let c = inner.find_container(key)?;
        Ok(inner.container_view(c))
    }

    pub async fn remove_container(&self, key: &str, force: bool) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let c = inner.find_container(key)?.clone();
        if let Some(p) = &c.process
            && process::alive(p)
            && !force
        {
            return Err(conflict!(
                "container {} is running: stop it first or use `dnet rm -f`",
                c.name
            ));
        }
        inner.remove_container(&c.id).await
    }

    /// Removes foreground containers whose `dnet run` is gone, and notes
    /// the exit of detached processes.
    pub(super) async fn reap(&self) -> Result<()> {
        let mut inner = self.inner.lock().await;
        let orphans: Vec<String> = inner
            .state
            .containers
            .values()
            .filter(|c| c.owner.as_ref().is_some_and(|o| !process::alive(o)))
            .map(|c| c.id.clone())
            .collect();
        for id in orphans {
            tracing::info!(container = %id, "its dnet run is gone: removing");
            inner.remove_container(&id).await?;
        }
        let exited: Vec<(String, i32)> = inner
            .state
            .containers
            .values()
            .filter_map(|c| {
                let p = c.process.as_ref()?;
                if p.exit_code.is_some() || process::alive(p) {
                    return None;
                }
                let code = self.exits.lock().expect("exits lock").remove(&p.pid);
                Some((c.id.clone(), code.unwrap_or(-1)))
            })
            .collect();
        if !exited.is_empty() {
            let mut st = inner.state.clone();
            for (id, code) in exited {
                if let Some(p) = st.containers.get_mut(&id).and_then(|c| c.process.as_mut()) {
                    p.exit_code = Some(code);
                }
            }
            inner.commit(st)?;
        }
        Ok(())
    }
}

impl Inner {
    pub(super) async fn create_container(
        &mut self,
        req: ContainerCreate,
        exits: &Arc<StdMutex<HashMap<u32, i32>>>,
    ) -> Result<String> {
        let id = new_id();
        let name = req
            .name
            .clone()
            .unwrap_or_else(|| format!("ctr-{}", &id[..8]));
        spec::validate_name("container", &name)?;
        if self
            .state
            .find_container(&name)
            .is_some_and(|c| c.name == name)
        {
            return Err(conflict!("container name {name:?} is already in use"));
        }
        let net = self
            .find_network(req.network.as_deref().unwrap_or("bridge"))?
            .clone();
        let ports = self.check_ports(&req.publish, &net)?;
        let dns = req
            .dns
            .iter()
            .map(|s| parse_ip("--dns", s))
            .collect::<Result<Vec<_>>>()?;
        if let Some(h) = &req.hostname {
            etc::validate_hostname(h)?;
        }
        let caps = driver::caps(net.driver);
        if caps.host_netns && (req.hostname.is_some() || !dns.is_empty()) {
            // As Docker: the host's own files and name are the container's.
            return Err(invalid!(
                "--hostname and --dns do not go with the host network: the container shares the host's name and files"
            ));
        }
        if req.detach && req.command.is_empty() {
            return Err(invalid!("a detached container needs a command"));
        }
        let owner = match req.owner_pid {
            Some(pid) => Some(Process {
                pid,
                start_time: process::start_time(pid)
                    .ok_or_else(|| invalid!("owner process {pid} is not running"))?,
                command: req.command.clone(),
                exit_code: None,
                log: PathBuf::new(),
            }),
            None => None,
        };
        let netns = if caps.host_netns {
            Netns::Host
        } else {
            Netns::Owned {
                path: self.cfg.netns_dir().join(&id),
            }
        };
        let mut c = Container {
            id: id.clone(),
            name,
            created: now(),
            netns,
            endpoints: Vec::new(),
            ports,
            process: None,
            owner,
            runtime: None,
            dns,
            hostname: req.hostname.clone(),
        };
        let ep = self
            .new_endpoint(
                &net,
                &c,
                &EndpointOpts {
                    ip: req.ip.as_deref(),
                    ip6: req.ip6.as_deref(),
                    aliases: &req.aliases,
                    ..Default::default()
                },
            )
            .await?;
        c.endpoints.push(ep.clone());

        // Kernel objects, then the commit; undone on any failure.
        if let Netns::Owned { path } = &c.netns {
            netns::create(path)?;
        }
        let made = async {
            self.make_container_ns(&c)?;
            self.attach(&c, &ep).await?;
            self.publish(&c)?;
            if req.detach {
                let path = self.netns_path(&c);
                let log = self.cfg.log_dir().join(format!("{id}.log"));
                let ns = self.ns_paths(&c);
                let mut child = process::spawn(&id, &path, ns.as_ref(), &req.command, &log)?;
                let pid = child
                    .id()
                    .ok_or_else(|| invalid!("the command exited at once"))?;
                c.process = Some(Process {
                    pid,
                    start_time: process::start_time(pid).unwrap_or(0),
                    command: req.command.clone(),
                    exit_code: None,
                    log,
                });
                let exits = exits.clone();
                tokio::spawn(async move {
                    let code = match child.wait().await {
                        Ok(s) => s.code().unwrap_or_else(|| {
                            use std::os::unix::process::ExitStatusExt as _;
                            128 + s.signal().unwrap_or(0)
                        }),
                        Err(_) => -1,
                    };
                    exits.lock().expect("exits lock").insert(pid, code);
                });
            }
            crash::point("container-create:made");
            let mut st = self.state.clone();
            st.containers.insert(id.clone(), c.clone());
            self.commit(st)
        }
        .await;
        if let Err(e) = made {
            self.teardown_container(&c, false).await;
            return Err(e);
        }
        tracing::info!(container = %c.name, id = %&id[..12], network = %net.name, ip = ?ep.ip, "container created");
        Ok(id)
    }

    /// Removes a container's kernel objects and processes (not its record);
    /// with `background`, its links go in the background (`Inner::remove`).
    pub(super) async fn teardown_container(&mut self, c: &Container, background: bool) {
        if let Some(p) = &c.process {
            process::kill(p);
        }
        self.unpublish(c);
        for ep in c.endpoints.iter().rev() {
            self.unmake(c, ep, background).await;
        }
        // After the endpoints: no flow of the container can start after this.
        let addrs: Vec<Ipv4Addr> = c.endpoints.iter().filter_map(|e| e.ip).collect();
        self.forget_flows(&addrs);
        if let Netns::Owned { path } = &c.netns {
            process::kill_all_in(path);
            if c.process.is_some() {
                process::remove_cgroup(&c.id).await;
            }
            if let Err(e) = netns::remove(path) {
                tracing::warn!(container = %c.name, "removing its namespace: {e}");
            }
            self.remove_container_ns(c);
        }
    }

    pub(super) async fn remove_container(&mut self, id: &str) -> Result<()> {
        let c = self.state.containers[id].clone();
        let mut st = self.state.clone();
        st.containers.remove(id);
        self.commit(st)?;
        crash::point("container-remove:committed");
        self.teardown_container(&c, true).await;
        tracing::info!(container = %c.name, "container removed");
        Ok(())
    }

    /// A container record for a namespace made by someone else.
    pub(super) fn external_container(&self, path: &str, name: Option<&str>) -> Result<Container> {
        let path = PathBuf::from(path);
        if !netns::is_netns(&path) {
            return Err(invalid!("{} is not a network namespace", path.display()));
        }
        let (dev, ino) = netns::identity(&path)?;
        // A container end there would be an interface of the host itself
        // (its routes replaced, its traffic taken for a container's).
        for (own, what) in [
            (netns::own_path(), "the daemon's own"),
            (PathBuf::from("/proc/1/ns/net"), "the host's (PID 1's)"),
        ] {
            if netns::identity(&own).ok() == Some((dev, ino)) {
                return Err(invalid!(
                    "{} is {what} network namespace: only a container's can be attached",
                    path.display()
                ));
            }
        }
        if let Some(c) = self.state.containers.values().find(|c| match &c.netns {
            Netns::External { dev: d, ino: i, .. } => (*d, *i) == (dev, ino),
            Netns::Owned { path: p } => netns::identity(p).ok() == Some((dev, ino)),
            Netns::Host => netns::identity(&netns::own_path()).ok() == Some((dev, ino)),
            Netns::Runtime => false,
        }) {
            return Ok(c.clone());
        }
        self.foreign_record(name, "ns", Netns::External { path, dev, ino })
    }

    /// A new record for a container another runtime made (named `name`,
    /// else `PREFIX-<id8>`), not yet in the state.
    pub(super) fn foreign_record(
        &self,
        name: Option<&str>,
        prefix: &str,
        netns: Netns,
    ) -> Result<Container> {
        let id = new_id();
        let name = name
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{prefix}-{}", &id[..8]));
        match name.split_once('/') {
            // A pod's `NAMESPACE/NAME`, as CNI_ARGS' K8S_POD_NAMESPACE and
            // K8S_POD_NAME give it.
            Some((ns, pod)) => {
                spec::validate_name("pod namespace", ns)?;
                spec::validate_name("pod", pod)?;
            }
            None => spec::validate_name("container", &name)?,
        }
        if self.state.containers.values().any(|c| c.name == name) {
            return Err(conflict!("container name {name:?} is already in use"));
        }
        Ok(Container {
            id,
            name,
            created: now(),
            netns,
            endpoints: Vec::new(),
            ports: Vec::new(),
            process: None,
            owner: None,
            runtime: None,
            dns: Vec::new(),
            hostname: None,
        })
    }
}
