//! Several hosts on one machine: network namespaces the test creates, for
//! partition tests. Needs root (`ip netns`, `iptables` in each namespace).
//!
//! ```ignore
//! let net = Net::new(3);                 // a hub and hosts 1..=3
//! let cluster = Cluster::new(v).in_netns(net.hub(), net.hub_addr());
//! let mut r = Running::start(net.host(1).command(pgboot::bin()));
//! net.host(1).cut();                     // packets dropped both ways, no RST
//! net.host(1).heal();
//! ```
//!
//! Layout: a hub namespace holding a bridge with `10.231.N.1/24`, and one
//! namespace per host with `10.231.N.(1+i)/24` on a veth pair whose other end
//! is on the bridge. The namespaces are new and empty, so those addresses
//! exist only inside them: no packet of a test ever leaves them, nor reaches
//! the machine's own network. Names carry the test process's pid and a
//! sequence number; `Drop` deletes every namespace (their links go with them).

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::process;

/// How long one `ip`/`iptables` call may take.
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `program args…` (bounded) and panics with its output if it fails.
fn run(program: &str, args: &[&str]) {
    let out = process::run(Command::new(program).args(args), None, IP_TIMEOUT)
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        out.describe()
    );
}

/// `iptables`, installed once (Debian's package) if missing.
fn iptables() -> &'static str {
    static BIN: OnceLock<&'static str> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = "/usr/sbin/iptables";
        if !std::path::Path::new(bin).is_file() {
            run(
                "apt-get",
                &["install", "-y", "--no-install-recommends", "iptables"],
            );
        }
        bin
    })
}

/// One host: a network namespace with one address on the test's /24.
pub struct Host {
    ns: String,
    addr: String,
}

impl Host {
    /// The namespace's name.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Its address on the test's /24.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `ip netns exec NS program`: a command that runs on this host.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Cuts the host off: every packet in or out is dropped (no RST, no
    /// ICMP), as a failed switch or a partitioned zone does.
    pub fn cut(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns,
                    iptables(),
                    "-A",
                    chain,
                    "-j",
                    "DROP",
                ],
            );
        }
    }

    /// Undoes [`Host::cut`].
    pub fn heal(&self) {
        run("ip", &["netns", "exec", &self.ns, iptables(), "-F"]);
    }
}

/// A hub and its hosts; every namespace deleted on drop.
pub struct Net {
    hub: Host,
    hosts: Vec<Host>,
}

impl Net {
    /// A hub namespace (the bridge, `.1`) and `hosts` host namespaces
    /// (`.2`, `.3`, …), all up and reachable from one another.
    pub fn new(hosts: usize) -> Net {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        assert!(hosts < 250, "one /24");
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("pgbt{}x{seq}", std::process::id());
        let prefix = format!("10.231.{}", seq % 250);
        let hub = Host {
            ns: format!("{tag}-hub"),
            addr: format!("{prefix}.1"),
        };
        // Built as it goes, so a failure half-way still deletes what exists.
        let mut net = Net {
            hub,
            hosts: Vec::new(),
        };
        let hub_ns = net.hub.ns.clone();
        run("ip", &["netns", "add", &hub_ns]);
        let in_hub = |args: &[&str]| {
            let mut all = vec!["netns", "exec", hub_ns.as_str(), "ip"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        in_hub(&["link", "set", "lo", "up"]);
        in_hub(&["link", "add", "br0", "type", "bridge"]);
        in_hub(&["addr", "add", &format!("{}/24", net.hub.addr), "dev", "br0"]);
        in_hub(&["link", "set", "br0", "up"]);
        for i in 1..=hosts {
            let host = Host {
                ns: format!("{tag}-h{i}"),
                addr: format!("{prefix}.{}", i + 1),
            };
            run("ip", &["netns", "add", &host.ns]);
            net.hosts.push(host);
            let host = &net.hosts[i - 1];
            let port = format!("h{i}");
            run(
                "ip",
                &[
                    "link", "add", &port, "netns", &hub_ns, "type", "veth", "peer", "name", "eth0",
                    "netns", &host.ns,
                ],
            );
            in_hub(&["link", "set", &port, "master", "br0", "up"]);
            let in_host = |args: &[&str]| {
                let mut all = vec!["netns", "exec", host.ns.as_str(), "ip"];
                all.extend_from_slice(args);
                run("ip", &all);
            };
            in_host(&["link", "set", "lo", "up"]);
            in_host(&["addr", "add", &format!("{}/24", host.addr), "dev", "eth0"]);
            in_host(&["link", "set", "eth0", "up"]);
        }
        net
    }

    /// The hub: where the database runs.
    pub fn hub(&self) -> &Host {
        &self.hub
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.hub]).map(|h| &h.ns) {
            let _ = process::run(
                Command::new("ip").args(["netns", "del", ns]),
                None,
                IP_TIMEOUT,
            );
        }
    }
}
