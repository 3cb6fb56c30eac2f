// nsqjs over TLS and/or compression: publishes, then consumes.
//
// Usage: node nsqjs_secure.js NSQD_HOST NSQD_PORT TOPIC COUNT TIMEOUT_SECS OPTIONS_JSON
//
// OPTIONS_JSON holds nsqjs options ({"tls": true, "deflate": true, ...});
// a "caFile" key is read into nsqjs's `ca` option. Publishes COUNT messages
// "nsqjs-<i>" in one MPUB (answered OK), then reads TOPIC/"secure" until
// COUNT distinct bodies have arrived, FINing each. Prints a JSON object
// {"published": n, "received": [...]} and exits 0, or 1 after TIMEOUT_SECS.
// Used by tests/tls_compression.rs.
'use strict'

const fs = require('fs')
const nsq = require('nsqjs')

const [host, portText, topic, countText, timeoutText, optionsText] = process.argv.slice(2)
const port = Number(portText)
const count = Number(countText)
const options = JSON.parse(optionsText)
if (options.caFile) {
  options.ca = fs.readFileSync(options.caFile)
  delete options.caFile
}
const received = new Set()
let published = 0
let done = false

function finish (code) {
  if (done) return
  done = true
  setTimeout(() => {
    process.stdout.write(JSON.stringify({ published, received: [...received].sort() }) + '\n')
    process.exit(code)
  }, 200)
}

function consume () {
  const reader = new nsq.Reader(topic, 'secure', {
    nsqdTCPAddresses: [`${host}:${port}`],
    maxInFlight: 50,
    ...options
  })
  reader.on('message', (message) => {
    received.add(message.body.toString())
    message.finish()
    if (received.size >= count) finish(0)
  })
  reader.on('error', (error) => process.stderr.write(`nsqjs reader error: ${error}\n`))
  reader.connect()
}

const writer = new nsq.Writer(host, port, options)
writer.on('ready', () => {
  const bodies = Array.from({ length: count }, (_, i) => `nsqjs-${i}`)
  writer.publish(topic, bodies, (error) => {
    if (error) {
      process.stderr.write(`nsqjs publish error: ${error}\n`)
      finish(1)
      return
    }
    published = count
    consume()
  })
})
writer.on('error', (error) => process.stderr.write(`nsqjs writer error: ${error}\n`))
writer.connect()
setTimeout(() => finish(1), Number(timeoutText) * 1000)
