// Loaded into configurable-http-proxy by `redspot up` (node --require).
//
// A browser that goes away in the middle of a proxied websocket (a closed tab, a laptop
// lid) resets its connection; configurable-http-proxy 5.3 has no handler for that
// socket's error, so Node reports it as an uncaught exception and the proxy logs two
// alarming lines for nothing to do (jupyterhub/jupyterhub#3355). A connection reset on
// a socket that nobody listens to for errors is dropped here, quietly; every other
// error goes on as before.
"use strict";
const net = require("net");
const emit = net.Socket.prototype.emit;
net.Socket.prototype.emit = function (event, error, ...rest) {
  if (event === "error" && error && error.code === "ECONNRESET" &&
      this.listenerCount("error") === 0) {
    this.destroy();
    return false;
  }
  return emit.call(this, event, error, ...rest);
};
