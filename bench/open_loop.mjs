// An open-loop HTTP load at a steady rate, for bench/status_poll.py.
//
//     node bench/open_loop.mjs MODULE_DIR URL RATE SECONDS HEADERS_JSON
//
// loadtest (npm, installed by the bench into MODULE_DIR) sends one request every 1/RATE s from
// one timer, whether or not the earlier ones have answered, on keep-alive connections it adds
// as needed. Out of the bench's Python process, so the client's own pauses (the GIL, the
// collector, thread wake-ups) do not land in the server's latency. Prints one JSON object:
// each answered request's latency in whole ms (loadtest rounds down), the errors, and each
// request's send time in ms, so the bench can check that the client kept its schedule.
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

const [moduleDir, url, rate, seconds, headersJson] = process.argv.slice(2);
const entry = path.join(moduleDir, "node_modules", "loadtest", "index.js");
const { loadTest } = await import(pathToFileURL(entry).href);

const latencies = [];
const sent = [];
let errors = 0;
const result = await loadTest({
  url,
  requestsPerSecond: Number(rate),
  maxSeconds: Number(seconds),
  agentKeepAlive: true,
  headers: JSON.parse(headersJson),
  timeout: 30000,
  quiet: true,
  requestGenerator(options, params, request, onResponse) {
    sent.push(performance.now());
    return request(params, onResponse);
  },
  statusCallback(error, answer) {
    if (error) errors += 1;
    if (answer) latencies.push(answer.requestElapsed);
  },
});
process.stdout.write(
  JSON.stringify({
    latencies,
    errors,
    sent,
    answered: result.totalRequests,
    elapsed: result.elapsedSeconds,
  }),
);
