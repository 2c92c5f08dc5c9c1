// The browser end-to-end test of the metrics and alerts pages, run by
// tests/tests/browser_metrics.rs: Debian's Chromium, driven by playwright-core, against a real
// control plane and a daemon that takes a sample every second.
//
// As an admin it opens the fleet overview and sees the host online with its CPU, a CPU
// sparkline and its label chips; a label filter no host has hides the row and the page says
// so, clearing the filter shows it again, a chip clicked filters by its label and keeps the
// row; a column's header sorts by it, then the other way. It opens the host's page and sees the CPU chart drawn with points (a screenshot),
// then more points as live samples come, and the top processes; switches to 24 hours. On the
// alerts page it creates a webhook channel through the form, sends it a test notification
// (nothing listens at its URL: the page shows the failure), creates a rule notifying that
// channel, and sees both listed. Last, a viewer sees the rules but no form and no delete.
//
// Talking to the Rust test: `@@ rule NAME` and `@@ channel NAME` ask whether the control
// plane really holds them (its JSON in one line, or "missing"). Every other line is progress,
// shown when the test fails.
//
// Environment: ZPANEL_URL, ZPANEL_PASSWORD (the admin's), ZPANEL_HOST (the host's name),
// ZPANEL_LABELS (its labels, KEY=VALUE separated by spaces; none is env=prod), ZPANEL_VIEWER and ZPANEL_VIEWER_PASSWORD, ZPANEL_WEBHOOK_URL (where nothing listens),
// ZPANEL_SCREENSHOT (PNG path prefix, optional), ZPANEL_CHROMIUM (default /usr/bin/chromium).

import { ask, launchChromium, need, runSteps, shoot, step, STEP_MS } from './harness.mjs';

const url = need('ZPANEL_URL').replace(/\/$/, '');
const password = need('ZPANEL_PASSWORD');
const hostName = need('ZPANEL_HOST');
const labels = need('ZPANEL_LABELS').split(' ');
const viewer = need('ZPANEL_VIEWER');
const viewerPassword = need('ZPANEL_VIEWER_PASSWORD');
const webhookUrl = need('ZPANEL_WEBHOOK_URL');
const channel = 'ops-hook';
const rule = 'busy-cpu';

const fleetRow = `table.fleet tr[data-name="${hostName}"]`;
const labelFilter = '.fleet-panel [data-field="label-filter"]';
const cpuPlot = '.metric-chart[data-chart="cpu"] .metric-chart-plot';

async function logIn(page, user, secret) {
  await page.goto(url);
  await page.fill('#login-user', user);
  await page.fill('#login-password', secret);
  await page.click('#login-submit');
  await page.locator('#bar:not([hidden])').waitFor({ timeout: STEP_MS });
}

/** The number in `data-NAME` of the element `selector` (0 when there is none). */
function dataNumber([selector, name]) {
  return Number(document.querySelector(selector)?.dataset[name] ?? 0);
}

/** Waits until `data-NAME` of the element `selector` is above `floor`; returns it. */
async function waitForNumber(page, what, selector, name, floor) {
  try {
    await page.waitForFunction(([args, floor]) => Number(document.querySelector(args[0])?.dataset[args[1]] ?? 0) > floor,
      [[selector, name], floor], { timeout: STEP_MS });
  } catch (e) {
    const value = await page.evaluate(dataNumber, [selector, name]);
    throw new Error(`${what} never went above ${floor}: it is ${value} (${e.message})`);
  }
  return page.evaluate(dataNumber, [selector, name]);
}

/** The control plane's JSON of a rule or channel, as the Rust test reads it. */
async function stored(kind, name) {
  const answer = await ask(`${kind} ${name}`);
  if (answer === 'missing') throw new Error(`the control plane has no ${kind} ${name}`);
  return JSON.parse(answer);
}

const { page, pageErrors, close } = await launchChromium({ viewport: { width: 1400, height: 1000 } });
await runSteps('metrics', { page, pageErrors, close }, async () => {
  step('log in and open the fleet overview');
  await logIn(page, 'admin', password);
  await page.click('#nav-metrics');
  await page.locator(`${fleetRow}[data-status="online"]`).waitFor({ timeout: STEP_MS });

  step('the host shows its CPU and a CPU sparkline');
  await page.locator(`${fleetRow} td[data-metric="cpu"]`, { hasText: /\d %$/ }).waitFor({ timeout: STEP_MS });
  // (A young host has few points: the live samples add one a second.)
  const sparkPoints = await waitForNumber(page, 'the CPU sparkline\'s points', `${fleetRow} td[data-spark="cpu"] svg`, 'points', 5);
  console.log(`  the sparkline has ${sparkPoints} points`);
  await page.locator('#view-metrics .live[data-state="live"]').waitFor({ timeout: STEP_MS });
  await shoot(page, 'fleet');

  step('the host shows its label chips');
  for (const label of labels) {
    await page.locator(`${fleetRow} td.labels .chip`, { hasText: label }).waitFor({ timeout: STEP_MS });
  }
  const chips = await page.locator(`${fleetRow} td.labels .chip`).count();
  if (chips !== labels.length) throw new Error(`the row has ${chips} label chips, not ${labels.length}`);

  step('a label filter no host has hides the row');
  await page.fill(labelFilter, 'env=prod');
  await page.press(labelFilter, 'Enter');
  await page.locator(fleetRow).waitFor({ state: 'detached', timeout: STEP_MS });
  await page.locator('table.fleet tr.none', { hasText: 'No host has these labels.' }).waitFor({ timeout: STEP_MS });
  await page.locator('.fleet-panel .heading', { hasText: '0 of 1 hosts shown' }).waitFor({ timeout: STEP_MS });

  step('clearing the filter shows the row again');
  await page.click('.fleet-panel [data-action="clear-filter"]');
  await page.locator(fleetRow).waitFor({ timeout: STEP_MS });
  await page.locator('table.fleet tr.none').waitFor({ state: 'detached', timeout: STEP_MS });
  if (await page.inputValue(labelFilter) !== '') throw new Error('the filter was not cleared');

  step('clicking a label chip filters by it, and the row stays');
  const [label] = labels;
  await page.locator(`${fleetRow} td.labels .chip`, { hasText: label }).click();
  await page.waitForFunction(([selector, label]) => document.querySelector(selector)?.value === label,
    [labelFilter, label], { timeout: STEP_MS });
  await page.locator('.fleet-panel .heading', { hasText: '1 of 1 hosts shown' }).waitFor({ timeout: STEP_MS });
  await page.locator(fleetRow).waitFor({ timeout: STEP_MS });

  step('a column header sorts by it, then the other way');
  const nameHeader = page.locator('table.fleet th[data-sort="name"]');
  const cpuHeader = page.locator('table.fleet th[data-sort="cpu"]');
  await page.locator('table.fleet th[data-sort="name"][aria-sort="ascending"]').waitFor({ timeout: STEP_MS });
  if (await cpuHeader.getAttribute('aria-sort') !== 'none') throw new Error('the CPU column is sorted before a click');
  await cpuHeader.click();
  await page.locator('table.fleet th[data-sort="cpu"][aria-sort="ascending"]').waitFor({ timeout: STEP_MS });
  if (await nameHeader.getAttribute('aria-sort') !== 'none') throw new Error('the name column is still sorted by');
  await cpuHeader.click();
  await page.locator('table.fleet th[data-sort="cpu"][aria-sort="descending"]').waitFor({ timeout: STEP_MS });
  await page.locator(fleetRow).waitFor({ timeout: STEP_MS });

  step('the host page draws the CPU chart with points');
  await page.click(`${fleetRow} td.name a`);
  await page.locator(`.host-metrics h2`, { hasText: hostName }).waitFor({ timeout: STEP_MS });
  const points = await waitForNumber(page, 'the CPU chart\'s points', cpuPlot, 'points', 1);
  await page.locator(`${cpuPlot} canvas`).waitFor({ timeout: STEP_MS });
  console.log(`  the CPU chart has ${points} points`);
  await page.locator('.host-metrics .live[data-state="live"]').waitFor({ timeout: STEP_MS });

  step('live samples add points to the chart');
  const grown = await waitForNumber(page, 'the CPU chart\'s points', cpuPlot, 'points', points + 2);
  console.log(`  now ${grown} points`);
  await shoot(page, 'host', { fullPage: true });
  await page.locator('.figure[data-figure="CPU"] .figure-value', { hasText: /\d %$/ }).waitFor({ timeout: STEP_MS });

  step('per core adds the cores to the CPU chart');
  await page.check('[data-field="per-core"]');
  await waitForNumber(page, 'the CPU chart\'s series', cpuPlot, 'series', 1);

  step('the top processes are listed, by memory too');
  await page.locator('table.processes tbody tr[data-pid]').first().waitFor({ timeout: STEP_MS });
  await page.click('.processes button[data-sort="memory"]');
  await page.locator('.processes button[data-sort="memory"].current').waitFor({ timeout: STEP_MS });
  await page.locator('table.processes tbody tr[data-pid]').first().waitFor({ timeout: STEP_MS });

  step('switch to 24 hours');
  // (Its points come from the minute rollups, which a control plane this young may not
  // have made yet: the answer is what counts.)
  const answered = page.waitForResponse((r) => /\/metrics\?.*range=24h/.test(r.url()), { timeout: STEP_MS });
  await page.click('.ranges a[data-range="24h"]');
  const response = await answered;
  if (!response.ok()) throw new Error(`the 24 h query failed: ${response.status()} ${await response.text()}`);
  await page.locator('.ranges a[data-range="24h"].current').waitFor({ timeout: STEP_MS });
  await page.waitForFunction(() => location.hash.endsWith('?range=24h'), null, { timeout: STEP_MS });

  step('create a webhook channel through the form');
  await page.click('#nav-alerts');
  await page.click('.subtabs a[data-tab="channels"]');
  const channelForm = page.locator('form.channel-form');
  await channelForm.locator('[data-field="name"]').fill(channel);
  await channelForm.locator('[data-field="kind"]').selectOption('webhook');
  await channelForm.locator('[data-field="url"]').fill(webhookUrl);
  await channelForm.locator('[data-field="secret"]').fill('a-shared-secret');
  await channelForm.locator('[data-action="create-channel"]').click();
  const channelRow = page.locator(`table.alert-channels tr[data-name="${channel}"]`);
  await channelRow.waitFor({ timeout: STEP_MS });
  const storedChannel = await stored('channel', channel);
  if (storedChannel.kind !== 'webhook' || storedChannel.url !== webhookUrl || !storedChannel.has_secret) {
    throw new Error(`the channel was stored as ${JSON.stringify(storedChannel)}`);
  }

  step('a test notification to it fails, and the page says why');
  await channelRow.locator('[data-action="test"]').click();
  const result = channelRow.locator('.test-result[data-ok="false"]');
  await result.waitFor({ timeout: 2 * STEP_MS });
  console.log(`  ${await result.innerText()}`);

  step('create a rule through the form');
  await page.click('.subtabs a[data-tab="rules"]');
  const ruleForm = page.locator('form.rule-form');
  await ruleForm.locator('[data-field="name"]').fill(rule);
  await ruleForm.locator('[data-field="metric"]').selectOption('cpu');
  await ruleForm.locator('[data-field="comparison"]').selectOption('>=');
  await ruleForm.locator('[data-field="threshold"]').fill('95');
  await ruleForm.locator('[data-field="for"]').fill('2m');
  await ruleForm.locator('[data-field="severity"]').selectOption('critical');
  await ruleForm.locator('[data-field="channels"]').selectOption([channel]);
  await ruleForm.locator('[data-action="create-rule"]').click();
  const ruleRow = page.locator(`table.alert-rules tr[data-name="${rule}"]`);
  await ruleRow.waitFor({ timeout: STEP_MS });
  await ruleRow.locator('td', { hasText: 'cpu >= 95 for 2m' }).waitFor({ timeout: STEP_MS });
  const storedRule = await stored('rule', rule);
  if (storedRule.metric !== 'cpu' || storedRule.comparison !== '>=' || storedRule.threshold !== 95
    || storedRule.for_seconds !== 120 || storedRule.severity !== 'critical' || storedRule.channels.join() !== channel) {
    throw new Error(`the rule was stored as ${JSON.stringify(storedRule)}`);
  }
  await shoot(page, 'rules', { fullPage: true });

  step('the active and history tabs answer');
  await page.click('.subtabs a[data-tab="active"]');
  await page.locator('.alerts-body[data-tab="active"] table.alerts').waitFor({ timeout: STEP_MS });
  await page.click('.subtabs a[data-tab="history"]');
  await page.locator('.alerts-body[data-tab="history"] table.alerts').waitFor({ timeout: STEP_MS });

  step('a viewer sees the rules but no form and no delete');
  await page.click('#logout');
  await page.locator('#login-form').waitFor({ timeout: STEP_MS });
  await logIn(page, viewer, viewerPassword);
  await page.goto(`${url}/#/alerts?tab=rules`);
  await ruleRow.waitFor({ timeout: STEP_MS });
  for (const hidden of ['form.rule-form', `table.alert-rules [data-action="delete"]`]) {
    if (await page.locator(hidden).count() > 0) throw new Error(`a viewer is offered ${hidden}`);
  }
  if (await page.locator('#nav-metrics').isHidden()) throw new Error('a viewer has no Metrics link');
});
