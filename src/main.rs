//! The `inferlab` binary: the command line natively. (The browser app mounts from here on
//! wasm32 once it exists.)

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    inferlab::native::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
