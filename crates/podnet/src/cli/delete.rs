//! `podnet delete TYPE NAME… | TYPE/NAME… | TYPE -l SELECTOR | TYPE --all | -f FILE`:
//! deletes, prints `pod "web-0" deleted`, then (as kubectl does) waits until the objects are
//! gone — a pod on a node until its node has stopped it, a namespace until it is emptied —
//! bounded by `--timeout`.

use std::time::{Duration, Instant};

use clap::{ArgAction, Args};
use serde_json::json;

use super::client::{Client, is_not_found, resource_path};
use super::get::{parse_targets, resolve};
use super::manifest;
use super::resources::{self, Resource};
use super::{CliError, GlobalArgs, report};

/// How often the wait looks.
const POLL: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// TYPE NAME..., TYPE/NAME..., or TYPE with -l or --all.
    #[arg(value_name = "TYPE [NAME...]")]
    pub targets: Vec<String>,
    /// Delete the objects of a manifest (file, directory or -). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Delete the objects of TYPE matching this label selector.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Delete every object of TYPE in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds the object has to stop; -1: its own default.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub grace_period: i64,
    /// Stop at once (a grace period of 1 second).
    #[arg(long)]
    pub now: bool,
    /// Remove the objects from the API at once, without waiting for them to stop (with
    /// --grace-period=0).
    #[arg(long)]
    pub force: bool,
    /// Wait until the objects are gone.
    #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub wait: bool,
    /// How long to wait: 60s, 2m, 1h.
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    /// Say nothing about objects that are not there.
    #[arg(long)]
    pub ignore_not_found: bool,
}

/// `60s`, `2m`, `1h30m`, `500ms`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, CliError> {
    let bad = || CliError::other(format!("invalid --timeout {s:?}: use e.g. 60s, 2m or 1h"));
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let secs = match unit {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|_| bad())?;
    }
    Ok(total)
}

/// One object to delete.
struct Target {
    res: Resource,
    namespace: Option<String>,
    name: String,
    /// The manifest it came from (`-f`), for error messages.
    source: Option<String>,
}

pub async fn run(g: GlobalArgs, args: DeleteArgs) -> i32 {
    let timeout = match parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(e) => return report(&[e]),
    };
    let client = match Client::connect(&g).await {
        Ok(c) => c,
        Err(e) => return report(&[e]),
    };
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let mut errors = Vec::new();
    let targets = match targets(&client, &g, &args, &namespace, &mut errors).await {
        Ok(t) => t,
        Err(e) => return report(&[e]),
    };
    if targets.is_empty() && errors.is_empty() && (args.all || args.selector.is_some()) {
        println!("No resources found");
        return 0;
    }
    let grace = if args.now {
        Some(1)
    } else if args.force && args.grace_period < 0 {
        Some(0)
    } else if args.grace_period == 0 && !args.force {
        // kubectl: a zero grace period without --force means "as fast as possible".
        Some(1)
    } else if args.grace_period >= 0 {
        Some(args.grace_period)
    } else {
        None
    };
    let immediate = args.force && grace == Some(0);
    if immediate {
        eprintln!(
            "Warning: Immediate deletion does not wait for confirmation that the running resource has been terminated. The resource may continue to run on the cluster indefinitely."
        );
    }
    let mut options =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
    if let Some(grace) = grace {
        options["gracePeriodSeconds"] = json!(grace);
    }
    let mut waiting: Vec<(Target, String)> = Vec::new();
    for t in targets {
        let path = resource_path(&t.res, t.namespace.as_deref(), Some(&t.name), &[]);
        match client.delete(&path, &options).await {
            Ok(answer) => {
                println!(
                    "{} \"{}\" {}",
                    t.res.kind_prefix(),
                    t.name,
                    if immediate {
                        "force deleted"
                    } else {
                        "deleted"
                    }
                );
                let uid = answer["metadata"]["uid"]
                    .as_str()
                    .or(answer["details"]["uid"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                waiting.push((t, uid));
            }
            Err(e) if is_not_found(&e) && args.ignore_not_found => {}
            Err(e) => errors.push(match &t.source {
                Some(source) => e.with_context(&format!("error when deleting \"{source}\": ")),
                None => e,
            }),
        }
    }
    if args.wait && !immediate {
        let deadline = Instant::now() + timeout;
        for (t, uid) in &waiting {
            if let Err(e) = wait_gone(&client, t, uid, deadline).await {
                errors.push(e);
            }
        }
    }
    report(&errors)
}

/// The objects the arguments name; mapping errors of manifest objects go to `errors`.
async fn targets(
    client: &Client,
    g: &GlobalArgs,
    args: &DeleteArgs,
    namespace: &str,
    errors: &mut Vec<CliError>,
) -> Result<Vec<Target>, CliError> {
    let ns_of = |res: &Resource, object_ns: Option<&str>| -> Option<String> {
        res.namespaced.then(|| {
            object_ns
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace)
                .to_owned()
        })
    };
    if !args.files.is_empty() {
        if !args.targets.is_empty() {
            return Err(CliError::other(
                "give either -f FILE or TYPE NAME, not both".to_owned(),
            ));
        }
        let mut out = Vec::new();
        for doc in manifest::read_all(&args.files)? {
            let o = &doc.object;
            let api_version = o["apiVersion"].as_str().unwrap_or_default();
            let kind = o["kind"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let object_ns = o["metadata"]["namespace"].as_str();
            match resources::by_kind(client, api_version, kind).await? {
                Some(res) => out.push(Target {
                    namespace: ns_of(&res, object_ns),
                    res,
                    name: name.to_owned(),
                    source: Some(doc.source.clone()),
                }),
                None => errors.push(CliError::other(format!(
                    "resource mapping not found for name: \"{name}\" namespace: \"{}\" from \"{}\": no matches for kind \"{kind}\" in version \"{api_version}\"\nensure CRDs are installed first",
                    object_ns.unwrap_or_default(),
                    doc.source
                ))),
            }
        }
        return Ok(out);
    }
    if args.targets.is_empty() {
        return Err(CliError::other(
            "You must provide one or more resources by argument or filename.".to_owned(),
        ));
    }
    let parsed = parse_targets(&args.targets)?;
    let any_names = parsed.iter().any(|(_, n)| !n.is_empty());
    let by_query = args.all || args.selector.is_some();
    if any_names && by_query {
        return Err(CliError::other(
            "name cannot be provided when a selector or --all is specified".to_owned(),
        ));
    }
    if !any_names && !by_query {
        return Err(CliError::other(
            "resource(s) were provided, but no name was specified".to_owned(),
        ));
    }
    let mut out = Vec::new();
    for (res, names) in resolve(client, &parsed).await? {
        if by_query {
            let ns = (!g.all_namespaces).then_some(namespace);
            let selector = args.selector.as_deref().unwrap_or_default();
            let list = client
                .get(&resource_path(
                    &res,
                    ns,
                    None,
                    &[("labelSelector", selector)],
                ))
                .await?;
            for item in list["items"].as_array().into_iter().flatten() {
                out.push(Target {
                    namespace: ns_of(&res, item["metadata"]["namespace"].as_str()),
                    name: item["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    res: res.clone(),
                    source: None,
                });
            }
        } else {
            for name in names {
                out.push(Target {
                    namespace: ns_of(&res, None),
                    res: res.clone(),
                    name,
                    source: None,
                });
            }
        }
    }
    Ok(out)
}

/// Waits until the object is gone (or replaced by another of the same name).
async fn wait_gone(
    client: &Client,
    t: &Target,
    uid: &str,
    deadline: Instant,
) -> Result<(), CliError> {
    let path = resource_path(&t.res, t.namespace.as_deref(), Some(&t.name), &[]);
    loop {
        match client.get(&path).await {
            Err(e) if is_not_found(&e) => return Ok(()),
            Ok(obj) if !uid.is_empty() && obj["metadata"]["uid"] != uid => {
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        if Instant::now() >= deadline {
            return Err(CliError::other(format!(
                "timed out waiting for the condition on {}/{}",
                t.res.qualified_plural(),
                t.name
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("15").unwrap(), Duration::from_secs(15));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
