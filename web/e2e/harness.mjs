// Shared by the tests and the benchmark: Chromium with the flags this machine needs, the app
// served from dist/, and readers of what the page draws and downloads.
import { chromium } from "playwright-core";
import { mkdir, readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { inflateSync } from "node:zlib";
import { serve } from "./serve.mjs";

const here = dirname(fileURLToPath(import.meta.url));
export const DIST = process.env.CAMLIME_DIST || join(here, "../../dist");
export const ARTIFACTS = join(here, "artifacts");

export async function start() {
  await mkdir(ARTIFACTS, { recursive: true });
  const { server, url } = await serve(DIST);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  return { server, url, browser };
}

export async function stop({ server, browser }) {
  await browser.close();
  server.close();
}

/** A fresh page on the app; console errors are collected. */
export async function open(env, query = "", { lang = "en" } = {}) {
  const context = await env.browser.newContext({ acceptDownloads: true, viewport: { width: 1400, height: 1000 }, locale: lang });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  const started = Date.now();
  await page.goto(env.url + query);
  await page.waitForSelector(".app", { timeout: 30_000 });
  page.interactiveMs = Date.now() - started;
  return page;
}

export async function waitModel(page) {
  const started = Date.now();
  await page.waitForSelector('.app[data-model-ready="true"]', { timeout: 60_000 });
  return Date.now() - started;
}

export async function pickChelsea(page) {
  await page.click("#sample-chelsea");
  await page.waitForSelector("#predictions li", { timeout: 60_000 });
}

/** Run the chosen method; returns the wall time from click to drawn result. */
export async function explain(page, { method, samples, cam }) {
  await page.selectOption("#method-select", method);
  if (cam) await page.selectOption("#cam-select", cam);
  if (samples) await page.fill("#samples-input", String(samples)).then(() => page.dispatchEvent("#samples-input", "change"));
  await page.evaluate(() => { window.__longTasks = []; });
  const before = await page.$$eval("#gallery figure", (f) => f.length).catch(() => 0);
  const started = Date.now();
  await page.click("#explain");
  await page.waitForFunction((n) => document.querySelectorAll("#gallery figure").length > n, before, { timeout: 600_000 });
  return Date.now() - started;
}

export async function downloadRecord(page) {
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download-record")]);
  return JSON.parse(await readFile(await download.path(), "utf8"));
}

/** Pixel statistics of a canvas: size and the spread of its values (0 = blank). */
export async function canvasStats(page, selector) {
  return page.$eval(selector, (canvas) => {
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    let sum = 0, sq = 0, n = 0, hash = 0;
    for (let i = 0; i < data.length; i += 4) {
      const v = data[i] + data[i + 1] + data[i + 2];
      sum += v; sq += v * v; n++;
      hash = (hash * 31 + data[i] * 7 + data[i + 1] * 3 + data[i + 2]) >>> 0;
    }
    const mean = sum / n;
    return { width, height, std: Math.sqrt(sq / n - mean * mean), hash };
  });
}

export function decodeMap(map) {
  const bytes = Buffer.from(map.data, "base64");
  return { width: map.width, height: map.height, values: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4) };
}

export function segmentLabels(segments) {
  const labels = new Int32Array(segments.width * segments.height);
  let at = 0;
  for (let i = 0; i < segments.runs.length; i += 2) {
    labels.fill(segments.runs[i], at, at + segments.runs[i + 1]);
    at += segments.runs[i + 1];
  }
  return labels;
}

/** Fraction of a non-negative map's mass inside the box. */
export function massInBox(values, width, box) {
  let inside = 0, all = 0;
  values.forEach((v, i) => {
    const x = i % width, y = Math.floor(i / width);
    const m = Math.max(v, 0);
    all += m;
    if (x >= box.x0 && x < box.x1 && y >= box.y0 && y < box.y1) inside += m;
  });
  return inside / all;
}

/** A 16-bit greyscale PNG of the shared fixtures (a reference CAM map) as values in [0, 1]. */
export async function readMapPng(relative) {
  const bytes = await readFile(join(here, "../../shared/tests/fixtures", relative));
  let width = 0, height = 0;
  const idat = [];
  for (let at = 8; at < bytes.length;) {
    const length = bytes.readUInt32BE(at);
    const type = bytes.toString("latin1", at + 4, at + 8);
    const body = bytes.subarray(at + 8, at + 8 + length);
    if (type === "IHDR") {
      [width, height] = [body.readUInt32BE(0), body.readUInt32BE(4)];
      if (body[8] !== 16 || body[9] !== 0 || body[12] !== 0) throw new Error(`${relative}: not a 16-bit grey, non-interlaced PNG`);
    }
    if (type === "IDAT") idat.push(body);
    at += 12 + length;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * 2;
  const rows = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const left = x >= 2 ? rows[y * stride + x - 2] : 0;
      const up = y > 0 ? rows[(y - 1) * stride + x] : 0;
      const corner = x >= 2 && y > 0 ? rows[(y - 1) * stride + x - 2] : 0;
      const paeth = () => {
        const p = left + up - corner, pa = Math.abs(p - left), pb = Math.abs(p - up), pc = Math.abs(p - corner);
        return pa <= pb && pa <= pc ? left : pb <= pc ? up : corner;
      };
      const predictor = [0, left, up, (left + up) >> 1, filter === 4 ? paeth() : 0][filter];
      rows[y * stride + x] = (line[x] + predictor) & 255;
    }
  }
  const values = new Float32Array(width * height);
  for (let i = 0; i < values.length; i++) values[i] = rows.readUInt16BE(2 * i) / 65535;
  return { width, height, values };
}

/** Pearson correlation and largest absolute difference of two equal-length maps. */
export function mapAgreement(a, b) {
  const n = a.length;
  const mean = (v) => v.reduce((s, x) => s + x, 0) / n;
  const [ma, mb] = [mean(a), mean(b)];
  let [sab, saa, sbb, worst] = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) {
    const [da, db] = [a[i] - ma, b[i] - mb];
    sab += da * db; saa += da * da; sbb += db * db;
    worst = Math.max(worst, Math.abs(a[i] - b[i]));
  }
  return { pearson: sab / Math.sqrt(saa * sbb), maxAbs: worst };
}

/** A file of the shared test fixtures, as bytes or parsed JSON. */
export async function sharedFixture(relative, { json = false } = {}) {
  const bytes = await readFile(join(here, "../../shared/tests/fixtures", relative));
  return json ? JSON.parse(bytes.toString("utf8")) : bytes;
}

export async function fixture(name) {
  return JSON.parse(await readFile(join(here, "fixtures", name), "utf8"));
}

/** `camlime serve` on a loopback port that lets `origin` call it (CAMLIME_BIN, else the debug build);
 * `tokens`: its CAMLIME_TOKENS lines. */
export async function startCamlime(origin, { tokens } = {}) {
  const { spawn } = await import("node:child_process");
  const { mkdtemp } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const bin = process.env.CAMLIME_BIN || join(here, "../../target/debug/camlime");
  const data = await mkdtemp(join(tmpdir(), "camlime-e2e-"));
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--data-dir", data, "--cors-origin", origin], {
    cwd: join(here, "../.."),
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: "warn", ...(tokens ? { CAMLIME_TOKENS: tokens } : {}) },
  });
  const url = await new Promise((resolve, reject) => {
    let text = "";
    child.stdout.on("data", (chunk) => {
      text += chunk;
      const match = text.match(/listening on (http:\/\/\S+)/);
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`camlime serve exited with ${code}`)));
  });
  return { child, url, data };
}
