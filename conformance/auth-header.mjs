// Node preload (`node --import ./auth-header.mjs …`) that makes the MCP conformance suite send
// `Authorization: Bearer $CONFORMANCE_AUTH_TOKEN` on every HTTP request to $CONFORMANCE_AUTH_ORIGIN.
//
// Why: `conformance server` (0.2.0-alpha.12) has no option for extra request headers, and agentgw requires an
// API key on every /mcp request. The gateway's authentication is left exactly as it is; the test client simply
// authenticates like any real MCP client would. Only requests to that one origin are touched, and a request
// that already carries an Authorization header is left alone.
//
// The suite reaches the server through three HTTP stacks, all covered here:
//   - the global `fetch` (the TypeScript SDK client and most raw probes),
//   - `undici.request` (dns-rebinding-protection, which needs to forge the Host header),
//   - `node:http` `request` (http-header-validation / http-custom-header-server-validation).
import http from "node:http";
import { createRequire } from "node:module";

const token = process.env.CONFORMANCE_AUTH_TOKEN;
const origin = process.env.CONFORMANCE_AUTH_ORIGIN;
const suiteDir = process.env.CONFORMANCE_SUITE_DIR; // where the suite's own `undici` is installed

if (token && origin) {
  const target = new URL(origin);
  const value = `Bearer ${token}`;
  const sameTarget = (url) => {
    try {
      const u = new URL(String(url));
      return u.protocol === target.protocol && u.host === target.host;
    } catch {
      return false;
    }
  };
  const hasAuth = (headers) =>
    Object.keys(headers ?? {}).some((k) => k.toLowerCase() === "authorization");

  // 1. fetch
  const originalFetch = globalThis.fetch;
  globalThis.fetch = function fetchWithAuth(input, init = {}) {
    const url = input instanceof Request ? input.url : input;
    if (!sameTarget(url)) return originalFetch(input, init);
    const headers = new Headers(init.headers ?? (input instanceof Request ? input.headers : undefined));
    if (!headers.has("authorization")) headers.set("authorization", value);
    return originalFetch(input, { ...init, headers });
  };

  // 2. undici.request (patched on the suite's own copy before the suite imports it)
  if (suiteDir) {
    try {
      const undici = createRequire(`${suiteDir}/package.json`)("undici");
      const originalRequest = undici.request;
      undici.request = function requestWithAuth(url, opts = {}, ...rest) {
        if (sameTarget(url) && !hasAuth(opts.headers)) {
          opts = { ...opts, headers: { ...(opts.headers ?? {}), authorization: value } };
        }
        return originalRequest.call(this, url, opts, ...rest);
      };
    } catch (err) {
      console.error(`auth-header.mjs: could not patch undici (${err}); dns-rebinding-protection may see 401`);
    }
  }

  // 3. node:http request
  const originalHttpRequest = http.request;
  http.request = function httpRequestWithAuth(options, ...rest) {
    if (options && typeof options === "object" && !(options instanceof URL)) {
      const host = options.host ?? options.hostname;
      const port = String(options.port ?? 80);
      if (target.protocol === "http:" && `${host}:${port}` === target.host && !hasAuth(options.headers)) {
        options = { ...options, headers: { ...(options.headers ?? {}), Authorization: value } };
      }
    }
    return originalHttpRequest.call(this, options, ...rest);
  };
}
