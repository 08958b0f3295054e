"""Request metering: one usage record per request through the portal (chat or `/v1`), the
figures the tiles show, the day sums, the Usage page and the Prometheus `/metrics`.

`records` writes and sums the records (and holds `Measure`, what the relay measured of a
request); `days` keeps the per-day sums; `metrics` is the Prometheus side; `views` the Usage
page and `/metrics`. See docs/gateway.md, "Usage recording" and "Metrics".
"""
