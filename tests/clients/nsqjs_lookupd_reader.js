// An nsqjs Reader that finds its nsqd nodes through lookupd only.
//
// Usage: node nsqjs_lookupd_reader.js LOOKUPD_HTTP TOPIC CHANNEL COUNT TIMEOUT_SECS
//
// Consumes TOPIC/CHANNEL from every node that LOOKUPD_HTTP's /lookup lists,
// FINs every message, and once COUNT distinct bodies have arrived prints
// them as a JSON array on stdout and exits 0. After TIMEOUT_SECS it prints
// what it has and exits 1. Used by tests/lookupd_clients.rs.
'use strict'

const nsq = require('nsqjs')

const [lookupd, topic, channel, countText, timeoutText] = process.argv.slice(2)
const count = Number(countText)
const seen = new Set()
let done = false

function finish (code) {
  if (done) return
  done = true
  // Let the FIN of the last message reach the server first.
  setTimeout(() => {
    process.stdout.write(JSON.stringify([...seen].sort()) + '\n')
    process.exit(code)
  }, 200)
}

const reader = new nsq.Reader(topic, channel, {
  lookupdHTTPAddresses: [lookupd],
  lookupdPollInterval: 1,
  maxInFlight: 20
})
reader.on('message', (message) => {
  seen.add(message.body.toString())
  message.finish()
  if (seen.size >= count) finish(0)
})
reader.on('error', (error) => process.stderr.write(`nsqjs error: ${error}\n`))
reader.connect()
setTimeout(() => finish(1), Number(timeoutText) * 1000)
