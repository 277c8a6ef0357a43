//! The `ray-server` binary: see `ray-server --help`.

/// mimalloc instead of the system allocator: a request makes about sixty small allocations,
/// and mimalloc's thread-local free lists serve them in a fraction of glibc's instructions
/// (docs/performance.md, "The hot path, step by step").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ray_server::cli::main()
}
