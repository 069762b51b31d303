'use strict'
// Timing driver shared by the JavaScript side of `make bench` (bench/js/*.js).
//
// Same method as bench/runner.py: calibrate the loop count until one measurement takes at
// least --time seconds (aiming at 1.5 times that), then report the best of --repeat
// measurements as operations per second, timed with process.hrtime.bigint(). The packages come from the interop harness's
// node_modules ($ILP_INTEROP_DIR or --interop), loaded with createRequire.
//
// Usage: node <script>.js [--interop DIR] [--time S] [--repeat N] [--number N] [--emit] ID...
// Prints one JSON object on stdout:
//   {"node": "v20...", "results": [{"id", "ops_per_s", "number", "error"}...]}
// or, with --emit, {"node", "emit": {id: hex of one call's output}}. A failure to load the
// packages prints {"node", "error"} and exits 1.

const path = require('path')
const { createRequire } = require('module')

function parseArgs (argv) {
  const opts = { interop: process.env.ILP_INTEROP_DIR || '', time: 0.5, repeat: 5, number: 0, emit: false, ids: [] }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--interop') opts.interop = argv[++i]
    else if (arg === '--time') opts.time = Number(argv[++i])
    else if (arg === '--repeat') opts.repeat = Number(argv[++i])
    else if (arg === '--number') opts.number = Number(argv[++i])
    else if (arg === '--emit') opts.emit = true
    else if (arg.startsWith('--')) throw new Error('unknown option ' + arg)
    else opts.ids.push(arg)
  }
  if (!opts.interop) throw new Error('set ILP_INTEROP_DIR or pass --interop')
  if (!(opts.time > 0) || !(opts.repeat >= 1) || !(opts.number >= 0)) {
    throw new Error('--time must be > 0, --repeat >= 1, --number >= 0')
  }
  return opts
}

let sink // keeps every result alive so no call can be optimised away

function loopSync (op, n) {
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) sink = op()
  return Number(process.hrtime.bigint() - start) / 1e9
}

async function loopAsync (op, n) {
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) sink = await op()
  return Number(process.hrtime.bigint() - start) / 1e9
}

// `{ops_per_s, number}` for `run(n)`, which does n operations and resolves to the seconds they
// took: the count grows from `start` until one run takes at least --time seconds, aiming at 1.5
// times that (a run that is still too short after scaling, e.g. before the JIT warmed up,
// rescales); then the best of --repeat runs counts.
async function calibrated (run, opts, start) {
  let number = opts.number
  if (!number) {
    number = start
    for (;;) {
      const elapsed = await run(number)
      if (elapsed >= opts.time) break
      number = elapsed >= opts.time / 100
        ? Math.ceil(number * 1.5 * opts.time / elapsed)
        : number * 10
    }
  }
  let best = Infinity
  for (let r = 0; r < opts.repeat; r++) {
    best = Math.min(best, await run(number))
  }
  return { ops_per_s: number / Math.max(best, 1e-9), number }
}

function measure (bench, opts) {
  const loop = bench.async ? loopAsync : loopSync
  return calibrated((n) => loop(bench.op, n), opts, 1)
}

function toHex (value) {
  return Buffer.isBuffer(value) ? value.toString('hex') : null
}

// `makeBenchmarks(req)` returns {id: async () => ({op, async, check?, emit?})}: `op` is the
// timed call; `check(result)` throws if one call's result is wrong; `emit()` gives the bytes
// that --emit prints (to compare the inputs with the Python side).
async function main (makeBenchmarks) {
  const out = { node: process.version }
  let opts
  let factories
  try {
    opts = parseArgs(process.argv.slice(2))
    const req = createRequire(path.join(path.resolve(opts.interop), 'package.json'))
    factories = makeBenchmarks(req)
  } catch (err) {
    out.error = String(err && err.message ? err.message : err)
    process.stdout.write(JSON.stringify(out) + '\n')
    process.exitCode = 1
    return
  }
  const ids = opts.ids.length ? opts.ids : Object.keys(factories)
  if (opts.emit) out.emit = {}
  else out.results = []
  for (const id of ids) {
    try {
      const factory = factories[id]
      if (!factory) throw new Error('unknown benchmark id ' + JSON.stringify(id))
      const bench = await factory()
      if (opts.emit) {
        out.emit[id] = toHex(bench.emit ? await bench.emit() : await bench.op())
        continue
      }
      const first = await bench.op()
      if (bench.check) bench.check(first)
      out.results.push(Object.assign({ id, error: null }, await measure(bench, opts)))
    } catch (err) {
      const error = String(err && err.message ? err.message : err)
      if (opts.emit) out.emit[id] = null
      else out.results.push({ id, ops_per_s: null, number: 0, error })
    }
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

module.exports = { main, parseArgs, calibrated }
