//! The live mode (`podnet trace --live`): a real probe packet sent from the source pod and
//! followed by the kernel itself. Every namespace it may cross (the source pod, the nodes,
//! the destination pods) gets a trace table of its own that marks the probe (`meta nftrace
//! set 1`, matched by its source port), and a subscription to its trace events; the probe
//! is a TCP SYN or a UDP datagram. The events, per namespace and per hook, become the hops:
//! the chains and rules the packet went through (in nft syntax, read back from the kernel),
//! its devices, and where it died with the verdict (a NetworkPolicy drop names the policy).
//! Bounded: at most a few probes, collection ends when the probe was delivered, answered or
//! dropped (and a moment to drain the events), or after the timeout. The trace tables are
//! removed however it ends.

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use podnet_kernel::nftnl::{Hook, NftSocket};
use podnet_kernel::nftrace::{
    ARRIVE_CHAIN, LEAVE_CHAIN, PROBE_CHAIN, ProbeAnswer, ProbeMatch, ProbeSocket, TABLE_PREFIX,
    TraceEvent, TraceKind, TraceTable, TraceVerdict, TracedPacket, Tracer,
};
use podnet_kernel::ruleset::Table;
use podnet_kernel::{KernelError, Link, NetNs};
use serde::Serialize;

/// podnet's NetworkPolicy table: a drop there is a policy's, named in the rule's comment.
const POLICY_TABLE: &str = "podnet-policy";
/// How long events may still come after the probe's fate is known.
const GRACE: Duration = Duration::from_millis(150);
/// A UDP probe is sent again after this long without news, at most [`MAX_SENDS`] times.
const RESEND_AFTER: Duration = Duration::from_millis(600);
const MAX_SENDS: u32 = 3;

/// What a namespace is to the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The pod the probe is sent from.
    Source,
    /// The source pod's node: the first node the probe crosses.
    SourceNode,
    Node,
    /// A pod it may be delivered to.
    Pod,
}

/// A namespace to watch: its name in the hops (a node's name, `pod NS/NAME`), its links
/// (to name the devices the kernel reports by index).
pub struct Place {
    pub label: String,
    pub ns: NetNs,
    pub role: Role,
    pub links: Vec<Link>,
}

/// The probe: from the source pod's address to `daddr:dport` over TCP (6) or UDP (17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub dport: u16,
    pub proto: u8,
}

/// One rule (or chain policy) the packet went through, in nft syntax.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TracedRule {
    pub table: String,
    pub chain: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handle: Option<u64>,
    pub rule: String,
    pub verdict: String,
}

/// One hop: a hook the packet passed in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveHop {
    pub at: String,
    pub hook: String,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub iif: Option<String>,
    #[serde(rename = "out", skip_serializing_if = "Option::is_none")]
    pub oif: Option<String>,
    pub what: String,
    /// The rules that decided (and the jumps to them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<TracedRule>,
    /// How many rules the packet matched here, shown or not.
    pub matched: usize,
    /// `accept` or `drop`.
    pub verdict: String,
    /// The NetworkPolicy whose chain dropped it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// How the probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveVerdict {
    /// It reached the destination's stack (and, for TCP, was answered).
    Delivered,
    /// It reached the destination, which refused it (a TCP reset: nothing listens).
    NotListening,
    /// A rule or a chain policy dropped it (the last hop).
    Dropped,
    /// It vanished after the last hop without a verdict the kernel traced.
    Lost,
}

/// The whole live trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveTrace {
    pub probe: String,
    /// Probe packets seen leaving the source (TCP retransmits its SYN after a second).
    pub sent: u32,
    pub hops: Vec<LiveHop>,
    pub verdict: LiveVerdict,
    /// What the probe's socket got back.
    pub answer: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("{what}: {source}")]
    Kernel {
        what: String,
        #[source]
        source: KernelError,
    },
    #[error("a live trace starts in a pod of this machine (none given)")]
    NoSource,
    #[error("a live probe is TCP or UDP (protocol {0} given)")]
    Protocol(u8),
}

fn kernel(what: String) -> impl FnOnce(KernelError) -> LiveError {
    move |source| LiveError::Kernel { what, source }
}

/// An event as collected: where, and in which order it was received.
struct Seen {
    place: usize,
    seq: u64,
    event: TraceEvent,
}

/// Sends the probe from the `Source` place and follows it through `places`, for at most
/// `timeout`.
pub fn live(places: &[Place], probe: Probe, timeout: Duration) -> Result<LiveTrace, LiveError> {
    if !matches!(probe.proto, 6 | 17) {
        return Err(LiveError::Protocol(probe.proto));
    }
    let source = places
        .iter()
        .position(|p| p.role == Role::Source)
        .ok_or(LiveError::NoSource)?;
    let sport = marker_port();
    let mut tracers = Vec::new();
    for p in places {
        let t = Tracer::subscribe(Some(&p.ns), Duration::from_millis(50))
            .map_err(kernel(format!("watching {}", p.label)))?;
        tracers.push(t);
    }
    let marked = ProbeMatch {
        saddr: probe.saddr,
        proto: probe.proto,
        sport,
    };
    // The guards delete the tables when this function returns, whatever the outcome.
    let mut guards = Vec::new();
    for p in places {
        let hook = if p.role == Role::Source {
            Hook::Output
        } else {
            Hook::Prerouting
        };
        let g = TraceTable::install(Some(&p.ns), hook, &marked)
            .map_err(kernel(format!("marking the probe in {}", p.label)))?;
        guards.push(g);
    }
    let (seen, answer) = collect(places, source, tracers, probe, sport, timeout)?;
    let answer = Answer {
        got: answer.0,
        early: answer.1,
        timeout,
    };
    drop(guards);
    let book = RuleBook::read(places, &seen);
    Ok(build(places, source, &seen, &book, probe, sport, answer))
}

/// A source port outside the kernel's ephemeral range (32768–60999 by default), so no
/// other connection of the pod has it, varied per run.
fn marker_port() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    61000 + ((nanos ^ std::process::id()) % 1000) as u16
}

/// Receives every place's events on a thread each while the probe is sent and watched.
fn collect(
    places: &[Place],
    source: usize,
    tracers: Vec<Tracer>,
    probe: Probe,
    sport: u16,
    timeout: Duration,
) -> Result<(Vec<Seen>, (ProbeAnswer, bool)), LiveError> {
    let stop = AtomicBool::new(false);
    let seen = Mutex::new(Vec::new());
    let seq = AtomicU64::new(0);
    let answer = std::thread::scope(|s| {
        for (place, mut tracer) in tracers.into_iter().enumerate() {
            let (stop, seen, seq) = (&stop, &seen, &seq);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(events) = tracer.receive() else { break };
                    let mut all = seen.lock().unwrap_or_else(|e| e.into_inner());
                    for event in events {
                        let seq = seq.fetch_add(1, Ordering::Relaxed);
                        all.push(Seen { place, seq, event });
                    }
                }
            });
        }
        let answer = drive(places, source, probe, sport, timeout, &seen);
        stop.store(true, Ordering::Relaxed);
        answer
    })?;
    Ok((seen.into_inner().unwrap_or_else(|e| e.into_inner()), answer))
}

/// Sends the probe and waits until its fate is known (then a moment more for the last
/// events) or the time is up.
fn drive(
    places: &[Place],
    source: usize,
    probe: Probe,
    sport: u16,
    timeout: Duration,
    seen: &Mutex<Vec<Seen>>,
) -> Result<(ProbeAnswer, bool), LiveError> {
    let from = SocketAddrV4::new(probe.saddr, sport);
    let to = SocketAddrV4::new(probe.daddr, probe.dport);
    let socket = ProbeSocket::send(&places[source].ns, probe.proto, from, to).map_err(kernel(
        format!("sending the probe in {}", places[source].label),
    ))?;
    let start = Instant::now();
    let mut answer = ProbeAnswer::Pending;
    let mut sends = 1;
    let mut ended: Option<Instant> = None;
    while start.elapsed() < timeout && ended.is_none_or(|t| t.elapsed() < GRACE) {
        std::thread::sleep(Duration::from_millis(10));
        if answer == ProbeAnswer::Pending {
            answer = socket.answer();
        }
        let done = answer != ProbeAnswer::Pending
            || finished(source, &seen.lock().unwrap_or_else(|e| e.into_inner()));
        if done && ended.is_none() {
            ended = Some(Instant::now());
        }
        if ended.is_none() && sends < MAX_SENDS && start.elapsed() >= RESEND_AFTER * sends {
            socket.resend();
            sends += 1;
        }
    }
    Ok((answer, start.elapsed() < timeout))
}

fn own(table: &str) -> bool {
    table.starts_with(TABLE_PREFIX)
}

fn drops(e: &TraceEvent) -> bool {
    match e.kind {
        TraceKind::Rule => e.verdict == Some(TraceVerdict::Drop),
        TraceKind::Policy => e.policy == Some(TraceVerdict::Drop),
        TraceKind::Return => false,
    }
}

fn arrives(e: &TraceEvent) -> bool {
    own(&e.table) && e.chain == ARRIVE_CHAIN && e.kind == TraceKind::Policy
}

/// Whether the probe's fate is known from the events: dropped somewhere, or arrived at
/// the local stack of a namespace other than the source.
fn finished(source: usize, seen: &[Seen]) -> bool {
    seen.iter()
        .any(|s| drops(&s.event) || (s.place != source && arrives(&s.event)))
}

/// The rules of the tables the events name, per place: their text and comment by handle,
/// and the hook of each base chain.
#[derive(Default)]
struct RuleBook {
    chains: HashMap<(usize, u8, String, String), ChainInfo>,
}

#[derive(Default)]
struct ChainInfo {
    hook: Option<Hook>,
    rules: HashMap<u64, (String, Option<String>)>,
}

impl RuleBook {
    /// Reads, in each place, the tables its events came from (a place that cannot be read
    /// leaves its rules as handles).
    fn read(places: &[Place], seen: &[Seen]) -> RuleBook {
        let mut book = RuleBook::default();
        for (i, p) in places.iter().enumerate() {
            let names: BTreeSet<&str> = seen
                .iter()
                .filter(|s| s.place == i && !own(&s.event.table))
                .map(|s| s.event.table.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            let Ok(listed) = NftSocket::open(Some(&p.ns))
                .and_then(|mut s| s.list_tables(None, |n| names.contains(n)))
            else {
                continue;
            };
            for t in &listed {
                book.add(i, t);
            }
        }
        book
    }

    fn add(&mut self, place: usize, listed: &podnet_kernel::nftnl::ListedTable) {
        let table = Table::from_listing(listed);
        for (lc, c) in listed.chains.iter().zip(&table.chains) {
            let rules = lc
                .rules
                .iter()
                .zip(&c.rules)
                .map(|(lr, r)| (lr.handle, (r.text(listed.family), lr.comment.clone())))
                .collect();
            let key = (
                place,
                listed.family as u8,
                listed.name.clone(),
                lc.name.clone(),
            );
            let hook = lc.base.map(|b| b.hook);
            self.chains.insert(key, ChainInfo { hook, rules });
        }
    }

    fn chain(&self, place: usize, e: &TraceEvent) -> Option<&ChainInfo> {
        self.chains
            .get(&(place, e.family, e.table.clone(), e.chain.clone()))
    }

    /// The hook of the base chain `e` is in; `None` for a regular chain (a jump target).
    fn hook(&self, place: usize, role: Role, e: &TraceEvent) -> Option<Hook> {
        if own(&e.table) {
            return match e.chain.as_str() {
                PROBE_CHAIN if role == Role::Source => Some(Hook::Output),
                PROBE_CHAIN => Some(Hook::Prerouting),
                LEAVE_CHAIN => Some(Hook::Postrouting),
                ARRIVE_CHAIN => Some(Hook::Input),
                _ => None,
            };
        }
        self.chain(place, e).and_then(|c| c.hook)
    }

    /// The rule's nft text and comment, when the table could be read.
    fn rule(&self, place: usize, e: &TraceEvent) -> Option<&(String, Option<String>)> {
        self.chain(place, e)?.rules.get(&e.rule_handle?)
    }
}

/// The events of one hook in one place, in the kernel's order.
struct Walk<'a> {
    hook: Option<Hook>,
    events: Vec<&'a TraceEvent>,
}

/// Whether `e` is the probe rule's own event: a probe packet entering the namespace.
fn probe_enters(e: &TraceEvent) -> bool {
    own(&e.table) && e.chain == PROBE_CHAIN && e.kind == TraceKind::Rule && e.rule_handle.is_some()
}

/// A place's events of the first probe packet it saw, split where a base chain of another
/// hook starts. The kernel's packet ids change between hooks (they hash the packet's
/// state), so the first packet ends where a second one enters (the probe rule matches
/// again: a retransmitted SYN, a resent datagram) or a hook it already passed comes again.
fn walks<'a>(place: usize, role: Role, seen: &'a [Seen], book: &RuleBook) -> Vec<Walk<'a>> {
    let mut mine: Vec<&Seen> = seen.iter().filter(|s| s.place == place).collect();
    mine.sort_by_key(|s| s.seq);
    let mut out: Vec<Walk> = Vec::new();
    let mut entered = false;
    for s in mine {
        if probe_enters(&s.event) {
            if entered {
                break;
            }
            entered = true;
        }
        let hook = book.hook(place, role, &s.event);
        let current = out.last().map(|w| w.hook);
        if current.is_some() && (hook.is_none() || Some(hook) == current) {
            if let Some(w) = out.last_mut() {
                w.events.push(&s.event);
            }
        } else if out.iter().any(|w| w.hook == hook) {
            break;
        } else {
            out.push(Walk {
                hook,
                events: vec![&s.event],
            });
        }
    }
    out
}

fn hook_name(h: Option<Hook>) -> &'static str {
    match h {
        Some(Hook::Prerouting) => "prerouting",
        Some(Hook::Input) => "input",
        Some(Hook::Forward) => "forward",
        Some(Hook::Output) => "output",
        Some(Hook::Postrouting) => "postrouting",
        None => "?",
    }
}

fn proto_name(p: u8) -> &'static str {
    match p {
        6 => "tcp",
        17 => "udp",
        1 => "icmp",
        _ => "ip",
    }
}

fn packet_text(p: &TracedPacket) -> String {
    let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{} {}{} → {}{}",
        proto_name(p.proto),
        p.saddr,
        port(p.sport),
        p.daddr,
        port(p.dport)
    )
}

/// Whether a traced event decided the packet's fate: a rule with a final verdict (an
/// accept, a drop, a NAT), a chain policy that drops.
fn decisive(e: &TraceEvent) -> bool {
    match e.kind {
        TraceKind::Rule => e.verdict.as_ref().is_some_and(TraceVerdict::is_final),
        TraceKind::Policy => e.policy == Some(TraceVerdict::Drop),
        TraceKind::Return => false,
    }
}

/// The rules of a walk that decided (podnet's and others', not the trace table's own),
/// with the jumps and gotos that led to them; and how many rules matched in all. A hook
/// passes many rules that match and change nothing (every proxy shard's `jump
/// services`): those are counted, not shown.
fn traced_rules(place: usize, walk: &Walk, book: &RuleBook) -> (Vec<TracedRule>, usize) {
    let matched: Vec<&TraceEvent> = walk
        .events
        .iter()
        .copied()
        .filter(|e| !own(&e.table))
        .filter(|e| e.kind == TraceKind::Policy || e.rule_handle.is_some())
        .collect();
    let rules = matched.iter().filter(|e| e.kind == TraceKind::Rule).count();
    // Backwards: a jump is shown when the chain it enters decided.
    // A chain is known by its table too: every proxy shard has a `services` chain.
    let mut wanted: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut shown = Vec::new();
    for e in matched.iter().rev() {
        let leads = match &e.verdict {
            Some(TraceVerdict::Jump(c) | TraceVerdict::Goto(c)) => {
                wanted.contains(&(e.table.as_str(), c.as_str()))
            }
            _ => false,
        };
        if decisive(e) || leads {
            wanted.insert((e.table.as_str(), e.chain.as_str()));
            shown.push(traced_rule(place, e, book));
        }
    }
    shown.reverse();
    (shown, rules)
}

fn traced_rule(place: usize, e: &TraceEvent, book: &RuleBook) -> TracedRule {
    let (rule, verdict) = match e.kind {
        TraceKind::Policy => {
            let p = e.policy.clone().unwrap_or(TraceVerdict::Accept);
            (format!("policy {p}"), p.to_string())
        }
        _ => (
            book.rule(place, e)
                .map(|(t, _)| t.clone())
                .unwrap_or_else(|| format!("handle {}", e.rule_handle.unwrap_or(0))),
            e.verdict
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "continue".into()),
        ),
    };
    TracedRule {
        table: e.table.clone(),
        chain: e.chain.clone(),
        handle: e.rule_handle,
        rule,
        verdict,
    }
}

/// Whether a rule rewrites addresses (the next hop shows the packet anew).
fn nat(rule: &str) -> bool {
    ["dnat", "snat", "masquerade", "redirect"]
        .iter()
        .any(|w| rule.split_whitespace().any(|t| t == *w))
}

/// The device an event names, by its index in the place's links.
fn device(place: &Place, index: Option<u32>) -> Option<String> {
    let i = index?;
    Some(
        place
            .links
            .iter()
            .find(|l| l.index == i)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("if{i}")),
    )
}

/// One walk as a hop; `shown` is the packet as last shown (a NAT shows it anew).
fn hop(
    index: usize,
    place: &Place,
    walk: &Walk,
    book: &RuleBook,
    shown: &mut Option<TracedPacket>,
) -> LiveHop {
    let iif = device(place, walk.events.iter().find_map(|e| e.iif));
    let oif = device(place, walk.events.iter().find_map(|e| e.oif));
    let (rules, matched) = traced_rules(index, walk, book);
    let dropper = walk.events.iter().find(|e| drops(e));
    let mut what = String::new();
    if let Some(p) = walk.events.iter().find_map(|e| e.packet)
        && shown.is_none_or(|s| s != p)
    {
        what.push_str(&packet_text(&p));
        what.push_str(", ");
        *shown = Some(p);
    }
    let mut policy = None;
    match dropper {
        Some(e) => {
            let text = book.rule(index, e);
            let verb = match text {
                Some((t, _)) if t.contains("reject") => "rejected",
                _ => "dropped",
            };
            what.push_str(&format!("{verb} by {} {}", e.table, e.chain));
            if e.table == POLICY_TABLE {
                policy = text.and_then(|(_, c)| c.clone());
            }
            if let Some(p) = &policy {
                what.push_str(&format!(" (NetworkPolicy {p})"));
            }
        }
        None if walk.events.iter().any(|e| arrives(e)) => {
            what.push_str(&format!("delivered to the local stack of {}", place.label))
        }
        None if walk.hook == Some(Hook::Output) => what.push_str("sent"),
        None if walk.hook == Some(Hook::Postrouting) => {
            what.push_str(&format!("leaves by {}", oif.as_deref().unwrap_or("?")))
        }
        None => match rules.iter().find(|r| nat(&r.rule)) {
            Some(r) => what.push_str(&format!("accepted, NAT by {} {}", r.table, r.chain)),
            None => what.push_str("accepted"),
        },
    }
    LiveHop {
        at: place.label.clone(),
        hook: hook_name(walk.hook).to_string(),
        iif,
        oif,
        what,
        rules,
        matched,
        verdict: if dropper.is_some() { "drop" } else { "accept" }.to_string(),
        policy,
    }
}

/// The places in the order the probe crosses them: the source pod, its node, the other
/// nodes in the order their events came, the pods it may be delivered to.
fn order(places: &[Place], seen: &[Seen]) -> Vec<usize> {
    let first = |i: usize| {
        seen.iter()
            .filter(|s| s.place == i)
            .map(|s| s.seq)
            .min()
            .unwrap_or(u64::MAX)
    };
    let mut idx: Vec<usize> = (0..places.len()).collect();
    idx.sort_by_key(|&i| (places[i].role, first(i)));
    idx
}

/// What the probe's socket got, and whether the trace ended before the timeout.
struct Answer {
    got: ProbeAnswer,
    early: bool,
    timeout: Duration,
}

fn build(
    places: &[Place],
    source: usize,
    seen: &[Seen],
    book: &RuleBook,
    probe: Probe,
    sport: u16,
    answer: Answer,
) -> LiveTrace {
    let mut hops = Vec::new();
    let mut shown = None;
    let mut arrived = false;
    'places: for i in order(places, seen) {
        for w in walks(i, places[i].role, seen, book) {
            let h = hop(i, &places[i], &w, book, &mut shown);
            arrived |= i != source && w.events.iter().any(|e| arrives(e));
            let dropped = h.verdict == "drop";
            hops.push(h);
            if dropped {
                break 'places;
            }
        }
    }
    let dropped = hops.last().is_some_and(|h| h.verdict == "drop");
    let verdict = match (dropped, answer.got) {
        (true, _) => LiveVerdict::Dropped,
        (false, ProbeAnswer::Refused) => LiveVerdict::NotListening,
        (false, ProbeAnswer::Answered) => LiveVerdict::Delivered,
        (false, _) if arrived => LiveVerdict::Delivered,
        _ => LiveVerdict::Lost,
    };
    let sent = seen
        .iter()
        .filter(|s| s.place == source && probe_enters(&s.event))
        .count();
    LiveTrace {
        probe: format!(
            "{} {}:{sport} → {}:{}{}",
            proto_name(probe.proto),
            probe.saddr,
            probe.daddr,
            probe.dport,
            if probe.proto == 6 { " (SYN)" } else { "" }
        ),
        sent: sent.max(1) as u32,
        hops,
        verdict,
        answer: answer_text(&answer, probe.proto),
    }
}

fn answer_text(a: &Answer, proto: u8) -> String {
    match (a.got, proto) {
        (ProbeAnswer::Answered, 6) => "answered: the TCP handshake completed".into(),
        (ProbeAnswer::Answered, _) => "answered: a UDP reply came".into(),
        (ProbeAnswer::Refused, 6) => "refused: a TCP reset came back".into(),
        (ProbeAnswer::Refused, _) => "refused: ICMP port unreachable came back".into(),
        (ProbeAnswer::Unreachable(e), _) => {
            format!("unreachable: {}", std::io::Error::from_raw_os_error(e))
        }
        (ProbeAnswer::Pending, _) if a.early => {
            "none before the kernel's trace told the probe's fate".into()
        }
        (ProbeAnswer::Pending, _) => format!("none within {:.1} s", a.timeout.as_secs_f64()),
    }
}

/// For people: the probe, a numbered hop list (one line per hop, the rules it went
/// through under it in nft syntax), the verdict and the answer.
pub fn text(t: &LiveTrace) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "probe {}, sent {}×, traced by the kernel\n",
        t.probe, t.sent
    );
    for (i, h) in t.hops.iter().enumerate() {
        let devs = match (&h.iif, &h.oif) {
            (Some(i), Some(o)) => format!(" {i} → {o}"),
            (Some(i), None) => format!(" in {i}"),
            (None, Some(o)) => format!(" out {o}"),
            (None, None) => String::new(),
        };
        let _ = writeln!(out, "{:>2}. [{}] {}{devs}: {}", i + 1, h.at, h.hook, h.what);
        for r in &h.rules {
            let _ = writeln!(
                out,
                "      {} {}: {} ({})",
                r.table, r.chain, r.rule, r.verdict
            );
        }
    }
    let verdict = match t.verdict {
        LiveVerdict::Delivered => "delivered".to_string(),
        LiveVerdict::NotListening => "delivered, but refused: nothing listens".to_string(),
        LiveVerdict::Dropped => match t.hops.last().and_then(|h| h.policy.as_ref()) {
            Some(p) => format!("dropped at hop {} by NetworkPolicy {p}", t.hops.len()),
            None => format!("dropped at hop {}", t.hops.len()),
        },
        LiveVerdict::Lost => "lost after the last hop (no traced verdict)".to_string(),
    };
    let _ = writeln!(out, "=> {verdict}; answer: {}", t.answer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use podnet_kernel::nftnl::Family;

    fn event(
        table: &str,
        chain: &str,
        kind: TraceKind,
        verdict: Option<TraceVerdict>,
    ) -> TraceEvent {
        TraceEvent {
            id: 1,
            family: Family::Inet as u8,
            kind,
            table: table.into(),
            chain: chain.into(),
            rule_handle: Some(3),
            verdict,
            policy: None,
            iif: Some(2),
            oif: None,
            mark: None,
            nfproto: Some(2),
            packet: None,
        }
    }

    #[test]
    fn a_policy_drop_ends_the_walk_and_names_the_policy() {
        let mut book = RuleBook::default();
        book.chains.insert(
            (0, 1, POLICY_TABLE.into(), "ingress-forward".into()),
            ChainInfo {
                hook: Some(Hook::Forward),
                rules: HashMap::new(),
            },
        );
        let mut rules = HashMap::new();
        rules.insert(
            3,
            (
                "counter log group 100 drop".to_string(),
                Some("default/deny".to_string()),
            ),
        );
        book.chains.insert(
            (0, 1, POLICY_TABLE.into(), "ingress-ab".into()),
            ChainInfo { hook: None, rules },
        );
        let seen: Vec<Seen> = [
            event(
                POLICY_TABLE,
                "ingress-forward",
                TraceKind::Rule,
                Some(TraceVerdict::Goto("ingress-ab".into())),
            ),
            event(
                POLICY_TABLE,
                "ingress-ab",
                TraceKind::Rule,
                Some(TraceVerdict::Drop),
            ),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, event)| Seen {
            place: 0,
            seq: i as u64,
            event,
        })
        .collect();
        let w = walks(0, Role::Node, &seen, &book);
        assert_eq!(w.len(), 1);
        let place = Place {
            label: "n2".into(),
            ns: NetNs::current().unwrap(),
            role: Role::Node,
            links: vec![],
        };
        let h = hop(0, &place, &w[0], &book, &mut None);
        assert_eq!(h.verdict, "drop");
        assert_eq!(h.policy.as_deref(), Some("default/deny"));
        assert_eq!(h.hook, "forward");
        assert!(
            h.what
                .contains("dropped by podnet-policy ingress-ab (NetworkPolicy default/deny)"),
            "{}",
            h.what
        );
        assert_eq!(h.rules[1].rule, "counter log group 100 drop");
    }
}
