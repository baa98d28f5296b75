//! `podnet-cni`: the CNI plugin binary (CNI spec 1.1.0).

fn main() {
    std::process::exit(podnet_cni::plugin::main_with_process_env());
}
