#!/usr/bin/env node
// The JS SMART client (npm `fhirclient`, through its Node entry) as a standalone-launch app, driven
// by tests/e2e/test_fhirclient_launch.py over stdin/stdout, one JSON object per line:
//
//   argv: <fhir base> <client id> <redirect uri> <scope>
//   out:  {"authorize_url": ...}           -- authorize({noRedirect: true, pkceMode: "required"})
//   in:   {"callback": <the final Location the user's browser was sent to>}
//   out:  {"result": {...}} or {"error": ...}  -- ready(), reads, refresh(), reads again
//
// There is no real HTTP server: the Node adapter only needs a request-like object (url, Host
// header, socket, session) and a response it never uses with noRedirect. State lives in one
// session object shared by both "requests", as an express-session would keep it.
// Every outgoing request is checked: only the FHIR server under test may be contacted.
"use strict";

const http = require("http");
const https = require("https");
const readline = require("readline");

const [base, clientId, redirectUri, scope] = process.argv.slice(2);
const allowedHost = new URL(base).host;
const contacted = [];

for (const mod of [http, https]) {
  for (const name of ["request", "get"]) {
    const original = mod[name];
    mod[name] = function guarded(...args) {
      const first = args[0];
      const url = typeof first === "string" || first instanceof URL
        ? new URL(first)
        : new URL(`${first.protocol || "http:"}//${first.hostname || first.host}${first.port ? ":" + first.port : ""}${first.path || "/"}`);
      contacted.push(url.href);
      if (url.host !== allowedHost) {
        throw new Error(`fhirclient tried to reach ${url.href}; only ${base} is allowed`);
      }
      return original.apply(this, args);
    };
  }
}

const smart = require("fhirclient");

const session = {};
const response = { writeHead() { throw new Error("unexpected redirect"); }, end() {} };

function fakeRequest(url) {
  const parsed = new URL(url);
  return { url: parsed.pathname + parsed.search, headers: { host: parsed.host }, socket: {}, session };
}

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function start() {
  const api = smart(fakeRequest(redirectUri), response);
  const url = await api.authorize({
    iss: base, clientId, scope, redirectUri, pkceMode: "required", noRedirect: true,
  });
  send({ authorize_url: url });
}

async function finish(callback) {
  const client = await smart(fakeRequest(callback), response).ready();
  const token = client.state.tokenResponse;
  const patientId = client.getPatientId();
  const patient = await client.patient.read();
  const observations = await client.request(`Observation?patient=${patientId}`, { flat: true });
  const firstAccess = token.access_token;
  const hadRefresh = Boolean(token.refresh_token);
  await client.refresh();
  const after = client.state.tokenResponse;
  const again = await client.request(`Patient/${patientId}`);
  return {
    patientId,
    fhirUser: client.getFhirUser(),
    userId: client.getUserId(),
    userType: client.getUserType(),
    grantedScope: token.scope,
    hadIdToken: Boolean(token.id_token),
    hadRefresh,
    patientFamily: patient.name[0].family,
    observationIds: observations.map((o) => o.id).sort(),
    refreshed: after.access_token !== firstAccess,
    refreshKept: Boolean(after.refresh_token),
    readAfterRefresh: again.id,
    expiresAt: client.state.expiresAt,
    contacted,
  };
}

async function main() {
  await start();
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const { callback } = JSON.parse(line);
    try {
      send({ result: await finish(callback) });
    } catch (err) {
      send({ error: String(err && err.stack || err), contacted });
    }
    break;
  }
  lines.close();
}

main().catch((err) => {
  send({ error: String(err && err.stack || err), contacted });
  process.exitCode = 1;
});
