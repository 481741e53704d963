// The real OpenID provider for the SSO tests: npm oidc-provider v9 on 127.0.0.1.
// Usage: node provider.mjs PORT CONFIG.json
// CONFIG: { client_id, client_secret, redirect_uris, post_logout_redirect_uris,
//           backchannel_logout_uri, token_endpoint_auth_method, client_key_file, client_key_id,
//           oauth2_client?: { client_id, client_secret, redirect_uris } }
// Any login name signs in as that subject; consent is granted without a page (first-party).
// Prints "ready" once it listens.
import crypto from 'node:crypto';
import fs from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const cfg = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
const issuer = `http://127.0.0.1:${port}`;

// A plain OAuth 2 client (no openid scope: no ID token), whose identity comes from the
// GitHub-shaped /api/user below, when the config names one.
const oauth2Clients = cfg.oauth2_client ? [{
  client_id: cfg.oauth2_client.client_id,
  client_secret: cfg.oauth2_client.client_secret,
  redirect_uris: cfg.oauth2_client.redirect_uris,
  grant_types: ['authorization_code'],
  response_types: ['code'],
  scope: 'read:user',
  token_endpoint_auth_method: cfg.oauth2_client.token_endpoint_auth_method || 'client_secret_basic',
}] : [];

// private_key_jwt: the client's public key, from the PEM key file the edge signs with.
const clientAuth = cfg.token_endpoint_auth_method || 'client_secret_basic';
const clientKeys = cfg.client_key_file ? {
  jwks: { keys: [{ ...crypto.createPublicKey(fs.readFileSync(cfg.client_key_file)).export({ format: 'jwk' }), kid: cfg.client_key_id }] },
} : {};
const clientSecret = clientAuth === 'private_key_jwt' ? {} : { client_secret: cfg.client_secret };

const provider = new Provider(issuer, {
  scopes: ['openid', 'offline_access', 'read:user'],
  clients: [...oauth2Clients, {
    client_id: cfg.client_id,
    ...clientSecret,
    ...clientKeys,
    redirect_uris: cfg.redirect_uris,
    post_logout_redirect_uris: cfg.post_logout_redirect_uris,
    backchannel_logout_uri: cfg.backchannel_logout_uri,
    backchannel_logout_session_required: true,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: clientAuth,
  }],
  pkce: { required: () => true },
  // The provider refuses outgoing calls to loopback addresses (SSRF protection); the edge it
  // calls back (back-channel logout) is on 127.0.0.1 here, so the tests use a plain fetch.
  fetch: (url, options) => {
    const { dispatcher, ...rest } = options;
    return globalThis.fetch(url, rest);
  },
  cookies: { keys: ['moodle-edge-test-cookie-key'] },
  claims: { openid: ['sub', 'sid'], email: ['email', 'email_verified'], profile: ['preferred_username', 'given_name', 'family_name'] },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
  },
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        return {
          sub,
          preferred_username: sub,
          given_name: `Given ${sub}`,
          family_name: `Family ${sub}`,
          email: `${sub}@example.edu`,
          email_verified: true,
        };
      },
    };
  },
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid email profile read:user');
    await grant.save();
    return grant;
  },
});
// GitHub's /user, as a plain OAuth 2 provider's userinfo: the bearer token's owner, with a
// numeric id, a login and a display name (no OpenID Connect claims).
provider.use(async (ctx, next) => {
  if (ctx.path !== '/api/user') return next();
  const auth = ctx.get('authorization');
  const value = auth.startsWith('Bearer ') ? auth.slice(7) : '';
  const token = value ? await provider.AccessToken.find(value) : undefined;
  if (!token || token.isExpired || !token.scopes.has('read:user')) {
    ctx.status = 401;
    ctx.body = { message: 'Bad credentials' };
    return;
  }
  const login = token.accountId;
  let id = 0;
  for (const c of login) id = (id * 31 + c.charCodeAt(0)) % 1000000007;
  ctx.body = { id, login, name: `Given ${login} Family`, email: `${login}@example.org` };
});
provider.on('backchannel.error', (ctx, err, client) => console.error('backchannel.error', client.clientId, err.message, err.cause && (err.cause.stack || err.cause)));
provider.on('backchannel.success', (ctx, client) => console.error('backchannel.success', client.clientId));
provider.listen(port, '127.0.0.1', () => console.log('ready'));
