'use strict'
// Round trips per second on loopback between two plugins in this one node process: the part
// that bench/js/btp.js and bench/js/http.js share (options, calibration, output), as
// bench/btp.py shares its loop with bench/http.py. A script gives `openPair(packages)`, which
// returns `{ roundTrip, close }`, the in-flight count of each benchmark id, and the packages it
// needs from the interop harness.
//
// The work per round trip is the same as on the Python side: the client builds a Prepare
// (amount 100, 32 bytes of data, expiry now + 30 s per packet) and serializes it; the server's
// data handler deserializes it and answers with the serialized Fulfill of its condition; the
// client deserializes the reply and checks the fulfillment against the condition (our Python
// clients do that inside send; the plugins leave it to their caller).
//
// `<kind>-roundtrip-K` keeps K Prepares in flight: K async loops each send one after the other
// until N round trips are done. N is calibrated by bench/js/timing.js's `calibrated` (until one
// run takes --time seconds, aiming at 1.5 times that), then the best of --repeat runs counts.
//
// Usage: node <script>.js [--interop DIR] [--time S] [--repeat N] [--number N] ID...
// Prints one JSON line like timing.js: {"node", "results": [{"id", "ops_per_s", "number",
// "error"}]} (ops_per_s is round trips per second), or {"node", "error"} and exit code 1.

const crypto = require('crypto')
const net = require('net')
const path = require('path')
const { createRequire } = require('module')
const { calibrated, parseArgs } = require('./timing')

const FULFILLMENT = Buffer.from(Array.from({ length: 32 }, (_, i) => 200 + i))
const CONDITION = crypto.createHash('sha256').update(FULFILLMENT).digest()
const DATA = Buffer.from(Array.from({ length: 32 }, (_, i) => i))
const DESTINATION = 'example.server'
const AMOUNT = '100'
const EXPIRY_MS = 30000
const SECRET = 'bench-secret'

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.on('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })
}

// The handler of the server side: deserialize the Prepare, answer with the Fulfill, serialized
// per packet (our servers encode theirs per packet too).
function fulfiller (IlpPacket) {
  const fulfill = { fulfillment: FULFILLMENT, data: Buffer.alloc(0) }
  return async (data) => {
    IlpPacket.deserializeIlpPrepare(data)
    return IlpPacket.serializeIlpFulfill(fulfill)
  }
}

// One round trip through `sendData` (a plugin's, or anything with its shape).
async function roundTripOver (sendData, IlpPacket) {
  const prepare = IlpPacket.serializeIlpPrepare({
    amount: AMOUNT,
    expiresAt: new Date(Date.now() + EXPIRY_MS),
    executionCondition: CONDITION,
    destination: DESTINATION,
    data: DATA
  })
  const reply = IlpPacket.deserializeIlpReply(await sendData(prepare))
  if (!IlpPacket.isFulfill(reply) ||
      !crypto.createHash('sha256').update(reply.fulfillment).digest().equals(CONDITION)) {
    throw new Error('the server did not answer with the Fulfill')
  }
}

// A server plugin (answering with `fulfiller`) and a client plugin, connected: the pair's
// `roundTrip()` (one Prepare -> Fulfill from the client) and `close()`.
async function connectPair (server, client, IlpPacket) {
  server.registerDataHandler(fulfiller(IlpPacket))
  await Promise.all([server.connect(), client.connect()])
  return {
    roundTrip: () => roundTripOver((data) => client.sendData(data), IlpPacket),
    close: async () => {
      await client.disconnect()
      await server.disconnect()
    }
  }
}

// Seconds for `count` round trips with `inFlight` loops sending one after the other.
async function roundTrips (roundTrip, count, inFlight) {
  let remaining = count
  async function sender () {
    while (remaining > 0) {
      remaining--
      await roundTrip()
    }
  }
  const start = process.hrtime.bigint()
  await Promise.all(Array.from({ length: Math.min(inFlight, count) }, sender))
  return Number(process.hrtime.bigint() - start) / 1e9
}

function measure (roundTrip, inFlight, opts) {
  return calibrated((n) => roundTrips(roundTrip, n, inFlight), opts, inFlight)
}

function message (err) {
  return String(err && err.message ? err.message : err)
}

async function run (packageNames, inFlightById, openPair) {
  const out = { node: process.version }
  let opts
  const packages = {}
  try {
    opts = parseArgs(process.argv.slice(2))
    if (opts.emit) throw new Error('--emit is for the codec benchmarks')
    const req = createRequire(path.join(path.resolve(opts.interop), 'package.json'))
    for (const name of packageNames) packages[name] = req(name)
  } catch (err) {
    out.error = message(err)
    return out
  }
  out.results = []
  for (const id of opts.ids.length ? opts.ids : Object.keys(inFlightById)) {
    let pair
    try {
      const inFlight = inFlightById[id]
      if (!inFlight) throw new Error('unknown benchmark id ' + JSON.stringify(id))
      pair = await openPair(packages)
      await pair.roundTrip()
      out.results.push(Object.assign({ id, error: null }, await measure(pair.roundTrip, inFlight, opts)))
    } catch (err) {
      out.results.push({ id, ops_per_s: null, number: 0, error: message(err) })
    } finally {
      if (pair) await pair.close().catch(() => {})
    }
  }
  return out
}

// Run the benchmarks and exit explicitly once the line is written: plugins keep timers
// (reconnects, heartbeats) and sockets (keep-alive) that would hold the process open.
function main (packageNames, inFlightById, openPair) {
  run(packageNames, inFlightById, openPair).then((out) => {
    process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(out.error ? 1 : 0))
  })
}

module.exports = { SECRET, freePort, connectPair, main }
