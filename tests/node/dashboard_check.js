#!/usr/bin/env node
// tests/node/dashboard_check.js — the dashboard in a real browser: Debian's chromium driven by
// playwright-core against a real `barlowd serve` (its own temporary database) that trains.
//
//   node tests/node/dashboard_check.js BARLOWD_BIN OUT_DIR [--fashion DIR] [--images N]
//                                      [--wait-steps S]
//
// The server runs with an API key that guards reads too (--api-key-reads yes), so the page
// must ask for it. Images: N synthetic 28x28 PGMs in four labelled patterns (default), or the
// first N Fashion-MNIST training images with their class names (--fashion, for the README's
// screenshot; --wait-steps lets it train S steps before the picture); one more is labelled `<img src=x onerror=alert(1)>`. Checks, each failing the
// run (exit 1):
//   1. GET / and /ui/* answer without the key, with Content-Security-Policy default-src 'self';
//   2. the page asks for the key, keeps it in sessionStorage (not localStorage), and no request
//      URL ever holds it;
//   3. the page shows the image count and the serving version that GET /status reports;
//   4. the loss chart has points once a few training steps are logged, the heatmap a step;
//   5. the hostile label is shown as text, no dialog opens and no element it names exists;
//   6. an image dropped on the page yields neighbour thumbnails (blob: URLs that decoded), and
//      a Browse tile's click shows its neighbours with scores;
//   7. thumbnails are PNGs no larger than the size asked for;
//   8. no console error and no page error from start to end; the server exits 0 on SIGTERM.
// Writes OUT_DIR/dashboard.png (the whole page) for a human to look at.
'use strict';
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const zlib = require('zlib');
const { chromium } = require('playwright-core');

const KEY = 'dashboard-test-key-7f3a';
const XSS = '<img src=x onerror=alert(1)>';
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

function fail(msg) {
  console.error(`dashboard_check: FAIL: ${msg}`);
  process.exitCode = 1;
  throw new Error(msg);
}
function check(cond, msg) { if (!cond) fail(msg); }
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- images ----

function pgm(pixels) { // 28x28 binary PGM
  return Buffer.concat([Buffer.from('P5\n28 28\n255\n'), Buffer.from(pixels)]);
}

// Four patterns a model can tell apart, with noise so that no two images are the same.
const PATTERNS = ['stripes', 'bars', 'ring', 'checker'];
function synthetic(i) {
  const kind = i % 4, px = new Uint8Array(28 * 28);
  let seed = 1 + i * 7919;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  const phase = Math.floor(rnd() * 6), width = 2 + Math.floor(rnd() * 3);
  for (let y = 0; y < 28; y++) {
    for (let x = 0; x < 28; x++) {
      let on;
      if (kind === 0) on = Math.floor((y + phase) / width) % 2 === 0;
      else if (kind === 1) on = Math.floor((x + phase) / width) % 2 === 0;
      else if (kind === 2) { const r = Math.hypot(x - 13.5, y - 13.5); on = Math.abs(r - 6 - phase) < width; }
      else on = (Math.floor((x + phase) / (width + 2)) + Math.floor(y / (width + 2))) % 2 === 0;
      px[y * 28 + x] = Math.max(0, Math.min(255, (on ? 200 : 30) + Math.floor((rnd() - 0.5) * 60)));
    }
  }
  return { bytes: pgm(px), label: PATTERNS[kind] };
}

const FASHION = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker',
                 'bag', 'ankle boot'];
function fashion(dir, n) {
  const imgs = zlib.gunzipSync(fs.readFileSync(path.join(dir, 'train-images-idx3-ubyte.gz')));
  const labs = zlib.gunzipSync(fs.readFileSync(path.join(dir, 'train-labels-idx1-ubyte.gz')));
  const out = [];
  for (let i = 0; i < n; i++)
    out.push({ bytes: pgm(imgs.subarray(16 + i * 784, 16 + (i + 1) * 784)), label: FASHION[labs[8 + i]] });
  return out;
}

// ---- the server ----

async function startServer(bin, dir) {
  const addrFile = path.join(dir, 'addr');
  const log = fs.openSync(path.join(dir, 'server.log'), 'w');
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--db', path.join(dir, 'db.sqlite'),
    '--addr-file', addrFile, '--api-key', KEY, '--api-key-reads', 'yes', '--model', 'small',
    '--min-images', '32', '--batch', '32', '--publish-every', '20', '--keep-versions', '3'],
  { stdio: ['ignore', log, log] });
  for (let i = 0; i < 600; i++) {
    if (fs.existsSync(addrFile) && fs.readFileSync(addrFile, 'utf8').trim()) break;
    if (child.exitCode !== null) fail(`barlowd serve exited with ${child.exitCode} (see ${dir}/server.log)`);
    await sleep(100);
  }
  const addr = fs.readFileSync(addrFile, 'utf8').trim();
  check(addr, 'the server never wrote its address');
  return { child, base: `http://${addr}` };
}

async function call(base, p, opts = {}) {
  const headers = { Authorization: `Bearer ${KEY}`, ...(opts.headers || {}) };
  return fetch(base + p, { ...opts, headers });
}
async function json(base, p) {
  const r = await call(base, p);
  check(r.ok, `GET ${p}: ${r.status}`);
  return r.json();
}

async function upload(base, img) {
  const meta = encodeURIComponent(JSON.stringify({ label: img.label }));
  const r = await call(base, `/train?meta=${meta}`, { method: 'POST', body: img.bytes,
    headers: { 'Content-Type': 'image/x-portable-graymap' } });
  const body = await r.text();
  check(r.status === 201, `POST /train: ${r.status} ${body}`);
  return JSON.parse(body).ids[0];
}

// ---- the browser ----

// Drops a PGM file on the page's drop zone, as a user's drag and drop does.
async function dropFile(page, bytes) {
  await page.evaluate(async (b64) => {
    const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([data], 'probe.pgm', { type: 'image/x-portable-graymap' }));
    document.getElementById('drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, bytes.toString('base64'));
}

async function main() {
  const args = process.argv.slice(2);
  const bin = args[0], outDir = args[1];
  check(bin && outDir, 'usage: dashboard_check.js BARLOWD_BIN OUT_DIR [--fashion DIR] [--images N]');
  const fi = args.indexOf('--fashion'), ni = args.indexOf('--images');
  const n = ni > 0 ? Number(args[ni + 1]) : 64;
  const wi = args.indexOf('--wait-steps'), waitSteps = wi > 0 ? Number(args[wi + 1]) : 0;
  const images = fi > 0 ? fashion(args[fi + 1], n) : Array.from({ length: n }, (_, i) => synthetic(i));
  fs.mkdirSync(outDir, { recursive: true });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'barlowd-dash-'));
  const { child, base } = await startServer(bin, dir);
  let browser;
  try {
    // 1. the page and its files need no key and carry the policy
    for (const p of ['/', '/ui/app.js', '/ui/style.css', '/ui/favicon.svg', '/ui/config.json']) {
      const r = await fetch(base + p);
      check(r.status === 200, `GET ${p} without the key: ${r.status}`);
      check((r.headers.get('content-security-policy') || '').startsWith("default-src 'self'"),
        `GET ${p}: no Content-Security-Policy default-src 'self'`);
    }
    check((await fetch(base + '/status')).status === 401, 'GET /status without the key is not 401');
    check((await fetch(base + '/ui/nothing.js')).status === 404, 'GET /ui/nothing.js is not 404');

    // the hostile label first, so that it is on Browse's first page
    const xssId = await upload(base, { bytes: synthetic(1001).bytes, label: XSS });
    for (const img of images) await upload(base, img);

    const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'barlowd-chromium-'));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, viewport: { width: 1280, height: 900 },
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    const page = browser.pages()[0] || await browser.newPage();
    const problems = [], dialogs = [], urls = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
    page.on('request', (r) => urls.push(r.url()));

    // 2. the key
    await page.goto(base + '/');
    await page.waitForSelector('#key-dialog[open]', { timeout: 10000 });
    await page.fill('#key-input', KEY);
    await page.click('#key-form button[type=submit]');
    await page.waitForSelector('body[data-ready="1"]', { timeout: 30000 });
    const stored = await page.evaluate(() => [sessionStorage.getItem('barlowd.apiKey'), localStorage.length]);
    check(stored[0] === KEY && stored[1] === 0, `key storage: session ${stored[0]}, local entries ${stored[1]}`);

    // 4. training steps reach the charts (the log has a row every 10 steps)
    await page.waitForFunction(() => Number(document.getElementById('chart-loss').dataset.points) >= 2,
      null, { timeout: 240000, polling: 500 });
    await page.waitForFunction(() => /^step /.test(document.getElementById('m-step').textContent),
      null, { timeout: 30000 });

    // 3. the numbers /status reports, once the page has refreshed after them
    let shown = false, last;
    for (let i = 0; i < 20 && !shown; i++) {
      const st = await json(base, '/status');
      last = [st.images, st.models.serving_version];
      shown = await page.evaluate(([imgs, ver]) =>
        document.getElementById('s-images').textContent === imgs.toLocaleString('en-US') &&
        document.getElementById('s-serving').textContent === String(ver), last);
      if (!shown) await sleep(1000);
    }
    check(shown, `the page does not show /status's images and serving version ${JSON.stringify(last)}`);

    // 5. the hostile label, as text
    await page.waitForSelector(`#browse-grid .tile[data-id="${xssId}"]`, { timeout: 10000 });
    const cap = await page.textContent(`#browse-grid .tile[data-id="${xssId}"] .cap`);
    check(cap.includes(XSS), `the hostile label is not shown as text: ${JSON.stringify(cap)}`);
    const injected = await page.evaluate(() => document.querySelectorAll('img[src="x"], img[onerror]').length);
    check(injected === 0, `the hostile label made ${injected} element(s)`);

    // 6. drop an image: its neighbours as thumbnails
    await dropFile(page, images[2].bytes);
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#search-results .tile img')];
      return imgs.length >= 5 && imgs.every((i) => i.src.startsWith('blob:') && i.complete && i.naturalWidth > 0);
    }, null, { timeout: 30000 });
    const scores = await page.$$eval('#search-results .tile .cap', (c) => c.map((e) => e.textContent));
    check(/^1\.000|^0\.99/.test(scores[0]), `the dropped image's best match is not itself: ${scores[0]}`);
    // a Browse tile's neighbours
    await page.click('#browse-grid .tile >> nth=3');
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('#nb-grid .tile img')];
      return imgs.length >= 5 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    }, null, { timeout: 30000 });
    // the filter
    await page.fill('#filter', JSON.stringify({ label: images[0].label }));
    await page.click('#filter-form button[type=submit]');
    await page.waitForFunction((lab) => {
      const caps = [...document.querySelectorAll('#browse-grid .tile .cap')].map((e) => e.textContent);
      return caps.length > 0 && caps.every((c) => c.endsWith(' · ' + lab));
    }, images[0].label, { timeout: 10000 });
    await page.fill('#filter', '');
    await page.click('#filter-form button[type=submit]');
    await page.waitForFunction(() => document.querySelectorAll('#browse-grid .tile img[src^="blob:"]').length >= 20,
      null, { timeout: 20000 });
    while ((await json(base, '/status')).training.step < waitSteps) await sleep(2000);
    if (waitSteps) { // the newest version's tiles, neighbours and search
      await page.click('#browse-first');
      await page.click('#browse-grid .tile >> nth=3');
      await dropFile(page, images[2].bytes);
    }
    await sleep(3500); // one more refresh, so the screenshot shows the latest numbers
    await page.screenshot({ path: path.join(outDir, 'dashboard.png'), fullPage: true });

    // 7. thumbnails: PNG, within the size asked
    const r = await call(base, `/images/${xssId}/thumbnail?size=16`);
    const png = Buffer.from(await r.arrayBuffer());
    check(r.headers.get('content-type') === 'image/png' && png.readUInt32BE(16) <= 16 && png.readUInt32BE(20) <= 16,
      'a 16-pixel thumbnail is not a PNG of at most 16x16');
    check((await call(base, `/images/${xssId}/thumbnail?size=257`)).status === 400, 'size 257 is not a 400');

    // 2 and 8, over the whole session
    const leaked = urls.filter((u) => u.includes(KEY));
    check(leaked.length === 0, `the key appeared in ${leaked.length} URL(s): ${leaked[0]}`);
    check(dialogs.length === 0, `a dialog opened: ${dialogs[0]}`);
    check(problems.length === 0, `the page logged errors:\n  ${problems.join('\n  ')}`);
    console.log(`dashboard_check: ${urls.length} requests, ${images.length + 1} images, screenshot ${path.join(outDir, 'dashboard.png')}`);
    console.log('coverage: dashboard in chromium (key prompt, status, curves, c-matrix, browse, drop search, CSP, hostile label)');
  } catch (e) {
    if (browser && browser.pages()[0]) // what the page looked like when it failed
      await browser.pages()[0].screenshot({ path: path.join(outDir, 'dashboard-failed.png'), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    if (browser) await browser.close().catch(() => {});
    child.kill('SIGTERM');
    const code = await new Promise((res) => child.exitCode !== null ? res(child.exitCode) : child.on('exit', (c) => res(c)));
    if (code !== 0 && !process.exitCode) fail(`barlowd serve exited with ${code} (see ${dir}/server.log)`);
    if (!process.exitCode) fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(() => process.exit(process.exitCode || 0), (e) => {
  if (!process.exitCode) console.error(`dashboard_check: FAIL: ${e.stack || e}`);
  process.exit(1);
});
