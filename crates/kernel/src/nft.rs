//! The `nft` program: a ruleset text applied as one atomic transaction by `nft -f -`
//! (the whole batch commits or none of it does), and tables listed. podnet writes its
//! rules over netlink ([`crate::nftnl`], [`crate::ruleset`]) and never needs `nft`; this
//! is the test oracle, and the service proxy's fallback when the kernel refuses a batch
//! and the program happens to be installed ([`available`]).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{KernelError, Result};
use crate::netns::NetNs;

/// The `nft` program: `$PODNET_NFT` (set but empty: none), else the usual install
/// paths, else `nft` on the `PATH`.
fn nft_program() -> String {
    if let Ok(path) = std::env::var("PODNET_NFT") {
        return path;
    }
    [
        "/usr/sbin/nft",
        "/sbin/nft",
        "/usr/bin/nft",
        "/usr/local/sbin/nft",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).is_file())
    .unwrap_or("nft")
    .to_string()
}

/// Whether the `nft` program is there to fall back on.
pub fn available() -> bool {
    let program = nft_program();
    if program.is_empty() {
        return false;
    }
    if program.contains('/') {
        return std::path::Path::new(&program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(&program).is_file()))
}

fn command_in(ns: Option<&NetNs>) -> Result<Command> {
    let mut cmd = Command::new(nft_program());
    if let Some(ns) = ns {
        ns.enter_on_exec(&mut cmd)?;
    }
    Ok(cmd)
}

fn run(ns: Option<&NetNs>, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let where_ = ns
        .map(|n| n.label().to_string())
        .unwrap_or_else(|| "current".into());
    let mut child = command_in(ns)?
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::Nftables {
            message: format!(
                "cannot run {} in network namespace {where_}: {e} (install the nftables package)",
                nft_program()
            ),
        })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| KernelError::Nftables {
                message: format!("writing the ruleset to nft: {e}"),
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| KernelError::Nftables {
            message: format!("waiting for nft: {e}"),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(KernelError::Nftables {
            message: format!(
                "nft {} in network namespace {where_}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// Applies `ruleset` (nft syntax) in one transaction, in `ns` or here.
pub fn apply(ns: Option<&NetNs>, ruleset: &str) -> Result<()> {
    run(ns, &["-f", "-"], Some(ruleset)).map(|_| ())
}

/// The text of table `family name`, or `None` when it does not exist.
pub fn list_table(ns: Option<&NetNs>, family: &str, name: &str) -> Result<Option<String>> {
    match run(ns, &["list", "table", family, name], None) {
        Ok(text) => Ok(Some(text)),
        Err(KernelError::Nftables { message }) if message.contains("No such file or directory") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Deletes table `family name` if it exists.
pub fn delete_table(ns: Option<&NetNs>, family: &str, name: &str) -> Result<()> {
    // Declaring the table first makes the delete succeed when it was absent.
    apply(
        ns,
        &format!("table {family} {name}\ndelete table {family} {name}\n"),
    )
}

/// A listing with each set's elements on one line and in sorted order, for comparing two
/// listings: a hash set lists its elements in the order of its hash, which the kernel
/// seeds at random per set, and nft breaks long element lists over lines.
pub fn sorted_elements(listing: &str) -> String {
    let mut out = Vec::new();
    let mut lines = listing.lines();
    while let Some(line) = lines.next() {
        let Some((head, rest)) = line.split_once("elements = { ") else {
            out.push(line.to_string());
            continue;
        };
        let mut body = rest.to_string();
        while !body.trim_end().ends_with('}') {
            match lines.next() {
                Some(more) => {
                    body.push(' ');
                    body.push_str(more.trim());
                }
                None => break,
            }
        }
        let inner = body.trim_end().trim_end_matches('}').trim();
        let mut items: Vec<&str> = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        items.sort_unstable();
        out.push(format!("{head}elements = {{ {} }}", items.join(", ")));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn element_lists_are_joined_and_sorted() {
        let a = "\tset s {\n\t\telements = { 10.0.0.7, 10.0.0.5,\n\t\t\t     10.0.0.6 }\n\t}";
        let b = "\tset s {\n\t\telements = { 10.0.0.5, 10.0.0.6, 10.0.0.7 }\n\t}";
        assert_eq!(super::sorted_elements(a), super::sorted_elements(b));
    }
}
