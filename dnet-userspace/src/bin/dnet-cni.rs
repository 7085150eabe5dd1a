//! `dnet-cni`: dnet's CNI plugin (see `dnet::cni`).

fn main() -> std::process::ExitCode {
    dnet::cni::main()
}
