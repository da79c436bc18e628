// The CamLIME page in real headless Chromium: predictions, Grad-CAM and CamLIME on the cat,
// re-rendering without recomputing, cancel, a corrupt file, the Chinese interface, the embed
// layout, a detector, a segmenter and the face models. Screenshots go to web/e2e/artifacts/;
// timings are printed at the end.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import {
  ARTIFACTS, start, stop, open, waitModel, pickChelsea, explain, downloadRecord, canvasStats,
  decodeMap, segmentLabels, massInBox, fixture, DIST, readMapPng, mapAgreement, sharedFixture,
} from "./harness.mjs";

let env;
let face;
const timings = {};

before(async () => {
  env = await start();
  face = (await fixture("chelsea_face.json")).box;
});

after(async () => {
  await stop(env);
  await writeFile(join(ARTIFACTS, "timings.json"), JSON.stringify(timings, null, 2));
  console.log("timings (ms):", JSON.stringify(timings));
});

test("the page's wasm links no model engine: at most 2.5 MB, the worker under 20 MB", async () => {
  const files = await readdir(DIST);
  const page = files.filter((f) => /^camlime-web-[0-9a-f]+_bg\.wasm$/.test(f));
  assert.equal(page.length, 1, `one page wasm in ${DIST}: ${files.join(", ")}`);
  const pageBytes = (await stat(join(DIST, page[0]))).size;
  const workerBytes = (await stat(join(DIST, "worker_bg.wasm"))).size;
  timings.page_wasm_bytes = pageBytes;
  timings.worker_wasm_bytes = workerBytes;
  // 14.6 MB while the page reached tract through camlime-core; 1.81 MB on camlime-base alone,
  // 2.11 MB once it drew detections and segmentation regions (stop 30), 2.19 MB with the face
  // models (stop 31): a model engine would add megabytes, which this bound catches.
  assert.ok(pageBytes <= 2_500_000, `page wasm ${pageBytes} bytes`);
  assert.ok(workerBytes < 20_000_000, `worker wasm ${workerBytes} bytes`);
});

function faceArea(width, height) {
  return ((face.x1 - face.x0) * (face.y1 - face.y0)) / (width * height);
}

test("chelsea: top-1, Grad-CAM and CamLIME on the cat, instant re-render", async () => {
  const page = await open(env);
  timings.interactive = page.interactiveMs;
  timings.model_ready = await waitModel(page);
  await pickChelsea(page);
  const top1 = await page.textContent("#predictions li:first-child .label");
  assert.equal(top1, "Egyptian cat");

  timings.gradcam = await explain(page, { method: "gradcam" });
  const overlay = await canvasStats(page, "#result-canvas");
  assert.equal(overlay.width, 224);
  assert.ok(overlay.std > 20, `overlay looks blank: ${JSON.stringify(overlay)}`);
  const gradcam = await downloadRecord(page);
  assert.equal(gradcam.config.method, "gradcam");
  assert.equal(gradcam.target.label, "Egyptian cat");
  const map = decodeMap(gradcam.cam.map);
  const camMass = massInBox(map.values, map.width, face);
  assert.ok(camMass > 0.5 && camMass > faceArea(map.width, map.height),
    `Grad-CAM mass on the face ${camMass.toFixed(3)} (box area ${faceArea(224, 224).toFixed(3)})`);
  await page.screenshot({ path: join(ARTIFACTS, "gradcam.png"), fullPage: true });

  // 500 samples: at 200 the share of positive weight on the face is a noisy 0.47 (0.51 at 300,
  // 0.57 at 500, 0.60 at 1000 through the CLI on the same base image).
  timings.camlime_500 = await explain(page, { method: "camlime", samples: 500 });
  const longTasks = await page.evaluate(() => window.__longTasks);
  timings.camlime_500_longest_main_thread_task = Math.max(0, ...longTasks.map((t) => t.duration));
  assert.ok(timings.camlime_500_longest_main_thread_task < 250, `main thread blocked: ${JSON.stringify(longTasks)}`);
  const record = await downloadRecord(page);
  assert.equal(record.config.lime.num_samples, 500);
  timings.camlime_500_stages = record.timings;
  const labels = segmentLabels(record.segments);
  const main = record.explanations.find((e) => e.label === record.target.class);
  const weight = new Map(main.ranked);
  const painted = Array.from(labels, (l) => weight.get(l) ?? 0);
  const limeMass = massInBox(painted, record.segments.width, face);
  assert.ok(limeMass > 0.5 && limeMass > faceArea(224, 224),
    `CamLIME positive mass on the face ${limeMass.toFixed(3)}`);
  assert.equal(record.lime_baseline.length, record.explanations.length);
  assert.ok(await page.isVisible("#weights-chart svg"), "weight chart missing");
  await page.screenshot({ path: join(ARTIFACTS, "camlime.png"), fullPage: true });

  // The features slider and the sign switch re-render from the record: no new request.
  const drawn = await canvasStats(page, "#result-canvas");
  await page.fill("#features-slider", "12");
  await page.dispatchEvent("#features-slider", "input");
  await page.selectOption("#show-select", "both");
  const redrawn = await canvasStats(page, "#result-canvas");
  assert.notEqual(redrawn.hash, drawn.hash, "the mask did not change with the slider");
  assert.equal(await page.getAttribute(".app", "data-busy"), "false");
  assert.equal(await page.$$eval("#gallery figure", (f) => f.length), 2);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("a photo file decodes in the worker as Pillow does, to PyTorch's class and Grad-CAM", async () => {
  // The same checks as shared/tests/core/corpus.rs and endtoend.rs, on a 4:2:0 JPEG.
  const name = "retina_420.jpg";
  const expected = (await sharedFixture("corpus/expected.json", { json: true }))[name];
  const predicted = (await sharedFixture("endtoend/predictions.json", { json: true }))[name].mobilenet_v2;
  const page = await open(env);
  await waitModel(page);
  await page.setInputFiles("#image-file", { name, mimeType: "image/jpeg", buffer: await sharedFixture(`corpus/${name}`) });
  await page.waitForSelector("#predictions li", { timeout: 60_000 });
  await explain(page, { method: "gradcam" });
  const record = await downloadRecord(page);
  assert.equal(record.image.sha256, expected.preprocessed.mobilenet_v2.base, "base image differs from torchvision's");
  assert.equal(record.target.class, predicted.class);
  assert.ok(Math.abs(record.target.probability - predicted.p) <= 1e-4, `p ${record.target.probability} vs ${predicted.p}`);
  const reference = await readMapPng(`endtoend/${name}.gradcam.png`);
  const { pearson, maxAbs } = mapAgreement(decodeMap(record.cam.map).values, reference.values);
  timings.browser_file_parity = { pearson, max_abs: maxAbs };
  assert.ok(pearson >= 0.999 && maxAbs <= 1e-3, `Grad-CAM pearson ${pearson}, max |Δ| ${maxAbs}`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("cancel stops a run and the page goes on working", async () => {
  const page = await open(env);
  await waitModel(page);
  await pickChelsea(page);
  await page.selectOption("#method-select", "camlime");
  await page.fill("#samples-input", "5000");
  await page.dispatchEvent("#samples-input", "change");
  await page.click("#explain");
  await page.waitForSelector("#progress");
  await page.waitForFunction(() => /samples \d+\/5000/.test(document.querySelector("#progress").textContent), null, { timeout: 60_000 });
  await page.click("#cancel");
  await page.waitForSelector("#progress", { state: "detached", timeout: 5_000 });
  assert.match(await page.textContent("#notice"), /Cancelled/);
  assert.equal(await page.getAttribute("#result", "data-has-result"), "false");
  // A fresh worker got the model and the image again: another method runs.
  await waitModel(page);
  await explain(page, { method: "eigencam" });
  assert.equal(await page.getAttribute("#result", "data-has-result"), "true");
  await page.context().close();
});

test("a corrupt image shows an error and keeps the previous one", async () => {
  const page = await open(env);
  await waitModel(page);
  await pickChelsea(page);
  await page.setInputFiles("#image-file", { name: "broken.png", mimeType: "image/png", buffer: Buffer.from("\x89PNG\r\n\x1a\nnot really a png") });
  await page.waitForSelector("#error");
  const message = await page.textContent("#error .message");
  assert.match(message, /decode|image/i, message);
  await page.screenshot({ path: join(ARTIFACTS, "corrupt.png") });
  await explain(page, { method: "gradcam" });
  const record = await downloadRecord(page);
  assert.equal(record.target.label, "Egyptian cat");
  await page.context().close();
});

test("the Chinese interface switches and is remembered", async () => {
  const page = await open(env);
  assert.equal(await page.textContent("#explain"), "Explain");
  await page.click("#lang-switch");
  assert.equal(await page.textContent("#explain"), "解释");
  assert.equal(await page.getAttribute("html", "lang"), "zh-CN");
  await page.reload();
  await page.waitForSelector(".app");
  assert.equal(await page.textContent("#explain"), "解释");
  await waitModel(page);
  await pickChelsea(page);
  await page.screenshot({ path: join(ARTIFACTS, "chinese.png"), fullPage: true });
  await page.context().close();
});

test("the embed layout explains an image URL by itself", async () => {
  const page = await open(env, "?embed&image=models/samples/chelsea.png&method=gradcam");
  await page.waitForSelector('#result[data-has-result="true"]', { timeout: 60_000 });
  assert.equal(await page.$("header.top"), null);
  assert.equal(await page.$("#explain"), null);
  const overlay = await canvasStats(page, "#result-canvas");
  assert.ok(overlay.std > 20);
  await page.screenshot({ path: join(ARTIFACTS, "embed.png"), fullPage: true });
  await page.context().close();
});

test("another target class, a downloaded record loaded back and replayed exactly", async () => {
  const page = await open(env);
  await waitModel(page);
  await pickChelsea(page);
  const second = await page.textContent("#predictions li:nth-child(2) .label");
  await page.click("#predictions li:nth-child(2)");
  await explain(page, { method: "lime", samples: 120 });
  const record = await downloadRecord(page);
  assert.equal(record.target.label, second);
  assert.ok(record.explanations.some((e) => e.label === record.target.class));
  assert.match(await page.textContent("#summary"), new RegExp(`${second} \\(`));
  await page.click("#sample-coffee");
  await page.waitForFunction(() => document.querySelector("#predictions li .label")?.textContent !== "Egyptian cat");
  await page.setInputFiles("#record-file", { name: "r.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(record)) });
  assert.match(await page.textContent("#error .message", { timeout: 10_000 }), /another image/);
  await page.click("#error button");
  await pickChelsea(page);
  await page.waitForFunction(() => document.querySelector("#predictions li .label")?.textContent === "Egyptian cat");
  await page.setInputFiles("#record-file", { name: "r.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(record)) });
  await page.waitForSelector('#result[data-has-result="true"]');
  await page.click("#replay");
  await page.waitForSelector("#notice", { timeout: 120_000 });
  assert.equal(await page.textContent("#notice .message"), "Replay reproduced the record exactly.");
  await page.context().close();
});

test("a user's own ONNX model: layers discovered, a CAM on a chosen layer", async () => {
  const page = await open(env);
  await waitModel(page);
  const onnx = await readFile(join(DIST, "models/efficientnet_lite0.onnx"));
  await page.setInputFiles("#model-file", { name: "my_model.onnx", mimeType: "application/octet-stream", buffer: onnx });
  await page.waitForFunction(() => /my_model · 1000/.test(document.querySelector("#model-status").textContent), null, { timeout: 60_000 });
  const layers = await page.$$eval("#layer-select option", (o) => o.map((x) => x.value).filter(Boolean));
  assert.ok(layers.length > 10, `only ${layers.length} layers`);
  await pickChelsea(page);
  assert.match(await page.textContent("#predictions li:first-child .label"), /cat|tabby/);
  await page.selectOption("#layer-select", layers[layers.length - 2]);
  await explain(page, { method: "gradcam" });
  const record = await downloadRecord(page);
  assert.equal(record.model.name, "my_model");
  assert.deepEqual(record.layers, [layers[layers.length - 2]]);
  await page.setInputFiles("#model-file", { name: "bad.onnx", mimeType: "application/octet-stream", buffer: Buffer.from("not a model") });
  await page.waitForSelector("#error");
  await page.context().close();
});

test("a project website embeds the explainer with <camlime-explain>", async () => {
  const context = await env.browser.newContext();
  const page = await context.newPage();
  await page.setContent(`<!doctype html><h1>Our lab</h1>
    <script src="${env.url}embed.js"></script>
    <camlime-explain src="${env.url}models/samples/chelsea.png" method="gradcam" height="700px"></camlime-explain>`);
  const frame = await (await page.waitForSelector("camlime-explain iframe")).contentFrame();
  await frame.waitForSelector('#result[data-has-result="true"]', { timeout: 60_000 });
  assert.match(await frame.textContent("#predictions li:first-child .label"), /Egyptian cat/);
  await page.screenshot({ path: join(ARTIFACTS, "embedded-in-a-website.png"), fullPage: true });
  await context.close();
});

/** The task switch's group of the bundled models that are not classifiers. */
const TASK_OF = { nanodet: "detection", blazeface: "detection", selfie: "segmentation", emotion: "faces", faceres: "faces" };

/** Switch to a bundled model's task (which loads the task's first model), pick the model, and
 * wait until the page reports it ready. */
async function chooseModel(page, name) {
  const task = TASK_OF[name] ?? "classification";
  if ((await page.inputValue("#task-select")) !== task) await page.selectOption("#task-select", task);
  if ((await page.inputValue("#model-select")) !== name) await page.selectOption("#model-select", name);
  await page.waitForFunction((n) => {
    const status = document.querySelector("#model-status")?.textContent ?? "";
    return document.querySelector(".app")?.dataset.modelReady === "true" && status.includes(` · ${n} · `);
  }, name, { timeout: 120_000 });
}

test("a detector's boxes and a segmenter's region: explained, drawn, another box picked", async () => {
  const page = await open(env);
  await waitModel(page);
  await chooseModel(page, "nanodet");
  // The task switch lists the task's models only.
  assert.deepEqual(await page.$$eval("#model-select option", (o) => o.map((x) => x.value)), ["nanodet", "blazeface"]);
  await page.click("#sample-chelsea");
  await page.waitForSelector('#task-note[data-task="detection"]', { timeout: 60_000 });
  await explain(page, { method: "eigencam" });
  const first = await downloadRecord(page);
  assert.equal(first.task.kind, "detection");
  // NanoDet on chelsea (the CLI and the reference decoding agree): person 0.589, cat 0.402, …
  assert.deepEqual(first.task.detections.map((d) => d.label), ["person", "cat", "dog", "cell phone"]);
  assert.equal(first.task.target.detection.label, "person");
  assert.equal(await page.textContent("#boxes button.chosen"), "0 · person 0.59");
  // The explained box is drawn in red on the result.
  const red = await page.$eval("#result-canvas", (canvas) => {
    const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) n += data[i] === 255 && data[i + 1] === 40 && data[i + 2] === 40;
    return n;
  });
  assert.ok(red > 100, `${red} red pixels`);
  const before = await page.$$eval("#gallery figure", (f) => f.length);
  await page.click('#boxes button[data-box="1"]');
  await page.waitForFunction((n) => document.querySelectorAll("#gallery figure").length > n, before, { timeout: 600_000 });
  const cat = await downloadRecord(page);
  assert.equal(cat.config.task.box, 1);
  assert.equal(cat.task.target.detection.label, "cat");
  await page.screenshot({ path: join(ARTIFACTS, "detection.png"), fullPage: true });

  await chooseModel(page, "selfie");
  await page.waitForSelector('#task-note[data-task="segmentation"]', { timeout: 60_000 });
  await explain(page, { method: "gradcam" });
  const region = await downloadRecord(page);
  assert.equal(region.task.kind, "segmentation");
  // The page's predicted mask is onnxruntime's on the same file (shared/tests/fixtures/selfie).
  const reference = await sharedFixture("selfie/selfie.json", { json: true });
  assert.deepEqual(region.task.predicted.runs, reference.photos["chelsea.png"].runs);
  assert.deepEqual(region.task.region, region.task.predicted);
  assert.match(await page.textContent("#summary"), /person logit summed over 61075 pixels/);
  assert.equal(await page.$$eval("#boxes", (b) => b.length), 0);
  await page.screenshot({ path: join(ARTIFACTS, "segmentation.png"), fullPage: true });
  assert.deepEqual(page.errors, []);
});

/** The astronaut photo mirrored left to right, as the page's canvas encodes it (lossless PNG). */
async function mirroredAstronaut(page) {
  const base64 = await page.evaluate(async () => {
    const blob = await (await fetch("models/samples/astronaut.png")).blob();
    const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const context = canvas.getContext("2d");
    context.scale(-1, 1);
    context.drawImage(bitmap, -bitmap.width, 0);
    const png = new Uint8Array(await (await canvas.convertToBlob({ type: "image/png" })).arrayBuffer());
    let text = "";
    for (const byte of png) text += String.fromCharCode(byte);
    return btoa(text);
  });
  return Buffer.from(base64, "base64");
}

test("faces: the face cropped and its expression explained, another face picked, identity against a reference photo", async () => {
  const page = await open(env);
  await waitModel(page);
  const reference = await sharedFixture("faces/faces.json", { json: true });
  await chooseModel(page, "emotion");
  await page.click("#sample-astronaut");
  await page.waitForSelector("#face", { timeout: 60_000 });
  assert.equal(await page.textContent("#face h2"), "Face 1 of 1 · found by blazeface (0.88)");
  assert.equal(await page.textContent("#predictions li:first-child .label"), "happy");
  await explain(page, { method: "gradcam" });
  const emotion = await downloadRecord(page);
  // The crop and the map of the Python reference on the same files (shared/tests/fixtures/faces).
  const crop = emotion.image.face.crop;
  assert.deepEqual([crop.x0, crop.y0, crop.x1, crop.y1], reference.emotions["astronaut.png"].crop);
  assert.equal(emotion.target.label, "happy");
  const emotionMap = await readMapPng("faces/astronaut.gradcam.png");
  const expression = mapAgreement(decodeMap(emotion.cam.map).values, emotionMap.values);
  assert.ok(expression.pearson >= 0.999, `Grad-CAM pearson ${expression.pearson}`);
  await page.screenshot({ path: join(ARTIFACTS, "face.png"), fullPage: true });

  // BlazeFace finds two faces in chelsea: the second is explained once picked.
  await page.click("#sample-chelsea");
  await page.waitForSelector('#faces button[data-face="1"]', { timeout: 60_000 });
  await page.click('#faces button[data-face="1"]');
  await page.waitForSelector('#face[data-face="1"]', { timeout: 60_000 });
  await explain(page, { method: "gradcam" });
  const second = await downloadRecord(page);
  assert.equal(second.image.face.face, 1);
  assert.equal(second.image.face.found, reference.photos["chelsea.png"].length);

  await chooseModel(page, "faceres");
  await page.click("#sample-astronaut");
  await page.waitForSelector('#task-note[data-task="embedding"]', { timeout: 60_000 });
  await page.waitForSelector('#face[data-face="0"]', { timeout: 60_000 });
  // Without a reference there is nothing to compare with: a clear error.
  await page.selectOption("#method-select", "gradcam");
  await page.click("#explain");
  await page.waitForSelector("#error", { timeout: 60_000 });
  assert.match(await page.textContent("#error .message"), /reference face/);
  await page.click("#error button");
  await page.setInputFiles("#reference-file", { name: "mirrored.png", mimeType: "image/png", buffer: await mirroredAstronaut(page) });
  await page.waitForSelector("#reference-name.chosen", { timeout: 60_000 });
  assert.equal(await page.textContent("#reference-name"), "mirrored.png");
  await explain(page, { method: "gradcam" });
  const identity = await downloadRecord(page);
  assert.equal(identity.task.kind, "identity");
  // The reference stack's similarity of the face to its mirror image: 0.95748.
  assert.ok(Math.abs(identity.task.similarity - reference.identity.similarity) <= 1e-3, `similarity ${identity.task.similarity}`);
  assert.match(await page.textContent("#summary"), /cosine similarity to the reference face \(0\.95/);
  const identityMap = await readMapPng("faces/astronaut.identity.gradcam.png");
  const likeness = mapAgreement(decodeMap(identity.cam.map).values, identityMap.values);
  assert.ok(likeness.pearson >= 0.999, `identity Grad-CAM pearson ${likeness.pearson}`);
  await page.screenshot({ path: join(ARTIFACTS, "identity.png"), fullPage: true });
  assert.deepEqual(page.errors, []);
});
