'use strict'
// BTP round trips per second on loopback with ilp-plugin-btp: a listener plugin (the server)
// and a client plugin in this one node process, as bench/btp.py runs our client and server in
// one trio.run. The loop, the work per round trip and the output are in roundtrips.js.
//
// Usage: node btp.js [--interop DIR] [--time S] [--repeat N] [--number N] ID...

const { SECRET, freePort, connectPair, main } = require('./roundtrips')

const IN_FLIGHT = { 'btp-roundtrip-1': 1, 'btp-roundtrip-50': 50 }

// A connected listener/client pair; `roundTrip()` does one Prepare -> Fulfill.
async function openPair ({ 'ilp-plugin-btp': BtpPlugin, 'ilp-packet': IlpPacket }) {
  const port = await freePort()
  const server = new BtpPlugin({ listener: { port, secret: SECRET, wsOpts: { host: '127.0.0.1', port } } })
  const client = new BtpPlugin({ server: `btp+ws://bench:${SECRET}@127.0.0.1:${port}` })
  return connectPair(server, client, IlpPacket)
}

main(['ilp-plugin-btp', 'ilp-packet'], IN_FLIGHT, openPair)
