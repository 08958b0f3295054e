// A real OpenID Connect provider for the tests: the certified `oidc-provider` package (npm),
// installed by tests/support/oidc_provider.py into MODULE_DIR, never into the portal.
//
//     node tests/support/oidc_provider.mjs MODULE_DIR CONFIG_JSON
//
// CONFIG_JSON: {"client_id", "client_secret", "redirect_uris": [...]}. Prints the issuer URL on
// its first line. The provider's own development login page signs anyone in ("any login and
// password"); consent is granted for the portal as a first-party client would be.
// Test-only routes, before the provider's own:
//   POST /__test/accounts  {"<login>": {claims…}}  the claims each login name gets
//   POST /__test/tamper    {"mode": "bad-signature" | "wrong-audience" | "expired"}
//       the next ID token the token endpoint sends is re-signed that way: with a key the
//       provider never published (same kid), for another client, or expired an hour ago.
import http from "node:http";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [moduleDir, configJson] = process.argv.slice(2);
const load = (entry) => import(pathToFileURL(path.join(moduleDir, "node_modules", entry)).href);
const { default: Provider } = await load("oidc-provider/lib/index.js");
const jose = await load("jose/dist/webapi/index.js");
const config = JSON.parse(configJson);

async function signingKey(kid) {
  const { privateKey } = await jose.generateKeyPair("RS256", { extractable: true });
  return { ...(await jose.exportJWK(privateKey)), kid, alg: "RS256", use: "sig" };
}
const key = await signingKey("portal-tests");
const foreignKey = await signingKey("portal-tests"); // same kid, never published

let accounts = {};
let tamper = null;

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString() || "{}");
}

async function resign(idToken, mode) {
  const claims = jose.decodeJwt(idToken);
  const now = Math.floor(Date.now() / 1000);
  if (mode === "wrong-audience") claims.aud = "another-client";
  if (mode === "expired") Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  const jwk = mode === "bad-signature" ? foreignKey : key;
  return new jose.SignJWT(claims)
    .setProtectedHeader({ alg: "RS256", kid: jwk.kid })
    .sign(await jose.importJWK(jwk, "RS256"));
}

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: config.client_id,
        client_secret: config.client_secret,
        redirect_uris: config.redirect_uris,
        token_endpoint_auth_method: "client_secret_post",
      },
    ],
    jwks: { keys: [key] },
    cookies: { keys: ["portal-tests-cookie-key"] },
    claims: { openid: ["sub"], email: ["email", "email_verified"], profile: ["name", "groups"] },
    conformIdTokenClaims: false, // the ID token carries the scopes' claims, as most IdPs do
    pkce: { required: () => false },
    async findAccount(ctx, id) {
      return { accountId: id, claims: async () => ({ sub: id, ...(accounts[id] ?? {}) }) };
    },
    async loadExistingGrant(ctx) {
      const { client, session, result } = ctx.oidc;
      const grantId = result?.consent?.grantId || session.grantIdFor(client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope("openid email profile");
      await grant.save();
      return grant;
    },
  });
  provider.use(async (ctx, next) => {
    if (ctx.path === "/__test/accounts" && ctx.method === "POST") {
      accounts = await readJson(ctx.req);
      ctx.status = 204;
      return;
    }
    if (ctx.path === "/__test/tamper" && ctx.method === "POST") {
      tamper = (await readJson(ctx.req)).mode;
      ctx.status = 204;
      return;
    }
    await next();
    if (ctx.path === "/token" && ctx.status === 200 && tamper && ctx.body?.id_token) {
      ctx.body = { ...ctx.body, id_token: await resign(ctx.body.id_token, tamper) };
      tamper = null;
    }
  });
  server.on("request", provider.callback());
  console.log(issuer);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => process.exit(0));
