// Browser tests of the page's t-SNE map and mixing explorer (web/src/views.rs), on the page
// built by `trunk build --release`; set-up and environment as in harness.mjs.
//
//   cd tests/browser && npm test

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ARTEFACTS, DIST, PHOTOS, RESULT_MS, launch, openReady, startServer } from "./harness.mjs";

const ONE_FACE = join(PHOTOS, "skimage-data/skimage/data/astronaut.png");
const TSNE = join(DIST, "web", "tsne.json");

let server;
let origin;
let tsne;

before(async () => {
  ({ server, origin } = await startServer([
    ["the shipped t-SNE map", TSNE],
    ["the shared photos (MIMIC_SHARED_DATA)", ONE_FACE],
  ]));
  tsne = JSON.parse(readFileSync(TSNE, "utf8"));
});

after(() => server?.close());

/** Non-white pixels of the map's canvas, and a checksum of all its pixels. */
async function mapPixels(page) {
  return page.$eval("#tsne-canvas", (canvas) => {
    const { data } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
    let inked = 0;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] < 250 || data[i + 1] < 250 || data[i + 2] < 250) inked++;
      sum = (sum * 31 + data[i] + 7 * data[i + 1] + 13 * data[i + 2]) % 1_000_000_007;
    }
    return { inked, sum };
  });
}

/** The soft label the explorer shows, as {label: p}. */
async function mixLabel(page) {
  const bars = await page.$$eval("#mix-label .bar", (items) =>
    items.map((li) => [li.dataset.label, Number(li.dataset.prob)]),
  );
  return Object.fromEntries(bars);
}

/** Sets a range input and fires `input`, as dragging the slider does. */
async function slide(page, selector, value) {
  await page.$eval(
    selector,
    (el, v) => {
      el.value = v;
      el.dispatchEvent(new Event("input", { bubbles: true }));
    },
    String(value),
  );
}

test("the t-SNE map draws every point, pans, zooms and shows images on hover", async () => {
  const { browser, page, errors } = await launch();
  try {
    await openReady(page, origin);
    const n = tsne.panels[0].points.length;
    await page.waitForSelector(`#tsne[data-points="${n}"]`, { timeout: RESULT_MS });
    assert.equal(await page.$$eval("#tsne-legend li", (l) => l.length), tsne.classes.length);
    const drawn = await mapPixels(page);
    // Every point is a disc of a few pixels; overlaps make the count smaller than n · area.
    assert.ok(drawn.inked > 4 * n, `${drawn.inked} inked pixels for ${n} points`);

    // Hover: sweep the canvas until a point's tooltip appears.
    await page.locator("#tsne-canvas").scrollIntoViewIfNeeded();
    const box = await page.locator("#tsne-canvas").boundingBox();
    let tip = null;
    for (let y = box.y + 10; y < box.y + box.height && !tip; y += 9) {
      for (let x = box.x + 10; x < box.x + box.width && !tip; x += 9) {
        await page.mouse.move(x, y);
        tip = await page.$("#tsne-tip");
      }
    }
    assert.ok(tip, "hovering the map finds a point");
    const index = Number(await tip.getAttribute("data-index"));
    const point = tsne.panels[0].points[index];
    assert.match(await tip.textContent(), new RegExp(tsne.classes[point.class]));
    assert.match(await tip.textContent(), new RegExp(point.id.replace(".", "\\.")));
    const thumb = await tip.$eval(".thumb", (d) => getComputedStyle(d).backgroundImage);
    assert.match(thumb, new RegExp(tsne.web.sprite.replace(".", "\\.")));
    await page.locator("#tsne").screenshot({ path: join(ARTEFACTS, "tsne-hover.png") });

    // Zoom in at the centre, then drag: the drawing changes each time.
    await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
    await page.mouse.wheel(0, -600);
    await page.waitForFunction(
      (before) => {
        const c = document.querySelector("#tsne-canvas");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        let s = 0;
        for (let i = 0; i < d.length; i += 4) {
          s = (s * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1_000_000_007;
        }
        return s !== before;
      },
      drawn.sum,
      { timeout: RESULT_MS },
    );
    const zoomed = await mapPixels(page);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width / 2 + 80, box.y + box.height / 2 + 40, { steps: 5 });
    await page.mouse.up();
    const panned = await mapPixels(page);
    assert.notEqual(panned.sum, zoomed.sum, "dragging pans the map");
    await page.click("#tsne-reset");
    assert.equal((await mapPixels(page)).sum, drawn.sum, "reset restores the first view");
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("an uploaded face photo is placed on the map among its nearest test images", async () => {
  const { browser, page, errors } = await launch();
  try {
    await openReady(page, origin);
    await page.waitForSelector("#tsne[data-points]", { timeout: RESULT_MS });
    assert.equal(await page.getAttribute("#tsne", "data-live-x"), null, "no face yet");
    await page.setInputFiles("#upload", ONE_FACE);
    await page.waitForSelector(".face", { timeout: RESULT_MS });
    await page.waitForSelector("#tsne[data-live-x]", { timeout: RESULT_MS });
    const x = Number(await page.getAttribute("#tsne", "data-live-x"));
    const y = Number(await page.getAttribute("#tsne", "data-live-y"));
    const xs = tsne.panels[0].points.map((p) => p.x);
    const ys = tsne.panels[0].points.map((p) => p.y);
    // The mean of neighbours lies inside the map's bounding box.
    assert.ok(x >= Math.min(...xs) && x <= Math.max(...xs), `x = ${x}`);
    assert.ok(y >= Math.min(...ys) && y <= Math.max(...ys), `y = ${y}`);
    const line = await page.textContent("#tsne-live");
    assert.match(line, /nearest test images: /);
    const named = line.split(": ")[1].replace(/\.$/, "").split(", ");
    assert.equal(named.length, 5);
    for (const name of named) assert.ok(tsne.classes.includes(name), name);
    await page.locator("#tsne").screenshot({ path: join(ARTEFACTS, "tsne-live-face.png") });
    await page.screenshot({ path: join(ARTEFACTS, "views-after-upload.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});

test("the mixing explorer's soft label and decision follow λ, the kind and t", async () => {
  const { browser, page, errors } = await launch();
  try {
    await openReady(page, origin);
    await page.waitForSelector("#mix-label .bar", { timeout: RESULT_MS });
    const [a, b] = [1, 3]; // happiness and sadness: both have a point in the shipped map
    await page.selectOption("#mix-a", String(a));
    await page.selectOption("#mix-b", String(b));
    await page.selectOption("#mix-anchor", String(a));
    await page.check("#mix-kind-mixup");

    const expectMixup = async (lambda, positive) => {
      await slide(page, "#mix-lambda", lambda);
      await page.waitForSelector(`#mix-lambda-value[data-lambda="${lambda}"]`, {
        timeout: RESULT_MS,
      });
      const label = await mixLabel(page);
      // λ·e(a) + (1 − λ)·e(b)
      tsne.classes.forEach((name, c) => {
        const want = (c === a ? lambda : 0) + (c === b ? 1 - lambda : 0);
        assert.ok(Math.abs(label[name] - want) < 1e-6, `${name}: ${label[name]} vs ${want}`);
      });
      await page.waitForSelector(`#mix-decision[data-positive="${positive}"]`);
      return label;
    };
    // Anchor a at t = 0.5 under L∞: positive exactly when 1 − λ ≤ 0.5.
    const low = await expectMixup(0.3, false);
    const high = await expectMixup(0.8, true);
    assert.notDeepEqual(low, high, "the soft label changes with λ");
    await expectMixup(0.5, true); // inclusive threshold
    await slide(page, "#mix-threshold", 0.45);
    await page.waitForSelector('#mix-decision[data-positive="false"]');
    await page.screenshot({ path: join(ARTEFACTS, "mixer-mixup.png"), fullPage: true });

    // CutMix: λ becomes the share of A left visible, and the label follows it.
    await page.check("#mix-kind-cutmix");
    await page.waitForFunction(() =>
      /box rows/.test(document.querySelector("#mix-lambda-value")?.textContent ?? ""),
    );
    const lambda = Number(await page.getAttribute("#mix-lambda-value", "data-lambda"));
    const label = await mixLabel(page);
    assert.ok(Math.abs(label[tsne.classes[a]] - lambda) < 1e-6);
    assert.ok(Math.abs(label[tsne.classes[b]] - (1 - lambda)) < 1e-6);
    const mixed = await page.$eval("#mix-canvas", (c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      return d.some((v, i) => i % 4 === 3 && v === 255);
    });
    assert.ok(mixed, "the mixed image is drawn");
    await page.locator("#mixer").screenshot({ path: join(ARTEFACTS, "mixer-cutmix.png") });
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
