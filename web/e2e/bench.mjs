// Speed of the page in headless Chromium on MobileNetV2 (run after `trunk build --release`):
// page interactive, model load, one forward pass (the first compiles tract's plan), Grad-CAM (the
// first compiles the gradient model's plan), CamLIME with 200 and 1000 samples, click to drawn.
// Prints a table of medians; `node bench.mjs 3` repeats each measurement 3 times.
import { start, stop, open, waitModel, pickChelsea, explain } from "./harness.mjs";

const repeats = Number(process.argv[2] || 3);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const env = await start();
const rows = {
  interactive: [], model_ready: [], forward_first: [], forward: [], gradcam_first: [], gradcam: [],
  camlime_200: [], camlime_1000: [],
};
const forwardMs = async (page) => Number(/forward_ms (\d+)/.exec(await page.textContent("#timings"))[1]);
try {
  for (let i = 0; i < repeats; i++) {
    const page = await open(env);
    rows.interactive.push(page.interactiveMs);
    rows.model_ready.push(await waitModel(page));
    await pickChelsea(page);
    rows.forward_first.push(await forwardMs(page));
    await page.click("#sample-coffee");
    await page.waitForFunction(() => document.querySelector("#predictions li .label")?.textContent !== "Egyptian cat");
    rows.forward.push(await forwardMs(page));
    await pickChelsea(page);
    await page.waitForFunction(() => document.querySelector("#predictions li .label")?.textContent === "Egyptian cat");
    rows.gradcam_first.push(await explain(page, { method: "gradcam" }));
    rows.gradcam.push(await explain(page, { method: "gradcam" }));
    rows.camlime_200.push(await explain(page, { method: "camlime", samples: 200 }));
    if (i === 0 || repeats <= 3) rows.camlime_1000.push(await explain(page, { method: "camlime", samples: 1000 }));
    await page.context().close();
  }
} finally {
  await stop(env);
}
console.log("measure            median ms   runs");
for (const [name, xs] of Object.entries(rows)) {
  console.log(`${name.padEnd(18)} ${String(median(xs)).padStart(9)}   ${xs.join(" ")}`);
}
