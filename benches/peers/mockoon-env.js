// Writes a Mockoon data file holding the benchmark's mocks. It uses
// Mockoon's own schema builders, so the file matches the installed version.
//
// usage: node mockoon-env.js <mocks.json> <out.json> <port>
// mocks.json: [{"endpoint": "w/ws-0/users/:id", "status": 200, "body": "..."}]
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const { BuildEnvironment, BuildHTTPRoute, BuildHeader } = require('@mockoon/commons');

const [input, output, port] = process.argv.slice(2);
if (!input || !output || !port) {
  console.error('usage: node mockoon-env.js <mocks.json> <out.json> <port>');
  process.exit(2);
}
const mocks = JSON.parse(fs.readFileSync(input, 'utf8'));
const environment = BuildEnvironment({
  hasDefaultRoute: false,
  hasContentTypeHeader: false,
  hasCorsHeaders: false,
  port: Number(port),
});
environment.uuid = crypto.randomUUID();
environment.name = 'mockplane-bench';
for (const mock of mocks) {
  const route = BuildHTTPRoute(true, { endpoint: mock.endpoint, body: mock.body });
  route.uuid = crypto.randomUUID();
  const response = route.responses[0];
  response.uuid = crypto.randomUUID();
  response.statusCode = mock.status;
  response.headers = [BuildHeader('content-type', 'application/json')];
  environment.routes.push(route);
  environment.rootChildren.push({ type: 'route', uuid: route.uuid });
}
fs.writeFileSync(output, JSON.stringify(environment));
