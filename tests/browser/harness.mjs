// What the browser scripts (terminal, files, access, docker) share: their environment, their steps,
// talking to the Rust test that runs them (tests/src/browser.rs), and launching Debian's
// Chromium (ZPANEL_CHROMIUM, default /usr/bin/chromium) with a profile of its own.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

/** How long one step may take. */
export const STEP_MS = 30_000;

/** The environment variable `name`; throws when it is not set. */
export function need(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

/** The step under way, named in the failure message. */
export let currentStep = 'start';

export function step(text) {
  currentStep = text;
  console.log(`step: ${text}`);
}

// === talking to the Rust test ===

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to do something (`@@ COMMAND`) and waits for its one-line answer. */
export async function ask(command) {
  console.log(`@@ ${command}`);
  const { value, done } = await stdinLines.next();
  if (done) throw new Error(`no answer to ${command}`);
  return value;
}

// === Chromium ===

/**
 * Launches headless Chromium with a fresh profile; `options` (viewport, acceptDownloads…)
 * are added to the launch options. Returns its context, its page, the errors the page throws (collected as
 * they come) and `close`, which ends Chromium and removes the profile.
 */
export async function launchChromium(options) {
  const profile = mkdtempSync(join(tmpdir(), 'zpanel-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.ZPANEL_CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
    ignoreHTTPSErrors: true, // the control plane's certificate comes from its own CA
    ...options,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  async function close() {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  return { context, page, pageErrors, close };
}

// === a script's run ===

/**
 * Saves a screenshot of `page` beside ZPANEL_SCREENSHOT, its name ending in `-NAME.png`
 * (nothing when the variable is not set); `options` go to Playwright (`fullPage`).
 */
export async function shoot(page, name, options = {}) {
  const screenshot = process.env.ZPANEL_SCREENSHOT;
  if (!screenshot) return;
  const path = screenshot.replace(/(\.png)?$/, `-${name}.png`);
  await page.screenshot({ path, ...options });
  console.log(`  screenshot ${path}`);
}

/**
 * Runs a script's `steps` in the Chromium `launchChromium` gave: fails on errors the page
 * threw, names the failing step with a `-failed` screenshot, closes Chromium and exits
 * (stdin stays open otherwise). The Rust side reads the `ok:` or `FAILED` line.
 */
export async function runSteps(name, { page, pageErrors, close }, steps) {
  try {
    await steps();
    if (pageErrors.length > 0) throw new Error(`errors on the page:\n${pageErrors.join('\n')}`);
    console.log(`ok: the browser ${name} test passed`);
  } catch (e) {
    console.log(`FAILED at step "${currentStep}": ${e.message}`);
    await shoot(page, 'failed').catch(() => {});
    process.exitCode = 1;
  } finally {
    await close();
  }
  process.exit();
}
