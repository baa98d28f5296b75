//! The plugin's commands, per CNI spec 1.1.0: ADD, DEL, CHECK, GC, STATUS,
//! VERSION. Everything is synchronous; a failure is a [`CniError`] that the
//! binary prints as the spec's error JSON.

mod commands;
mod deferred;
pub mod masq;
pub mod naming;
pub mod request;
pub mod wiring;

use std::io::{Read, Write};

use podnet_api::cni::{CniEnv, CniError, Command, NetConf, version};

/// What the plugin prints on success (nothing for DEL, GC, STATUS).
pub type Output = Option<String>;

/// Runs the plugin with this process's environment and stdin; returns the
/// exit code after printing the result or error on stdout.
pub fn main_with_process_env() -> i32 {
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let env = CniEnv::from_process_env();
    let outcome = match (env, read) {
        (Err(e), _) => Err((e, version_of(&stdin))),
        (Ok(_), Err(e)) => Err((
            CniError::io(format!("reading the network config from stdin: {e}")),
            version_of(&stdin),
        )),
        (Ok(env), Ok(_)) => run(&env, &stdin).map_err(|e| (e, version_of(&stdin))),
    };
    match outcome {
        Ok(Some(text)) => {
            print_line(&text);
            0
        }
        Ok(None) => 0,
        Err((e, cni_version)) => {
            print_line(&e.to_json(&cni_version));
            1
        }
    }
}

/// Prints `text` and a newline in one `write`, so the runtime reading our
/// stdout wakes up once (`println!` of a multi-line text writes up to its
/// last newline, then the rest: two writes, two wake-ups).
fn print_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    // Nothing to do about a runtime that closed our stdout: the exit code
    // still tells it the outcome.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// The config's cniVersion when readable, for rendering errors in the
/// caller's version.
fn version_of(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .map(str::to_string)
        })
        .filter(|v| version::is_supported(v))
        .unwrap_or_else(|| version::CURRENT.to_string())
}

/// Runs one command.
pub fn run(env: &CniEnv, stdin: &[u8]) -> Result<Output, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version::version_json()));
    }
    let conf = NetConf::parse(stdin)?;
    version::check(Some(conf.cni_version.as_str()))?;
    match env.command {
        Command::Add => commands::add(env, &conf).map(Some),
        Command::Del => commands::del(env, &conf).map(|()| None),
        Command::Check => commands::check(env, &conf).map(|()| None),
        Command::Gc => commands::gc(&conf).map(|()| None),
        Command::Status => commands::status(&conf).map(|()| None),
        Command::Version => Ok(Some(version::version_json())),
    }
}
