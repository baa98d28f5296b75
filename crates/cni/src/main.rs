//! `podnet-cni`: the CNI plugin binary (CNI spec 1.1.0).
//!
//! The runtime execs the plugin once per pod operation, so its start-up is
//! part of every ADD and DEL. `no_main` skips std's start-up work, which this
//! short-lived process does not need: reading `/proc/self/maps` to place a
//! stack guard for the main thread and an alternate signal stack, whose only
//! use is a message on stack overflow (the process still dies on one, by
//! SIGSEGV, without the message).
// The test harness brings its own `main`.
#![cfg_attr(not(test), no_main)]

#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // As std's start-up does: a runtime that closed our stdout gets an
    // error from the write, not a process killed by SIGPIPE.
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = podnet_cni::plugin::main_with_process_env();
    // std's exit-time flush of stdout does not run without its start-up.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    code
}
