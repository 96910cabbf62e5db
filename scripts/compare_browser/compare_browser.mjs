// inferlab's web app (its worker on WebGPU) vs transformers.js (ONNX Runtime's WebGPU back end)
// in the same headless chromium, on the same weights, served by one fake Hugging Face hub.
// Run by scripts/compare_browser.sh, which builds dist/ and exports the ONNX copies.
//
// Each round opens a fresh browser profile per engine (nothing cached), in alternating order, and
// measures: load (navigation → model ready), then two greedy generations of the same prompt: the
// first pays for compiling shaders, the second is the warm figure (TTFT and decode tok/s after the
// first token). Both engines' ids must equal each other's and the fixture's HF greedy ids. After
// load it reads the resident memory of chromium's GPU process (the weights, in SwiftShader) and
// of the tab, and their peaks during the load (sampled every 200 ms), and for inferlab its worker's
// wasm memory (the page shows it). COMPARE_ENGINES=inferlab runs inferlab alone (scripts/largest_in_tab.sh);
// the engine inferlab-twins is the app with its WGSL kernels off (`?kernels=off`, tensor ops only),
// to measure what the kernels buy on this adapter.
//
//   node compare_browser.mjs   (env: INFERLAB_DIST, COMPARE_MODELS=dir with <model>/{…, onnx/model.onnx},
//                               COMPARE_MODEL=gpt2-tiny, COMPARE_ROUNDS=3, COMPARE_NEW_TOKENS=24,
//                               COMPARE_ENGINES=inferlab,transformers.js[,inferlab-twins], COMPARE_WEIGHTS=f32|f16|int8, COMPARE_TIMEOUT_S=600,
//                               COMPARE_JSON=out.json, CHROMIUM)
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, statSync, createReadStream, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(process.env.INFERLAB_DIST ?? join(here, '../../dist'));
const models = resolve(process.env.COMPARE_MODELS ?? '.');
const model = process.env.COMPARE_MODEL ?? 'gpt2-tiny';
const rounds = Number(process.env.COMPARE_ROUNDS ?? 3);
const maxNew = Number(process.env.COMPARE_NEW_TOKENS ?? 24);
const engineNames = (process.env.COMPARE_ENGINES ?? 'inferlab,transformers.js').split(',');
// inferlab's weights: f32, or f16 / int8 (converted as they load).
const weights = process.env.COMPARE_WEIGHTS ?? 'f32';
const SLOW = Number(process.env.COMPARE_TIMEOUT_S ?? 600) * 1000;

const types = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

/** Serves the files `map` finds for URL paths, with CORS (the hub is another origin). */
function serve(map) {
  const server = createServer((req, res) => {
    const file = map(decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'access-control-allow-origin': '*' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'content-length': statSync(file).size, 'access-control-allow-origin': '*' });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, url: `http://127.0.0.1:${server.address().port}` })));
}

const app = await serve((p) => join(dist, p.endsWith('/') ? `${p}index.html` : p));
const tjs = await serve((p) => join(here, p));
// The hub layout: /{repo}/resolve/{revision}/{path}
const hub = await serve((p) => {
  const m = p.match(/^\/([^/]+)\/resolve\/[^/]+\/(.+)$/);
  return m ? join(models, m[1], m[2]) : null;
});

// A fixture model brings HF's greedy ids for its prompts; a random one is checked engine against engine.
const goldenFile = join(models, model, 'golden.json');
const prompt = existsSync(goldenFile)
  ? JSON.parse(readFileSync(goldenFile, 'utf8')).prompts.find((p) => p.name === 'few_tokens')
  : { text: 'The quick brown fox', input_ids: [464, 2068, 7586, 21831] };
const flags = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

async function browser() {
  const profile = mkdtempSync(join(tmpdir(), 'inferlab-compare-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: flags });
  const page = context.pages()[0] ?? await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  // The profile holds Cache Storage's copy of the model: gigabytes for the big shapes.
  const close = async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); };
  return { close, page, log };
}

/** Resident memory (MB) of chromium's GPU process (SwiftShader's buffers: the weights) and of
 * its largest renderer (the tab and its worker: wasm memory), read from /proc (Linux). */
function chromiumRssMb() {
  const rss = { gpu: 0, renderer: 0 };
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      const kind = cmd.includes('--type=gpu-process') ? 'gpu' : cmd.includes('--type=renderer') ? 'renderer' : null;
      if (!kind) continue;
      const kb = Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)?.[1] ?? 0);
      rss[kind] = Math.max(rss[kind], kb / 1024);
    } catch { /* the process ended */ }
  }
  return rss;
}

/** Starts sampling chromiumRssMb() every 200 ms; the returned function stops it and gives the
 * peaks (the tab's memory peaks while the weights stream in, then falls). */
function samplePeakRss() {
  const peak = { gpu: 0, renderer: 0 };
  const sample = () => { const r = chromiumRssMb(); peak.gpu = Math.max(peak.gpu, r.gpu); peak.renderer = Math.max(peak.renderer, r.renderer); };
  const timer = setInterval(sample, 200);
  return () => { clearInterval(timer); sample(); return peak; };
}

const testid = (id) => `[data-testid="${id}"]`;

/** inferlab: the Playground page, its own figures (the worker's step times); `kernels` off: the
 * tensor-op twins. */
async function runInferlab(page, kernels = 'on') {
  const peak = samplePeakRss();
  await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${model}&page=playground&weights=${weights}&kernels=${kernels}`);
  const load_ms = await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="model-status"]')?.textContent ?? '';
    if (s.startsWith('failed')) throw new Error(s);
    return s.endsWith('ready') && performance.now();
  }, null, { timeout: SLOW, polling: 'raf' }).then((h) => h.jsonValue());
  const generate = async () => {
    await page.fill(testid('prompt'), prompt.text);
    await page.fill(testid('max-new-tokens'), String(maxNew));
    await page.fill(testid('temperature'), '0');
    // A new run clears the ids; wait for this run's.
    await page.click(testid('generate'));
    await page.waitForFunction(() => document.querySelector('[data-testid="output-ids"]')?.textContent === '', null, { timeout: SLOW });
    await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '') !== '', null, { timeout: SLOW, polling: 100 });
    return {
      ids: JSON.parse(await page.textContent(testid('output-ids'))),
      ttft_ms: parseFloat(await page.textContent(testid('ttft'))),
      decode_tokens_per_s: parseFloat(await page.textContent(testid('tok-s'))),
    };
  };
  const peak_mb = peak();
  const rss_mb = chromiumRssMb();
  // The worker's wasm memory after the load ("… wasm memory: 412.3 MB …"): its high-water mark.
  const worker_wasm_mb = parseFloat((await page.textContent(testid('wasm-memory'))).match(/([\d.]+) MB/)[1]);
  const cold = await generate();
  const warm = await generate();
  return { load_ms, peak_mb, rss_mb, rss_after_mb: chromiumRssMb(), worker_wasm_mb, cold, warm };
}

/** transformers.js: the same measures from its streamer's arrival times. */
async function runTransformersJs(page) {
  const peak = samplePeakRss();
  await page.goto(`${tjs.url}/transformers_js.html?hub=${encodeURIComponent(hub.url)}&model=${model}`);
  const load_ms = await page.waitForFunction(() => {
    const s = document.getElementById('status')?.textContent ?? '';
    if (s.startsWith('failed')) throw new Error(s);
    return s === 'ready' && window.loadedAt;
  }, null, { timeout: SLOW, polling: 250 }).then((h) => h.jsonValue());
  const generate = async () => {
    const { ids, step_ms } = await page.evaluate(([text, n]) => window.generate(text, n), [prompt.text, maxNew]);
    const decode = step_ms.slice(1).reduce((a, b) => a + b, 0);
    return { ids, ttft_ms: step_ms[0], decode_tokens_per_s: (step_ms.length - 1) * 1000 / decode };
  };
  const peak_mb = peak();
  const rss_mb = chromiumRssMb();
  const cold = await generate();
  const warm = await generate();
  return { load_ms, peak_mb, rss_mb, rss_after_mb: chromiumRssMb(), cold, warm };
}

const engines = { inferlab: runInferlab, 'inferlab-twins': (page) => runInferlab(page, 'off'), 'transformers.js': runTransformersJs };
const runs = Object.fromEntries(Object.keys(engines).map((name) => [name, []]));
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? engineNames : [...engineNames].reverse();
  for (const name of order) {
    const { close, page, log } = await browser();
    try {
      const result = await engines[name](page);
      const want = prompt.greedy?.new_ids ?? Object.values(runs).flat()[0]?.warm.ids ?? result.warm.ids;
      for (const g of [result.cold, result.warm]) {
        const n = Math.min(g.ids.length, want.length);
        if (JSON.stringify(g.ids.slice(0, n)) !== JSON.stringify(want.slice(0, n))) {
          throw new Error(`${name}'s greedy ids ${JSON.stringify(g.ids)} differ from ${JSON.stringify(want)} (${prompt.greedy ? "HF's" : 'the first run'})`);
        }
      }
      runs[name].push(result);
      console.error(`round ${round + 1} ${name}: load ${result.load_ms.toFixed(0)} ms, warm TTFT ${result.warm.ttft_ms.toFixed(1)} ms, ${result.warm.decode_tokens_per_s.toFixed(2)} tok/s`);
    } catch (e) {
      console.error(log.slice(-20).join('\n'));
      throw e;
    } finally {
      await close();
    }
  }
}
for (const server of [app, tjs, hub]) server.server.close();

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2; };
const summary = (rs) => ({
  load_ms: median(rs.map((r) => r.load_ms)),
  first_ttft_ms: median(rs.map((r) => r.cold.ttft_ms)),
  ttft_ms: median(rs.map((r) => r.warm.ttft_ms)),
  decode_tokens_per_s: median(rs.map((r) => r.warm.decode_tokens_per_s)),
  gpu_process_rss_mb: median(rs.map((r) => r.rss_mb.gpu)),
  tab_rss_mb: median(rs.map((r) => r.rss_mb.renderer)),
  tab_rss_after_mb: median(rs.map((r) => r.rss_after_mb.renderer)),
  gpu_process_peak_mb: median(rs.map((r) => r.peak_mb.gpu)),
  tab_peak_mb: median(rs.map((r) => r.peak_mb.renderer)),
  worker_wasm_mb: rs[0].worker_wasm_mb === undefined ? null : median(rs.map((r) => r.worker_wasm_mb)),
  tokens: rs[0].warm.ids.length,
});
const ours = runs.inferlab.length ? summary(runs.inferlab) : null;
const theirs = runs['transformers.js'].length ? summary(runs['transformers.js']) : null;
const twins = runs['inferlab-twins'].length ? summary(runs['inferlab-twins']) : null;
const report = {
  model, weights, prompt: prompt.text, prompt_tokens: prompt.input_ids.length, new_tokens: maxNew, rounds,
  browser: 'headless chromium (WebGPU on SwiftShader)',
  ...(ours && { inferlab: { ...ours, runs: runs.inferlab } }),
  ...(theirs && { transformers_js: { ...theirs, runs: runs['transformers.js'] } }),
  ...(twins && { inferlab_twins: { ...twins, runs: runs['inferlab-twins'] } }),
  // What the WGSL kernels buy on this adapter: on over off, > 1 = the kernels are faster.
  ...(ours && twins && {
    kernels_decode_speedup: ours.decode_tokens_per_s / twins.decode_tokens_per_s,
    kernels_ttft_speedup: twins.ttft_ms / ours.ttft_ms,
  }),
  ...(ours && theirs && {
    decode_speedup: ours.decode_tokens_per_s / theirs.decode_tokens_per_s,
    ttft_speedup: theirs.ttft_ms / ours.ttft_ms,
    load_speedup: theirs.load_ms / ours.load_ms,
  }),
  // The goal "TTFT with a cached model ≤ 2× one decode step": warm TTFT over the warm per-token time.
  ...(ours && { inferlab_ttft_over_step: ours.ttft_ms * ours.decode_tokens_per_s / 1000 }),
};
if (process.env.COMPARE_JSON) writeFileSync(process.env.COMPARE_JSON, JSON.stringify(report, null, 2));
const row = (name, s) => `| ${name.padEnd(15)} | ${s.load_ms.toFixed(0).padStart(8)} | ${s.first_ttft_ms.toFixed(0).padStart(10)} | ${s.ttft_ms.toFixed(1).padStart(8)} | ${s.decode_tokens_per_s.toPrecision(3).padStart(9)} | ${s.gpu_process_rss_mb.toFixed(0).padStart(7)} | ${s.tab_rss_mb.toFixed(0).padStart(6)} | ${s.tab_rss_after_mb.toFixed(0).padStart(6)} | ${s.tab_peak_mb.toFixed(0).padStart(7)} | ${(s.worker_wasm_mb?.toFixed(0) ?? '—').padStart(7)} |`;
console.log(`${model} (inferlab: ${weights} weights), prompt ${prompt.input_ids.length} tokens, ${maxNew} new, greedy; medians of ${rounds} rounds, fresh profile each`);
console.log('| engine          |  load ms | 1st TTFT ms | TTFT ms | decode tok/s | GPU MB | tab MB | tab MB after | tab peak MB | worker wasm MB |');
console.log('|-----------------|----------|------------|----------|-----------|---------|--------|--------|---------|---------|');
if (ours) console.log(row('inferlab', ours));
if (theirs) console.log(row('transformers.js', theirs));
if (twins) console.log(row('inferlab-twins', twins));
if (ours && theirs) console.log(`inferlab / transformers.js: decode ${report.decode_speedup.toFixed(2)}x, TTFT ${report.ttft_speedup.toFixed(2)}x, load ${report.load_speedup.toFixed(2)}x`);
if (ours) console.log(`inferlab TTFT = ${report.inferlab_ttft_over_step.toFixed(2)} decode steps`);
if (ours && twins) console.log(`inferlab kernels on / off: decode ${report.kernels_decode_speedup.toFixed(2)}x, TTFT ${report.kernels_ttft_speedup.toFixed(2)}x`);
