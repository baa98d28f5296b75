//! A packet walked through tables as the kernel would walk it, without a kernel: the base
//! chains of a hook in priority order, each rule's matches tested against the packet, jumps,
//! gotos and returns followed, sets and maps looked up, and what decided the packet said.
//! (kube-proxy's `nftablesTracer` idea.) It lets a dataplane's desired tables be proven in
//! plain tests, and `podnet trace` explain a path from the rules a node holds.

use std::net::Ipv4Addr;

use super::data::{self, Datum};
use super::rule::{Action, Addr, Key, Match, Rule};
use super::{ElementValue, Set, Table};
use crate::nftnl::{Hook, Verdict};

/// What the tracer knows of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub saddr: Ipv4Addr,
    pub daddr: Ipv4Addr,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    /// conntrack state bits (`ct_state::NEW` for a connection's first packet).
    pub ct_state: u32,
    pub ct_status: u32,
    pub mark: u32,
    /// Whether the source or destination is an address of this host (`fib … type local`).
    pub saddr_local: bool,
    pub daddr_local: bool,
}

impl Packet {
    /// A connection's first packet from `saddr` to `daddr:dport` over `proto`.
    pub fn new(saddr: Ipv4Addr, daddr: Ipv4Addr, proto: u8, dport: u16) -> Packet {
        Packet {
            saddr,
            daddr,
            proto,
            sport: 40000,
            dport,
            ct_state: super::ct_state::NEW,
            ct_status: 0,
            mark: 0,
            saddr_local: false,
            daddr_local: false,
        }
    }
}

/// One rule that matched on the way: where it is and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub table: String,
    pub chain: String,
    pub rule: String,
    /// Whether it decided something: a verdict that ended the walk (or a jump that led to
    /// one), a map that had the packet's key, a NAT. A rule that matched and passed the
    /// packet on unchanged did not.
    pub decided: bool,
}

/// Where the packet ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Through every base chain of the hook (accepted by a rule or a chain's policy).
    Accepted,
    Dropped,
    Rejected,
}

/// A packet's walk: the rules that matched, in order, and the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub steps: Vec<Step>,
    pub outcome: Outcome,
    /// NAT the walk asked for (DNAT, redirect, masquerade), as nft says it.
    pub nat: Vec<String>,
    /// Where a DNAT sends the packet: one address and port, or the endpoints a random pick
    /// chooses among.
    pub dnat: Vec<(Ipv4Addr, u16)>,
    /// The local port a `redirect` sends the packet to.
    pub redirect: Option<u16>,
    /// Whether the packet is masqueraded.
    pub masquerade: bool,
}

/// How deep jumps may nest (the kernel's own limit is 16).
const MAX_DEPTH: usize = 16;

/// Walks `packet` through the base chains of `hook` in `tables`, lowest priority first.
pub fn trace(tables: &[Table], hook: Hook, packet: &Packet) -> Trace {
    let mut bases: Vec<(&Table, &super::Chain)> = tables
        .iter()
        .flat_map(|t| t.chains.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.hook.is_some_and(|h| h.hook == hook))
        .collect();
    bases.sort_by_key(|(_, c)| c.hook.map(|h| h.priority).unwrap_or(0));
    let mut walk = Walk {
        packet,
        steps: Vec::new(),
        nat: Vec::new(),
        dnat: Vec::new(),
        redirect: None,
        masquerade: false,
    };
    for (table, chain) in bases {
        let policy_accepts = chain.hook.is_some_and(|h| h.accept);
        match walk.chain(table, &chain.name, 0) {
            End::Drop => return walk.finish(Outcome::Dropped),
            End::Reject => return walk.finish(Outcome::Rejected),
            End::Accept => {}
            End::Fallthrough if policy_accepts => {}
            End::Fallthrough => return walk.finish(Outcome::Dropped),
        }
    }
    walk.finish(Outcome::Accepted)
}

/// How a chain's evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Accept,
    Drop,
    Reject,
    /// Off its end, or by `return`: the caller goes on.
    Fallthrough,
}

/// What a rule's actions leave the chain to do.
enum Flow {
    /// Go on with the next rule.
    Next,
    /// Leave the chain; its caller goes on.
    Return,
    End(End),
}

struct Walk<'a> {
    packet: &'a Packet,
    steps: Vec<Step>,
    nat: Vec<String>,
    dnat: Vec<(Ipv4Addr, u16)>,
    redirect: Option<u16>,
    masquerade: bool,
}

impl Walk<'_> {
    fn finish(self, outcome: Outcome) -> Trace {
        Trace {
            steps: self.steps,
            outcome,
            nat: self.nat,
            dnat: self.dnat,
            redirect: self.redirect,
            masquerade: self.masquerade,
        }
    }

    /// Notes what a NAT action does to the packet.
    fn nat_target(&mut self, table: &Table, action: &Action) {
        match action {
            Action::Dnat { ip, port } => self.dnat.push((*ip, *port)),
            Action::DnatRandomMap { count, offset, map } => {
                let Some(set) = table.set(map) else { return };
                for k in *offset..offset + count {
                    let hit = set.elements.iter().find(|e| e.key == [Datum::Int(k)]);
                    if let Some(ElementValue::Data(d)) = hit.and_then(|e| e.value.as_ref())
                        && let [Datum::Ip(ip), Datum::Port(port)] = d.as_slice()
                    {
                        self.dnat.push((*ip, *port));
                    }
                }
            }
            Action::Redirect { port } => self.redirect = Some(*port),
            Action::Masquerade { .. } => self.masquerade = true,
            _ => {}
        }
    }

    fn chain(&mut self, table: &Table, name: &str, depth: usize) -> End {
        let Some(chain) = table.chain(name) else {
            return End::Drop;
        };
        if depth > MAX_DEPTH {
            return End::Drop;
        }
        for rule in &chain.rules {
            if !rule.matches.iter().all(|m| self.matches(table, m)) {
                continue;
            }
            let at = self.steps.len();
            self.steps.push(Step {
                table: table.name.clone(),
                chain: name.to_string(),
                rule: rule.text(table.family()),
                decided: false,
            });
            let nat_before = self.nat.len();
            let flow = self.actions(table, rule, depth);
            let mapped = rule.actions.iter().any(|a| match a {
                Action::Vmap { keys, map } => self.lookup_verdict(table, keys, map).is_some(),
                _ => false,
            });
            self.steps[at].decided =
                matches!(flow, Flow::End(_)) || mapped || self.nat.len() > nat_before;
            match flow {
                Flow::Next => continue,
                Flow::Return => return End::Fallthrough,
                Flow::End(end) => return end,
            }
        }
        End::Fallthrough
    }

    /// What the rule's actions decide.
    fn actions(&mut self, table: &Table, rule: &Rule, depth: usize) -> Flow {
        for action in &rule.actions {
            let verdict = match action {
                Action::Verdict(v) => Some(v.clone()),
                Action::Vmap { keys, map } => self.lookup_verdict(table, keys, map),
                Action::RandomVmap { chains } => chains.first().map(|c| Verdict::Goto(c.clone())),
                Action::Reject { .. } => return Flow::End(End::Reject),
                Action::Masquerade { .. }
                | Action::Dnat { .. }
                | Action::DnatRandomMap { .. }
                | Action::Redirect { .. } => {
                    self.nat.push(action.to_string());
                    self.nat_target(table, action);
                    return Flow::End(End::Accept);
                }
                _ => None,
            };
            if let Some(v) = verdict {
                return self.verdict(table, &v, depth);
            }
        }
        Flow::Next
    }

    fn verdict(&mut self, table: &Table, v: &Verdict, depth: usize) -> Flow {
        match v {
            Verdict::Accept => Flow::End(End::Accept),
            Verdict::Drop => Flow::End(End::Drop),
            Verdict::Return => Flow::Return,
            // Back from a jump the chain goes on; back from a goto it returns too.
            Verdict::Jump(c) => match self.chain(table, c, depth + 1) {
                End::Fallthrough => Flow::Next,
                end => Flow::End(end),
            },
            Verdict::Goto(c) => match self.chain(table, c, depth + 1) {
                End::Fallthrough => Flow::Return,
                end => Flow::End(end),
            },
        }
    }

    fn field(&self, k: Key) -> Datum {
        let p = self.packet;
        match k {
            Key::IpSaddr => Datum::Ip(p.saddr),
            Key::IpDaddr => Datum::Ip(p.daddr),
            Key::L4Proto => Datum::Proto(p.proto),
            Key::ThSport => Datum::Port(p.sport),
            Key::ThDport => Datum::Port(p.dport),
        }
    }

    fn addr(&self, a: Addr) -> Ipv4Addr {
        match a {
            Addr::Saddr => self.packet.saddr,
            Addr::Daddr => self.packet.daddr,
        }
    }

    fn matches(&self, table: &Table, m: &Match) -> bool {
        let p = self.packet;
        match m {
            Match::Ip { addr, net, equal } => net.contains(&self.addr(*addr)) == *equal,
            Match::IpInSet { addr, set, equal } => {
                let key = [Datum::Ip(self.addr(*addr))];
                table.set(set).is_some_and(|s| find(s, &key).is_some()) == *equal
            }
            Match::L4Proto(proto) => p.proto == *proto,
            Match::Port {
                proto,
                dport,
                first,
                last,
            } => {
                let port = if *dport { p.dport } else { p.sport };
                proto.is_none_or(|x| x == p.proto) && (*first..=*last).contains(&port)
            }
            Match::FibLocal { daddr } => {
                if *daddr {
                    p.daddr_local
                } else {
                    p.saddr_local
                }
            }
            Match::InSet { keys, set, equal } => {
                let key: Vec<Datum> = keys.iter().map(|k| self.field(*k)).collect();
                table.set(set).is_some_and(|s| find(s, &key).is_some()) == *equal
            }
            Match::CtState(bits) => p.ct_state & bits != 0,
            Match::CtStatus(bits) => p.ct_status & bits != 0,
            Match::MarkClear(mask) => p.mark & mask == 0,
            Match::NfProtoIpv4 => true,
        }
    }

    fn lookup_verdict(&self, table: &Table, keys: &[Key], map: &str) -> Option<Verdict> {
        let key: Vec<Datum> = keys.iter().map(|k| self.field(*k)).collect();
        let element = table.set(map).and_then(|s| find(s, &key))?;
        match &element.value {
            Some(ElementValue::Verdict(v)) => Some(v.clone()),
            _ => None,
        }
    }
}

/// The element of `set` whose key holds `key` (an interval set's element holds every
/// address in its range).
fn find<'a>(set: &'a Set, key: &[Datum]) -> Option<&'a super::SetElement> {
    set.elements.iter().find(|e| {
        if set.interval {
            let (Some(Datum::Ip(ip)), Some(bounds)) =
                (key.first(), e.key.first().and_then(data::ip_bounds))
            else {
                return false;
            };
            (bounds.0..=bounds.1).contains(&u32::from(*ip))
        } else {
            e.key == key
        }
    })
}
