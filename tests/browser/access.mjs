// The browser end-to-end test of the account, login and audit pages, run by
// tests/tests/browser_access.rs: Debian's Chromium, driven by playwright-core, against a real
// control plane with one host.
//
// It logs in as the admin, turns TOTP on from the account page (the code is computed here
// from the secret the page shows: RFC 6238, HMAC-SHA1, 6 digits, 30 s steps), logs out and
// in again (the form asks for the code; a wrong one is refused, the right one accepted),
// reads the logins on the audit page, exports them, checks the hash chain, then creates an
// API token on the account page, has the Rust test use it, revokes it and has the Rust test
// see it refused. Last, on the team page, it creates a workspace and a user in it, moves the
// host there, sees a refusal's message and removes the user.
//
// Talking to the Rust test: `@@ hosts TOKEN` asks it for `GET /api/v1/hosts` with
// `Authorization: Bearer TOKEN`; the answer is {"status": N, "names": [...]}.
//
// Environment: ZPANEL_URL, ZPANEL_PASSWORD, ZPANEL_HOST (the host's name), ZPANEL_USER
// (default admin), ZPANEL_SCREENSHOT (PNG path prefix, optional), ZPANEL_CHROMIUM (default
// /usr/bin/chromium).

import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ask, launchChromium, need, runSteps, shoot, step, STEP_MS } from './harness.mjs';

const url = need('ZPANEL_URL').replace(/\/$/, '');
const password = need('ZPANEL_PASSWORD');
const hostName = need('ZPANEL_HOST');
const user = process.env.ZPANEL_USER || 'admin';

// === TOTP (RFC 6238) ===

const TOTP_STEP_SECONDS = 30;

/** The bytes of an RFC 4648 base32 string (padding optional). */
function base32Decode(text) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const bytes = [];
  let value = 0;
  let bits = 0;
  for (const char of text.toUpperCase().replace(/=+$/, '')) {
    const index = alphabet.indexOf(char);
    if (index < 0) throw new Error(`${JSON.stringify(text)} is not base32`);
    value = ((value << 5) | index) & 0xffff;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

/** The six-digit code of `secret` (base32) for time step `counter`. */
function totp(secret, counter) {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', base32Decode(secret)).update(message).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const number = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(number % 1_000_000).padStart(6, '0');
}

/** The time step now. */
function stepNow() {
  return Math.floor(Date.now() / 1000 / TOTP_STEP_SECONDS);
}

// === the page ===

/** Fills the login form and submits it; the login request's status. */
async function submitLogin(page, { code } = {}) {
  await page.fill('#login-user', user);
  await page.fill('#login-password', password);
  if (code !== undefined) await page.fill('#login-code', code);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/v1/login')),
    page.click('#login-submit'),
  ]);
  return response.status();
}

/** Asks the Rust test to list the hosts with an API token. */
async function hostsWithToken(token) {
  return JSON.parse(await ask(`hosts ${token}`));
}

// === the test ===

const { context, page, pageErrors, close } = await launchChromium({
  viewport: { width: 1280, height: 800 },
  acceptDownloads: true,
});
context.setDefaultTimeout(STEP_MS);
await runSteps('access', { page, pageErrors, close }, async () => {
  step(`log in as ${user}: the host is listed with its workspace`);
  await page.goto(url);
  if ((await submitLogin(page)) !== 200) throw new Error('the first login was refused');
  await page.locator(`#hosts-body tr[data-name="${hostName}"][data-workspace="default"]`).waitFor();

  step('the account page: this browser\'s session is listed, TOTP is off');
  await page.click('#nav-account');
  await page.locator('#account-totp[data-state="off"]').waitFor();
  await page.locator('#account-sessions tr[data-current="true"]').waitFor();

  step('turn TOTP on: the page shows the secret, its otpauth URL and a QR code');
  await page.click('#totp-begin');
  await page.locator('#account-totp[data-state="setup"] svg.qr').waitFor();
  const secret = (await page.textContent('#totp-secret')).trim();
  const otpauth = (await page.textContent('#totp-url')).trim();
  if (!otpauth.startsWith('otpauth://totp/') || !otpauth.includes(`secret=${secret}`)) {
    throw new Error(`the URL ${otpauth} does not carry the secret ${secret}`);
  }
  await shoot(page, 'totp-setup', { fullPage: true });

  step('a code computed from the secret turns it on');
  // A code works once: the server remembers the last step used, so each later code is
  // taken from a later step (the server accepts one step ahead of its clock).
  const confirmStep = stepNow();
  await page.fill('#totp-code', totp(secret, confirmStep));
  await page.click('#totp-confirm');
  await page.locator('#account-totp[data-state="on"]').waitFor();
  await shoot(page, 'account', { fullPage: true });

  step('log out; signing in again asks for the code');
  await page.click('#logout');
  await page.locator('#view-login:not([hidden])').waitFor();
  if ((await submitLogin(page)) !== 401) throw new Error('the password alone was accepted');
  await page.locator('#login-code-field:not([hidden])').waitFor();
  await page.locator('#login-form[data-step="code"]').waitFor();

  step('a wrong code is refused');
  const loginStep = Math.max(stepNow(), confirmStep + 1);
  const goodCode = totp(secret, loginStep);
  const nearCodes = new Set([-2, -1, 0, 1, 2].map((d) => totp(secret, loginStep + d)));
  const wrongCode = ['000000', '111111', '222222'].find((c) => !nearCodes.has(c));
  if ((await submitLogin(page, { code: wrongCode })) !== 401) throw new Error('a wrong code was accepted');
  const refusal = await page.textContent('#login-error');
  if (!refusal.trim()) throw new Error('the refusal shows no message');
  if (await page.locator('#view-login').isHidden()) throw new Error('the page left the login form');

  step('the right code signs in');
  if ((await submitLogin(page, { code: goodCode })) !== 200) throw new Error('the right code was refused');
  // Back where the page was: the account page, which says TOTP is on.
  await page.locator('#account-totp[data-state="on"]').waitFor();

  step('the audit page lists the logins, the refused one too');
  await page.click('#nav-audit');
  await page.locator('table.audit[data-state="ready"]').waitFor();
  await page.locator('#audit-body tr[data-action="login"][data-outcome="ok"]').first().waitFor();
  await page.locator('#audit-body tr[data-action="login"][data-outcome="refused"]').first().waitFor();
  await page.locator('#audit-body tr[data-action="account.totp.enable"]').first().waitFor();

  step('filter by action: only logins');
  await page.fill('#audit-action', 'login');
  await page.press('#audit-action', 'Enter');
  await page.locator('table.audit[data-state="ready"]').waitFor();
  await page.locator('#audit-body tr[data-action="account.totp.enable"]').waitFor({ state: 'detached' });
  const actions = await page.$$eval('#audit-body tr[data-id]', (rows) => rows.map((r) => r.dataset.action));
  if (actions.length === 0 || actions.some((a) => !a.startsWith('login'))) {
    throw new Error(`the filtered list has ${JSON.stringify(actions)}`);
  }

  step('export the filtered entries as JSON lines, oldest first');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#audit-export')]);
  if (download.suggestedFilename() !== 'zpanel-audit.jsonl') {
    throw new Error(`the export is named ${download.suggestedFilename()}`);
  }
  const exported = readFileSync(await download.path(), 'utf8').trim().split('\n').map((line) => JSON.parse(line));
  const ids = exported.map((entry) => entry.id);
  if (exported.length !== actions.length || ids.some((id, i) => i > 0 && id <= ids[i - 1])) {
    throw new Error(`the export has ids ${JSON.stringify(ids)}; the page shows ${actions.length} entries`);
  }

  step('verify the chain');
  await page.click('#audit-verify');
  await page.locator('#audit-verify-result[data-ok="true"]').waitFor();
  await page.fill('#audit-action', '');
  await page.press('#audit-action', 'Enter');
  await page.locator('#audit-body tr[data-action="audit.verify"]').first().waitFor();
  await shoot(page, 'audit', { fullPage: true });

  step('create an API token on the account page: it is shown once');
  await page.click('#nav-account');
  await page.locator('#account-totp[data-state="on"]').waitFor();
  await page.selectOption('#token-workspace', '');
  await page.fill('#token-name', 'from-the-browser');
  await page.click('#token-create');
  await page.locator('#token-created:not([hidden])').waitFor();
  const token = (await page.textContent('#token-secret')).trim();
  const tokenRow = page.locator('#account-tokens tr[data-name="from-the-browser"][data-live="true"]');
  await tokenRow.waitFor();

  step('the token lists the hosts with Authorization: Bearer');
  const listed = await hostsWithToken(token);
  if (listed.status !== 200 || !listed.names.includes(hostName)) {
    throw new Error(`with the token: ${JSON.stringify(listed)}`);
  }

  step('revoke the token: it is refused from then on');
  await tokenRow.locator('button.revoke').click();
  const confirm = page.locator('dialog[data-dialog="revoke-token"]');
  await confirm.waitFor();
  await confirm.locator('[data-choice="revoke"]').click();
  await page.locator('#account-tokens tr[data-name="from-the-browser"][data-live="false"]').waitFor();
  const refused = await hostsWithToken(token);
  if (refused.status !== 401) throw new Error(`the revoked token got ${JSON.stringify(refused)}`);

  step('the team page: create a workspace with a quota and a user in it');
  await page.click('#nav-team');
  await page.locator('#team-users tr[data-user="admin"]').waitFor();
  await page.fill('#workspace-name', 'blue');
  await page.fill('#workspace-max-hosts', '2');
  await page.click('#workspace-form button[type="submit"]');
  const blue = page.locator('#team-workspaces tr[data-workspace="blue"]');
  await blue.waitFor();
  await page.fill('#user-name', 'carol');
  await page.selectOption('#user-role', 'developer');
  await page.selectOption('#user-workspace', 'blue');
  await page.fill('#user-password', 'a long enough password');
  await page.click('#user-form button[type="submit"]');
  await page.locator('#team-users tr[data-user="carol"]').waitFor();
  await blue.locator('.member[data-member="carol"]').waitFor();

  step('move the host into the workspace: the hosts page shows it there');
  await blue.locator('button.add-host').click();
  const move = page.locator('dialog[data-dialog="add-host"]');
  await move.waitFor();
  await move.locator('[data-choice="ok"]').click();
  await page.locator('#team-workspaces tr[data-workspace="blue"] td:nth-child(2)', { hasText: '1' }).waitFor();
  await shoot(page, 'team', { fullPage: true });
  await page.click('#bar nav a[href="#/hosts"]');
  await page.locator(`#hosts-body tr[data-name="${hostName}"][data-workspace="blue"]`).waitFor();

  step('a refused change shows the server\'s line: a second user named carol');
  await page.click('#nav-team');
  await page.locator('#team-users tr[data-user="carol"]').waitFor();
  await page.fill('#user-name', 'carol');
  await page.click('#user-form button[type="submit"]');
  await page.locator('#team-error', { hasText: 'a user named "carol" already exists' }).waitFor();

  step('remove the user, after confirming');
  await page.locator('#team-users tr[data-user="carol"] button.remove').click();
  const remove = page.locator('dialog[data-dialog="remove-user"]');
  await remove.waitFor();
  await remove.locator('[data-choice="remove"]').click();
  await page.locator('#team-users tr[data-user="carol"]').waitFor({ state: 'detached' });

});
