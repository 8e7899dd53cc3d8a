// Shared set-up of the browser tests: a static server for the built page on 127.0.0.1, a
// fresh headless chromium per test, and waiting for the model to be ready.
//
// Environment: MIMIC_DIST (default: <repo>/dist), MIMIC_SHARED_DATA (default: the data folder
// beside the repository, ../shared/data), CHROMIUM (default: /usr/bin/chromium),
// MIMIC_ARTEFACTS (default: tests/browser/artefacts).

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
export const DIST = resolve(process.env.MIMIC_DIST ?? join(repo, "dist"));
export const DATA = resolve(process.env.MIMIC_SHARED_DATA ?? join(repo, "..", "shared", "data"));
export const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
export const ARTEFACTS = resolve(process.env.MIMIC_ARTEFACTS ?? join(here, "artefacts"));
export const PHOTOS = join(DATA, "photos");

// Generous: the first load compiles the wasm and the warm-up runs on a shared 2-core machine.
export const READY_MS = 120_000;
export const RESULT_MS = 60_000;

// As root chromium needs --no-sandbox; the rest keep it off the (closed) network.
const BASE_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-default-apps",
  "--disable-extensions",
];

const MIME = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript",
  ".wasm": "application/wasm",
  ".css": "text/css",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".bin": "application/octet-stream",
  ".safetensors": "application/octet-stream",
};

/**
 * Checks that the built page and chromium exist (plus `paths`, [what, path] pairs), then
 * serves DIST on 127.0.0.1 (a secure context, which getUserMedia needs) and nothing else.
 * Returns the server and its origin.
 */
export async function startServer(paths = []) {
  for (const [what, path] of [
    [
      "the built page (run `trunk build --release` at the repository root)",
      join(DIST, "index.html"),
    ],
    ["chromium (Debian package `chromium`)", CHROMIUM],
    ...paths,
  ]) {
    assert.ok(existsSync(path), `missing ${what}: ${path}`);
  }
  mkdirSync(ARTEFACTS, { recursive: true });
  const server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://127.0.0.1").pathname);
    const file = normalize(join(DIST, path.endsWith("/") ? path + "index.html" : path));
    if (!(file + sep).startsWith(DIST + sep) && file !== DIST) {
      res.writeHead(403).end();
      return;
    }
    if (!existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": MIME[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

/**
 * A fresh chromium with its own profile folder, plus `args`; page errors are collected.
 * Headless chromium gives WebGPU no adapter unless `--enable-unsafe-webgpu` is among `args`
 * (then a SwiftShader one: correct, but slow), so the page falls back to the CPU by default.
 */
export async function launch(args = []) {
  const profile = mkdtempSync(join(tmpdir(), "mimic-chromium-"));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...BASE_ARGS, ...args],
    viewport: { width: 1200, height: 1000 },
  });
  // The profile folder goes with the browser.
  const close = browser.close.bind(browser);
  browser.close = async () => {
    await close();
    rmSync(profile, { recursive: true, force: true });
  };
  const page = browser.pages()[0] ?? (await browser.newPage());
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  return { browser, page, errors };
}

/** Opens the page at `origin` and waits until the model is loaded and warmed up. */
export async function openReady(page, origin, query = "") {
  await page.goto(`${origin}/${query}`);
  await page.waitForFunction(
    () => {
      const s = document.querySelector("#status")?.textContent ?? "";
      return s.startsWith("Ready") || s.includes("could not be loaded");
    },
    null,
    { timeout: READY_MS },
  );
  const status = await page.textContent("#status");
  const message = (await page.$("#message")) ? await page.textContent("#message") : "";
  assert.match(status, /^Ready\. Backend: /, `the page did not load: ${status} ${message}`);
  return status;
}
