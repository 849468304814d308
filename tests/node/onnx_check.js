#!/usr/bin/env node
// tests/node/onnx_check.js — runs an ONNX model that `barlowd export` wrote in a real ONNX
// runtime (onnxruntime-node, CPU) and compares it with barlowd's own inference.
//
//   node tests/node/onnx_check.js CASE_DIR
//
// CASE_DIR holds model.onnx and a case of tests/export_case.h (case.json, pixels.u8, input.f32,
// want.f32). Checks, each failing the run (exit 1) when it does not hold:
//   1. the file's own header, read by an independent protobuf reader: IR version 7, opset 13,
//      and the preprocessing keys of metadata_props;
//   2. the preprocessing as metadata_props describe it (bilinear resize of the whole image,
//      scale, mean and std), applied here to barlowd's image pixels, gives barlowd's input
//      tensor (to 1e-5);
//   3. ONNX Runtime's output for barlowd's input, the whole batch at once and one image at a
//      time (the batch is dynamic), is barlowd's vector to 1e-4 relative: for every image,
//      max |onnx - barlowd| / max |barlowd| <= 1e-4.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const TOLERANCE = 1e-4;     // relative, the bound
const PREP_TOLERANCE = 1e-5; // absolute, on normalised inputs of magnitude ~3

function fail(msg) {
  console.error(`onnx_check: FAIL: ${msg}`);
  process.exit(1);
}

// ---- a protobuf reader: the fields of one message (varint values as BigInt) ----
function varint(buf, pos) {
  let v = 0n, shift = 0n;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const b = buf[pos++];
    v |= BigInt(b & 0x7f) << shift;
    if (!(b & 0x80)) return [v, pos];
    shift += 7n;
  }
}

function fields(buf) {
  const out = [];
  let pos = 0;
  while (pos < buf.length) {
    let key, v;
    [key, pos] = varint(buf, pos);
    const field = Number(key >> 3n), wire = Number(key & 7n);
    if (wire === 0) {
      [v, pos] = varint(buf, pos);
      out.push({field, value: v});
    } else if (wire === 2) {
      [v, pos] = varint(buf, pos);
      const end = pos + Number(v);
      if (end > buf.length) throw new Error('truncated field');
      out.push({field, bytes: buf.subarray(pos, end)});
      pos = end;
    } else if (wire === 5 || wire === 1) {
      const n = wire === 5 ? 4 : 8;
      out.push({field, bytes: buf.subarray(pos, pos + n)});
      pos += n;
    } else {
      throw new Error(`wire type ${wire}`);
    }
  }
  return out;
}

// ModelProto: ir_version 1, opset_import 8 (OperatorSetIdProto: domain 1, version 2),
// metadata_props 14 (StringStringEntryProto: key 1, value 2).
function readHeader(model) {
  const top = fields(model);
  const ir = top.find((f) => f.field === 1);
  const opsets = top.filter((f) => f.field === 8).map((f) => {
    const o = fields(f.bytes);
    const d = o.find((x) => x.field === 1), v = o.find((x) => x.field === 2);
    return {domain: d ? d.bytes.toString('utf8') : '', version: v ? Number(v.value) : 0};
  });
  const meta = {};
  for (const f of top.filter((x) => x.field === 14)) {
    const e = fields(f.bytes);
    const k = e.find((x) => x.field === 1), v = e.find((x) => x.field === 2);
    meta[k.bytes.toString('utf8')] = v ? v.bytes.toString('utf8') : '';
  }
  return {ir: ir ? Number(ir.value) : 0, opsets, meta};
}

// ---- the preprocessing, from metadata_props alone ----
function preprocess(meta, pixels, w, h) {
  const s = Number(meta['preprocess.input_size']), c = Number(meta['preprocess.channels']);
  const scale = Number(meta['preprocess.scale']);
  const mean = JSON.parse(meta['preprocess.mean']), std = JSON.parse(meta['preprocess.std']);
  // bilinear, half-pixel centres, positions clamped to the image (preprocess.resize)
  const tap = (o, len) => {
    let pos = (o + 0.5) * len / s - 0.5;
    pos = Math.min(Math.max(pos, 0), len - 1);
    const a = Math.floor(pos);
    return [a, Math.min(a + 1, len - 1), pos - a];
  };
  const out = new Float64Array(c * s * s);
  for (let y = 0; y < s; y++) {
    const [y0, y1, ty] = tap(y, h);
    for (let x = 0; x < s; x++) {
      const [x0, x1, tx] = tap(x, w);
      for (let k = 0; k < c; k++) {
        const p = (yy, xx) => pixels[(yy * w + xx) * c + k];
        const top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * tx;
        const bot = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * tx;
        const v = (top + (bot - top) * ty) * scale; // preprocess.formula
        out[(k * s + y) * s + x] = (v - mean[k]) / std[k];
      }
    }
  }
  return out;
}

function floats(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.length / 4);
}

// max |got - want| / max |want| of one vector
function relDiff(got, want) {
  let num = 0, den = 0;
  for (let i = 0; i < want.length; i++) {
    num = Math.max(num, Math.abs(got[i] - want[i]));
    den = Math.max(den, Math.abs(want[i]));
  }
  return den > 0 ? num / den : num;
}

async function main() {
  const dir = process.argv[2];
  if (!dir) fail('usage: node onnx_check.js CASE_DIR');
  const kase = JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8'));
  const {n, channels: c, size: s, dim} = kase;
  const modelFile = path.join(dir, 'model.onnx');
  const model = fs.readFileSync(modelFile);

  // 1. the header
  const hdr = readHeader(model);
  if (hdr.ir !== 7) fail(`ir_version ${hdr.ir}, want 7`);
  const std = hdr.opsets.find((o) => o.domain === '');
  if (!std || std.version !== 13) fail(`opset ${JSON.stringify(hdr.opsets)}, want 13`);
  for (const k of ['input_size', 'channels', 'scale', 'mean', 'std', 'resize', 'formula'])
    if (!(('preprocess.' + k) in hdr.meta)) fail(`metadata_props lacks preprocess.${k}`);
  if (Number(hdr.meta['preprocess.input_size']) !== s ||
      Number(hdr.meta['preprocess.channels']) !== c)
    fail(`metadata says ${hdr.meta['preprocess.input_size']} px, ` +
         `${hdr.meta['preprocess.channels']} channels; the model takes ${s}, ${c}`);

  // 2. the preprocessing
  const pixels = fs.readFileSync(path.join(dir, 'pixels.u8'));
  const input = floats(path.join(dir, 'input.f32')), want = floats(path.join(dir, 'want.f32'));
  const per = c * s * s;
  if (input.length !== n * per || want.length !== n * dim) fail('case files of the wrong size');
  let off = 0, prepWorst = 0;
  kase.images.forEach(([w, h], i) => {
    const mine = preprocess(hdr.meta, pixels.subarray(off, off + w * h * c), w, h);
    off += w * h * c;
    for (let j = 0; j < per; j++)
      prepWorst = Math.max(prepWorst, Math.abs(mine[j] - input[i * per + j]));
  });
  if (prepWorst > PREP_TOLERANCE)
    fail(`the metadata's preprocessing differs from barlowd's by ${prepWorst}`);

  // 3. ONNX Runtime against barlowd's vectors
  const session = await ort.InferenceSession.create(modelFile);
  if (session.inputNames[0] !== 'input' || session.outputNames[0] !== 'representation')
    fail(`inputs ${session.inputNames}, outputs ${session.outputNames}`);
  const run = async (first, count) => {
    const x = new ort.Tensor('float32', input.slice(first * per, (first + count) * per),
                             [count, c, s, s]);
    const out = (await session.run({input: x})).representation;
    if (out.dims.length !== 2 || out.dims[0] !== count || out.dims[1] !== dim)
      fail(`output dims [${out.dims}], want [${count}, ${dim}]`);
    return out.data;
  };
  let worst = 0;
  const batch = await run(0, n);
  for (let i = 0; i < n; i++) {
    const w = want.subarray(i * dim, (i + 1) * dim);
    const single = await run(i, 1);
    for (const got of [batch.subarray(i * dim, (i + 1) * dim), single]) {
      const d = relDiff(got, w);
      worst = Math.max(worst, d);
      if (!(d <= TOLERANCE)) fail(`image ${i}: relative difference ${d} > ${TOLERANCE}`);
    }
  }
  console.log(`onnx_check: onnxruntime-node ${require('onnxruntime-node/package.json').version}` +
              `: ${n} images [${c}, ${s}, ${s}] -> [${dim}], batch ${n} and 1; max relative ` +
              `difference ${worst.toExponential(3)} (bound ${TOLERANCE}); preprocessing from ` +
              `metadata_props within ${prepWorst.toExponential(3)}`);
}

main().catch((e) => fail(e.stack || String(e)));
