//! Issue 2: CNI ADD and DEL latency of `podnet-cni` against Debian's reference
//! plugins (`containernetworking-plugins`: loopback + bridge + host-local),
//! both executed as a container runtime executes them (exec, env, config on
//! stdin, inside the node's network namespace), interleaved in the same run.
//!
//! `cargo bench -p podnet-cni --bench add_del` (as root).
//!
//! Environment:
//! - `PODNET_BENCH_PODS` measured pods per implementation (default 60; `5` is a
//!   smoke run of a few seconds),
//! - `PODNET_BENCH_WARMUP` pods per implementation added first and not counted
//!   (default 3),
//! - `PODNET_BENCH_ENFORCE=1` exits with status 1 when the target is missed,
//! - `PODNET_BENCH_REF_DIR` where the reference plugins are (default `/usr/lib/cni`).
//!
//! podnet-cni's DEL returns before the kernel has deleted the veth pair (a
//! detached process deletes it, see `plugin::deferred`). The bench waits,
//! untimed, until the pair is gone before the next operation, so that kernel
//! work never lands in another measured operation of either implementation,
//! and reports how long after DEL it was gone.
//!
//! Everything happens in namespaces the bench creates (one node namespace per
//! implementation, each with its own `cni0` bridge and the same subnet, and one
//! namespace per pod); guards remove them all, also when the bench panics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podnet_kernel::netns::OwnedNetNs;
use podnet_kernel::{NetNs, Netlink};
use serde_json::{Value, json};

const PODNET: &str = env!("CARGO_BIN_EXE_podnet-cni");
const CNI_VERSION: &str = "1.0.0";
const SUBNET: &str = "10.88.0.0/24";
/// Usable pod addresses in a /24 once the gateway is taken.
const SUBNET_PODS: usize = 253;
/// podnet-cni and podnet / reference median: at most this.
const TARGET_RATIO: f64 = 0.2;

/// A network namespace `pnbench-PID-TAG`, deleted when the guard drops.
fn bench_ns(tag: &str) -> OwnedNetNs {
    let name = format!("pnbench-{}-{tag}", std::process::id());
    OwnedNetNs::create(&name).unwrap_or_else(|e| panic!("create network namespace {name}: {e}"))
}

/// CPU time (user + system) of all waited-for children so far: the delta
/// around one plugin execution is that execution's CPU cost, including its
/// own children (host-local under bridge).
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let ru = unsafe {
        let mut ru = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Wall and CPU time of one execution or chain.
#[derive(Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
        }
    }
}

/// The CNI variables of one execution.
struct Call<'a> {
    command: &'a str,
    container: &'a str,
    netns: &'a Path,
    ifname: &'a str,
}

fn exec(node: &NetNs, plugin: &Path, cni_path: &str, call: Call, conf: &Value) -> (Cost, Value) {
    let Call {
        command,
        container,
        netns,
        ifname,
    } = call;
    // One plugin execution as a runtime does it: env cleared but for the CNI
    // variables and PATH, the config on stdin, in the node namespace.
    let mut cmd = Command::new(plugin);
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    node.enter_on_exec(&mut cmd)
        .expect("enter the node namespace on exec");
    let stdin = conf.to_string();
    let cpu0 = children_cpu();
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("exec {}: {e}", plugin.display()));
    {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(stdin.as_bytes()).expect("write config");
    }
    let out = child.wait_with_output().expect("wait for plugin");
    let took = Cost {
        wall: start.elapsed(),
        cpu: children_cpu().saturating_sub(cpu0),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        panic!(
            "{} {command} {container}/{ifname} failed ({}): stdout {stdout} stderr {}",
            plugin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let result = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "{} {command}: stdout is not JSON ({e}): {stdout}",
                plugin.display()
            )
        })
    };
    (took, result)
}

/// Bridge options shared by both implementations.
fn bridge_options() -> Value {
    json!({
        "bridge": "cni0",
        "isGateway": true,
        "isDefaultGateway": true,
        "ipMasq": false,
        "hairpinMode": false,
        "promiscMode": false,
    })
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Value::Object(b), Value::Object(e)) = (&mut base, extra) {
        b.extend(e);
    }
    base
}

trait Chain {
    fn label(&self) -> &'static str;
    /// ADD for one pod; the time of the whole chain and the final result.
    fn add(&self, pod: &OwnedNetNs, id: &str) -> (Cost, Value);
    /// DEL for one pod, given the ADD result (runtimes pass it as prevResult).
    fn del(&self, pod: &OwnedNetNs, id: &str, added: &Value) -> Cost;
}

/// `podnet-cni`: one exec, it brings up `lo` itself.
struct Podnet {
    node: OwnedNetNs,
    conf: Value,
    /// Per measured DEL: how long after DEL returned its detached process
    /// finished deleting the veth pair.
    settled: std::cell::RefCell<Vec<Duration>>,
}

impl Podnet {
    fn new(data: &Path) -> Podnet {
        let conf = with(
            json!({
                "cniVersion": CNI_VERSION,
                "name": "podnet-bench",
                "type": "podnet-cni",
                "ipam": {"type": "podnet-cni", "subnet": SUBNET, "dataDir": data},
            }),
            bridge_options(),
        );
        Podnet {
            node: bench_ns("node-podnet"),
            conf,
            settled: Default::default(),
        }
    }

    /// Index of the host end of an attachment (from the ADD result's name).
    fn host_end(&self, added: &Value) -> u32 {
        let name = added["interfaces"][1]["name"]
            .as_str()
            .expect("host veth name");
        let mut nl = Netlink::open_in(&self.node).expect("netlink in the node");
        nl.require_link(name).expect("host veth").index
    }

    /// Waits, untimed, until link `index` is gone: DEL leaves its deletion
    /// to a detached process, and that kernel work must not land in the next
    /// measured operation (of either implementation). Returns how long it
    /// took after DEL returned.
    fn settle(&self, index: u32) -> Duration {
        let start = Instant::now();
        let mut nl = Netlink::open_in(&self.node).expect("netlink in the node");
        while start.elapsed() < Duration::from_secs(5) {
            if nl.link_by_index(index).expect("look up link").is_none() {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        panic!("podnet-cni DEL: link #{index} still there 5 s after DEL returned");
    }
}

impl Chain for Podnet {
    fn label(&self) -> &'static str {
        "podnet-cni"
    }

    fn add(&self, pod: &OwnedNetNs, id: &str) -> (Cost, Value) {
        let (t, r) = exec(
            &self.node,
            Path::new(PODNET),
            "/nonexistent",
            Call {
                command: "ADD",
                container: id,
                netns: &pod.path(),
                ifname: "eth0",
            },
            &self.conf,
        );
        check_ip(self.label(), &r);
        (t, r)
    }

    fn del(&self, pod: &OwnedNetNs, id: &str, added: &Value) -> Cost {
        let conf = with(self.conf.clone(), json!({"prevResult": added}));
        let host_end = self.host_end(added);
        let cost = exec(
            &self.node,
            Path::new(PODNET),
            "/nonexistent",
            Call {
                command: "DEL",
                container: id,
                netns: &pod.path(),
                ifname: "eth0",
            },
            &conf,
        )
        .0;
        self.settled.borrow_mut().push(self.settle(host_end));
        cost
    }
}

/// The reference conflist `[loopback, bridge(host-local)]`, run as libcni
/// runs a list: ADD in order with each plugin's result as the next one's
/// `prevResult`; DEL in reverse order with the cached ADD result as
/// `prevResult`. Each plugin config gets the list's name and cniVersion.
struct Reference {
    node: OwnedNetNs,
    dir: PathBuf,
    loopback: Value,
    bridge: Value,
    /// Loopback's share of the measured chain wall times (ADD, DEL).
    loopback_add: std::cell::RefCell<Vec<Duration>>,
    loopback_del: std::cell::RefCell<Vec<Duration>>,
}

impl Reference {
    fn new(dir: PathBuf, data: &Path) -> Reference {
        let list = json!({"cniVersion": CNI_VERSION, "name": "ref-bench"});
        let loopback = with(list.clone(), json!({"type": "loopback"}));
        let bridge = with(
            with(list, json!({"type": "bridge"})),
            with(
                bridge_options(),
                json!({"ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": SUBNET}]],
                    "dataDir": data,
                }}),
            ),
        );
        Reference {
            node: bench_ns("node-ref"),
            dir,
            loopback,
            bridge,
            loopback_add: Default::default(),
            loopback_del: Default::default(),
        }
    }

    fn run(
        &self,
        plugin: &str,
        cmd: &str,
        pod: &OwnedNetNs,
        id: &str,
        ifname: &str,
        conf: &Value,
    ) -> (Cost, Value) {
        exec(
            &self.node,
            &self.dir.join(plugin),
            &self.dir.display().to_string(),
            Call {
                command: cmd,
                container: id,
                netns: &pod.path(),
                ifname,
            },
            conf,
        )
    }
}

impl Chain for Reference {
    fn label(&self) -> &'static str {
        "reference"
    }

    fn add(&self, pod: &OwnedNetNs, id: &str) -> (Cost, Value) {
        let start = Instant::now();
        let (lo_t, lo) = self.run("loopback", "ADD", pod, id, "lo", &self.loopback);
        let conf = if lo.is_null() {
            self.bridge.clone()
        } else {
            with(self.bridge.clone(), json!({"prevResult": lo}))
        };
        let (br_t, r) = self.run("bridge", "ADD", pod, id, "eth0", &conf);
        let took = Cost {
            wall: start.elapsed(),
            cpu: (lo_t + br_t).cpu,
        };
        self.loopback_add.borrow_mut().push(lo_t.wall);
        check_ip(self.label(), &r);
        (took, r)
    }

    fn del(&self, pod: &OwnedNetNs, id: &str, added: &Value) -> Cost {
        let prev = json!({"prevResult": added});
        let start = Instant::now();
        let bridge = with(self.bridge.clone(), prev.clone());
        let (br_t, _) = self.run("bridge", "DEL", pod, id, "eth0", &bridge);
        let lo = with(self.loopback.clone(), prev);
        let (lo_t, _) = self.run("loopback", "DEL", pod, id, "lo", &lo);
        let took = Cost {
            wall: start.elapsed(),
            cpu: (lo_t + br_t).cpu,
        };
        self.loopback_del.borrow_mut().push(lo_t.wall);
        took
    }
}

fn check_ip(who: &str, result: &Value) {
    let ok = result["ips"][0]["address"]
        .as_str()
        .is_some_and(|a| a.starts_with("10.88.0."));
    assert!(ok, "{who}: ADD result without a pod address: {result}");
}

struct Stats {
    median: f64,
    p90: f64,
    mean: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn stats(samples: &[Duration]) -> Stats {
    let mut v: Vec<f64> = samples.iter().copied().map(ms).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    // Nearest rank.
    let p90 = v[((0.9 * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = v.iter().sum::<f64>() / n as f64;
    Stats { median, p90, mean }
}

fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("{key}={v:?} is not a number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not and
    // should not take minutes of root-only work: run nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("add_del: measures only under `cargo bench -p podnet-cni --bench add_del`");
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("add_del: run as root (it creates network namespaces, bridges and veths)");
        std::process::exit(1);
    }
    let ref_dir =
        PathBuf::from(std::env::var("PODNET_BENCH_REF_DIR").unwrap_or("/usr/lib/cni".into()));
    let missing: Vec<_> = ["loopback", "bridge", "host-local"]
        .into_iter()
        .filter(|p| !ref_dir.join(p).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "add_del: reference plugin(s) {} missing from {}: install the Debian package \
             containernetworking-plugins (apt-get install containernetworking-plugins) \
             or set PODNET_BENCH_REF_DIR",
            missing.join(", "),
            ref_dir.display()
        );
        std::process::exit(1);
    }
    let pods = env_usize("PODNET_BENCH_PODS", 60);
    let warmup = env_usize("PODNET_BENCH_WARMUP", 3);
    if pods == 0 || pods + warmup > SUBNET_PODS {
        eprintln!(
            "add_del: PODNET_BENCH_PODS + PODNET_BENCH_WARMUP must be between 1 and {SUBNET_PODS} \
             (one {SUBNET} per implementation)"
        );
        std::process::exit(2);
    }

    let data = tempfile::tempdir().expect("tempdir");
    let podnet = Podnet::new(&data.path().join("podnet"));
    let reference = Reference::new(ref_dir, &data.path().join("host-local"));
    let chains: [&dyn Chain; 2] = [&podnet, &reference];

    println!(
        "add_del: {pods} pods per implementation (+{warmup} warm-up), cniVersion {CNI_VERSION}, \
         subnet {SUBNET}, interleaved per pod"
    );
    println!("  podnet-cni: {PODNET}");
    println!(
        "  reference:  {}/{{loopback,bridge,host-local}}",
        reference.dir.display()
    );

    // One pod namespace per implementation and pod.
    let total = warmup + pods;
    let pod_ns: Vec<[OwnedNetNs; 2]> = (0..total)
        .map(|i| [bench_ns(&format!("p{i}")), bench_ns(&format!("r{i}"))])
        .collect();
    let id = |i: usize, c: usize| format!("bench-{}-{i}-{}", std::process::id(), ["p", "r"][c]);

    // Interleaved per pod, alternating who goes first.
    let order = |i: usize| if i.is_multiple_of(2) { [0, 1] } else { [1, 0] };
    let mut adds: [Vec<Cost>; 2] = Default::default();
    let mut dels: [Vec<Cost>; 2] = Default::default();
    let mut results: Vec<[Value; 2]> = vec![[Value::Null, Value::Null]; total];
    let started = Instant::now();
    for (i, pods) in pod_ns.iter().enumerate() {
        for c in order(i) {
            let (t, r) = chains[c].add(&pods[c], &id(i, c));
            results[i][c] = r;
            if i >= warmup {
                adds[c].push(t);
            }
        }
    }
    for (i, pods) in pod_ns.iter().enumerate() {
        for c in order(i) {
            let t = chains[c].del(&pods[c], &id(i, c), &results[i][c]);
            if i >= warmup {
                dels[c].push(t);
            }
        }
    }
    let elapsed = started.elapsed();
    // The loopback share only for the measured pods.
    let lo_add = reference.loopback_add.borrow()[warmup..].to_vec();
    let lo_del = reference.loopback_del.borrow()[warmup..].to_vec();
    let settled = podnet.settled.borrow()[warmup..].to_vec();

    println!();
    println!(
        "| op  | implementation | median ms | p90 ms | mean ms | CPU median ms | podnet/ref (median) | target <= {TARGET_RATIO} |"
    );
    println!(
        "|-----|----------------|----------:|-------:|--------:|--------------:|--------------------:|---------------|"
    );
    let mut all_pass = true;
    for (op, samples) in [("ADD", &adds), ("DEL", &dels)] {
        let wall = |c: usize| stats(&samples[c].iter().map(|x| x.wall).collect::<Vec<_>>());
        let cpu = |c: usize| stats(&samples[c].iter().map(|x| x.cpu).collect::<Vec<_>>());
        let s = [wall(0), wall(1)];
        let ratio = s[0].median / s[1].median;
        let pass = ratio <= TARGET_RATIO;
        all_pass &= pass;
        for (c, st) in s.iter().enumerate() {
            let (r, p) = if c == 0 {
                (format!("{ratio:.3}"), if pass { "PASS" } else { "FAIL" })
            } else {
                (String::new(), "")
            };
            println!(
                "| {op} | {:<14} | {:>9.2} | {:>6.2} | {:>7.2} | {:>13.2} | {r:>19} | {p:<13} |",
                chains[c].label(),
                st.median,
                st.p90,
                st.mean,
                cpu(c).median,
            );
        }
    }
    println!();
    let (la, ld) = (stats(&lo_add), stats(&lo_del));
    println!(
        "reference loopback share: ADD median {:.2} ms, DEL median {:.2} ms (the rest is bridge + host-local)",
        la.median, ld.median
    );
    let st = stats(&settled);
    println!(
        "podnet-cni DEL returns before the kernel has deleted the veth pair (a detached process \
         does it); it was gone {:.2} ms (median, p90 {:.2}) after DEL returned, waited for \
         untimed before the next operation",
        st.median, st.p90
    );
    println!(
        "{} ADDs and {} DELs in {:.1} s; result: {}",
        2 * total,
        2 * total,
        elapsed.as_secs_f64(),
        if all_pass {
            "PASS"
        } else {
            "FAIL (podnet-cni median above 1/5 of the reference)"
        }
    );

    // Guards (pods, then the node namespaces and data dir) clean up here.
    drop(pod_ns);
    drop(podnet);
    drop(reference);
    drop(data);
    if !all_pass && std::env::var("PODNET_BENCH_ENFORCE").is_ok_and(|v| v == "1") {
        std::process::exit(1);
    }
}
