//! `podnet get TYPE[,TYPE…] [NAME…] | TYPE/NAME…`: tables from the server's `meta.k8s.io/v1`
//! Table (kubectl's columns, rendered as kubectl renders them), or `-o wide|yaml|json|name`.

use std::time::SystemTime;

use clap::Args;
use podnet_api::k8s::table;
use serde_json::Value;

use super::client::{Client, resource_path};
use super::output;
use super::resources::{self, Resource};
use super::{CliError, GlobalArgs, report};

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub global: GlobalArgs,
    /// TYPE[,TYPE...] [NAME...], or TYPE/NAME... (types by name, plural or short name: po,
    /// svc, ep, no, ns, endpointslices, leases, events, netpol, cnp).
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub targets: Vec<String>,
    /// Output format: wide, yaml, json or name.
    #[arg(short = 'o', long, value_name = "FORMAT")]
    pub output: Option<String>,
    /// Label selector, e.g. app=web,tier!=db or 'env in (a,b)'.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Field selector, e.g. spec.nodeName=node1,status.phase=Running.
    #[arg(long, value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Leave the header row out of tables.
    #[arg(long)]
    pub no_headers: bool,
    /// Prefix names with their type even for one type.
    #[arg(long)]
    pub show_kind: bool,
    /// Say nothing about objects that are not there.
    #[arg(long)]
    pub ignore_not_found: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

fn parse_format(s: Option<&str>) -> Result<Format, CliError> {
    Ok(match s {
        None | Some("") => Format::Table,
        Some("wide") => Format::Wide,
        Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some("name") => Format::Name,
        Some(other) => {
            return Err(CliError::other(format!(
                "unable to match a printer suitable for the output format \"{other}\", allowed formats are: json,name,wide,yaml"
            )));
        }
    })
}

/// What to get: type names (as typed) with the object names asked for (none: list).
pub fn parse_targets(args: &[String]) -> Result<Vec<(String, Vec<String>)>, CliError> {
    let Some(first) = args.first() else {
        return Err(CliError::other(
            "You must specify the type of resource to get.".to_owned(),
        ));
    };
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    if first.contains('/') {
        for a in args {
            let Some((ty, name)) = a
                .split_once('/')
                .filter(|(t, n)| !t.is_empty() && !n.is_empty())
            else {
                return Err(CliError::other(format!(
                    "arguments in resource/name form must have a single resource and name: {a:?}"
                )));
            };
            match out.iter_mut().find(|(t, _)| t == ty) {
                Some((_, names)) => names.push(name.to_owned()),
                None => out.push((ty.to_owned(), vec![name.to_owned()])),
            }
        }
        return Ok(out);
    }
    let names: Vec<String> = args[1..].to_vec();
    if names.iter().any(|n| n.contains('/')) {
        return Err(CliError::other(
            "there is no need to specify a resource type as a separate argument when passing arguments in resource/name form (e.g. 'podnet get resource/<resource_name>' instead of 'podnet get resource resource/<resource_name>'".to_owned(),
        ));
    }
    for ty in first.split(',').filter(|t| !t.is_empty()) {
        if !out.iter().any(|(t, _)| t == ty) {
            out.push((ty.to_owned(), names.clone()));
        }
    }
    if out.is_empty() {
        return Err(CliError::other(
            "You must specify the type of resource to get.".to_owned(),
        ));
    }
    Ok(out)
}

pub async fn run(g: GlobalArgs, args: GetArgs) -> i32 {
    match get(&g, &args).await {
        Ok(errors) => report(&errors),
        Err(e) => report(&[e]),
    }
}

/// Resolved targets: each resource with the names asked for.
pub async fn resolve(
    client: &Client,
    targets: &[(String, Vec<String>)],
) -> Result<Vec<(Resource, Vec<String>)>, CliError> {
    let mut out = Vec::new();
    for (ty, names) in targets {
        if ty == "all" {
            // kubectl's category: the served kinds that belong to it.
            for k in podnet_api::k8s::kinds::ALL
                .iter()
                .filter(|k| k.categories.contains(&"all"))
            {
                out.push((Resource::from_kind(k), names.clone()));
            }
            continue;
        }
        out.push((resources::by_name(client, ty).await?, names.clone()));
    }
    Ok(out)
}

/// Runs `get`; the `Err` is a failure before anything was printed, the `Ok` errors are the
/// per-object ones, reported after the output.
async fn get(g: &GlobalArgs, args: &GetArgs) -> Result<Vec<CliError>, CliError> {
    let format = parse_format(args.output.as_deref())?;
    let targets = parse_targets(&args.targets)?;
    let any_names = targets.iter().any(|(_, n)| !n.is_empty());
    if any_names && args.selector.is_some() {
        return Err(CliError::other(
            "name cannot be provided when a selector is specified".to_owned(),
        ));
    }
    if any_names && g.all_namespaces {
        return Err(CliError::other(
            "a resource cannot be retrieved by name across all namespaces".to_owned(),
        ));
    }
    let client = Client::connect(g).await?;
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace.clone());
    let ns = (!g.all_namespaces).then_some(namespace.as_str());
    let resolved = resolve(&client, &targets).await?;
    let selector = args.selector.as_deref().unwrap_or_default();
    let fields = args.field_selector.as_deref().unwrap_or_default();
    let query = [("labelSelector", selector), ("fieldSelector", fields)];
    let mut errors = Vec::new();

    match format {
        Format::Table | Format::Wide => {
            let with_kind = resolved.len() > 1 || args.show_kind;
            let mut printed = false;
            let mut all_namespaced = !g.all_namespaces;
            for (res, names) in &resolved {
                all_namespaced &= res.namespaced;
                let mut tables = Vec::new();
                if names.is_empty() {
                    let path = resource_path(res, ns, None, &query);
                    match client.get_table(&path).await {
                        Ok(t) => tables.push(as_table(res, t)),
                        Err(e) => errors.push(list_error(res, selector, fields, e)),
                    }
                } else {
                    for name in names {
                        let path = resource_path(res, ns, Some(name), &[]);
                        match client.get_table(&path).await {
                            Ok(t) => tables.push(as_table(res, t)),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                let Some(mut merged) = merge_tables(tables) else {
                    continue;
                };
                if merged["rows"].as_array().is_none_or(Vec::is_empty) {
                    continue;
                }
                if with_kind {
                    prefix_names(&mut merged, &res.kind_prefix());
                }
                let mut text = table::render(
                    &merged,
                    format == Format::Wide,
                    g.all_namespaces && res.namespaced,
                );
                if args.no_headers {
                    text = text
                        .split_once('\n')
                        .map(|(_, r)| r.to_owned())
                        .unwrap_or_default();
                }
                if printed {
                    println!();
                }
                print!("{text}");
                printed = true;
            }
            if args.ignore_not_found {
                errors.retain(|e| !super::client::is_not_found(e));
            }
            if !printed && errors.is_empty() && !args.ignore_not_found {
                if all_namespaced {
                    eprintln!("No resources found in {namespace} namespace.");
                } else {
                    eprintln!("No resources found");
                }
            }
        }
        Format::Yaml | Format::Json | Format::Name => {
            let single = resolved.len() == 1 && resolved[0].1.len() == 1;
            let mut items = Vec::new();
            for (res, names) in &resolved {
                if names.is_empty() {
                    let path = resource_path(res, ns, None, &query);
                    match client.get(&path).await {
                        Ok(list) => {
                            for item in list["items"].as_array().into_iter().flatten() {
                                items.push((res.clone(), output::clean(item, res)));
                            }
                        }
                        Err(e) => errors.push(list_error(res, selector, fields, e)),
                    }
                } else {
                    for name in names {
                        let path = resource_path(res, ns, Some(name), &[]);
                        match client.get(&path).await {
                            Ok(obj) => items.push((res.clone(), output::clean(&obj, res))),
                            Err(e) => errors.push(e),
                        }
                    }
                }
            }
            if args.ignore_not_found {
                errors.retain(|e| !super::client::is_not_found(e));
            }
            if single && items.is_empty() && !errors.is_empty() {
                return Ok(errors);
            }
            if format == Format::Name {
                for (res, obj) in &items {
                    println!("{}", output::name_of(res, obj));
                }
            } else {
                let doc = if single && items.len() == 1 {
                    items.remove(0).1
                } else {
                    output::list_of(items.into_iter().map(|(_, o)| o).collect())
                };
                let text = if format == Format::Json {
                    output::to_json(&doc)?
                } else {
                    output::to_yaml(&doc)?
                };
                print!("{text}");
            }
        }
    }
    Ok(errors)
}

/// kubectl's wording for a failed list.
fn list_error(res: &Resource, labels: &str, fields: &str, e: CliError) -> CliError {
    match e {
        CliError::Api { .. } => e.with_context(&format!(
            "Unable to find \"{}\" that match label selector \"{labels}\", field selector \"{fields}\": ",
            res.gvr_string()
        )),
        other => other,
    }
}

/// The server's answer as a Table: servers that do not print tables answer with the object
/// or list, which is then tabled here with the same printers.
pub fn as_table(res: &Resource, answer: Value) -> Value {
    if answer["kind"] == "Table" {
        return answer;
    }
    let items: Vec<Value> = match answer["items"].as_array() {
        Some(items) => items.clone(),
        None => vec![answer],
    };
    table::to_table(&res.kind, &items, "", "Metadata", SystemTime::now())
}

/// One table holding the rows of all (same columns: one resource type).
fn merge_tables(tables: Vec<Value>) -> Option<Value> {
    let mut iter = tables.into_iter();
    let mut first = iter.next()?;
    for t in iter {
        let rows = t["rows"].as_array().cloned().unwrap_or_default();
        if let Some(Value::Array(all)) = first.get_mut("rows") {
            all.extend(rows);
        }
    }
    Some(first)
}

/// `web-0` → `pod/web-0` in the name column (the one whose format is `name`).
fn prefix_names(table: &mut Value, prefix: &str) {
    let index = table["columnDefinitions"]
        .as_array()
        .and_then(|cols| cols.iter().position(|c| c["format"] == "name"))
        .unwrap_or(0);
    if let Some(rows) = table.get_mut("rows").and_then(Value::as_array_mut) {
        for row in rows {
            if let Some(cell) = row
                .get_mut("cells")
                .and_then(Value::as_array_mut)
                .and_then(|c| c.get_mut(index))
                && let Some(name) = cell.as_str()
            {
                *cell = Value::String(format!("{prefix}/{name}"));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn targets() {
        assert_eq!(
            parse_targets(&s(&["po,svc", "a", "b"])).unwrap(),
            vec![
                ("po".to_owned(), s(&["a", "b"])),
                ("svc".to_owned(), s(&["a", "b"]))
            ]
        );
        assert_eq!(
            parse_targets(&s(&["pod/a", "svc/b", "pod/c"])).unwrap(),
            vec![
                ("pod".to_owned(), s(&["a", "c"])),
                ("svc".to_owned(), s(&["b"]))
            ]
        );
        assert!(parse_targets(&s(&["pods", "svc/b"])).is_err());
        assert!(parse_targets(&s(&["pod/"])).is_err());
    }

    #[test]
    fn kind_prefix_goes_to_the_name_column() {
        let pods = resources::builtin_by_name("po").unwrap();
        let mut t = table::to_table(
            "Pod",
            &[serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop"}})],
            "",
            "Metadata",
            SystemTime::now(),
        );
        prefix_names(&mut t, &pods.kind_prefix());
        let text = table::render(&t, false, true);
        assert!(text.starts_with("NAMESPACE   NAME        READY"), "{text}");
        assert!(text.contains("shop        pod/web-0"), "{text}");
    }
}
