//! The `inferlab` binary: the command line natively; in the browser, the app (in the page)
//! and the engine (in its Web Worker).

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    inferlab::native::cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    // Static constructors (the `inventory` registrations of burn's kernel compiler) run once,
    // here. Without this explicit call wasm-ld links a "command" module and wraps *every*
    // export in a call to them: each JS→wasm call (every WebGPU object handed to wasm) re-ran
    // them all, which was most of a decode step's time in the browser.
    // SAFETY: wasm-ld's synthesized constructor runner, called once per instance before any
    // other code of ours runs.
    unsafe { __wasm_call_ctors() };
    inferlab::web::start();
}

#[cfg(target_arch = "wasm32")]
unsafe extern "C" {
    fn __wasm_call_ctors();
}
