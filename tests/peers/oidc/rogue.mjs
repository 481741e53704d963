// A rogue OpenID provider for the SSO negative tests: discovery, a JWKS, an authorization
// endpoint that answers at once, and a token endpoint whose ID token is bad in the way the
// test chose (POST /mode with the mode's name) — wrong signature, alg none, HS256 keyed with
// the public key, expired, wrong nonce, wrong audience — or good ("good").
// Usage: node rogue.mjs PORT CLIENT_ID
import http from 'node:http';
import crypto from 'node:crypto';
import * as jose from 'jose';

const port = Number(process.argv[2]);
const clientId = process.argv[3];
const issuer = `http://127.0.0.1:${port}`;
const trusted = await jose.generateKeyPair('RS256', { extractable: true });
const untrusted = await jose.generateKeyPair('RS256', { extractable: true });
const publicJwk = { ...(await jose.exportJWK(trusted.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
let mode = 'good';
const codes = new Map(); // code -> nonce

const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');

async function idToken(nonce) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: issuer, aud: clientId, sub: 'mallory', preferred_username: 'mallory', nonce, iat: now, exp: now + 300 };
  if (mode === 'expired') { claims.iat = now - 7200; claims.exp = now - 3600; }
  if (mode === 'wrong_nonce') claims.nonce = 'not-the-nonce';
  if (mode === 'wrong_aud') claims.aud = 'someone-else';
  if (mode === 'wrong_iss') claims.iss = 'http://127.0.0.1:1';
  if (mode === 'none') return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
  if (mode === 'hs256_pubkey') {
    const pem = await jose.exportSPKI(trusted.publicKey);
    const head = `${b64({ alg: 'HS256', typ: 'JWT', kid: 'k1' })}.${b64(claims)}`;
    const sig = crypto.createHmac('sha256', pem).update(head).digest('base64url');
    return `${head}.${sig}`;
  }
  const key = mode === 'wrong_key' ? untrusted.privateKey : trusted.privateKey;
  return new jose.SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).sign(key);
}

function body(req) {
  return new Promise((resolve) => { let b = ''; req.on('data', (c) => { b += c; }); req.on('end', () => resolve(b)); });
}

http.createServer(async (req, res) => {
  const url = new URL(req.url, issuer);
  const json = (o, status = 200) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(o)); };
  if (url.pathname === '/.well-known/openid-configuration') {
    return json({
      issuer, authorization_endpoint: `${issuer}/auth`, token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`, response_types_supported: ['code'], subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256', 'HS256', 'none'],
    });
  }
  if (url.pathname === '/jwks') return json({ keys: [publicJwk] });
  if (url.pathname === '/mode' && req.method === 'POST') { mode = (await body(req)).trim(); return json({ mode }); }
  if (url.pathname === '/auth') {
    const code = crypto.randomBytes(16).toString('hex');
    codes.set(code, url.searchParams.get('nonce'));
    const back = new URL(url.searchParams.get('redirect_uri'));
    back.searchParams.set('code', code);
    back.searchParams.set('state', url.searchParams.get('state'));
    res.writeHead(302, { location: back.toString() });
    return res.end();
  }
  if (url.pathname === '/token' && req.method === 'POST') {
    const form = new URLSearchParams(await body(req));
    const code = form.get('code');
    if (!codes.has(code)) return json({ error: 'invalid_grant' }, 400);
    const nonce = codes.get(code);
    codes.delete(code);
    return json({ access_token: 'at', token_type: 'Bearer', expires_in: 60, id_token: await idToken(nonce) });
  }
  res.writeHead(404); res.end();
}).listen(port, '127.0.0.1', () => console.log('ready'));
