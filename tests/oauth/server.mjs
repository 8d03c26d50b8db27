// OAuth2 authorization server for postdesk's integration tests, built on oidc-provider.
//
//   node tests/oauth/server.mjs --port PORT [--access-ttl SECONDS] [--app-user EMAIL] [--no-rotation]
//
// Plain HTTP on 127.0.0.1:PORT, issuer http://127.0.0.1:PORT, in-memory storage. Prints one
// line `ready` on stdout once listening; everything else goes to stderr. See README.md.

import crypto from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'access-ttl': { type: 'string', default: '3600' },
    'app-user': { type: 'string', default: 'help@example.com' },
    'no-rotation': { type: 'boolean', default: false },
  },
  strict: true,
});

const port = Number(args.port);
const accessTtl = Number(args['access-ttl']);
const appUser = args['app-user'];
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error('usage: server.mjs --port PORT [--access-ttl SECONDS] [--app-user EMAIL] [--no-rotation]');
  process.exit(2);
}
if (!Number.isInteger(accessTtl) || accessTtl <= 0) {
  console.error(`--access-ttl must be a positive integer, not ${args['access-ttl']}`);
  process.exit(2);
}

const issuer = `http://127.0.0.1:${port}`;
const LONG_TTL = 30 * 24 * 60 * 60;
const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';
const log = (...parts) => console.error(new Date().toISOString(), ...parts);

// Ephemeral signing key (ID tokens only: access tokens are opaque).
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

// Grants seen per account, for /test/revoke (the memory adapter has no query by account).
const grantsByAccount = new Map();

const configuration = {
  clients: [
    {
      client_id: 'postdesk',
      client_secret: 'postdesk-secret',
      // native: a loopback redirect URI matches on any port (RFC 8252 7.3).
      application_type: 'native',
      token_endpoint_auth_method: 'client_secret_post',
      grant_types: [DEVICE_CODE, 'refresh_token', 'authorization_code', 'client_credentials'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/'],
      scope: 'openid offline_access imap smtp',
    },
    {
      // Resource server (Dovecot): may only call the introspection endpoint.
      client_id: 'dovecot',
      client_secret: 'dovecot-secret',
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  // imap and smtp are plain scopes (no resource indicators): tokens are opaque and carry them.
  scopes: ['openid', 'offline_access', 'imap', 'smtp'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'] },
  jwks: { keys: [jwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  pkce: { required: () => false },
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    introspection: {
      enabled: true,
      // The resource server sees access tokens only; a client sees its own tokens.
      allowedPolicy: async (ctx, client, token) => {
        if (client.clientId === 'dovecot') return token.kind !== 'RefreshToken';
        return token.clientId === client.clientId;
      },
    },
    revocation: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: { enabled: false },
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Any account id exists (an email address).
  findAccount: async (ctx, sub) => ({
    accountId: sub,
    claims: async () => ({ sub, email: sub, email_verified: true }),
  }),
  // Every refresh-token-capable client gets one from the code and device grants, with or
  // without offline_access (the refresh grant follows the rotation setting).
  issueRefreshToken: async (ctx, client, code) => client.grantTypeAllowed('refresh_token')
    && ['AuthorizationCode', 'DeviceCode', 'RefreshToken'].includes(code.kind),
  rotateRefreshToken: !args['no-rotation'],
  expiresWithSession: async () => false,
  // Stored with the opaque token, returned by introspection as top-level claims.
  extraTokenClaims: async (ctx, token) => {
    if (token.kind === 'ClientCredentials') return { username: appUser };
    if (token.accountId) return { username: token.accountId };
    return undefined;
  },
  ttl: {
    AccessToken: accessTtl,
    ClientCredentials: accessTtl,
    RefreshToken: LONG_TTL,
    Grant: LONG_TTL,
    Session: LONG_TTL,
    DeviceCode: 600,
    Interaction: 600,
  },
  renderError: async (ctx, out) => {
    ctx.type = 'json';
    ctx.body = out;
  },
};

const provider = new Provider(issuer, configuration);

// ---- statistics ------------------------------------------------------------------------

const newStats = () => ({
  token: {},
  token_errors: {},
  token_errors_by_grant: {},
  introspection: 0,
  introspection_active: 0,
  introspection_inactive: 0,
  revocation: 0,
  device_authorization: 0,
});
let stats = newStats();
const bump = (map, key) => { map[key] = (map[key] ?? 0) + 1; };

provider.on('grant.error', (ctx, err) => {
  const error = err.error ?? 'server_error';
  const gty = ctx.req.pdGrantType ?? 'unknown';
  bump(stats.token_errors, error);
  bump((stats.token_errors_by_grant[gty] ??= {}), error);
  log(`token error grant_type=${gty} ${error}: ${err.error_description ?? ''} ${err.error_detail ?? ''}`);
});
for (const event of ['introspection.error', 'revocation.error', 'device_authorization.error',
  'authorization.error', 'code_verification.error', 'server_error']) {
  provider.on(event, (ctx, err) => log(`${event}: ${err.error ?? err.name} ${err.error_description ?? err.message} ${err.error_detail ?? ''}`));
}
const remember = (token) => {
  const grantId = token.kind === 'Grant' ? token.jti : token.grantId;
  if (token.accountId && grantId) {
    if (!grantsByAccount.has(token.accountId)) grantsByAccount.set(token.accountId, new Set());
    grantsByAccount.get(token.accountId).add(grantId);
  }
};
provider.on('access_token.saved', remember);
provider.on('refresh_token.saved', remember);
provider.on('grant.saved', remember);

// ---- helpers ---------------------------------------------------------------------------

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

// A minimal browser: cookies by name (paths ignored), redirects followed by hand.
async function browse(jar, url, init = {}) {
  const headers = { ...init.headers };
  if (jar.size) headers.cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
  const response = await fetch(new URL(url, issuer), { ...init, headers, redirect: 'manual' });
  for (const cookie of response.headers.getSetCookie()) {
    const [pair] = cookie.split(';');
    const eq = pair.indexOf('=');
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    if (value === '' || /expires=Thu, 01 Jan 1970/i.test(cookie)) jar.delete(name); else jar.set(name, value);
  }
  return response;
}

// The user's side of the device flow: the /device form, then login + consent (auto-approved by
// /interaction as the account named in the x-test-account header).
async function approveDevice(userCode, account) {
  const code = await provider.DeviceCode.findByUserCode(userCode.toUpperCase().replace(/\W/g, ''));
  if (!code) return { status: 400, body: { ok: false, error: `unknown user_code ${userCode}` } };
  if (code.isExpired) return { status: 400, body: { ok: false, error: `user_code ${userCode} expired` } };
  if (code.accountId || code.error || code.inFlight) {
    return { status: 400, body: { ok: false, error: `user_code ${userCode} already used` } };
  }

  const jar = new Map();
  const form = await browse(jar, '/device');
  const html = await form.text();
  const xsrf = html.match(/name="xsrf" value="([^"]+)"/)?.[1];
  if (!xsrf) throw new Error(`no xsrf in the /device form (HTTP ${form.status})`);

  let response = await browse(jar, '/device', {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ xsrf, user_code: userCode, confirm: 'yes' }).toString(),
  });
  for (let hops = 0; response.status >= 300 && response.status < 400; hops += 1) {
    if (hops > 10) throw new Error('too many redirects');
    response = await browse(jar, response.headers.get('location'), { headers: { 'x-test-account': account } });
  }
  const text = await response.text();
  const done = await provider.DeviceCode.find(code.jti, { ignoreExpiration: true });
  if (response.status !== 200 || !done?.accountId) {
    throw new Error(`device flow did not complete: HTTP ${response.status} ${text.slice(0, 500)}`);
  }
  return { status: 200, body: { ok: true } };
}

async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  // The account: x-test-account (set by /test/approve), else the request's login_hint.
  const account = req.headers['x-test-account'] ?? params.login_hint;
  if (prompt.name === 'login') {
    if (!account) {
      sendJson(res, 400, { error: 'no account: use POST /test/approve, or login_hint in the authorization request' });
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: String(account) } }, { mergeWithLastSubmission: false });
    return;
  }
  if (prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  sendJson(res, 500, { error: `unexpected prompt ${prompt.name}` });
}

async function revokeAccount(account) {
  const grantIds = [...(grantsByAccount.get(account) ?? [])];
  for (const grantId of grantIds) {
    await Promise.all([
      provider.AccessToken.revokeByGrantId(grantId),
      provider.RefreshToken.revokeByGrantId(grantId),
      provider.AuthorizationCode.revokeByGrantId(grantId),
      provider.DeviceCode.revokeByGrantId(grantId),
      provider.Grant.adapter.destroy(grantId),
    ]);
  }
  grantsByAccount.delete(account);
  return grantIds.length;
}

async function testEndpoint(req, res, path) {
  if (req.method === 'GET' && path === '/test/stats') return sendJson(res, 200, stats);
  if (req.method !== 'POST') return sendJson(res, 405, { error: 'method not allowed' });
  const text = await readBody(req);
  let body = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    return sendJson(res, 400, { ok: false, error: 'body is not JSON' });
  }
  switch (path) {
    case '/test/approve': {
      if (typeof body.user_code !== 'string' || typeof body.account !== 'string') {
        return sendJson(res, 400, { ok: false, error: 'need {"user_code": "...", "account": "..."}' });
      }
      const { status, body: out } = await approveDevice(body.user_code, body.account);
      log(`approve ${body.user_code} as ${body.account}: ${status}`);
      return sendJson(res, status, out);
    }
    case '/test/revoke': {
      if (typeof body.account !== 'string') return sendJson(res, 400, { ok: false, error: 'need {"account": "..."}' });
      const grants = await revokeAccount(body.account);
      log(`revoked ${grants} grant(s) of ${body.account}`);
      return sendJson(res, 200, { ok: true, grants });
    }
    case '/test/reset-stats':
      stats = newStats();
      return sendJson(res, 200, { ok: true });
    default:
      return sendJson(res, 404, { error: 'not found' });
  }
}

// ---- server ----------------------------------------------------------------------------

const oidc = provider.callback();

const server = http.createServer(async (req, res) => {
  const started = Date.now();
  const path = new URL(req.url, issuer).pathname;
  res.on('finish', () => log(`${req.method} ${req.url} ${res.statusCode} ${Date.now() - started}ms`));
  try {
    if (path.startsWith('/test/')) return await testEndpoint(req, res, path);
    if (path.startsWith('/interaction/') && req.method === 'GET') return await interaction(req, res);

    if (req.method === 'POST' && path === '/token') {
      // Read the body here (oidc-provider then uses req.body): count the grant type, and
      // let postdesk authenticate with client_secret_basic as well as client_secret_post.
      const form = new URLSearchParams(await readBody(req));
      req.pdGrantType = form.get('grant_type') ?? 'none';
      bump(stats.token, req.pdGrantType);
      const auth = req.headers.authorization;
      if (auth?.startsWith('Basic ')) {
        const [id, ...secret] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
        if (decodeURIComponent(id) === 'postdesk' && !form.has('client_id')) {
          form.set('client_id', 'postdesk');
          form.set('client_secret', decodeURIComponent(secret.join(':')));
          delete req.headers.authorization;
        }
      }
      req.body = form.toString();
    } else if (path === '/token/introspection') {
      stats.introspection += 1;
      const end = res.end.bind(res);
      res.end = (chunk, ...rest) => {
        try {
          const active = JSON.parse(String(chunk)).active === true;
          stats[active ? 'introspection_active' : 'introspection_inactive'] += 1;
        } catch { /* not JSON */ }
        return end(chunk, ...rest);
      };
    } else if (path === '/token/revocation') {
      stats.revocation += 1;
    } else if (path === '/device/auth') {
      stats.device_authorization += 1;
    }
    return await oidc(req, res);
  } catch (err) {
    log(`error on ${req.method} ${req.url}:`, err);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err.message ?? err) });
    else res.destroy();
  }
});

// Longer than Dovecot's 60 s idle HTTP connections, so that the client always closes first
// (Node's 5 s default races with Dovecot reusing an idle connection).
server.keepAliveTimeout = 120_000;
server.on('error', (err) => {
  log(`cannot listen on 127.0.0.1:${port}: ${err.message}`);
  process.exit(1);
});
server.listen(port, '127.0.0.1', () => {
  log(`oauth test server: issuer ${issuer}, access-ttl ${accessTtl}s, app-user ${appUser}, refresh rotation ${!args['no-rotation']}`);
  process.stdout.write('ready\n');
});

const stop = (signal) => {
  log(`${signal}: exiting`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
