//! The `inferlab` binary: the command line natively; in the browser, the app (in the page)
//! and the engine (in its Web Worker).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    inferlab::native::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    inferlab::web::start();
}
