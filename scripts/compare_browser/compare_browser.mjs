// inferlab's web app (its worker on WebGPU) vs transformers.js (ONNX Runtime's WebGPU back end)
// in the same headless chromium, on the same weights, served by one fake Hugging Face hub.
// Run by scripts/compare_browser.sh, which builds dist/ and exports the ONNX copies.
//
// Each round opens a fresh browser profile per engine (nothing cached), in alternating order, and
// measures: load (navigation → model ready), then two greedy generations of the same prompt: the
// first pays for compiling shaders, the second is the warm figure (TTFT and decode tok/s after the
// first token). Both engines' ids must equal each other's and the fixture's HF greedy ids.
//
//   node compare_browser.mjs   (env: INFERLAB_DIST, COMPARE_MODELS=dir with <model>/{…, onnx/model.onnx},
//                               COMPARE_MODEL=gpt2-tiny, COMPARE_ROUNDS=3, COMPARE_NEW_TOKENS=24,
//                               COMPARE_JSON=out.json, CHROMIUM)
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, writeFileSync, existsSync, statSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = resolve(process.env.INFERLAB_DIST ?? join(here, '../../dist'));
const models = resolve(process.env.COMPARE_MODELS ?? '.');
const model = process.env.COMPARE_MODEL ?? 'gpt2-tiny';
const rounds = Number(process.env.COMPARE_ROUNDS ?? 3);
const maxNew = Number(process.env.COMPARE_NEW_TOKENS ?? 24);
const SLOW = 600_000;

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
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'inferlab-compare-')), { executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args: flags });
  const page = context.pages()[0] ?? await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  return { context, page, log };
}

const testid = (id) => `[data-testid="${id}"]`;

/** inferlab: the Playground page, its own figures (the worker's step times). */
async function runInferlab(page) {
  await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${model}&page=playground`);
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
  return { load_ms, cold: await generate(), warm: await generate() };
}

/** transformers.js: the same measures from its streamer's arrival times. */
async function runTransformersJs(page) {
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
  return { load_ms, cold: await generate(), warm: await generate() };
}

const engines = { inferlab: runInferlab, 'transformers.js': runTransformersJs };
const runs = { inferlab: [], 'transformers.js': [] };
for (let round = 0; round < rounds; round++) {
  const order = round % 2 === 0 ? ['inferlab', 'transformers.js'] : ['transformers.js', 'inferlab'];
  for (const name of order) {
    const { context, page, log } = await browser();
    try {
      const result = await engines[name](page);
      const want = prompt.greedy?.new_ids ?? (runs.inferlab[0] ?? runs['transformers.js'][0])?.warm.ids ?? result.warm.ids;
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
      await context.close();
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
  tokens: rs[0].warm.ids.length,
});
const ours = summary(runs.inferlab);
const theirs = summary(runs['transformers.js']);
const report = {
  model, prompt: prompt.text, prompt_tokens: prompt.input_ids.length, new_tokens: maxNew, rounds,
  browser: 'headless chromium (WebGPU on SwiftShader)',
  inferlab: { ...ours, runs: runs.inferlab },
  transformers_js: { ...theirs, runs: runs['transformers.js'] },
  decode_speedup: ours.decode_tokens_per_s / theirs.decode_tokens_per_s,
  ttft_speedup: theirs.ttft_ms / ours.ttft_ms,
  load_speedup: theirs.load_ms / ours.load_ms,
  // The goal "TTFT with a cached model ≤ 2× one decode step": warm TTFT over the warm per-token time.
  inferlab_ttft_over_step: ours.ttft_ms * ours.decode_tokens_per_s / 1000,
};
if (process.env.COMPARE_JSON) writeFileSync(process.env.COMPARE_JSON, JSON.stringify(report, null, 2));
const row = (name, s) => `| ${name.padEnd(15)} | ${s.load_ms.toFixed(0).padStart(8)} | ${s.first_ttft_ms.toFixed(0).padStart(10)} | ${s.ttft_ms.toFixed(1).padStart(8)} | ${s.decode_tokens_per_s.toFixed(2).padStart(9)} |`;
console.log(`${model}, prompt ${prompt.input_ids.length} tokens, ${maxNew} new, greedy; medians of ${rounds} rounds, fresh profile each`);
console.log('| engine          |  load ms | 1st TTFT ms | TTFT ms | decode tok/s |');
console.log('|-----------------|----------|------------|----------|-----------|');
console.log(row('inferlab', ours));
console.log(row('transformers.js', theirs));
console.log(`inferlab / transformers.js: decode ${report.decode_speedup.toFixed(2)}x, TTFT ${report.ttft_speedup.toFixed(2)}x, load ${report.load_speedup.toFixed(2)}x; inferlab TTFT = ${report.inferlab_ttft_over_step.toFixed(2)} decode steps`);
