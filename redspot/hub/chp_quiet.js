// Loaded into configurable-http-proxy by `redspot up` (node --require), before it runs.
//
// A browser that goes away in the middle of a proxied websocket (a closed tab, a laptop
// lid) resets its connection; configurable-http-proxy 5.3 has no handler for that
// socket's error, so Node raises it as an uncaught exception, which the proxy's own
// handler logs as two alarming lines for nothing to do (jupyterhub/jupyterhub#3355).
// The proxy's handler is wrapped: a connection reset is dropped; every other uncaught
// exception is logged by the proxy as before.
"use strict";
const on = process.on;
process.on = function (event, listener, ...rest) {
  if (event === "uncaughtException" && typeof listener === "function") {
    const wrapped = function (error, ...args) {
      if (error && error.code === "ECONNRESET") {
        return undefined; // a client went away: nothing to report
      }
      return listener.call(this, error, ...args);
    };
    return on.call(this, event, wrapped, ...rest);
  }
  return on.call(this, event, listener, ...rest);
};
