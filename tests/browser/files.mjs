// The browser end-to-end test of the file manager and the editor, run by
// tests/tests/browser_files.rs: Debian's Chromium, driven by playwright-core, against a real
// control plane and a daemon serving a temporary directory as its only root.
//
// It logs in, opens the host's files, uploads a file by drag and drop (a synthetic drop of a
// DataTransfer built in the page), sees a file the host writes appear by itself (the watch),
// edits the uploaded file and saves it with Ctrl+S, then saves again after the file changed
// on disk: the conflict dialog appears, "Overwrite" wins, and the next conflict is settled
// through the compare view. Last, it downloads a file and deletes another through the
// context menu.
//
// Talking to the Rust test: `@@ read NAME` asks for the content of ROOT/NAME (the answer is
// a JSON string, or null when there is no such file); `@@ write NAME JSON` asks it to write
// the JSON string into ROOT/NAME (the answer is "done"). Every other line is progress, shown
// when the test fails.
//
// Environment: ZPANEL_URL, ZPANEL_PASSWORD, ZPANEL_HOST (the host's name), ZPANEL_FILES_ROOT
// (the daemon's root, absolute), ZPANEL_USER (default admin), ZPANEL_SCREENSHOT (PNG path
// prefix, optional), ZPANEL_CHROMIUM (default /usr/bin/chromium).

import { readFileSync } from 'node:fs';
import { ask, launchChromium, need, runSteps, shoot, step, STEP_MS } from './harness.mjs';

const url = need('ZPANEL_URL').replace(/\/$/, '');
const password = need('ZPANEL_PASSWORD');
const hostName = need('ZPANEL_HOST');
const root = need('ZPANEL_FILES_ROOT');
const user = process.env.ZPANEL_USER || 'admin';

// === talking to the Rust test ===

/** ROOT/NAME's content on the host, or null. */
async function readOnHost(name) {
  return JSON.parse(await ask(`read ${name}`));
}

async function writeOnHost(name, text) {
  await ask(`write ${name} ${JSON.stringify(text)}`);
}

/** Waits until ROOT/NAME holds `expected` (the host's answer is checked, not the page's). */
async function expectOnHost(name, expected) {
  const actual = await readOnHost(name);
  if (actual !== expected) {
    throw new Error(`${name} on the host is ${JSON.stringify(actual)}, not ${JSON.stringify(expected)}`);
  }
}

// === the page ===

const row = (name) => `#files-body tr[data-name="${name}"]`;

/** The editor's text, line by line as CodeMirror shows it (the files here are short enough
 *  for every line to be drawn). */
function editorText(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('.editor .cm-content .cm-line')].map((line) => line.textContent).join('\n'));
}

/** Types at the end of the editor's text (inserted as is: no auto-indent, no brackets). */
async function appendToEditor(page, text) {
  await page.click('.editor .cm-content');
  await page.keyboard.press('Control+End');
  await page.keyboard.insertText(text);
}

// === the test ===

const { context, page, pageErrors, close } = await launchChromium({
  viewport: { width: 1200, height: 700 },
  acceptDownloads: true,
});
context.setDefaultTimeout(STEP_MS);
await runSteps('files', { page, pageErrors, close }, async () => {
  step(`log in as ${user}`);
  await page.goto(url);
  await page.fill('#login-user', user);
  await page.fill('#login-password', password);
  await page.click('#login-submit');
  const hostRow = page.locator(`#hosts-body tr[data-name="${hostName}"][data-status="online"]`);
  await hostRow.waitFor();

  step(`open the files of ${hostName}: its root is listed`);
  await hostRow.locator('button.files').click();
  await page.locator(`#files-listing[data-state="ready"][data-dir="${root}"]`).waitFor();
  await page.locator(row('seed.txt')).waitFor();
  const crumbs = await page.getAttribute('#files-crumbs', 'data-path');
  if (crumbs !== root) throw new Error(`the breadcrumbs say ${crumbs}, not ${root}`);
  await page.locator(`.tree .node[data-path="${root}"]`).waitFor();

  step('drop a file on the listing: it is uploaded and listed');
  const uploaded = 'line one\nline two\n';
  await page.evaluate((text) => {
    const data = new DataTransfer();
    data.items.add(new File([text], 'notes.md', { type: 'text/markdown' }));
    const target = document.querySelector('#files-listing');
    for (const type of ['dragenter', 'dragover', 'drop']) {
      target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data }));
    }
  }, uploaded);
  await page.locator('.upload[data-name="notes.md"][data-state="done"]').waitFor();
  await page.locator(row('notes.md')).waitFor();
  await expectOnHost('notes.md', uploaded);
  await shoot(page, 'listing');

  step('a file written on the host appears by itself (the folder is watched)');
  await page.locator('#files-live[data-state="live"]').waitFor(); // (the watch is open)
  await writeOnHost('from-host.txt', 'written by the host\n');
  await page.locator(row('from-host.txt')).waitFor();

  step('open the uploaded file in the editor');
  await page.click(`${row('notes.md')} td.name a`);
  await page.locator('.editor[data-state="ready"]').waitFor();
  if ((await editorText(page)) !== uploaded) throw new Error(`the editor shows ${JSON.stringify(await editorText(page))}`);

  step('edit and save with Ctrl+S: the host has the new text');
  await appendToEditor(page, 'edited in the browser\n');
  await page.locator('.editor[data-dirty="true"]').waitFor();
  await page.keyboard.press('Control+s');
  await page.locator('.editor[data-dirty="false"][data-state="ready"]').waitFor();
  const saved = `${uploaded}edited in the browser\n`;
  await expectOnHost('notes.md', saved);
  await shoot(page, 'editor');

  step('the file changes on disk; saving again shows the conflict dialog');
  await writeOnHost('notes.md', 'changed on disk, and longer than before\n');
  await appendToEditor(page, 'second edit\n');
  await page.keyboard.press('Control+s');
  const conflict = page.locator('dialog[data-dialog="conflict"]');
  await conflict.waitFor();
  const conflictText = await conflict.textContent();
  if (!/changed on disk/.test(conflictText)) throw new Error(`the dialog says ${JSON.stringify(conflictText)}`);
  await shoot(page, 'conflict');

  step('overwrite: the editor\'s text replaces what was on disk');
  await conflict.locator('[data-choice="overwrite"]').click();
  await page.locator('.editor[data-dirty="false"][data-state="ready"]').waitFor();
  const overwritten = `${saved}second edit\n`;
  await expectOnHost('notes.md', overwritten);

  step('another change on disk: compare, then save the merged text over it');
  await writeOnHost('notes.md', `from the disk\n${overwritten}`);
  await appendToEditor(page, 'third edit\n');
  await page.keyboard.press('Control+s');
  await conflict.waitFor();
  await conflict.locator('[data-choice="compare"]').click();
  await page.locator('.editor[data-state="compare"] .cm-mergeView').waitFor();
  await shoot(page, 'compare');
  await page.click('.compare-bar [data-choice="save-merged"]');
  await page.locator('.editor[data-dirty="false"][data-state="ready"]').waitFor();
  await expectOnHost('notes.md', `${overwritten}third edit\n`);

  step('close the editor, download the file through the context menu');
  await page.click('.editor button.close');
  await page.locator(row('notes.md')).click({ button: 'right' });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('.menu [data-action="download"]')]);
  const downloaded = readFileSync(await download.path(), 'utf8');
  if (download.suggestedFilename() !== 'notes.md' || downloaded !== `${overwritten}third edit\n`) {
    throw new Error(`the download is ${download.suggestedFilename()}: ${JSON.stringify(downloaded)}`);
  }

  step('delete a file through the context menu');
  await page.locator(row('from-host.txt')).click({ button: 'right' });
  await page.click('.menu [data-action="delete"]');
  const confirm = page.locator('dialog[data-dialog="delete"]');
  await confirm.waitFor();
  await confirm.locator('[data-choice="delete"]').click();
  await page.locator(row('from-host.txt')).waitFor({ state: 'detached' });
  const deleted = await readOnHost('from-host.txt');
  if (deleted !== null) throw new Error(`from-host.txt is still on the host: ${JSON.stringify(deleted)}`);

});
