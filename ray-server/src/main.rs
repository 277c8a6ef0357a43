//! The `ray-server` binary: see `ray-server --help`.

fn main() -> std::process::ExitCode {
    ray_server::cli::main()
}
