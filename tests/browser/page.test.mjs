// Browser tests of the page built by `trunk build --release` (in dist/): photos, the webcam,
// bad input, the backends and `?bench`, in Debian's chromium driven by playwright-core against
// a static server on 127.0.0.1 (set-up and environment in harness.mjs).
//
//   cd tests/browser && npm ci && npm test

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  ARTEFACTS,
  PHOTOS,
  RESULT_MS,
  launch,
  openReady as openAt,
  startServer,
} from "./harness.mjs";

const GROUP_PHOTO = join(PHOTOS, "faceapi-demo-photos/package/demo/sample1.jpg");
const ONE_FACE = join(PHOTOS, "skimage-data/skimage/data/astronaut.png");
const NO_FACE = join(PHOTOS, "skimage-data/skimage/data/coffee.png");

let server;
let origin;

before(async () => {
  ({ server, origin } = await startServer([
    ["the shared photos (MIMIC_SHARED_DATA)", GROUP_PHOTO],
  ]));
});

after(() => server?.close());

/** Opens the page and waits until the model is loaded and warmed up. */
const openReady = (page, query = "") => openAt(page, origin, query);

/** The probabilities shown for each face card. */
async function faceProbabilities(page) {
  return page.$$eval(".face", (cards) =>
    cards.map((card) =>
      [...card.querySelectorAll(".bar")].map((bar) => ({
        label: bar.dataset.label,
        p: Number(bar.dataset.prob),
      })),
    ),
  );
}

function assertDistributions(faces) {
  for (const bars of faces) {
    assert.equal(bars.length, 8, "one bar per FERPlus class");
    const sum = bars.reduce((s, b) => s + b.p, 0);
    assert.ok(Math.abs(sum - 1) < 1e-3, `probabilities sum to ${sum}`);
    for (const b of bars) assert.ok(b.p >= 0 && b.p <= 1, `${b.label}: ${b.p}`);
  }
}

/** Uploads a file that claims to be a PNG but is cut off; waits for the page's message. */
async function uploadBrokenPng(page) {
  await page.setInputFiles("#upload", {
    name: "broken.png",
    mimeType: "image/png",
    buffer: Buffer.from("\x89PNG\r\n\x1a\n truncated"),
  });
  await page.waitForFunction(
    () => /could not be read/.test(document.querySelector("#message")?.textContent ?? ""),
    null,
    { timeout: RESULT_MS },
  );
}

/** Number of canvas pixels of the page's box colour (#1fd17a): the drawn face boxes. */
async function boxPixels(page) {
  return page.$eval("#view", (canvas) => {
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] === 0x1f && data[i + 1] === 0xd1 && data[i + 2] === 0x7a) n++;
    }
    return n;
  });
}

/**
 * Writes a one-frame YUV4MPEG2 (4:2:0) video of `photo`, decoded and converted by the browser,
 * for chromium's fake camera. Returns its path.
 */
async function y4mOf(page, photo) {
  const bytes = readFileSync(photo).toString("base64");
  const { w, h, y, u, v } = await page.evaluate(async (b64) => {
    const blob = await (await fetch(`data:image/png;base64,${b64}`)).blob();
    const bmp = await createImageBitmap(blob);
    const w = bmp.width & ~1;
    const h = bmp.height & ~1;
    const c = new OffscreenCanvas(w, h);
    const ctx = c.getContext("2d");
    ctx.drawImage(bmp, 0, 0);
    const px = ctx.getImageData(0, 0, w, h).data;
    // BT.601 limited range, as chromium's fake capture expects.
    const y = new Array(w * h);
    const u = new Array((w / 2) * (h / 2));
    const v = new Array((w / 2) * (h / 2));
    for (let i = 0; i < w * h; i++) {
      const [r, g, b] = [px[4 * i], px[4 * i + 1], px[4 * i + 2]];
      y[i] = Math.round(16 + 0.257 * r + 0.504 * g + 0.098 * b);
    }
    for (let j = 0; j < h / 2; j++) {
      for (let i = 0; i < w / 2; i++) {
        let [r, g, b] = [0, 0, 0];
        for (const [dx, dy] of [[0, 0], [1, 0], [0, 1], [1, 1]]) {
          const k = 4 * ((2 * j + dy) * w + 2 * i + dx);
          r += px[k] / 4;
          g += px[k + 1] / 4;
          b += px[k + 2] / 4;
        }
        u[j * (w / 2) + i] = Math.round(128 - 0.148 * r - 0.291 * g + 0.439 * b);
        v[j * (w / 2) + i] = Math.round(128 + 0.439 * r - 0.368 * g - 0.071 * b);
      }
    }
    return { w, h, y, u, v };
  }, bytes);
  const header = Buffer.from(`YUV4MPEG2 W${w} H${h} F30:1 Ip A1:1 C420jpeg\nFRAME\n`);
  const path = join(mkdtempSync(join(tmpdir(), "mimic-camera-")), "face.y4m");
  writeFileSync(path, Buffer.concat([header, Buffer.from([...y, ...u, ...v])]));
  return path;
}

test("a group photo: every face gets a box and probabilities that sum to 1", async () => {
  const { browser, page, errors } = await launch();
  try {
    const status = await openReady(page);
    assert.match(status, /CPU/);
    await page.setInputFiles("#upload", GROUP_PHOTO);
    await page.waitForSelector(".face", { timeout: RESULT_MS });
    const faces = await faceProbabilities(page);
    assert.ok(faces.length >= 2, `found ${faces.length} faces in a group photo`);
    assertDistributions(faces);
    assert.ok((await boxPixels(page)) > 100, "face boxes are drawn on the canvas");
    // 1920 px wide: downscaled, and the page says so.
    assert.match(await page.textContent("#message"), /downscaled/);
    assert.match(await page.textContent("#timing"), /ms per face/);
    await page.screenshot({ path: join(ARTEFACTS, "photo-upload.png"), fullPage: true });
    // The header, the photo with its boxes and the face cards, small enough for the README.
    const cards = await page.locator("#faces").boundingBox();
    await page.screenshot({
      path: join(ARTEFACTS, "photo-faces.jpg"),
      type: "jpeg",
      quality: 80,
      clip: { x: 0, y: 0, width: 1200, height: Math.ceil(cards.y + cards.height + 16) },
      fullPage: true,
    });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("bad uploads and faceless photos get a message and leave the page working", async () => {
  const { browser, page } = await launch();
  try {
    await openReady(page);
    await page.setInputFiles("#upload", {
      name: "notes.txt",
      mimeType: "text/plain",
      buffer: Buffer.from("not an image"),
    });
    await page.waitForSelector("#message", { timeout: RESULT_MS });
    assert.match(await page.textContent("#message"), /“notes\.txt” is not an image/);

    // Claims to be an image, but is not one.
    await uploadBrokenPng(page);

    // Over the 64 MB limit: refused before decoding.
    const huge = join(mkdtempSync(join(tmpdir(), "mimic-upload-")), "huge.jpg");
    writeFileSync(huge, Buffer.alloc(65 * 1024 * 1024, 0xff));
    await page.setInputFiles("#upload", huge);
    await page.waitForFunction(
      () => /over 64 MB are refused/.test(document.querySelector("#message")?.textContent ?? ""),
      null,
      { timeout: RESULT_MS },
    );
    rmSync(dirname(huge), { recursive: true, force: true });

    await page.setInputFiles("#upload", NO_FACE);
    await page.waitForFunction(
      () => /No face found/.test(document.querySelector("#message")?.textContent ?? ""),
      null,
      { timeout: RESULT_MS },
    );
    assert.equal((await faceProbabilities(page)).length, 0);

    // Still working: a real face afterwards is classified.
    await page.setInputFiles("#upload", ONE_FACE);
    await page.waitForSelector(".face", { timeout: RESULT_MS });
    assertDistributions(await faceProbabilities(page));
    await page.screenshot({ path: join(ARTEFACTS, "bad-uploads-then-face.png"), fullPage: true });

    // A failed upload after it leaves nothing of that face on screen.
    await uploadBrokenPng(page);
    assert.equal((await faceProbabilities(page)).length, 0);
    assert.equal((await page.textContent("#timing")).trim(), "");
    assert.equal(await boxPixels(page), 0, "the old face box is gone");
  } finally {
    await browser.close();
  }
});

test("a fake webcam streaming a face photo gives live predictions", async () => {
  const prep = await launch();
  let video;
  try {
    await prep.page.goto(`${origin}/`);
    video = await y4mOf(prep.page, ONE_FACE);
  } finally {
    await prep.browser.close();
  }
  const { browser, page, errors } = await launch([
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-video-capture=${video}`,
  ]);
  try {
    // Record every stream the page opens, to check that none is left running.
    await page.addInitScript(() => {
      const devices = navigator.mediaDevices;
      const open = devices.getUserMedia.bind(devices);
      window.openedStreams = [];
      devices.getUserMedia = async (constraints) => {
        const stream = await open(constraints);
        window.openedStreams.push(stream);
        return stream;
      };
    });
    await openReady(page);
    // An impatient double click opens one camera, not two.
    await page.dblclick("#camera");
    await page.waitForFunction(
      () => Number(document.querySelector("#timing")?.dataset.frames ?? 0) >= 3,
      null,
      { timeout: RESULT_MS },
    );
    await page.waitForSelector(".face", { timeout: RESULT_MS });
    assertDistributions(await faceProbabilities(page));
    assert.match(await page.textContent("#camera"), /Stop the webcam/);
    assert.match(await page.textContent("#timing"), /ms per frame/);
    await page.screenshot({ path: join(ARTEFACTS, "webcam.png"), fullPage: true });
    await page.click("#camera");
    await page.waitForFunction(() => /Start/.test(document.querySelector("#camera").textContent));
    const live = await page.evaluate(() =>
      window.openedStreams.filter((s) => s.getTracks().some((t) => t.readyState === "live")).length,
    );
    assert.equal(live, 0, "every camera stream is stopped");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("a denied camera gives a message and the photo upload still works", async () => {
  const { browser, page } = await launch([
    "--use-fake-device-for-media-stream",
    "--deny-permission-prompts",
  ]);
  try {
    await openReady(page);
    await page.click("#camera");
    await page.waitForSelector("#message", { timeout: RESULT_MS });
    assert.match(await page.textContent("#message"), /Camera access was denied/);
    assert.match(await page.textContent("#camera"), /Start the webcam/);
    await page.screenshot({ path: join(ARTEFACTS, "camera-denied.png"), fullPage: true });
    await page.setInputFiles("#upload", ONE_FACE);
    await page.waitForSelector(".face", { timeout: RESULT_MS });
  } finally {
    await browser.close();
  }
});

/** Probabilities of the one face in ONE_FACE, on the backend `args` and `query` lead to. */
async function oneFaceOn(args, query) {
  const { browser, page, errors } = await launch(args);
  try {
    const status = await openReady(page, query);
    await page.setInputFiles("#upload", ONE_FACE);
    await page.waitForSelector(".face", { timeout: RESULT_MS });
    const faces = await faceProbabilities(page);
    assert.equal(faces.length, 1);
    assertDistributions(faces);
    assert.deepEqual(errors, []);
    return { status, probs: faces[0].map((b) => b.p), page, browser };
  } catch (e) {
    await browser.close();
    throw e;
  }
}

test("a machine without a camera gives a message", async () => {
  // Camera prompts accepted, but no (fake) device: getUserMedia finds no camera.
  const { browser, page } = await launch(["--use-fake-ui-for-media-stream"]);
  try {
    await openReady(page);
    await page.click("#camera");
    await page.waitForSelector("#message", { timeout: RESULT_MS });
    assert.match(await page.textContent("#message"), /No camera was found|could not be opened/);
    assert.match(await page.textContent("#camera"), /Start the webcam/);
  } finally {
    await browser.close();
  }
});

test("WebGPU with an adapter, else the CPU, and both give the same results", async () => {
  const gpu = await oneFaceOn(["--enable-unsafe-webgpu"], "");
  await gpu.page.screenshot({ path: join(ARTEFACTS, "webgpu.png"), fullPage: true });
  await gpu.browser.close();
  assert.match(gpu.status, /^Ready\. Backend: WebGPU \(burn-wgpu; adapter: /, gpu.status);

  // No adapter (headless chromium without the flag): the CPU, and the page says why.
  const cpu = await oneFaceOn([], "");
  await cpu.browser.close();
  assert.match(cpu.status, /^Ready\. Backend: CPU \(WebAssembly, burn-flex\) \(.*no GPU adapter/);

  // An adapter, but ?cpu asks for the CPU.
  const forced = await oneFaceOn(["--enable-unsafe-webgpu"], "?cpu");
  await forced.browser.close();
  assert.match(forced.status, /Backend: CPU .*\?cpu/);

  // One model, two backends: the probabilities agree (f32 on both; the reduction order differs).
  const worst = Math.max(...gpu.probs.map((p, i) => Math.abs(p - cpu.probs[i])));
  assert.ok(worst < 1e-3, `WebGPU and CPU probabilities differ by up to ${worst}`);
  assert.deepEqual(forced.probs, cpu.probs);
});

test("?bench with a count it cannot take says so", async () => {
  const { browser, page } = await launch();
  try {
    await openReady(page, "?bench=abc");
    await page.waitForSelector("#bench", { timeout: RESULT_MS });
    const report = JSON.parse(await page.textContent("#bench"));
    assert.match(report.error, /\?bench takes a number of runs from 1 to 10000, not “abc”/);
  } finally {
    await browser.close();
  }
});

test("?bench times inferences on the fixed face and reports ms per face", async () => {
  const { browser, page } = await launch();
  try {
    const t0 = Date.now();
    await openReady(page, "?bench=30");
    const ready = Date.now() - t0;
    await page.waitForSelector("#bench", { timeout: RESULT_MS });
    const report = JSON.parse(await page.textContent("#bench"));
    assert.equal(report.error, undefined, report.error);
    assert.equal(report.runs, 30);
    assert.ok(Number.isFinite(report.ms_per_face_median) && report.ms_per_face_median > 0);
    report.page_ready_ms = ready;
    report.ready_status = await page.textContent("#status");
    writeFileSync(join(ARTEFACTS, "bench.json"), JSON.stringify(report, null, 2) + "\n");
    console.log(
      `bench: ${report.backend}: median ${report.ms_per_face_median.toFixed(2)} ms/face ` +
        `(min ${report.ms_per_face_min.toFixed(2)}, mean ${report.ms_per_face_mean.toFixed(2)}); ` +
        `page ready in ${ready} ms; ${report.status}`,
    );
  } finally {
    await browser.close();
  }
});
