// The engine's Web Worker: loads the same wasm module as the page; its `main` sees that it
// runs in a worker and starts the engine loop (src/web/worker.rs).
import init from './inferlab.js';

init();
