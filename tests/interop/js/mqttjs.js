// MQTT.js (npm package `mqtt`), the client browsers use, driving a broker over WebSockets for
// tests/interop/run.sh. Every run is bounded: it exits 1 after 10 s whatever happens.
//   node mqttjs.js pub URL TOPIC MESSAGE [--v5] [--ca FILE]   publish at QoS 1, wait for PUBACK
//   node mqttjs.js sub URL TOPIC COUNT [--v5] [--ca FILE]     print SUBSCRIBED once the SUBACK is
//                                                             in, then "TOPIC PAYLOAD" per message
"use strict";
const fs = require("fs");
const mqtt = require("mqtt");

const [mode, url, topic, arg, ...rest] = process.argv.slice(2);
if (!["pub", "sub"].includes(mode) || !url || !topic || arg === undefined) {
  console.error("usage: mqttjs.js pub|sub URL TOPIC MESSAGE|COUNT [--v5] [--ca FILE]");
  process.exit(2);
}
const opts = {
  protocolVersion: rest.includes("--v5") ? 5 : 4,
  clientId: `mqttjs-${mode}-${process.pid}`,
  reconnectPeriod: 0,
  connectTimeout: 5000,
};
const ca = rest.indexOf("--ca");
if (ca >= 0) {
  opts.ca = fs.readFileSync(rest[ca + 1]);
  opts.rejectUnauthorized = true;
}

setTimeout(() => {
  console.error("timed out");
  process.exit(1);
}, 10000).unref();

const client = mqtt.connect(url, opts);
client.on("error", (e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
client.on("connect", () => {
  if (mode === "pub") {
    client.publish(topic, arg, { qos: 1 }, (e) => {
      if (e) {
        console.error(`publish failed: ${e.message}`);
        process.exit(1);
      }
      client.end(false, () => process.exit(0));
    });
    return;
  }
  let left = Number(arg);
  client.on("message", (t, payload) => {
    console.log(`${t} ${payload.toString()}`);
    if (--left === 0) client.end(false, () => process.exit(0));
  });
  client.subscribe(topic, { qos: 1 }, (e, granted) => {
    if (e || !granted || granted.some((g) => g.qos > 2)) {
      console.error(`subscribe failed: ${e ? e.message : JSON.stringify(granted)}`);
      process.exit(1);
    }
    console.log("SUBSCRIBED");
  });
});
