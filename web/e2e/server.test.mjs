// "Run on server": the page hands explanations to a real `camlime serve` on loopback (another
// origin, allowed by --cors-origin), follows the job's Server-Sent Events and shows the record in
// the same result view. The record must equal the one the page's own workers compute.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readFile, rm } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import {
  ARTIFACTS, start, stop, open, waitModel, pickChelsea, explain, downloadRecord, canvasStats, startCamlime,
  decodeMap, mapAgreement,
} from "./harness.mjs";

let env;
let camlime;

before(async () => {
  env = await start();
  camlime = await startCamlime(new URL(env.url).origin);
});

after(async () => {
  camlime?.child.kill("SIGTERM");
  await stop(env);
  if (camlime) await rm(camlime.data, { recursive: true, force: true });
});

// The server runs tract's native kernels and the page its wasm ones: the floats differ in the
// last digits (~1e-7 relative), everything discrete must be equal.
function assertSameExplanation(remote, local) {
  for (const key of ["format", "model", "preprocessing", "image", "config", "layers", "segments"]) {
    assert.deepEqual(remote[key], local[key], `${key} differs`);
  }
  assert.equal(remote.target.class, local.target.class);
  assert.ok(Math.abs(remote.target.probability - local.target.probability) < 1e-5);
  for (const field of ["explanations", "lime_baseline"]) {
    assert.equal(remote[field].length, local[field].length);
    remote[field].forEach((r, i) => {
      const l = local[field][i];
      assert.equal(r.label, l.label);
      const weights = new Map(l.ranked);
      assert.equal(r.ranked.length, l.ranked.length);
      for (const [segment, w] of r.ranked) {
        assert.ok(Math.abs(w - weights.get(segment)) < 1e-4, `${field}[${i}] segment ${segment}: ${w} vs ${weights.get(segment)}`);
      }
      assert.ok(Math.abs(r.score - l.score) < 1e-4);
    });
  }
}

async function serverJobs() {
  return (await fetch(`${camlime.url}/v1/jobs`)).json();
}

test("run on server: the workers' record, progress over SSE, cancel", async () => {
  const page = await open(env, `?server=${encodeURIComponent(camlime.url)}`);
  await waitModel(page);
  await pickChelsea(page);
  assert.equal(await page.isChecked("#server-toggle"), true);
  assert.equal(await page.inputValue("#server-url"), camlime.url);

  const seconds = await explain(page, { method: "camlime", samples: 200 });
  const remote = await downloadRecord(page);
  assert.equal(remote.config.lime.num_samples, 200);
  assert.equal(remote.target.label, "Egyptian cat");
  const overlay = await canvasStats(page, "#result-canvas");
  assert.ok(overlay.std > 20, "the server's result was not drawn");
  let jobs = await serverJobs();
  assert.equal(jobs.length, 1);
  assert.equal(jobs[0].status, "done");
  assert.equal(jobs[0].method, "camlime");
  await page.screenshot({ path: join(ARTIFACTS, "server.png"), fullPage: true });

  await page.uncheck("#server-toggle");
  await explain(page, { method: "camlime", samples: 200 });
  const local = await downloadRecord(page);
  assertSameExplanation(remote, local);
  assert.equal((await serverJobs()).length, 1, "the local run went to the server");

  // A long job reports progress through the page's bar, and Cancel cancels it on the server.
  await page.check("#server-toggle");
  await page.fill("#samples-input", "20000");
  await page.dispatchEvent("#samples-input", "change");
  await page.click("#explain");
  await page.waitForFunction(() => /samples \d+\/20000/.test(document.querySelector("#progress")?.textContent ?? "")
    && !/samples 0\/20000/.test(document.querySelector("#progress").textContent), null, { timeout: 60_000 });
  await page.click("#cancel");
  await page.waitForSelector("#progress", { state: "detached", timeout: 5_000 });
  assert.match(await page.textContent("#notice"), /Cancelled/);
  let cancelled;
  for (let i = 0; i < 100 && !cancelled; i++) {
    jobs = await serverJobs();
    cancelled = jobs.find((j) => j.status === "cancelled");
    if (!cancelled) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(cancelled, `no cancelled job on the server: ${JSON.stringify(jobs)}`);
  assert.ok(cancelled.progress.done < 20000);

  // A server error reaches the page as a message.
  await page.fill("#server-url", "http://127.0.0.1:9");
  await page.dispatchEvent("#server-url", "change");
  await page.fill("#samples-input", "200");
  await page.dispatchEvent("#samples-input", "change");
  await page.click("#explain");
  await page.waitForSelector("#error", { timeout: 30_000 });
  assert.match(await page.textContent("#error .message"), /cannot reach/);
  assert.deepEqual(page.errors, []);
  console.log(`CamLIME-200 on the server, click to drawn: ${seconds} ms`);
  await page.context().close();
});

test("run on server: a face model crops the same face and compares it with the same reference", async () => {
  const page = await open(env, `?server=${encodeURIComponent(camlime.url)}&model=faceres`);
  await waitModel(page);
  // BlazeFace finds two faces in chelsea: the second goes to the server as `face: 1`.
  await page.click("#sample-chelsea");
  await page.waitForSelector('#faces button[data-face="1"]', { timeout: 60_000 });
  await page.click('#faces button[data-face="1"]');
  await page.waitForSelector('#face[data-face="1"]', { timeout: 60_000 });
  const astronaut = await readFile(fileURLToPath(new URL("../../models/samples/astronaut.png", import.meta.url)));
  await page.setInputFiles("#reference-file", { name: "astronaut.png", mimeType: "image/png", buffer: astronaut });
  await page.waitForSelector("#reference-name.chosen", { timeout: 60_000 });
  await explain(page, { method: "gradcam" });
  const remote = await downloadRecord(page);
  await page.uncheck("#server-toggle");
  await explain(page, { method: "gradcam" });
  const local = await downloadRecord(page);
  assert.equal(remote.task.kind, "identity");
  for (const key of ["face", "found", "crop", "detector"]) {
    assert.deepEqual(remote.image.face[key], local.image.face[key], `image.face.${key} differs`);
  }
  assert.equal(remote.image.face.face, 1);
  assert.equal(remote.image.sha256, local.image.sha256);
  assert.deepEqual(remote.config, local.config);
  assert.ok(Math.abs(remote.task.similarity - local.task.similarity) < 1e-5, `${remote.task.similarity} vs ${local.task.similarity}`);
  const { pearson } = mapAgreement(decodeMap(remote.cam.map).values, decodeMap(local.cam.map).values);
  assert.ok(pearson >= 0.9999, `server and workers' Grad-CAM pearson ${pearson}`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("run on server with tokens: none or a wrong one refused, the right one runs, another token cannot see its job", async () => {
  const alice = "alice-e2e-token-0123456789";
  const bob = "bob-e2e-token-0123456789";
  const shared = await startCamlime(new URL(env.url).origin, { tokens: `alice user ${alice}; bob user ${bob}` });
  try {
    const page = await open(env, `?server=${encodeURIComponent(shared.url)}`);
    await waitModel(page);
    await pickChelsea(page);
    await page.selectOption("#method-select", "gradcam");
    for (const [token, message] of [["", /HTTP 401: this server needs a token/], ["wrong-token-0123456789", /HTTP 401: the token is not valid/]]) {
      await page.fill("#server-token", token);
      await page.dispatchEvent("#server-token", "change");
      await page.click("#explain");
      await page.waitForSelector("#error", { timeout: 30_000 });
      assert.match(await page.textContent("#error .message"), message);
      await page.click("#error button");
    }
    await page.fill("#server-token", alice);
    await page.dispatchEvent("#server-token", "change");
    await explain(page, { method: "gradcam" });
    const record = await downloadRecord(page);
    assert.equal(record.target.label, "Egyptian cat");
    // The token is kept in the page's storage, never in its address.
    assert.equal(await page.evaluate(() => localStorage.getItem("camlime.server_token")), alice);
    assert.ok(!page.url().includes(alice));
    const as = (token) => ({ headers: { authorization: `Bearer ${token}` } });
    const jobs = await (await fetch(`${shared.url}/v1/jobs`, as(alice))).json();
    assert.deepEqual(jobs.map((j) => [j.owner, j.status]), [["alice", "done"]]);
    // Bob's token: the job is not there.
    assert.equal((await fetch(`${shared.url}/v1/jobs/${jobs[0].id}`, as(bob))).status, 404);
    assert.deepEqual(await (await fetch(`${shared.url}/v1/jobs`, as(bob))).json(), []);
    assert.deepEqual(page.errors, []);
    await page.context().close();
  } finally {
    shared.child.kill("SIGTERM");
    await rm(shared.data, { recursive: true, force: true });
  }
});
