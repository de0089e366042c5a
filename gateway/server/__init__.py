"""The terminal transport and the gateway process: TCP, flow control, TLS,
/metrics and /healthz, workers."""
