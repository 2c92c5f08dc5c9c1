// The browser end-to-end test of the terminal page, run by tests/tests/browser.rs: Debian's
// Chromium, driven by playwright-core, against a real control plane and daemon.
//
// It logs in, opens a terminal on the host, runs a command, reloads the page (same session,
// earlier output replayed), lives through a control-plane restart (the page shows
// "reconnecting…", input typed meanwhile arrives afterwards, same session), checks that the
// terminal WebSocket refuses a foreign Origin, takes a screenshot and ends the shell.
//
// Talking to the Rust test: a line `@@ kill` or `@@ start` on stdout asks it to stop or
// start the control plane; the script then waits for one line on stdin. Every other line
// is progress, shown when the test fails.
//
// Environment: ZPANEL_URL (the control plane's web URL), ZPANEL_PASSWORD (the admin's),
// ZPANEL_HOST (the host's name), ZPANEL_USER (default admin), ZPANEL_SCREENSHOT (PNG path,
// optional), ZPANEL_CHROMIUM (default /usr/bin/chromium).

import { randomBytes } from 'node:crypto';
import { request } from 'node:https';
import { ask, launchChromium, need, runSteps, step, STEP_MS } from './harness.mjs';

const url = need('ZPANEL_URL').replace(/\/$/, '');
const password = need('ZPANEL_PASSWORD');
const hostName = need('ZPANEL_HOST');
const user = process.env.ZPANEL_USER || 'admin';
const screenshot = process.env.ZPANEL_SCREENSHOT;
/** How long a control-plane restart may take, the daemon reconnecting included. */
const RESTART_MS = 90_000;

// === the terminal on the page ===

/** The visible terminal's text, row by row. */
function screenText(page) {
  return page.evaluate(() => document.querySelector('.pane:not([hidden]) .xterm-rows')?.innerText ?? '');
}

/** Waits until a line of the visible terminal matches `pattern`. */
async function expectLine(page, pattern, timeout = STEP_MS) {
  try {
    await page.waitForFunction(
      ([source, flags]) => {
        const rows = document.querySelector('.pane:not([hidden]) .xterm-rows');
        return rows && new RegExp(source, flags).test(rows.innerText.replace(/\u00a0/g, ' '));
      },
      [pattern.source, `${pattern.flags.replace('m', '')}m`],
      { timeout },
    );
  } catch (e) {
    throw new Error(`no line matching ${pattern} on the terminal:\n${await screenText(page)}\n(${e.message})`);
  }
}

/** Waits until the active tab is attached; returns its session id. */
async function attachedSession(page, timeout = STEP_MS) {
  const tab = page.locator('.tab.active[data-state="attached"]');
  await tab.waitFor({ timeout });
  return tab.getAttribute('data-session');
}

async function typeLine(page, text) {
  await page.locator('.pane:not([hidden]) .xterm').click();
  await page.keyboard.type(text);
  await page.keyboard.press('Enter');
}

// === a WebSocket upgrade with an Origin of our choosing, outside the browser ===

/** The HTTP status the terminal WebSocket upgrade answers (101 when accepted). */
function upgradeStatus(path, origin, cookie) {
  return new Promise((resolve, reject) => {
    const req = request(`${url}${path}`, {
      rejectUnauthorized: false, // the control plane's own CA; the browser ignores it too
      headers: {
        connection: 'Upgrade',
        upgrade: 'websocket',
        'sec-websocket-version': '13',
        'sec-websocket-key': randomBytes(16).toString('base64'),
        origin,
        cookie,
      },
    });
    req.on('upgrade', (response, socket) => {
      socket.destroy();
      resolve(response.statusCode);
    });
    req.on('response', (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    req.on('error', reject);
    req.setTimeout(STEP_MS, () => req.destroy(new Error(`upgrade of ${path} timed out`)));
    req.end();
  });
}

// === the test ===

const { context, page, pageErrors, close } = await launchChromium({
  viewport: { width: 1100, height: 650 },
});
await runSteps('terminal', { page, pageErrors, close }, async () => {
  step('the page loads with a strict Content-Security-Policy');
  const response = await page.goto(url);
  const csp = response.headers()['content-security-policy'] ?? '';
  if (!csp.startsWith("default-src 'self'")) throw new Error(`Content-Security-Policy is ${JSON.stringify(csp)}`);

  step('a wrong password shows the server\'s error');
  await page.fill('#login-user', user);
  await page.fill('#login-password', `${password}-wrong`);
  await page.click('#login-submit');
  await page.locator('#login-error:not(:empty)').waitFor({ timeout: STEP_MS });
  console.log(`  login error: ${await page.textContent('#login-error')}`);

  step(`log in as ${user}`);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
  const row = page.locator(`#hosts-body tr[data-name="${hostName}"][data-status="online"]`);
  await row.waitFor({ timeout: STEP_MS });
  if ((await page.textContent('#user')) !== user) throw new Error('the user name is not shown');

  step(`open a terminal on ${hostName} and run a command`);
  await row.locator('button.terminal').click();
  const session = await attachedSession(page);
  console.log(`  session ${session}`);
  await expectLine(page, /[$#]\s*$/); // the shell's prompt
  await typeLine(page, 'echo $((6*7))');
  await expectLine(page, /^42\s*$/);

  step('reload: the same session, the earlier output replayed');
  await page.reload();
  const reloaded = await attachedSession(page);
  if (reloaded !== session) throw new Error(`after the reload the tab has session ${reloaded}, not ${session}`);
  await expectLine(page, /^42\s*$/);
  await expectLine(page, /echo \$\(\(6\*7\)\)/);

  step('the control plane stops: the page shows that it is reconnecting');
  await ask('kill');
  await page.locator('.pane:not([hidden])[data-state="reconnecting"] .overlay').waitFor({ timeout: STEP_MS });
  const overlay = await page.textContent('.pane:not([hidden]) .overlay');
  if (!overlay.includes('reconnecting')) throw new Error(`the overlay says ${JSON.stringify(overlay)}`);
  if (screenshot) await page.screenshot({ path: screenshot.replace(/(\.png)?$/, '-reconnecting.png') });
  // Typed while the control plane is down: kept and sent once the page is attached again.
  await typeLine(page, 'echo typed-while-away-$((6*7+1))');

  step('the control plane starts again: the page reattaches to the same session');
  await ask('start');
  const resumed = await attachedSession(page, RESTART_MS);
  if (resumed !== session) throw new Error(`after the restart the tab has session ${resumed}, not ${session}`);
  await expectLine(page, /^typed-while-away-43\s*$/);
  await typeLine(page, 'echo still-here-$((6*8))');
  await expectLine(page, /^still-here-48\s*$/);

  step('the terminal WebSocket refuses a foreign Origin');
  // (A page on another origin could not even send our cookie, which is SameSite=Strict; so
  // the check is made with the cookie, outside the browser, where nothing else stops it.)
  const cookies = await context.cookies(url);
  const cookie = cookies.map((c) => `${c.name}=${c.value}`).join('; ');
  const host = await page.getAttribute('.tab.active', 'data-host');
  const path = `/api/v1/hosts/${encodeURIComponent(host)}/terminal?session=${encodeURIComponent(session)}&mode=watch`;
  const foreign = await upgradeStatus(path, 'https://evil.example', cookie);
  if (foreign !== 403) throw new Error(`a foreign Origin got HTTP ${foreign}, not 403`);
  const own = await upgradeStatus(path, new URL(url).origin, cookie);
  if (own !== 101) throw new Error(`our own Origin got HTTP ${own}, not 101 (so the 403 proves nothing)`);

  if (screenshot) {
    step(`screenshot: ${screenshot}`);
    await page.screenshot({ path: screenshot });
  }

  step('the shell exits: the page says so and does not reconnect');
  await typeLine(page, 'exit');
  await expectLine(page, /\[session ended \(exit 0\)\]/);
  await page.locator('.tab.active[data-state="ended"]').waitFor({ timeout: STEP_MS });

});
