'use strict'
// ILP-over-HTTP round trips per second on loopback with ilp-plugin-http (HTTP/1.1, node-fetch
// with Node's keep-alive agent, Koa): a server plugin and a client plugin in this one node
// process, as bench/http.py runs our HttpLink and IlpHttpApp in one trio.run. Each round trip
// is one POST. The loop, the work per round trip and the output are in roundtrips.js.
//
// Usage: node http.js [--interop DIR] [--time S] [--repeat N] [--number N] ID...

const { SECRET, freePort, connectPair, main } = require('./roundtrips')

const IN_FLIGHT = { 'http-roundtrip-1': 1, 'http-roundtrip-50': 50 }

// Each plugin listens for the other's POSTs; only the client -> server direction is used.
async function openPair ({ 'ilp-plugin-http': HttpPlugin, 'ilp-packet': IlpPacket }) {
  const [serverPort, clientPort] = [await freePort(), await freePort()]
  const server = new HttpPlugin({
    incoming: { port: serverPort, staticToken: SECRET },
    outgoing: { url: `http://127.0.0.1:${clientPort}/`, staticToken: SECRET }
  })
  const client = new HttpPlugin({
    incoming: { port: clientPort, staticToken: SECRET },
    outgoing: { url: `http://127.0.0.1:${serverPort}/`, staticToken: SECRET, name: 'bench' }
  })
  return connectPair(server, client, IlpPacket)
}

main(['ilp-plugin-http', 'ilp-packet'], IN_FLIGHT, openPair)
