'use strict'
// The JavaScript reference codecs, timed for `make bench` (see bench/codecs.py for the Python
// side; the inputs here must stay the same as there). Run: node bench/js/codecs.js [ID...]
// with ILP_INTEROP_DIR pointing at the interop harness (its node_modules provide the packages).

const { main } = require('./timing')

// Fixed inputs, identical to bench/codecs.py.
const PREPARE = {
  amount: '107',
  expiresAt: new Date('2030-01-01T00:00:00.000Z'),
  executionCondition: Buffer.from(Array.from({ length: 32 }, (_, i) => 32 + i)),
  destination: 'example.alice',
  data: Buffer.from(Array.from({ length: 32 }, (_, i) => i))
}
const SHARED_SECRET = Buffer.from(Array.from({ length: 32 }, (_, i) => 100 + i))

function makeBenchmarks (req) {
  const IlpPacket = req('ilp-packet')
  // Packet and crypto are not all re-exported from the package index; load the modules the
  // library itself uses.
  const stream = req('ilp-protocol-stream/dist/src/packet')
  const streamCrypto = req('ilp-protocol-stream/dist/src/crypto')

  function streamPacket () {
    return new stream.Packet(1, stream.IlpPacketType.Prepare, 1000, [
      new stream.StreamMoneyFrame(1, 1),
      new stream.StreamMaxMoneyFrame(1, 10 ** 10, 500)
    ])
  }

  function checkStreamPacket (p) {
    if (p.sequence.toString() !== '1' || p.prepareAmount.toString() !== '1000' ||
        p.frames.length !== 2 || p.frames[1].receiveMax.toString() !== '10000000000') {
      throw new Error('decrypted STREAM packet does not match the input')
    }
  }

  // The encryption key is derived once per shared secret, as a JS Connection does
  // (generatePskEncryptionKey in Connection.build) and as the Python side builds StreamCrypto
  // once. What remains per call is the library's real cost: serializeAndEncrypt and
  // decryptAndDeserialize return Promises, and crypto.createCipheriv/createDecipheriv set up
  // AES-256-GCM with the key on every packet.
  const pskKey = () => streamCrypto.generatePskEncryptionKey(SHARED_SECRET)

  return {
    'ilp-prepare-encode': async () => ({
      op: () => IlpPacket.serializeIlpPrepare(PREPARE)
    }),
    'ilp-prepare-decode': async () => {
      const raw = IlpPacket.serializeIlpPrepare(PREPARE)
      return {
        op: () => IlpPacket.deserializeIlpPrepare(raw),
        check: (p) => {
          if (p.amount !== '107' || p.destination !== 'example.alice' || p.data.length !== 32) {
            throw new Error('decoded Prepare does not match the input')
          }
        },
        emit: () => raw
      }
    },
    'stream-packet-encrypt': async () => {
      const key = await pskKey()
      const packet = streamPacket()
      return {
        op: () => packet.serializeAndEncrypt(key),
        async: true,
        check: (data) => {
          if (data.length !== 28 + packet._serialize().length) {
            throw new Error('unexpected ciphertext length')
          }
        }
      }
    },
    'stream-packet-decrypt': async () => {
      const key = await pskKey()
      const data = await streamPacket().serializeAndEncrypt(key)
      return {
        op: () => stream.Packet.decryptAndDeserialize(key, data),
        async: true,
        check: checkStreamPacket,
        emit: () => data
      }
    }
  }
}

main(makeBenchmarks)
