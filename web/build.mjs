// Builds the page into one directory, which control-plane/build.rs embeds in zpanel-cp:
//
//   index.html              the page, its /assets/NAME references rewritten to hashed names
//   assets/app-HASH.js      the bundled, minified modules (xterm.js and its addons included)
//   assets/*-HASH.js        chunks the page imports when first needed (the editor,
//                           CodeMirror and each of its language packs)
//   assets/app-HASH.css     xterm.js's stylesheet and ours
//   assets/favicon-HASH.svg
//   *.gz                    gzip copies, sent to browsers that accept gzip
//
// Every file under assets/ has a content hash in its name, so the server may let browsers
// cache it for good; index.html is the one file that must be revalidated.
//
// Usage: node build.mjs [OUT_DIR]   (or ZPANEL_WEB_OUT=DIR; default: dist)

import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] || process.env.ZPANEL_WEB_OUT || join(here, 'dist'));
const assets = join(out, 'assets');

rmSync(out, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

// The bundle: one JavaScript file and the CSS it imports.
const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.js' },
  outdir: assets,
  entryNames: '[name]-[hash]',
  chunkNames: '[name]-[hash]',
  bundle: true,
  splitting: true, // dynamic import() becomes a chunk of its own
  minify: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16'],
  legalComments: 'eof',
  metafile: true,
  logLevel: 'warning',
}).catch(() => process.exit(1)); // (esbuild has printed what is wrong)

/** Public path ("/assets/app.js") → hashed public path ("/assets/app-HASH.js"). */
const renamed = new Map();
for (const file of Object.keys(result.metafile.outputs)) {
  const name = basename(file);
  renamed.set(`/assets/${name.replace(/-[A-Z0-9]+(\.\w+)$/, '$1')}`, `/assets/${name}`);
}

// Static files, copied with a content hash of their own.
for (const name of ['favicon.svg']) {
  const bytes = readFileSync(join(here, 'src', name));
  const hash = createHash('sha256').update(bytes).digest('hex').slice(0, 10);
  const hashed = `${basename(name, extname(name))}-${hash}${extname(name)}`;
  writeFileSync(join(assets, hashed), bytes);
  renamed.set(`/assets/${name}`, `/assets/${hashed}`);
}

// The page, pointing at the hashed names.
const html = readFileSync(join(here, 'index.html'), 'utf8').replace(/\/assets\/[\w.-]+/g, (path) => {
  const target = renamed.get(path);
  if (!target) throw new Error(`index.html refers to ${path}, which the build does not make`);
  return target;
});
writeFileSync(join(out, 'index.html'), html);

// Gzip copies of what compresses well, and a summary.
function* files(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) yield* files(path);
    else yield path;
  }
}
for (const path of [...files(out)]) {
  const bytes = readFileSync(path);
  const gzipped = gzipSync(bytes, { level: 9 });
  const worthIt = gzipped.length < bytes.length * 0.9;
  if (worthIt) writeFileSync(`${path}.gz`, gzipped);
  const kib = (n) => `${(n / 1024).toFixed(1)} KiB`;
  console.log(`${relative(out, path).padEnd(32)} ${kib(bytes.length).padStart(10)}${worthIt ? `  (gzip ${kib(gzipped.length)})` : ''}`);
}
