// Builds app.js into a Switchyard plugin component:
//   npm ci && node build.mjs [OUT.wasm]   (default: js-incident-watch.wasm)
// `http` and `fetch-event` are disabled: they would import wasi:http, which
// a Switchyard plugin does not get (its HTTP goes through switchyard:plugin/http).
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = process.argv[2] ?? here('js-incident-watch.wasm');
const { component } = await componentize({
  sourcePath: here('app.js'),
  witPath: here('../../../wit'),
  worldName: 'plugin-with-settings',
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.error(`wrote ${out} (${component.length} bytes)`);
