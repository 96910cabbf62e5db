// Browser tests of the inferlab app: headless Debian chromium with WebGPU on SwiftShader.
// Serves dist/ (built by trunk) and a fake Hugging Face hub (tests/fixtures/gpt2 in the
// hub's URL layout, on another origin with CORS), then drives the page through its
// automation contract (data-testid elements, ?hub=&model=&page=).
//
// The last tests open the page served by `inferlab app` (the native binary, INFERLAB_BIN) and
// run it on the native engine.
//
//   node tests/e2e/browser.test.mjs    (env: INFERLAB_DIST, INFERLAB_FIXTURES, INFERLAB_ARTIFACTS, CHROMIUM, INFERLAB_BIN,
//                                       INFERLAB_APP_EMBEDDED=1: the binary serves its own web app, no --dist)
import { chromium } from 'playwright-core';
import { AxeBuilder } from '@axe-core/playwright';
import { createServer } from 'node:http';
import { spawn, execFileSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, statSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, extname, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const dist = resolve(process.env.INFERLAB_DIST ?? join(root, 'dist'));
const fixtures = resolve(process.env.INFERLAB_FIXTURES ?? join(root, 'tests/fixtures/gpt2'));
const artifacts = resolve(process.env.INFERLAB_ARTIFACTS ?? join(root, 'tests/e2e/artifacts'));
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const inferlab = process.env.INFERLAB_BIN;
// The native engine on one CPU thread, and `bench kv` likewise: chromium (drawing the charts
// token by token) gets the other core, so the page's timings and the CLI's compare.
const oneThread = { ...process.env, RAYON_NUM_THREADS: '1' };
const MODEL = 'gpt2-tiny';
// SwiftShader runs WebGPU on the CPU: loading and the first kernels take a while.
const SLOW = 300_000;
mkdirSync(artifacts, { recursive: true });

const types = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json' };

/** Serves files under `base` for the URL paths `map` returns; counts requests per path. */
function serve(map, headers = {}) {
  const hits = new Map();
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const file = map(path);
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, headers).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] ?? 'application/octet-stream', 'content-length': statSync(file).size, ...headers });
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, hits, url: `http://127.0.0.1:${server.address().port}` })));
}

const app = await serve((p) => join(dist, p.endsWith('/') ? `${p}index.html` : p));
// The hub layout: /{repo}/resolve/main/{file}
const hub = await serve((p) => {
  const m = p.match(/^\/([^/]+)\/resolve\/main\/([^/]+)$/);
  // "mismatched": the draft's config with the target's weights, a file that fails its checks.
  if (m?.[1] === 'mismatched') return join(fixtures, m[2] === 'model.safetensors' ? MODEL : `${MODEL}-draft`, m[2]);
  return m ? join(fixtures, m[1], m[2]) : null;
}, { 'access-control-allow-origin': '*' });

const golden = JSON.parse(readFileSync(join(fixtures, MODEL, 'golden.json'), 'utf8'));
const prompt = golden.prompts[0];
const flags = ['--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const results = [];
let failed = 0;
// INFERLAB_E2E_ONLY=REGEX runs only the tests it matches (by hand; CI runs them all).
const only = process.env.INFERLAB_E2E_ONLY ? new RegExp(process.env.INFERLAB_E2E_ONLY) : null;
async function test(name, body) {
  if (only && !only.test(name)) return;
  const started = Date.now();
  try {
    await body();
    results.push(`ok   ${name} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    failed++;
    results.push(`FAIL ${name}: ${e.stack ?? e}`);
  }
  console.log(results.at(-1));
}

/** A fresh browser profile; `webgpu: false` leaves out --enable-unsafe-webgpu. */
async function browser({ webgpu = true } = {}) {
  const args = [...flags, ...(webgpu ? ['--enable-unsafe-webgpu'] : [])];
  const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'inferlab-chromium-')), { executablePath, headless: true, args, viewport: { width: 1280, height: 1000 } });
  const page = context.pages()[0] ?? await context.newPage();
  const log = [];
  page.on('console', (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => log.push(`[worker ${m.type()}] ${m.text()}`)));
  return { context, page, log };
}

const byId = (page, id) => page.locator(`[data-testid="${id}"]`);

// What the accessibility and legibility checks found on each page, printed at the end.
const audits = [];

/**
 * Checks the page as it stands: axe-core (WCAG 2 A/AA rules) finds no serious or critical
 * violation, and no chart text (every SVG <text>, at its size on screen) is under 11 px.
 */
async function audit(page, name) {
  const { violations } = await new AxeBuilder({ page }).withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']).analyze();
  const grave = violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const smallest = await page.evaluate(() => {
    let min = Infinity;
    let count = 0;
    for (const t of document.querySelectorAll('svg text')) {
      const box = t.getBoundingClientRect();
      const m = t.getScreenCTM();
      if (!m || box.width === 0 || !t.textContent.trim()) continue;
      count++;
      min = Math.min(min, parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b));
    }
    return { min, count };
  });
  audits.push(`${name}: axe ${grave.length} serious/critical of ${violations.length}; smallest chart text ${smallest.count ? smallest.min.toFixed(1) + ' px' : '(none)'} over ${smallest.count} labels`);
  console.log(`     ${audits.at(-1)}`);
  assert.deepEqual(grave.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(' ')).slice(0, 3).join(', ')})`), [], `axe on ${name}`);
  assert.ok(smallest.count === 0 || smallest.min >= 11, `chart text of ${smallest.min} px on ${name}`);
}

async function waitReady(page) {
  await page.waitForFunction(() => {
    const s = document.querySelector('[data-testid="model-status"]')?.textContent ?? '';
    if (s.startsWith('failed')) throw new Error(s);
    return s.endsWith('ready');
  }, null, { timeout: SLOW, polling: 250 });
  return byId(page, 'model-status').textContent();
}

/** Greedy generation in the playground; returns the new ids. */
async function generateGreedy(page, text, maxNew) {
  await byId(page, 'prompt').fill(text);
  await byId(page, 'max-new-tokens').fill(String(maxNew));
  await byId(page, 'temperature').fill('0');
  await byId(page, 'generate').click();
  await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '') !== '', null, { timeout: SLOW, polling: 250 });
  return JSON.parse(await byId(page, 'output-ids').textContent());
}

const { context, page, log } = await browser();
try {
  await test('hub load + greedy parity with transformers', async () => {
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground`);
    const status = await waitReady(page);
    assert.match(status, new RegExp(MODEL));
    assert.doesNotMatch(status, /from cache/);
    // The device asks for the adapter's limits, not WebGPU's 128 MiB default binding.
    const adapter = await byId(page, 'adapter').textContent();
    const binding = Number(adapter.match(/storage bindings up to (\d+) MiB/)?.[1]);
    console.log(`     ${adapter}`);
    assert.ok(binding > 128, adapter);
    // The worker's wasm memory after the load, as the page reports it (scripts/compare_browser reads it).
    const wasm = await byId(page, 'wasm-memory').textContent();
    console.log(`     ${wasm}`);
    assert.ok(Number(wasm.match(/wasm memory: ([\d.]+) MB/)?.[1]) > 0, wasm);
    const started = Date.now();
    const ids = await generateGreedy(page, prompt.text, prompt.greedy.new_ids.length);
    const ttft = await byId(page, 'ttft').textContent();
    const tokS = await byId(page, 'tok-s').textContent();
    console.log(`     ${ids.length} tokens in ${((Date.now() - started) / 1000).toFixed(1)} s, TTFT ${ttft}, ${tokS} tok/s`);
    await page.screenshot({ path: join(artifacts, 'playground.png'), fullPage: true });
    assert.deepEqual(ids, prompt.greedy.new_ids);
    assert.equal((await byId(page, 'output-text').textContent()), prompt.greedy.text);
    await audit(page, 'Playground');
  });

  await test('Stop ends a generation between two steps', async () => {
    await byId(page, 'max-new-tokens').fill('200');
    await byId(page, 'generate').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="token-count"]')?.textContent) >= 3, null, { timeout: SLOW, polling: 100 });
    await byId(page, 'stop').click();
    await page.waitForFunction(() => (document.querySelector('[data-testid="output-ids"]')?.textContent ?? '') !== '', null, { timeout: SLOW, polling: 100 });
    const ids = JSON.parse(await byId(page, 'output-ids').textContent());
    assert.ok(ids.length >= 3 && ids.length < 200, `${ids.length} tokens`);
    const n = Math.min(ids.length, prompt.greedy.new_ids.length);
    assert.deepEqual(ids.slice(0, n), prompt.greedy.new_ids.slice(0, n), 'a greedy prefix');
    assert.equal(await byId(page, 'stop-reason').textContent(), 'stopped: cancelled');
  });

  await test('reload: the model comes from Cache Storage', async () => {
    const downloads = hub.hits.get(`/${MODEL}/resolve/main/model.safetensors`);
    await page.reload();
    const status = await waitReady(page);
    assert.match(status, /from cache/);
    assert.equal(hub.hits.get(`/${MODEL}/resolve/main/model.safetensors`), downloads, 'no second download');
  });

  await test('f16 weights (?weights=f16): rounded as they stream in, the golden greedy ids', async () => {
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground&weights=f16`);
    const status = await waitReady(page);
    assert.match(status, /f16 weights/);
    assert.equal(await byId(page, 'weights-dtype').inputValue(), 'f16');
    const ids = await generateGreedy(page, prompt.text, prompt.greedy.new_ids.length);
    assert.deepEqual(ids, prompt.greedy.new_ids);
    // The pages after this one check f32 goldens.
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground`);
    assert.doesNotMatch(await waitReady(page), /f16/);
  });

  await test('int8 weights (?weights=int8): quantized as they stream in, the native engine\'s int8 greedy ids', async () => {
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground&weights=int8`);
    const status = await waitReady(page);
    assert.match(status, /int8 weights/);
    assert.equal(await byId(page, 'weights-dtype').inputValue(), 'int8');
    // int8 moves random weights' near-flat choices away from transformers' f32 ones, so the
    // oracle is the native engine quantizing alike (its CPU row dots).
    const native = JSON.parse(execFileSync(inferlab, ['generate', '--model', join(fixtures, MODEL), '--prompt-ids', prompt.input_ids.join(','), '--max-new-tokens', String(prompt.greedy.new_ids.length), '--dtype', 'int8', '--device', 'cpu', '--json'], { encoding: 'utf8', env: oneThread }));
    const ids = await generateGreedy(page, prompt.text, prompt.greedy.new_ids.length);
    assert.deepEqual(ids, native.generated_ids);
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground`);
    assert.doesNotMatch(await waitReady(page), /int8/);
  });

  await test('KV page: both series, the same tokens and a speedup > 1', async () => {
    // A long prompt (the longest golden one, 4 times: ~220 of gpt2-tiny's 256 positions):
    // recomputing it every step is what the cache saves. Short ones are dominated by
    // SwiftShader's fixed cost per step, the same with and without the cache.
    const long = golden.prompts.reduce((a, b) => (b.num_tokens > a.num_tokens ? b : a));
    const tokens = 24;
    await byId(page, 'tab-kv').click();
    await byId(page, 'kv-prompt').fill(Array(4).fill(long.text).join(' '));
    await byId(page, 'kv-tokens').fill(String(tokens));
    await byId(page, 'kv-run').click();
    await byId(page, 'kv-speedup').waitFor({ timeout: SLOW });
    const speedup = Number(await byId(page, 'kv-speedup').textContent());
    const points = await page.$$eval('[data-testid="kv-chart"] polyline', (ls) => ls.map((l) => l.getAttribute('points').trim().split(/\s+/).length));
    console.log(`     speedup ${speedup}×, points per series ${points}`);
    assert.equal(points.length, 2);
    assert.ok(points.every((n) => n === tokens), `a point per token, got ${points}`);
    assert.ok(speedup > 1, `speedup ${speedup}`);
    assert.match(await byId(page, 'kv-same').textContent(), /same tokens/);
    await byId(page, 'drift-window').fill('4');
    await byId(page, 'drift-tokens').fill('8');
    await byId(page, 'drift-run').click();
    await page.waitForFunction(() => document.querySelector('[data-testid="drift-chart"] polyline')?.getAttribute('points').trim().split(/\s+/).length === 8, null, { timeout: SLOW, polling: 250 });
    assert.equal(await page.locator('[data-testid="ring"] .slot').count(), 4);
    assert.equal(await page.locator('[data-testid="ring"] .slot.fresh').count(), 1);
    await checkCacheMap(page, tokens);
    await page.screenshot({ path: join(artifacts, 'kv-cache.png'), fullPage: true });
    await audit(page, 'KV Cache');
  });

  await test('f16 KV cache (?kv_dtype=f16): the golden greedy ids, and the KV page shows half the f32 bytes', async () => {
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground&kv_dtype=f16`);
    const status = await waitReady(page);
    assert.match(status, /f16 KV cache/);
    assert.doesNotMatch(status, /f16 weights/);
    assert.equal(await byId(page, 'kv-dtype').inputValue(), 'f16');
    // Keys and values rounded to f16 as the kernels store them: transformers' greedy ids still.
    const ids = await generateGreedy(page, prompt.text, prompt.greedy.new_ids.length);
    assert.deepEqual(ids, prompt.greedy.new_ids);
    const [, layers, , width] = status.match(/(\d+) layers × (\d+) heads × (\d+)/).map(Number);
    const tokens = 6;
    await byId(page, 'tab-kv').click();
    await byId(page, 'kv-prompt').fill(prompt.text);
    await byId(page, 'kv-tokens').fill(String(tokens));
    await byId(page, 'kv-run').click();
    await byId(page, 'kv-cache-bytes').waitFor({ timeout: SLOW });
    assert.match(await byId(page, 'kv-same').textContent(), /same tokens/);
    assert.equal(await byId(page, 'kv-cache-dtype').textContent(), 'f16');
    const promptTokens = Number(await byId(page, 'kv-prompt-tokens').textContent());
    const bytes = Number(await byId(page, 'kv-cache-bytes').getAttribute('data-bytes'));
    const f32 = 2 * layers * width * (promptTokens + tokens) * 4;
    console.log(`     KV cache ${bytes} bytes in f16 (${f32} in f32): "${await byId(page, 'kv-cache-bytes').textContent()}"`);
    assert.equal(bytes, f32 / 2);
    assert.match(await byId(page, 'memory-kv-dtype').textContent(), /f16/);
    // The pages after this one check f32 goldens.
    await page.goto(`${app.url}/?hub=${encodeURIComponent(hub.url)}&model=${MODEL}&page=playground`);
    assert.doesNotMatch(await waitReady(page), /f16/);
  });

  await test('Batching page: every element, continuous beats static, a real run equals solo greedy', async () => {
    await byId(page, 'tab-batching').click();
    // The step cost is measured on the loaded model when the page opens.
    await byId(page, 'batching-cost').waitFor({ timeout: SLOW });
    console.log(`     ${await byId(page, 'batching-cost').textContent()}`);
    for (const id of ['batching-run', 'batching-policy', 'batching-timeline', 'batching-real-run']) {
      assert.equal(await byId(page, id).count(), 1, id);
    }
    // A bursty, overloaded workload with long-tailed outputs.
    await byId(page, 'batching-burst').fill('8');
    await byId(page, 'batching-rate').fill('200');
    await byId(page, 'batching-requests').fill('48');
    await byId(page, 'batching-run').click();
    await page.locator('[data-testid="batching-throughput"][data-policy="continuous"]').waitFor({ timeout: SLOW });
    const throughput = Object.fromEntries(await page.$$eval('[data-testid="batching-throughput"]', (els) => els.map((e) => [e.dataset.policy, Number(e.textContent)])));
    console.log(`     simulated throughput (tok/s): ${JSON.stringify(throughput)}`);
    assert.deepEqual(Object.keys(throughput).sort(), ['continuous', 'dynamic', 'static']);
    assert.ok(throughput.continuous > throughput.static, `continuous ${throughput.continuous} vs static ${throughput.static}`);
    assert.ok(await page.locator('[data-testid="batching-timeline"] rect').count() > 48, 'a lane per request');
    assert.ok(await page.locator('[data-testid="batching-blocks"] rect').count() >= 64, 'a cell per KV block');
    await page.screenshot({ path: join(artifacts, 'batching.png'), fullPage: true });
    await audit(page, 'Batching');
    await byId(page, 'batching-real-run').click();
    await byId(page, 'batching-real-match').waitFor({ timeout: SLOW });
    const match = await byId(page, 'batching-real-match').textContent();
    console.log(`     ${match}`);
    assert.match(match, /4 of 4$/);
    assert.ok(await page.locator('[data-testid="batching-real-timeline"] rect').count() >= 4);
    await page.screenshot({ path: join(artifacts, 'batching-real-run.png'), fullPage: true });
  });

  await test('Speculative page: greedy with the draft model gives the golden ids; early exit shows α and a speedup', async () => {
    await byId(page, 'tab-speculative').click();
    const assisted = golden.assisted_greedy_with_draft.results[0];
    const text = golden.prompts.find((p) => p.name === assisted.prompt).text;
    await byId(page, 'spec-draft-repo').fill(golden.assisted_greedy_with_draft.draft_model);
    await byId(page, 'spec-load-draft').click();
    await page.locator('[data-testid="spec-draft"] option[value="model"]').waitFor({ state: 'attached', timeout: SLOW });
    await byId(page, 'spec-draft').selectOption('model');
    await byId(page, 'spec-prompt').fill(text);
    await byId(page, 'spec-gamma').fill('3');
    await byId(page, 'spec-temperature').fill('0');
    // SwiftShader runs each forward slowly, on the CPU: a short run, and no γ sweep yet.
    const expected = assisted.new_ids.slice(0, 12);
    await byId(page, 'spec-tokens').fill(String(expected.length));
    await byId(page, 'spec-sweep').fill('');
    const idle = () => page.waitForFunction(() => !document.querySelector('[data-testid="spec-run"]').disabled, null, { timeout: SLOW, polling: 250 });
    await byId(page, 'spec-run').click();
    await byId(page, 'spec-output-ids').waitFor({ timeout: SLOW });
    assert.deepEqual(JSON.parse(await byId(page, 'spec-output-ids').textContent()), expected);
    await idle();
    await page.screenshot({ path: join(artifacts, 'speculative-draft-model.png'), fullPage: true });

    await byId(page, 'spec-draft').selectOption('layers:1');
    await byId(page, 'spec-tokens').fill('8');
    await byId(page, 'spec-sweep').fill('1,2,4');
    await byId(page, 'spec-run').click();
    await byId(page, 'spec-speedup').waitFor({ timeout: SLOW });
    await idle();
    const alpha = Number(await byId(page, 'spec-alpha').textContent());
    const speedup = Number(await byId(page, 'spec-speedup').textContent());
    const series = await page.locator('[data-testid="spec-chart"] polyline').count();
    console.log(`     early exit: α ${alpha}, measured speedup ${speedup}×, ${series} series in the γ chart`);
    assert.ok(alpha >= 0 && alpha <= 1, `α ${alpha}`);
    assert.ok(speedup > 0, `speedup ${speedup}`);
    assert.ok(series >= 3, 'measured, theory per γ, theory curve');
    assert.ok(await page.locator('[data-testid="spec-passes"] .pass').count() > 0);
    await page.screenshot({ path: join(artifacts, 'speculative.png'), fullPage: true });
    await audit(page, 'Speculative');
  });

  await test('Beam page: the golden beams, num_beams kept nodes per step', async () => {
    await byId(page, 'tab-beam').click();
    const prompt = golden.prompts.find((p) => p.name === 'few_tokens');
    const params = prompt.beam.params;
    await byId(page, 'beam-prompt').fill(prompt.text);
    await byId(page, 'beam-num-beams').fill(String(params.num_beams));
    await byId(page, 'beam-length-penalty').fill(String(params.length_penalty));
    await byId(page, 'beam-early-stopping').selectOption(String(params.early_stopping));
    await byId(page, 'beam-tokens').fill(String(params.max_new_tokens));
    await byId(page, 'beam-run').click();
    await byId(page, 'beam-output').waitFor({ timeout: SLOW });
    assert.deepEqual(JSON.parse(await byId(page, 'beam-output').textContent()), prompt.beam.new_ids);
    const kept = await page.$$eval('[data-testid="beam-tree"] g.step', (steps) => steps.map((s) => s.querySelectorAll('g.node.kept').length));
    console.log(`     kept beams per step: ${kept.join(' ')}`);
    assert.equal(kept.length, params.max_new_tokens);
    assert.ok(kept.slice(0, -1).every((n) => n === params.num_beams), `${kept}`);
    assert.equal(await page.locator('[data-testid="beam-tree"] g.node.best').count(), params.max_new_tokens, 'the best beam traced through every step');
    await page.screenshot({ path: join(artifacts, 'beam.png'), fullPage: true });
    await audit(page, 'Beam search');
  });

  await test('Inside a step page: attention and the logit lens equal transformers, every op timed, a trace to download', async () => {
    await checkInternals(page, 'internals.png');
    await audit(page, 'Inside a step');
  });

  await test('local files by the picker', async () => {
    await page.goto(`${app.url}/?page=playground`);
    await byId(page, 'model-status').filter({ hasText: 'no model loaded' }).waitFor({ timeout: SLOW });
    await byId(page, 'file-input').setInputFiles(['config.json', 'tokenizer.json', 'model.safetensors'].map((f) => join(fixtures, MODEL, f)));
    const status = await waitReady(page);
    assert.match(status, /local files/);
    assert.deepEqual(await generateGreedy(page, prompt.text, 8), prompt.greedy.new_ids.slice(0, 8));
  });

  await test('local files by drag-and-drop', async () => {
    await page.goto(`${app.url}/?page=playground`);
    await byId(page, 'model-status').filter({ hasText: 'no model loaded' }).waitFor({ timeout: SLOW });
    await page.evaluate(async ({ hub, model }) => {
      const files = new DataTransfer();
      for (const name of ['config.json', 'tokenizer.json', 'model.safetensors']) {
        const blob = await (await fetch(`${hub}/${model}/resolve/main/${name}`)).blob();
        files.items.add(new File([blob], name));
      }
      document.querySelector('.model-panel').dispatchEvent(new DragEvent('drop', { dataTransfer: files, bubbles: true, cancelable: true }));
    }, { hub: hub.url, model: MODEL });
    assert.match(await waitReady(page), /local files/);
  });

  await test('offline demo pair', async () => {
    await byId(page, 'load-demo').click();
    assert.match(await waitReady(page), /demo target/);
    await byId(page, 'tab-playground').click();
    const ids = await generateGreedy(page, 'fn main() {', 4);
    assert.equal(ids.length, 4);
  });

  await test('a bad hub repo or a mismatched model.safetensors: a clear error, and the loaded model stays', async () => {
    await page.locator('details.settings summary').click();
    await byId(page, 'hub-url').fill(hub.url);
    await byId(page, 'repo').fill('no-such-model');
    await byId(page, 'load-hub').click();
    await byId(page, 'error').waitFor({ timeout: SLOW });
    assert.match(await byId(page, 'error').textContent(), /loading failed: .*no-such-model.*404/);
    assert.match(await waitReady(page), /demo target/);
    // The weights stream to the GPU, but their header is checked before the old model goes.
    await byId(page, 'repo').fill('mismatched');
    await byId(page, 'load-hub').click();
    await page.waitForFunction(() => !/404/.test(document.querySelector('[data-testid="error"]')?.textContent ?? '404'), null, { timeout: SLOW });
    assert.match(await byId(page, 'error').textContent(), /loading failed: .*(has shape|does not describe)/);
    assert.match(await waitReady(page), /demo target/);
  });
} finally {
  if (failed) console.log(log.slice(-80).join('\n'));
  await context.close();
}

await test('no WebGPU: the page says so', async () => {
  const plain = await browser({ webgpu: false });
  try {
    await plain.page.goto(`${app.url}/`);
    await byId(plain.page, 'no-webgpu').waitFor({ timeout: 120_000 });
    assert.match(await byId(plain.page, 'no-webgpu').textContent(), /WebGPU is not available/);
    await plain.page.screenshot({ path: join(artifacts, 'no-webgpu.png'), fullPage: true });
    await audit(plain.page, 'no WebGPU');
  } finally {
    await plain.context.close();
  }
});

await test('unreachable hub: the first screen leads to the offline demo model', async () => {
  const fresh = await browser();
  try {
    // Port 9 (discard) on loopback: nothing answers, as with no network.
    await fresh.page.goto(`${app.url}/?hub=${encodeURIComponent('http://127.0.0.1:9')}&model=openai-community/gpt2`);
    await fresh.page.waitForFunction(() => (document.querySelector('[data-testid="model-status"]')?.textContent ?? '').startsWith('failed'), null, { timeout: SLOW, polling: 250 });
    await byId(fresh.page, 'demo-offer').waitFor({ timeout: SLOW });
    await fresh.page.screenshot({ path: join(artifacts, 'offline-first-screen.png'), fullPage: true });
    await audit(fresh.page, 'offline first screen');
    await byId(fresh.page, 'demo-offer-load').click();
    assert.match(await waitReady(fresh.page), /demo target/);
    assert.equal(await byId(fresh.page, 'demo-offer').count(), 0);
  } finally {
    await fresh.context.close();
  }
});

await test('the demo pair as a newcomer meets it: the Start page, then every page on it (the book\'s screenshots)', async () => {
  const fresh = await browser();
  const { page } = fresh;
  const shot = (name) => page.screenshot({ path: join(artifacts, `demo-${name}.png`), fullPage: true });
  const idle = (button) => page.waitForFunction((id) => !document.querySelector(`[data-testid="${id}"]`)?.disabled, button, { timeout: SLOW, polling: 250 });
  /** Opens a page (its tab), fills its fields, presses `button` once it is enabled, waits for `done`. */
  const runOn = async (tab, fields, button, done) => {
    if (tab) await byId(page, tab).click();
    for (const [id, value] of Object.entries(fields)) await byId(page, id).fill(value);
    await idle(button);
    await byId(page, button).click();
    await done.waitFor({ timeout: SLOW });
  };
  try {
    await page.goto(`${app.url}/`);
    await byId(page, 'home').waitFor({ timeout: SLOW });
    await shot('start');
    await audit(page, 'Start');
    await byId(page, 'home-start').click();
    assert.match(await waitReady(page), /demo target/);
    // The Playground's prompt is the demo's own (Rust); greedy, so the text is the model's best.
    await runOn(null, { 'max-new-tokens': '40' }, 'generate', byId(page, 'output-ids').filter({ hasText: /\d/ }));
    console.log(`     playground: ${JSON.stringify(await byId(page, 'output-text').textContent())}`);
    await shot('playground');

    await runOn('tab-kv', { 'kv-tokens': '32' }, 'kv-run', byId(page, 'kv-speedup'));
    await checkCacheMap(page, 32);
    await shot('kv-cache');

    await byId(page, 'tab-batching').click();
    await byId(page, 'batching-cost').waitFor({ timeout: SLOW });
    console.log(`     batching: default rate ${await byId(page, 'batching-rate').inputValue()} req/s`);
    await runOn(null, {}, 'batching-run', page.locator('[data-testid="batching-throughput"][data-policy="continuous"]'));
    const throughput = Object.fromEntries(await page.$$eval('[data-testid="batching-throughput"]', (els) => els.map((e) => [e.dataset.policy, Number(e.textContent)])));
    const curve = await page.$$eval('[data-testid="batching-rate-chart"] polyline', (ls) => ls.map((l) => l.dataset.series + ' ' + l.getAttribute('points')));
    console.log(`     batching: throughput ${JSON.stringify(throughput)}; rate sweep ${curve.length} series`);
    await shot('batching');
    await audit(page, 'Batching (demo)');

    await byId(page, 'tab-speculative').click();
    // The demo pair's draft came with it, and is the page's drafter.
    await page.locator('[data-testid="spec-draft"] option[value="model"]').waitFor({ state: 'attached', timeout: SLOW });
    assert.equal(await byId(page, 'spec-draft').inputValue(), 'model');
    await runOn(null, { 'spec-tokens': '32', 'spec-sweep': '1,2,4' }, 'spec-run', byId(page, 'spec-speedup'));
    await idle('spec-run');
    const alpha = Number(await byId(page, 'spec-alpha').textContent());
    const speedup = Number(await byId(page, 'spec-speedup').textContent());
    console.log(`     speculative, the demo draft at γ 4: α ${alpha}, measured speedup ${speedup}×`);
    assert.ok(alpha > 0.5, `greedy α of the demo pair: ${alpha}`);
    await shot('speculative');

    await runOn('tab-beam', { 'beam-tokens': '12' }, 'beam-run', byId(page, 'beam-output'));
    await shot('beam');
    await audit(page, 'Beam search (demo)');

    await runOn('tab-internals', { 'internals-prompt': 'pub fn len(&self) -> usize {' }, 'internals-run', byId(page, 'internals-lens'));
    await shot('internals');
  } finally {
    await fresh.context.close();
  }
});

/**
 * The KV page's picture of the cache after its run of `tokens` new tokens: a cell per stored key
 * (layers × heads × tokens stored: the prompt and every new token but the last), the ring's
 * newest slot holding the last stored token, and the paged cache's block tables (A: this run;
 * B: the same prompt, sharing A's full prompt blocks but the one holding its last token).
 */
async function checkCacheMap(page, tokens) {
  const status = await byId(page, 'model-status').textContent();
  const [, layers, heads] = status.match(/(\d+) layers × (\d+) heads/).map(Number);
  const promptTokens = Number(await byId(page, 'kv-prompt-tokens').textContent());
  const stored = promptTokens + tokens - 1;
  // It plays the filling once, a step at a time.
  await byId(page, 'cache-stored').filter({ hasText: new RegExp(`^${stored} of ${promptTokens + tokens} slots`) }).waitFor({ timeout: SLOW });
  assert.equal(await page.locator('[data-testid="cache-contiguous"] rect title').count(), layers * heads * stored, 'a cell per stored key');
  const window = 8;
  const newest = await page.locator('[data-testid="cache-ring"] rect.newest title').allTextContents();
  assert.equal(newest.length, heads, 'the newest slot in every head');
  assert.ok(newest.every((t) => t.startsWith(`slot ${(stored - 1) % window} · token ${stored - 1} `)), newest[0]);
  assert.equal(await page.locator('[data-testid="cache-ring"] rect.oldest').count(), heads);
  const bs = 4;
  const tables = page.locator('[data-testid="cache-paged"] .block-table');
  assert.equal(await tables.nth(0).locator('.entry').count(), Math.ceil(stored / bs));
  assert.equal(await tables.nth(1).locator('.entry').count(), Math.ceil(promptTokens / bs));
  const shared = Math.floor((promptTokens - 1) / bs);
  assert.deepEqual(
    await tables.nth(1).locator('.entry.shared').allTextContents(),
    (await tables.nth(0).locator('.entry').allTextContents()).slice(0, shared),
    'the first blocks of B are those of A',
  );
  console.log(`     cache drawn: ${stored} keys × ${layers} layers × ${heads} heads; ring of ${window}; ${shared} blocks shared`);
}

/**
 * Runs the Inside-a-step page on the 'code' prompt and checks it against transformers
 * (golden_inspect.json): the maps' count, the enlarged map's every weight, the lens's output row;
 * then every op of both steps in the bars and in the downloadable trace.
 */
async function checkInternals(page, screenshot) {
  const inspectGolden = JSON.parse(readFileSync(join(fixtures, MODEL, 'golden_inspect.json'), 'utf8'));
  const config = JSON.parse(readFileSync(join(fixtures, MODEL, 'config.json'), 'utf8'));
  const code = golden.prompts.find((p) => p.name === 'code');
  const expected = inspectGolden.cases.find((c) => c.prompt === 'code');
  await byId(page, 'tab-internals').click();
  await byId(page, 'internals-prompt').fill(code.text);
  await byId(page, 'internals-run').click();
  await byId(page, 'internals-lens').waitFor({ timeout: SLOW });
  assert.equal(await byId(page, 'internals-tokens').locator('.tok-prompt').count(), code.num_tokens);
  assert.equal(await byId(page, 'internals-attention').count(), config.n_layer * config.n_head);
  const last = config.n_layer - 1;
  await page.locator(`[data-testid="internals-attention"][data-layer="${last}"][data-head="1"]`).click();
  const weights = await page.$$eval('.attention-detail rect[data-weight]', (rs) => rs.map((r) => Number(r.dataset.weight)));
  const t = code.num_tokens;
  // Rows: the prompt's queries over every key (zeros past the diagonal), then the decode step's query.
  const reference = [...expected.attentions[last][1].flat(), ...expected.decode_attentions[last][1]];
  assert.equal(weights.length, reference.length, 'every cell of the enlarged map');
  weights.forEach((w, i) => assert.ok(Math.abs(w - reference[i]) <= 1e-4, `cell ${i}: ${w} vs ${reference[i]}`));
  const lensRows = await byId(page, 'internals-lens').locator('tbody tr').count();
  assert.equal(lensRows, config.n_layer);
  const outputRow = await byId(page, 'internals-lens').locator('tbody tr').last().locator('td').evaluateAll((tds) => tds.map((td) => Number(td.title.split('\n')[0].match(/ ([0-9.]+)%$/)[1])));
  outputRow.forEach((pct, p) => assert.ok(Math.abs(pct - expected.lens[last].top_probs[p][0] * 100) <= 0.051, `lens output at ${p}: ${pct}%`));
  const opsPerStep = 1 + config.n_layer * 8 + 3;
  assert.equal(await byId(page, 'internals-timing').locator('svg rect').count(), 2 * opsPerStep, 'every op of the prefill and the decode step');
  const how = await byId(page, 'internals-timing').locator('xpath=preceding-sibling::p[1]').textContent();
  console.log(`     timing: ${how.slice(0, 60)}…`);
  const href = await byId(page, 'internals-trace').getAttribute('href');
  const trace = JSON.parse(decodeURIComponent(href.slice(href.indexOf(',') + 1)));
  const events = trace.traceEvents.filter((e) => e.ph === 'X');
  assert.equal(events.filter((e) => e.cat === 'step').length, 2);
  assert.equal(events.filter((e) => e.cat !== 'step').length, 2 * opsPerStep);
  await page.screenshot({ path: join(artifacts, screenshot), fullPage: true });
}

/** Starts `inferlab app ARGS…` and returns it with the URL it prints. */
async function nativeApp(args) {
  assert.ok(inferlab && existsSync(inferlab), `INFERLAB_BIN must name the native inferlab binary (got ${inferlab})`);
  // An `embed` build (scripts/check_bundle.sh) is given no folder: it serves the app built into it.
  const embedded = Boolean(process.env.INFERLAB_APP_EMBEDDED);
  const { INFERLAB_DIST: _, ...env } = oneThread;
  const child = spawn(inferlab, ['app', '--no-open', '--port', '0', ...(embedded ? [] : ['--dist', dist]), ...args], { stdio: ['ignore', 'pipe', 'inherit'], env });
  const lines = createInterface({ input: child.stdout });
  const first = await new Promise((ok, fail) => {
    lines.once('line', ok);
    child.once('exit', (code) => fail(new Error(`inferlab app exited with ${code}`)));
  });
  const url = first.match(/open (http:\/\/\S+)/)?.[1];
  assert.ok(url, first);
  return { child, url };
}

await test('inferlab app: Playground and KV pages on the native engine, the same ids; switching engines', async () => {
  const native = await nativeApp(['--device', 'cpu', '--model', join(fixtures, MODEL)]);
  const tab = await browser();
  try {
    const { page } = tab;
    await page.goto(`${native.url}&page=playground`);
    const status = await waitReady(page);
    assert.match(status, new RegExp(MODEL));
    const engine = await byId(page, 'engine-switch').evaluate((s) => s.selectedOptions[0].textContent);
    console.log(`     engine: ${engine}`);
    assert.match(engine, /^native \(cpu: CPU, 1 thread\)/);
    assert.equal(await byId(page, 'engine').getAttribute('data-kind'), 'native');
    const ids = await generateGreedy(page, prompt.text, prompt.greedy.new_ids.length);
    assert.deepEqual(ids, prompt.greedy.new_ids);
    assert.equal(await byId(page, 'output-text').textContent(), prompt.greedy.text);
    await page.screenshot({ path: join(artifacts, 'app-playground.png'), fullPage: true });
    await checkInternals(page, 'app-internals.png');

    // The KV page's benchmark on the native engine beside `inferlab bench kv` on the same device,
    // model and lengths, alternated three times (medians: this machine is shared and noisy).
    // The page's figures are the engine's own step times. Printed, not asserted.
    const long = golden.prompts.reduce((a, b) => (b.num_tokens > a.num_tokens ? b : a));
    const tokens = 64;
    await byId(page, 'tab-kv').click();
    await byId(page, 'kv-prompt').fill(Array(3).fill(long.text).join(' '));
    await byId(page, 'kv-tokens').fill(String(tokens));
    const decodeMs = (steps) => steps.slice(1).reduce((a, b) => a + b, 0) / (steps.length - 1);
    const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    const rounds = { page: [], cli: [] };
    for (let round = 0; round < 3; round++) {
      await byId(page, 'kv-run').click();
      await page.waitForFunction(() => !document.querySelector('[data-testid="kv-run"]').disabled && document.querySelector('[data-testid="kv-speedup"]'), null, { timeout: SLOW, polling: 100 });
      assert.match(await byId(page, 'kv-same').textContent(), /same tokens/);
      const seen = { speedup: Number(await byId(page, 'kv-speedup').textContent()), with: Number(await byId(page, 'kv-with-ms').textContent()), without: Number(await byId(page, 'kv-without-ms').textContent()) };
      assert.ok(seen.speedup > 1, `speedup ${seen.speedup}`);
      rounds.page.push(seen);
      const promptTokens = Number(await byId(page, 'kv-prompt-tokens').textContent());
      const bench = JSON.parse(execFileSync(inferlab, ['bench', 'kv', '--model', join(fixtures, MODEL), '--device', 'cpu', '--prompt-tokens', String(promptTokens), '--new-tokens', String(tokens), '--json'], { encoding: 'utf8', env: oneThread }));
      const cli = { with: decodeMs(bench.per_token_ms.with_cache), without: decodeMs(bench.per_token_ms.without_cache) };
      rounds.cli.push({ ...cli, speedup: cli.without / cli.with });
    }
    await page.screenshot({ path: join(artifacts, 'app-kv-cache.png'), fullPage: true });
    const med = (side, key) => median(rounds[side].map((r) => r[key]));
    console.log(`     KV page on native vs bench kv (medians of 3, ${tokens} tokens): with cache ${med('page', 'with').toFixed(3)} vs ${med('cli', 'with').toFixed(3)} ms/token, without ${med('page', 'without').toFixed(3)} vs ${med('cli', 'without').toFixed(3)}, speedup ${med('page', 'speedup').toFixed(2)}× vs ${med('cli', 'speedup').toFixed(2)}× (page/bench ${(med('page', 'speedup') / med('cli', 'speedup')).toFixed(3)})`);

    // What the WebSocket adds per token: arrival gaps in the page minus the engine's step times.
    // (A socket of its own takes the engine over; the model stays loaded.)
    const gaps = await page.evaluate(async ({ text, n }) => {
      const ws = new WebSocket(`ws://${location.host}/ws${location.search}`);
      const arrivals = [];
      return await new Promise((ok, fail) => {
        ws.onmessage = (event) => {
          const m = JSON.parse(event.data);
          if (m.Loaded) ws.send(JSON.stringify({ Generate: { run: 'Playground', prompt: text, max_new_tokens: n, sampling: { temperature: 0, top_k: 0, top_p: 1, repetition_penalty: 1, seed: 0 }, kv: 'contiguous' } }));
          if (m.Token) arrivals.push([performance.now(), m.Token.step_ms]);
          if (m.Error) fail(new Error(m.Error.message));
          if (m.Done) {
            ws.close();
            ok(arrivals.slice(2).map(([t, step], i) => t - arrivals[i + 1][0] - step));
          }
        };
      });
    }, { text: prompt.text, n: 128 });
    gaps.sort((a, b) => a - b);
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    console.log(`     WebSocket overhead per token over the engine's step: p50 ${gaps[gaps.length >> 1].toFixed(3)} ms, p90 ${gaps[Math.floor(gaps.length * 0.9)].toFixed(3)} ms, mean ${mean.toFixed(3)} ms (${gaps.length} tokens)`);

    // The engine switch: this tab's WebGPU engine, then back to the native one.
    await page.reload();
    await waitReady(page);
    await byId(page, 'engine-switch').selectOption('tab');
    await byId(page, 'model-status').filter({ hasText: 'no model loaded' }).waitFor({ timeout: SLOW });
    assert.equal(await byId(page, 'engine').getAttribute('data-kind'), 'tab');
    await byId(page, 'engine-switch').selectOption('native');
    assert.match(await waitReady(page), new RegExp(MODEL), 'the native engine kept its model');
    await page.screenshot({ path: join(artifacts, 'app-switch.png'), fullPage: true });
  } finally {
    await tab.context.close();
    native.child.kill();
  }
});

await test('inferlab app: a page without the token is refused; a missing folder is a clear error; the demo model', async () => {
  const native = await nativeApp(['--device', 'cpu']);
  const tab = await browser();
  try {
    const { page } = tab;
    const noToken = native.url.replace(/token=[0-9a-f]+/, 'token=0000');
    await page.goto(noToken);
    await page.waitForFunction(() => (document.querySelector('[data-testid="model-status"]')?.textContent ?? '').startsWith('failed: native engine'), null, { timeout: SLOW, polling: 250 });
    await page.goto(native.url);
    await byId(page, 'model-status').filter({ hasText: 'no model loaded' }).waitFor({ timeout: SLOW });
    await byId(page, 'repo').fill('/no/such/model-folder');
    await byId(page, 'load-hub').click();
    await page.waitForFunction(() => /neither a model folder nor a hub repo id/.test(document.querySelector('[data-testid="model-status"]')?.textContent ?? ''), null, { timeout: SLOW, polling: 250 });
    await page.screenshot({ path: join(artifacts, 'app-bad-folder.png'), fullPage: true });
    // The demo pair is among the web app's files, read by the native engine.
    await byId(page, 'load-demo').click();
    assert.match(await waitReady(page), /demo target/);
    await byId(page, 'tab-playground').click();
    assert.equal((await generateGreedy(page, 'fn main() {', 4)).length, 4);
  } finally {
    await tab.context.close();
    native.child.kill();
  }
});

app.server.close();
hub.server.close();
console.log(`\naccessibility and legibility:\n  ${audits.join('\n  ')}`);
console.log(`\n${results.length - failed} passed, ${failed} failed; screenshots in ${artifacts}`);
process.exit(failed ? 1 : 0);
