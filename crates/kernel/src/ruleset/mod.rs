//! nftables tables described once, as data: sets, chains and rules (matches and actions).
//! A [`Table`] is written as one netlink transaction ([`Table::add_to`],
//! [`Table::replace_in`]) or as nft text ([`Table`]'s `Display`, what `nft -f` reads and
//! `nft list` prints), and read back from the kernel over netlink ([`list`]), so a
//! dataplane can compare what it wants with what the kernel holds, and show it in nft's
//! syntax, without the `nft` program.

mod data;
mod parse;
mod plan;
mod rule;
pub mod trace;
mod typeof_;

use std::fmt::{self, Write as _};

pub use data::{DataType, Datum, ip_interval, ip_ranges, key_len, type_number};
pub use parse::rule as parse_rule;
pub use plan::{PlanKind, plan};
pub use rule::{Action, Addr, CT_STATUS_DNAT, Key, Match, Rule, ct_state};

use crate::error::Result;
use crate::netns::NetNs;
use crate::nftnl::{
    BaseChain, Batch, ChainKind, Element, Family, Hook, ListedSet, ListedTable, NftSocket,
    SET_ANONYMOUS, SET_INTERVAL, SetSpec, SetValue, Value, Verdict, tlv,
};

/// A table: its sets and chains, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub family: Option<Family>,
    pub name: String,
    pub comment: Option<String>,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// A named set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: Vec<DataType>,
    pub value: SetData,
    pub interval: bool,
    pub comment: Option<String>,
    pub elements: Vec<SetElement>,
    /// How nft describes the key and value when the set was declared with `typeof`
    /// (e.g. `numgen random mod 1 : ip daddr . tcp dport`), read from its user data;
    /// shown instead of the types. Sets written here are declared by type.
    pub typeof_text: Option<String>,
}

/// What a map maps its keys to (nothing: a set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetData {
    None,
    Verdict,
    Data(Vec<DataType>),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetElement {
    pub key: Vec<Datum>,
    pub value: Option<ElementValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ElementValue {
    Verdict(Verdict),
    Data(Vec<Datum>),
}

/// A chain, a base chain when `hook` says where it hooks in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

impl Table {
    pub fn new(family: Family, name: impl Into<String>) -> Table {
        Table {
            family: Some(family),
            name: name.into(),
            ..Table::default()
        }
    }

    pub fn family(&self) -> Family {
        self.family.unwrap_or(Family::Ip)
    }

    /// The table created in `batch` (an existing one of the name is kept, and what is
    /// added here is added to it): itself, its sets, its chains, the sets' elements (a
    /// verdict may name any chain), then the rules (a rule may jump to any chain).
    pub fn add_to(&self, batch: &mut Batch) {
        batch.add_table(&self.name, self.comment.as_deref());
        let ids: Vec<u32> = self
            .sets
            .iter()
            .map(|s| batch.add_set(&self.name, &s.spec()))
            .collect();
        for c in &self.chains {
            batch.add_chain(&self.name, &c.name, c.hook);
        }
        for (s, id) in self.sets.iter().zip(ids) {
            batch.add_elements_by_id(&self.name, id, &s.kernel_elements());
        }
        for c in &self.chains {
            plan::add_rules(batch, self, c);
        }
    }

    /// The table replaced whole in `batch`: whatever was there (if anything) is deleted
    /// and this is created, in one transaction.
    pub fn replace_in(&self, batch: &mut Batch) {
        batch.add_table(&self.name, None);
        batch.delete_table(&self.name);
        self.add_to(batch);
    }

    /// A batch that replaces the table whole.
    pub fn replacing_batch(&self) -> Batch {
        let mut batch = Batch::for_family(self.family());
        self.replace_in(&mut batch);
        batch
    }

    /// The table with every set's elements in key order, as a listing gives them: two
    /// tables that hold the same compare equal in this form.
    pub fn canonical(mut self) -> Table {
        for s in &mut self.sets {
            s.elements
                .sort_by_cached_key(|e| data::concat_bytes(&e.key));
        }
        self
    }

    /// The table with its sets and chains in name order. A listing gives them in the
    /// order they were created (a partial sync's new ones last) and their order means
    /// nothing to the kernel: two tables that hold the same compare equal in this form.
    pub fn by_name(mut self) -> Table {
        self.sets.sort_by(|a, b| a.name.cmp(&b.name));
        self.chains.sort_by(|a, b| a.name.cmp(&b.name));
        self
    }

    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }
}

/// A batch that deletes table `name` of `family` if it exists (nothing if it does not).
pub fn delete_table_batch(family: Family, name: &str) -> Batch {
    let mut batch = Batch::for_family(family);
    batch.add_table(name, None);
    batch.delete_table(name);
    batch
}

/// Deletes table `name` of `family` in `ns` (or here), if it is there.
pub fn delete_table(ns: Option<&NetNs>, family: Family, name: &str) -> Result<()> {
    crate::nftnl::apply(ns, &delete_table_batch(family, name))
}

/// The tables of `family` (all families with `None`) whose names `wanted` accepts, read
/// from the kernel in `ns` (or here).
pub fn list(
    ns: Option<&NetNs>,
    family: Option<Family>,
    wanted: impl Fn(&str) -> bool,
) -> Result<Vec<Table>> {
    let listed = NftSocket::open(ns)?.list_tables(family, wanted)?;
    Ok(listed.iter().map(Table::from_listing).collect())
}

/// Table `name` of `family` in `ns` (or here), or `None` when there is none.
pub fn get(ns: Option<&NetNs>, family: Family, name: &str) -> Result<Option<Table>> {
    Ok(list(ns, Some(family), |n| n == name)?.into_iter().next())
}

impl Table {
    /// A listed table as data: rules parsed into matches and actions, anonymous sets
    /// folded into the rules that use them.
    pub fn from_listing(t: &ListedTable) -> Table {
        let anonymous = |name: &str| -> Option<Vec<String>> {
            let s = t.sets.iter().find(|s| s.name == name)?;
            let mut gotos: Vec<(u32, String)> = s
                .elements
                .iter()
                .filter_map(|e| match (&e.element.value, e.element.key.as_slice()) {
                    (Some(Value::Verdict(Verdict::Goto(c))), key) => {
                        Some((u32::from_ne_bytes(key.try_into().ok()?), c.clone()))
                    }
                    _ => None,
                })
                .collect();
            gotos.sort();
            Some(gotos.into_iter().map(|(_, c)| c).collect())
        };
        let chains = t
            .chains
            .iter()
            .map(|c| Chain {
                name: c.name.clone(),
                hook: c.base,
                rules: c
                    .rules
                    .iter()
                    .map(|r| parse::rule(&r.exprs, r.comment.clone(), &anonymous))
                    .collect(),
            })
            .collect();
        let table = Table {
            family: Some(t.family),
            name: t.name.clone(),
            comment: t.comment.clone(),
            sets: t
                .sets
                .iter()
                .filter(|s| s.flags & SET_ANONYMOUS == 0)
                .map(Set::from_listing)
                .collect(),
            chains,
        };
        table.canonical()
    }
}

impl Set {
    /// A set of `key` values.
    pub fn new(name: impl Into<String>, key: Vec<DataType>) -> Set {
        Set {
            name: name.into(),
            key,
            value: SetData::None,
            interval: false,
            comment: None,
            elements: Vec::new(),
            typeof_text: None,
        }
    }

    pub fn with_comment(mut self, comment: impl Into<String>) -> Set {
        self.comment = Some(comment.into());
        self
    }

    pub fn is_map(&self) -> bool {
        self.value != SetData::None
    }

    /// The set as the kernel holds it, with the user data nft 1.0.6 writes for a set
    /// declared with `type`.
    pub fn spec(&self) -> SetSpec {
        let value = match &self.value {
            SetData::None => SetValue::None,
            SetData::Verdict => SetValue::Verdict,
            SetData::Data(types) => SetValue::Data {
                kind: type_number(types),
                len: key_len(types),
            },
        };
        SetSpec {
            name: self.name.clone(),
            key_type: type_number(&self.key),
            key_len: key_len(&self.key),
            value,
            timeout_ms: None,
            userdata: self.userdata(),
            flags: if self.interval { SET_INTERVAL } else { 0 },
        }
    }

    fn userdata(&self) -> Vec<u8> {
        let mut u = Vec::new();
        match self.key.as_slice() {
            [one] => tlv(&mut u, 0, &byte_order(*one).to_ne_bytes()),
            _ => {
                // A concatenation: byte order left open, described as a `type`
                // concatenation (nft's typeof record with no expressions).
                tlv(&mut u, 0, &0u32.to_ne_bytes());
                if self.is_map() {
                    tlv(&mut u, 1, &0u32.to_ne_bytes());
                }
                let mut concat = Vec::new();
                tlv(&mut concat, 0, &13u32.to_ne_bytes());
                tlv(&mut concat, 1, &[]);
                tlv(&mut u, 3, &concat);
                if self.is_map() {
                    tlv(&mut u, 6, &0u32.to_ne_bytes());
                }
            }
        }
        if let Some(c) = &self.comment {
            tlv(&mut u, 7, &[c.as_bytes(), &[0]].concat());
        }
        u
    }

    /// The elements as the kernel stores them. A set of address intervals holds each
    /// interval's first address and the first after it (flagged as an end), sorted, after
    /// an end at 0.0.0.0 when the first interval does not start there, as nft writes it.
    pub fn kernel_elements(&self) -> Vec<Element> {
        if self.interval {
            return interval_elements(&self.elements);
        }
        self.elements.iter().map(kernel_element).collect()
    }

    fn from_listing(s: &ListedSet) -> Set {
        if s.flags & SET_INTERVAL != 0 && s.key_type == DataType::Ipv4Addr.number() {
            let mut set = Set::new(s.name.clone(), vec![DataType::Ipv4Addr]);
            set.interval = true;
            set.comment = crate::nftnl::set_comment(&s.userdata);
            set.elements = listed_intervals(&s.elements);
            return set;
        }
        let key: Vec<DataType> = data::types_of(s.key_type)
            .into_iter()
            .map(|t| t.unwrap_or(DataType::Integer))
            .collect();
        let value = match s.value {
            SetValue::None => SetData::None,
            SetValue::Verdict => SetData::Verdict,
            SetValue::Data { kind, .. } => SetData::Data(
                data::types_of(kind)
                    .into_iter()
                    .map(|t| t.unwrap_or(DataType::Integer))
                    .collect(),
            ),
        };
        let key_types: Vec<Option<DataType>> = key.iter().copied().map(Some).collect();
        let elements = s
            .elements
            .iter()
            .filter(|e| !e.interval_end)
            .filter_map(|e| {
                let key = data::read_concat(&key_types, &e.element.key)?;
                let value = match (&e.element.value, &value) {
                    (Some(Value::Verdict(v)), _) => Some(ElementValue::Verdict(v.clone())),
                    (Some(Value::Data(d)), SetData::Data(types)) => {
                        let types: Vec<Option<DataType>> =
                            types.iter().copied().map(Some).collect();
                        Some(ElementValue::Data(data::read_concat(&types, d)?))
                    }
                    _ => None,
                };
                Some(SetElement { key, value })
            })
            .collect();
        Set {
            name: s.name.clone(),
            key,
            value,
            interval: s.flags & SET_INTERVAL != 0,
            comment: crate::nftnl::set_comment(&s.userdata),
            elements,
            typeof_text: typeof_::describe(&s.userdata),
        }
    }
}

/// One element of a set without intervals as the kernel stores it.
pub(crate) fn kernel_element(e: &SetElement) -> Element {
    let key = data::concat_bytes(&e.key);
    match &e.value {
        None => Element::key(key),
        Some(ElementValue::Verdict(v)) => Element::verdict(key, v.clone()),
        Some(ElementValue::Data(d)) => Element::data(key, data::concat_bytes(d)),
    }
}

/// An interval set's elements, as [`Set::kernel_elements`] says.
fn interval_elements(elements: &[SetElement]) -> Vec<Element> {
    let mut ranges: Vec<(u32, u32)> = elements
        .iter()
        .filter_map(|e| e.key.first().and_then(data::ip_bounds))
        .collect();
    ranges.sort();
    let mut out = Vec::new();
    if ranges.first().is_some_and(|(a, _)| *a != 0) {
        out.push(Element::interval_end(vec![0; 4]));
    }
    for (a, b) in ranges {
        out.push(Element::key(a.to_be_bytes().to_vec()));
        if let Some(after) = b.checked_add(1) {
            out.push(Element::interval_end(after.to_be_bytes().to_vec()));
        }
    }
    out
}

/// An interval set's listed elements as ranges: each start with the end after it.
fn listed_intervals(listed: &[crate::nftnl::ListedElement]) -> Vec<SetElement> {
    let mut points: Vec<(u32, bool)> = listed
        .iter()
        .filter_map(|e| {
            let key: [u8; 4] = e.element.key.as_slice().try_into().ok()?;
            Some((u32::from_be_bytes(key), e.interval_end))
        })
        .collect();
    points.sort();
    let mut out = Vec::new();
    let mut i = 0;
    while i < points.len() {
        let (start, end) = points[i];
        if end {
            i += 1;
            continue;
        }
        let last = match points.get(i + 1) {
            Some((next, true)) => next.wrapping_sub(1),
            _ => u32::MAX,
        };
        out.push(SetElement {
            key: vec![data::ip_interval(start, last)],
            value: None,
        });
        i += 2;
    }
    out
}

/// How nft records a single type's byte order in a set's user data (big endian 2, host 1).
fn byte_order(t: DataType) -> u32 {
    match t {
        DataType::Ipv4Addr | DataType::InetService => 2,
        DataType::InetProto => 0,
        DataType::Integer | DataType::Mark => 1,
    }
}

/// A chain's priority as nft prints it: a standard priority's name, or its name and an
/// offset of up to 10, or the number.
fn priority_text(family: Family, b: &BaseChain) -> String {
    let mut names: Vec<(&str, i32)> = vec![("raw", -300), ("mangle", -150)];
    if b.hook == Hook::Prerouting && family != Family::Bridge {
        names.push(("dstnat", -100));
    }
    names.extend([("filter", 0), ("security", 50)]);
    if b.hook == Hook::Postrouting && family != Family::Bridge {
        names.push(("srcnat", 100));
    }
    for (name, value) in names {
        let off = b.priority - value;
        match off {
            0 => return name.to_string(),
            1..=10 => return format!("{name} + {off}"),
            -10..=-1 => return format!("{name} - {}", -off),
            _ => {}
        }
    }
    b.priority.to_string()
}

fn hook_text(family: Family, b: &BaseChain) -> String {
    let kind = match b.kind {
        ChainKind::Filter => "filter",
        ChainKind::Nat => "nat",
    };
    let hook = match b.hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    };
    let policy = if b.accept { "accept" } else { "drop" };
    format!(
        "type {kind} hook {hook} priority {}; policy {policy};",
        priority_text(family, b)
    )
}

fn type_text(types: &[DataType]) -> String {
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    names.join(" . ")
}

fn data_text(values: &[Datum]) -> String {
    let parts: Vec<String> = values.iter().map(ToString::to_string).collect();
    parts.join(" . ")
}

impl fmt::Display for SetElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_text(&self.key))?;
        match &self.value {
            Some(ElementValue::Verdict(v)) => write!(f, " : {v}"),
            Some(ElementValue::Data(d)) => write!(f, " : {}", data_text(d)),
            None => Ok(()),
        }
    }
}

impl Set {
    /// The elements separated as nft separates them: a new line after every second
    /// address, every sixteenth number, every concatenation.
    fn elements_text(&self) -> String {
        let per_line = match self.key.as_slice() {
            [DataType::Ipv4Addr] => 2,
            [_] => 16,
            _ => 1,
        };
        let mut out = String::new();
        for (i, e) in self.elements.iter().enumerate() {
            if i > 0 {
                out.push_str(if i % per_line == 0 {
                    ",\n\t\t\t     "
                } else {
                    ", "
                });
            }
            out.push_str(&e.to_string());
        }
        out
    }

    fn write(&self, out: &mut String) {
        let word = if self.is_map() { "map" } else { "set" };
        let _ = writeln!(out, "\t{word} {} {{", self.name);
        match &self.typeof_text {
            Some(t) => {
                let _ = write!(out, "\t\ttypeof {t}");
            }
            None => {
                let _ = write!(out, "\t\ttype {}", type_text(&self.key));
                match &self.value {
                    SetData::None => {}
                    SetData::Verdict => out.push_str(" : verdict"),
                    SetData::Data(types) => {
                        let _ = write!(out, " : {}", type_text(types));
                    }
                }
            }
        }
        out.push('\n');
        if self.interval {
            out.push_str("\t\tflags interval\n");
        }
        if let Some(c) = &self.comment {
            let _ = writeln!(out, "\t\tcomment \"{c}\"");
        }
        if !self.elements.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", self.elements_text());
        }
        out.push_str("\t}\n");
    }
}

/// nft's layout: sets, then chains, a blank line between blocks.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "table {} {} {{", self.family(), self.name);
        if let Some(c) = &self.comment {
            let _ = writeln!(out, "\tcomment \"{c}\"");
        }
        let mut blocks: Vec<String> = Vec::new();
        for s in &self.sets {
            let mut b = String::new();
            s.write(&mut b);
            blocks.push(b);
        }
        for c in &self.chains {
            let mut b = String::new();
            let _ = writeln!(b, "\tchain {} {{", c.name);
            if let Some(h) = &c.hook {
                let _ = writeln!(b, "\t\t{}", hook_text(self.family(), h));
            }
            for r in &c.rules {
                let _ = writeln!(b, "\t\t{}", r.text(self.family()));
            }
            b.push_str("\t}\n");
            blocks.push(b);
        }
        out.push_str(&blocks.join("\n"));
        out.push_str("}\n");
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests;
