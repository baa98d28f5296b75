//! An explanation for people: a numbered hop list, one line per hop, each deciding rule
//! under it in nft's syntax, and the verdict.

use std::fmt::Write as _;

use crate::explain::{Explanation, Verdict};

pub fn text(e: &Explanation) -> String {
    let mut out = String::new();
    for (i, hop) in e.hops.iter().enumerate() {
        let _ = writeln!(out, "{:>2}. [{}] {}", i + 1, hop.at, hop.what);
        for rule in &hop.rules {
            let _ = writeln!(out, "      {rule}");
        }
    }
    let verdict = match e.verdict {
        Verdict::Delivered => "delivered",
        Verdict::NotListening => "delivered, but nothing listens",
        Verdict::Left => "left the cluster",
        Verdict::Broken => "broken at the last hop",
    };
    let _ = writeln!(out, "=> {verdict}");
    out
}
