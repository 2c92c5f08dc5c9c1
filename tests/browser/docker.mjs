// The browser end-to-end test of the Docker page, run by tests/tests/browser_docker.rs:
// Debian's Chromium, driven by playwright-core, against a real control plane, a daemon and a
// real Docker engine where the Rust test started a container that writes a line a second to
// stdout and stderr.
//
// As an admin it opens the host's Docker page from the hosts list, sees the container
// running with its CPU and memory, opens its logs (the first line, stderr told apart, and
// lines written after the follow began), its stats chart, its processes and inspect
// document, and a shell inside it where `echo zp-$((6*7))` prints zp-42. Back on the page it
// runs a second container from the form with a memory limit, sees the first one stop without
// a reload when the engine stops it, removes the second one through the confirm dialog,
// fails to pull an image (there is no registry) with the server's line shown, imports a
// tarball as an image, and creates and removes a volume and a network. Last, a viewer sees
// the lists but no action, no logs and no shell.
//
// Talking to the Rust test: `@@ stop NAME` asks it to stop a container through the engine
// ("done"); `@@ memory NAME` for the container's memory limit in bytes, as the engine
// says it; `@@ exists NAME` whether the engine still has it ("true" or "false"). Every other
// line is progress, shown when the test fails.
//
// Environment: ZPANEL_URL, ZPANEL_PASSWORD (the admin's), ZPANEL_HOST (the host's name),
// ZPANEL_CONTAINER (the running container's name), ZPANEL_IMAGE (the image to run),
// ZPANEL_TARBALL (a root file system tarball to import),
// ZPANEL_VIEWER and ZPANEL_VIEWER_PASSWORD (a viewer in the host's workspace),
// ZPANEL_SCREENSHOT (PNG path prefix, optional), ZPANEL_CHROMIUM (default /usr/bin/chromium).

import { ask, launchChromium, need, runSteps, shoot, step, STEP_MS } from './harness.mjs';

const url = need('ZPANEL_URL').replace(/\/$/, '');
const password = need('ZPANEL_PASSWORD');
const hostName = need('ZPANEL_HOST');
const container = need('ZPANEL_CONTAINER');
const image = need('ZPANEL_IMAGE');
const tarball = need('ZPANEL_TARBALL');
const viewer = need('ZPANEL_VIEWER');
const viewerPassword = need('ZPANEL_VIEWER_PASSWORD');
const screenshot = process.env.ZPANEL_SCREENSHOT;
/** The container the page runs, and the volume and network it makes (the Rust test removes
 *  whatever is left of them). */
const created = `${container}-run`;
const imported = `${container}-imported:v1`;
const volume = `${container}-vol`;
const network = `${container}-net`;

// === the page ===

const row = (name) => `#docker-body table.containers tr[data-name="${name}"]`;

/** Waits until the text of the element `selector` matches `pattern`; returns that text. */
async function waitForText(page, selector, pattern, timeout = STEP_MS) {
  try {
    await page.waitForFunction(
      ([selector, source, flags]) => {
        const element = document.querySelector(selector);
        return element && new RegExp(source, flags).test(element.innerText.replace(/\u00a0/g, ' '));
      },
      [selector, pattern.source, pattern.flags],
      { timeout },
    );
  } catch (e) {
    const text = await page.evaluate((s) => document.querySelector(s)?.innerText ?? '(no such element)', selector);
    throw new Error(`${selector} never matched ${pattern}; it says:\n${text.slice(-2000)}\n(${e.message})`);
  }
  return page.evaluate((s) => document.querySelector(s).innerText, selector);
}

/**
 * Signs in and goes to the hosts page. A login the browser could not send is sent again
 * (Chromium drops its connections when a container's network interface appears on this
 * machine, as other tests' containers do).
 */
async function logIn(page, user, secret) {
  await page.fill('#login-user', user);
  await page.fill('#login-password', secret);
  for (let attempt = 1; ; attempt += 1) {
    await page.click('#login-submit');
    // (true signed in, false not sent, null neither within STEP_MS)
    const signedIn = await Promise.race([
      page.locator('#bar:not([hidden])').waitFor({ timeout: STEP_MS }).then(() => true, () => null),
      page.locator('#login-error', { hasText: 'cannot reach' }).waitFor({ timeout: STEP_MS }).then(() => false, () => null),
    ]);
    if (signedIn) break;
    if (signedIn === null || attempt === 3) throw new Error(`the login failed: ${await page.textContent('#login-error')}`);
  }
  await page.click('#bar nav a[href="#/hosts"]');
  await page.locator(`#hosts-body tr[data-name="${hostName}"][data-status="online"]`).waitFor({ timeout: STEP_MS });
}

/** Answers the Docker page's confirm dialog `name` with `choice`. */
async function confirmDialog(page, name, choice) {
  await page.locator(`dialog[data-dialog="${name}"] [data-choice="${choice}"]`).click();
}

// === the test ===

const { page, pageErrors, close } = await launchChromium({ viewport: { width: 1400, height: 860 } });
await runSteps('Docker', { page, pageErrors, close }, async () => {
  step('log in and open the Docker page from the hosts list');
  await page.goto(url);
  await logIn(page, 'admin', password);
  await page.locator(`#hosts-body tr[data-name="${hostName}"] button.docker`).click();
  const engine = await waitForText(page, '#docker-engine[data-available="true"]', /^Docker \S+/);
  console.log(`  engine: ${engine}`);

  step(`the container ${container} is listed, running, with its CPU and memory`);
  await page.locator(`${row(container)}[data-state="running"]`).waitFor({ timeout: STEP_MS });
  await waitForText(page, `${row(container)} .state`, /^running/);
  await waitForText(page, `${row(container)} td.cpu`, /\d %$/);
  await waitForText(page, `${row(container)} td.memory`, /\d/);

  step('its logs: the first line, stderr told apart, and lines written after the follow began');
  await page.locator(`${row(container)} td.name a`).click();
  await page.locator('.container-detail[data-state="running"]').waitFor({ timeout: STEP_MS });
  await waitForText(page, '.log-output', /zp-first-line/);
  await page.locator('.log-output .line.stderr', { hasText: /zp-err-\d+$/ }).first().waitFor({ timeout: STEP_MS });
  const ticks = async () => Math.max(0, ...(await page.locator('.log-output .line.stdout').allInnerTexts())
    .map((line) => Number(/^zp-tick-(\d+)$/.exec(line)?.[1] ?? 0)));
  const seen = await ticks();
  await waitForText(page, '.log-output', new RegExp(`zp-tick-${seen + 2}\\b`));
  await waitForText(page, '.log-status', /following/);
  await shoot(page, 'logs');

  step('its stats: the numbers and the chart');
  await page.click('.container-detail .subtabs button[data-view="stats"]');
  await waitForText(page, '.figure[data-figure="CPU"] .figure-value', /\d %$/);
  await waitForText(page, '.figure[data-figure="Memory"] .figure-detail', /\//);
  await page.locator('.stats-chart .uplot canvas').waitFor({ timeout: STEP_MS });
  await page.waitForTimeout(2500); // (a few samples on the chart for the screenshot)
  await shoot(page, 'stats');

  step('its processes and its inspect document');
  await page.click('.container-detail .subtabs button[data-view="processes"]');
  await waitForText(page, '.processes table.top', /sleep|sh/);
  await page.click('.container-detail .subtabs button[data-view="inspect"]');
  await waitForText(page, 'pre.inspect', new RegExp(`"Name": "/${container}"`));

  step('a shell inside the container, in a terminal tab');
  await page.click('.container-detail [data-action="shell"]');
  const tab = page.locator(`.tab.active[data-state="attached"][data-container="${container}"]`);
  await tab.waitFor({ timeout: STEP_MS });
  console.log(`  session ${await tab.getAttribute('data-session')}`);
  const screen = '.pane:not([hidden]) .xterm-rows';
  await waitForText(page, screen, /[$#]\s*$/m); // the prompt
  await page.locator('.pane:not([hidden]) .xterm').click();
  await page.keyboard.type('echo zp-$((6*7))');
  await page.keyboard.press('Enter');
  await waitForText(page, screen, /^zp-42\s*$/m);
  await shoot(page, 'shell');
  await page.keyboard.type('exit');
  await page.keyboard.press('Enter');
  await page.locator('.tab.active[data-state="ended"]').waitFor({ timeout: STEP_MS });

  step(`run ${created} from the form, with a memory limit`);
  await page.click('#nav-docker');
  await page.locator(row(container)).waitFor({ timeout: STEP_MS });
  await page.click('[data-action="run"]');
  await page.fill('#run-image', image);
  await page.fill('#run-name', created);
  await page.fill('#run-command', 'sh -c "echo started; sleep 300"');
  await page.fill('#run-env', 'GREETING=hello there');
  await page.fill('#run-memory', '64m');
  await page.selectOption('#run-network', 'none'); // (no network interface for the browser to notice)
  await page.fill('#run-labels', 'zp.test=browser');
  await page.click('[data-action="create"]');
  await page.locator(`${row(created)}[data-state="running"]`).waitFor({ timeout: STEP_MS });
  const limit = await ask(`memory ${created}`);
  if (limit !== String(64 * 1024 * 1024)) throw new Error(`the engine says ${created} has memory limit ${limit}`);

  step(`${container} stops through the engine: the page shows it without a reload`);
  await page.check('#docker-show-stopped');
  await page.locator(`${row(container)}[data-state="running"]`).waitFor({ timeout: STEP_MS });
  await page.evaluate(() => (window.zpSamePage = true));
  await ask(`stop ${container}`);
  await page.locator(`${row(container)}[data-state="exited"]`).waitFor({ timeout: STEP_MS });
  if (!(await page.evaluate(() => window.zpSamePage))) throw new Error('the page was reloaded');
  await shoot(page, 'containers');

  step(`remove ${created} through the confirm dialog`);
  await page.click(`${row(created)} [data-action="remove"]`);
  await confirmDialog(page, 'remove-container', 'remove');
  await page.locator(row(created)).waitFor({ state: 'detached', timeout: STEP_MS });
  if ((await ask(`exists ${created}`)) !== 'false') throw new Error(`the engine still has ${created}`);

  step('images: the test image is listed; a pull with no registry fails with the server\'s line');
  await page.click('#docker-tabs a[data-tab="images"]');
  await page.locator(`#docker-body table.images tr[data-tags~="${image}"]`).waitFor({ timeout: STEP_MS });
  await page.fill('[data-field="pull"]', 'zpanel-test/absent:nope');
  await page.click('[data-action="pull"]');
  await page.locator('.progress-box[data-state="failed"]').waitFor({ timeout: 60_000 });
  console.log(`  pull error: ${await waitForText(page, '#docker-error', /\S/)}`);

  step(`images: import a root file system tarball as ${imported}`);
  await page.setInputFiles('[data-field="import-file"]', tarball);
  await page.fill('[data-field="import-name"]', imported);
  await page.click('[data-action="import"]');
  await page.locator(`#docker-body table.images tr[data-tags~="${imported}"]`).waitFor({ timeout: 60_000 });

  step(`volumes and networks: create and remove ${volume} and ${network}`);
  for (const [tab, name] of [['volumes', volume], ['networks', network]]) {
    await page.click(`#docker-tabs a[data-tab="${tab}"]`);
    await page.click(`#docker-body [data-panel="${tab}"] [data-action="create"]`);
    await page.fill(`dialog [data-field="name"]`, name);
    await page.click('dialog [data-choice="ok"]');
    const line = page.locator(`#docker-body table.${tab} tr[data-name="${name}"]`);
    await line.waitFor({ timeout: STEP_MS });
    await line.locator('[data-action="remove"]').click();
    await confirmDialog(page, `remove-${tab.slice(0, -1)}`, 'remove');
    await line.waitFor({ state: 'detached', timeout: STEP_MS });
  }

  step('a viewer sees the lists, and no action, logs or shell');
  await page.click('#logout');
  await page.locator('#view-login:not([hidden])').waitFor({ timeout: STEP_MS });
  await logIn(page, viewer, viewerPassword);
  await page.locator(`#hosts-body tr[data-name="${hostName}"] button.docker`).click();
  await page.locator(row(container)).waitFor({ timeout: STEP_MS });
  if (await page.locator('[data-action="run"], [data-action="prune"]').count()) throw new Error('a viewer is offered to run or prune');
  if (await page.locator(`${row(container)} td.actions button`).count()) throw new Error('a viewer is offered actions on a container');
  await page.locator(`${row(container)} td.name a`).click();
  await page.locator('.container-detail .subtabs button[data-view="stats"].current').waitFor({ timeout: STEP_MS });
  const views = await page.locator('.container-detail .subtabs button').allInnerTexts();
  if (views.join(',') !== 'Stats,Processes') throw new Error(`a viewer is offered ${views.join(', ')}`);
  if (await page.locator('.container-detail [data-action="shell"]').count()) throw new Error('a viewer is offered a shell');

});
